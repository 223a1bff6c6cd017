"""Stages of the fine-tune-and-measure pipeline; each runs as `python -m stages.<name>`."""
