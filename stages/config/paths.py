"""Where every artifact and user file lies (params.yaml's `paths`, the tracked folders)."""

from __future__ import annotations

from pathlib import Path

from stages.config.base import Strict

PARAMS_FILE = Path("params.yaml")
# Folders for users' own files, declared as DVC deps of the stages that read them (dvc.yaml),
# so that editing a file there reruns those stages; a local file elsewhere is refused.
EXTERNAL_DIR = "data/external"
BENCHMARKS_DIR = "data/benchmarks"
# blind A/B judgments (stages/tools/review.py writes them, summary reads them); git-tracked
REVIEWS_DIR = "data/reviews"


class PathsConfig(Strict):
    """Fixed locations of every artifact; `dvc.yaml` reads the same values through `${paths.*}`."""

    sources: str
    """Built-in data written by the project (identity, general QA, code tasks, probes/)."""
    models: str
    """Model directories, one per variant: <models>/base, <models>/sft, <models>/dpo."""
    curated: str
    metrics: str
    checkpoints: str
    """Resumable training checkpoints, outside DVC's outputs (deleted when a run finishes)."""

    def model_dir(self, variant: str) -> Path:
        return Path(self.models) / variant

    def eval_file(self, variant: str, suite: str) -> Path:
        """One variant's metrics on one suite (committed; dvc.yaml: the eval stage's metrics)."""
        return Path(self.metrics) / "eval" / variant / f"{suite}.json"

    def tasks_file(self, variant: str, suite: str) -> Path:
        """Its per-probe replies and outcomes (DVC-cached). Kept out of metrics/eval/: a clone
        has the committed metrics but not the cached files, and a directory dep holding both
        would hash differently there, making summary look stale."""
        return Path(self.metrics) / "tasks" / variant / f"{suite}.jsonl"

    def cost_file(self, variant: str, suite: str) -> Path:
        """What scoring it cost (timings; committed), apart from the capability metrics and
        outside summary's deps: timings change on every machine and summary never reads them."""
        return Path(self.metrics) / "cost" / variant / f"{suite}.json"
