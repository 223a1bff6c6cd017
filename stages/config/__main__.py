"""python -m stages.config: the `params` stage (validate params.yaml, nothing else)."""

from stages.config import main, run_stage

run_stage(main)
