"""Fixtures: a whole tiny pipeline (base -> curate -> sft -> dpo) built once per session
into a temporary directory from the repo's own built-in data, with a model small enough to
train in seconds on CPU."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def warm_servers():
    """The warm servers the tests' eval stages start (stages.warm) live in a folder of this
    session's, and are stopped when it ends rather than idling on after it."""
    import shutil
    import subprocess
    import sys
    import tempfile

    folder = tempfile.mkdtemp(prefix="warm-")  # short: a socket's path has 107 bytes
    os.environ["STAGES_WARM_DIR"] = folder
    yield
    subprocess.run([sys.executable, "-m", "stages.warm", "--stop"], timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def tiny_params(root: Path) -> dict:
    """params.yaml shrunk for tests: a 2-layer model, a few steps, a few rows, outputs in root."""
    p = copy.deepcopy(repo_params())
    src = REPO / "data" / "sources"
    p["paths"] = {"sources": str(src), "models": str(root / "models"),
                  "curated": str(root / "curated"), "metrics": str(root / "metrics"),
                  "checkpoints": str(root / "checkpoints")}
    p["model"]["arch"].update(vocab_size=384, hidden_size=64, num_layers=2, num_heads=4,
                              num_kv_heads=2, intermediate_size=128, max_position_embeddings=512)
    p["model"]["train"].update(steps=6, batch_size=8, warmup_steps=2, max_length=512)
    tasks = root / "code_tasks_6.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    tasks.write_text("".join((src / "code_tasks.jsonl").read_text().splitlines(True)[:6]))
    p["data"].update(sources=[f"{src}/identity.jsonl#12", f"{src}/general_en.jsonl#4",
                              f"{src}/general_zh.jsonl#4", f"{tasks}"],
                     preference_source=str(tasks))
    p["sft"]["phases"]["main"]["epochs"] = 1
    p["sft"].update(batch_size=8, per_device_batch_size=8)
    p["dpo"].update(epochs=1, batch_size=6)
    p["eval"].update(limit=3, max_new_tokens=24, batch_size=8)
    return p


def stage_cfg(model, params: dict):
    """The stage's part of the whole `params`, validated, as `stages.config.load` reads it."""
    from stages.config import stage_params, validate

    return validate(model, stage_params(model, params))


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """Run base, curate, sft and dpo once; return (root, params)."""
    from stages import base, curate, dpo, sft
    from stages.config import BaseStage, CurateStage, DpoStage, SftStage

    root = tmp_path_factory.mktemp("pipeline")
    params = tiny_params(root)
    base.main(stage_cfg(BaseStage, params))
    curate.main(stage_cfg(CurateStage, params))
    sft.main(stage_cfg(SftStage, params))
    dpo.main(stage_cfg(DpoStage, params))
    return root, params


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def workspace(pipeline, tmp_path: Path, **sft) -> dict:
    """The pipeline's params with outputs in tmp_path, the pipeline's base model linked in."""
    root, params = pipeline
    params = copy.deepcopy(params)
    models = tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    if not (models / "base").exists():
        (models / "base").symlink_to(root / "models" / "base")
    params["paths"].update(models=str(models), metrics=str(tmp_path / "metrics"),
                           checkpoints=str(tmp_path / "checkpoints"))
    params["sft"].update(sft)
    return params


def adapter(path: Path) -> dict:
    """An adapter directory's weights by name."""
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def write_prefs(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
