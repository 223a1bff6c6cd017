"""environment: the versions of the libraries that compute the pipeline's numbers, for DVC.

Reads   params paths; the installed distributions (importlib.metadata, no import)
Writes  metrics/environment.json: {"environment": {"versions": {torch, transformers, ...}}}
Run     dvc repro environment   (`always_changed` in dvc.yaml: it runs on every repro, in
        well under a second)

Every stage that computes with these libraries (base, curate, sft, dpo, eval) depends on
this file, so installing another torch, transformers, trl, peft, datasets, lm_eval or
evalplus reruns them, and a version change nothing computes with (ruff, pytest, a new lock
for the dev tools) reruns nothing. The versions come from what is installed, not from
requirements.lock: an environment installed around the lock still reruns what it must.
The CPU, GPU and commit are recorded next to each stage's figures (stages.core.runinfo) but do
not rerun anything: with the numerics pinned (stages/core/numerics.py) another machine computes
the same weights, and `dvc pull` gets them without recomputing.
"""

from __future__ import annotations

from pathlib import Path

from stages.config import EnvironmentStage, load, run_stage
from stages.core.io import write_json
from stages.core.runinfo import library_versions


def main(cfg: EnvironmentStage | None = None) -> dict:
    cfg = cfg or load(EnvironmentStage)
    record = {"versions": library_versions()}
    write_json(Path(cfg.paths.metrics) / "environment.json", {"environment": record})
    print(f"environment: {record}")
    return record


if __name__ == "__main__":
    run_stage(main)
