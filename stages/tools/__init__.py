"""Floor 5: commands a user runs by hand (python -m stages.tools.<name>)."""
