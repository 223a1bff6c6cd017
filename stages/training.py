"""Pieces the sft and dpo stages share: per-step dvclive logging and adapter provenance."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from stages.io import git_sha, sha256_file
from stages.modeling import read_base_json


class LiveStepCallback(TrainerCallback):
    """Log every trainer log event to dvclive at the trainer's global step.

    dvclive's own HF callback counts log events rather than optimizer steps, and
    report_to="dvclive" rewrites the root dvc.yaml mid-run; this does neither.
    """

    def __init__(self, live, keys: dict[str, str]):
        self.live = live
        self.keys = keys  # trainer log key -> dvclive metric name

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.live.step = state.global_step
        for key, name in self.keys.items():
            value = logs.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.live.log_metric(name, float(value))


def last_logged(trainer, key: str) -> float:
    """The last value the trainer logged under `key` (NaN if it never did)."""
    values = [log[key] for log in trainer.state.log_history if key in log]
    return values[-1] if values else float("nan")


def remove_trainer_dir(path: Path) -> None:
    """The trainer's scratch output (save_strategy is "no", but it still creates it)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def precision_flags(dtype: str) -> dict[str, bool]:
    """bf16/fp16 Trainer flags from model.dtype; TRL turns bf16 on by default, even on CPU."""
    cuda = torch.cuda.is_available()
    return {"bf16": dtype == "bfloat16" and cuda, "fp16": dtype == "float16" and cuda}


def adapter_provenance(cfg, data_file: Path, parent: str | None, metrics: dict) -> dict:
    base = read_base_json(cfg.paths.model_dir("base"))
    return {
        "base": {k: base[k] for k in ("source", "hub_id", "revision", "local_dir", "init")},
        "parent_adapter": parent,
        "data_file": str(data_file),
        "data_sha256": sha256_file(data_file),
        "config": cfg.model_dump(),
        "git_sha": git_sha(),
        "metrics": metrics,
    }
