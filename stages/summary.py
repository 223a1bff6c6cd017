"""summary: every variant's value of every suite metric, and its delta against base.

Reads   params eval, paths; metrics/eval/<variant>/<suite>.json
Writes  metrics/summary.json  {suite: {metric: {base, sft, dpo, sft_delta, dpo_delta}}}
Run     dvc repro summary   (or: python -m stages.summary)
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.config import SummaryStage, load, run_stage
from stages.eval import VARIANTS
from stages.io import write_json


def main(cfg: SummaryStage | None = None) -> dict:
    cfg = cfg or load(SummaryStage)
    results = {v: {s: read_suite(cfg, v, s) for s in cfg.eval.suites} for v in VARIANTS}
    summary = {suite: compare({v: results[v][suite] for v in VARIANTS})
               for suite in cfg.eval.suites}
    write_json(Path(cfg.paths.metrics) / "summary.json", summary)
    for suite, metrics in summary.items():
        for name, row in metrics.items():
            print(f"{suite:>10} {name:<16} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return summary


def read_suite(cfg: SummaryStage, variant: str, suite: str) -> dict:
    path = Path(cfg.paths.metrics) / "eval" / variant / f"{suite}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing; run `dvc repro eval` first")
    return json.loads(path.read_text(encoding="utf-8"))[suite]


def compare(by_variant: dict[str, dict]) -> dict:
    """{metric: {base: b, sft: s, dpo: d, sft_delta: s - b, dpo_delta: d - b}} for every
    numeric metric of the suite; counts (passed, tasks) are left out."""
    out = {}
    for metric, base_value in by_variant["base"].items():
        if metric in ("passed", "tasks") or not isinstance(base_value, (int, float)):
            continue
        row = {v: by_variant[v][metric] for v in VARIANTS}
        for v in VARIANTS[1:]:
            row[f"{v}_delta"] = round(row[v] - base_value, 4)
        out[metric] = row
    return out


if __name__ == "__main__":
    run_stage(main)
