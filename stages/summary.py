"""summary: every variant against base, metric by metric and probe by probe.

Reads   params seed, eval.suites, eval.budget, eval.bootstrap_resamples, paths;
        metrics/eval/<variant>/<suite>.json and metrics/tasks/<variant>/<suite>.jsonl
Writes  metrics/summary.json, metrics/capability/<variant>.json (each judged score of one
        variant, for `dvc plots show` / `dvc plots diff` as horizontal bars)
Run     dvc repro summary   (or: python -m stages.summary)

For every suite metric: each variant's value and its delta against base. For the metric
each suite is judged by (code pass@1, identity consistency, knowledge accuracy, perplexity
loss per domain), the probes are paired with base: a bootstrap 95% CI of the delta, an exact
McNemar p-value for pass/fail suites, and a verdict against eval.budget:
improved, regressed, within-noise or over-budget.

    {"code": {"pass@1": {"base": 0.9, "sft": 0.85, "sft_delta": -0.05,
                         "sft_ci95_low": -0.15, "sft_ci95_high": 0.0, "sft_p": 0.5,
                         "sft_verdict": "over-budget", ...}}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from stages.config import SummaryStage, Variant, load, run_stage
from stages.io import read_jsonl, write_json
from stages.stats import mcnemar_exact, paired_delta, verdict

VARIANTS = get_args(Variant)  # ("base", "sft", "dpo"); base first: deltas are against it
# suite -> (metric judged, per-task field, higher is better)
JUDGED = {"code": ("pass@1", "passed", True), "identity": ("consistency", "passed", True),
          "knowledge": ("accuracy", "passed", True), "humaneval+": ("pass@1", "passed", True),
          "mbpp+": ("pass@1", "passed", True), "dimensions": ("score", "passed", True)}
NOT_COMPARED = {"passed", "tasks"}
ERROR_TYPE_SHARE = "fail_runtime_error:"


def main(cfg: SummaryStage | None = None) -> dict:
    cfg = cfg or load(SummaryStage)
    results = {v: {s: read_suite(cfg, v, s) for s in cfg.eval.suites} for v in VARIANTS}
    summary = {}
    for suite in cfg.eval.suites:
        summary[suite] = compare({v: results[v][suite][0] for v in VARIANTS})
        for metric, outcomes in paired_outcomes(suite, {v: results[v][suite][1]
                                                        for v in VARIANTS}).items():
            higher_is_better = JUDGED[suite][2] if suite in JUDGED else False
            row = summary[suite][metric]
            for variant in VARIANTS[1:]:
                row.update(judge(variant, outcomes["base"], outcomes[variant],
                                 cfg.eval.budget.get(suite), higher_is_better,
                                 cfg.eval.bootstrap_resamples, cfg.seed))
    write_json(Path(cfg.paths.metrics) / "summary.json", summary)
    for variant in VARIANTS:
        write_json(Path(cfg.paths.metrics) / "capability" / f"{variant}.json",
                   capability_bars(summary, variant))
    for suite, metrics in summary.items():
        for name, row in metrics.items():
            print(f"{suite:>10} {name:<16} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return summary


def capability_bars(summary: dict, variant: str) -> list[dict]:
    """One bar per judged score (all in [0, 1], higher is better) of `variant`."""
    return [{"metric": f"{suite} {JUDGED[suite][0]}",
             "value": summary[suite][JUDGED[suite][0]][variant]}
            for suite in summary if suite in JUDGED]


def read_suite(cfg: SummaryStage, variant: str, suite: str) -> tuple[dict, list[dict]]:
    path, tasks = cfg.paths.eval_file(variant, suite), cfg.paths.tasks_file(variant, suite)
    if not path.exists() or not tasks.exists():
        raise FileNotFoundError(f"{path} or its tasks file is missing; run `dvc repro eval` first")
    return json.loads(path.read_text(encoding="utf-8"))[suite], read_jsonl(tasks)


def compare(by_variant: dict[str, dict]) -> dict:
    """{metric: {base: b, sft: s, dpo: d, sft_delta: s - b, dpo_delta: d - b}} for every
    numeric metric of the suite; counts (passed, tasks) are left out. eval writes a share
    per runtime error type (fail_runtime_error:<Type>) only for the types that occurred, so
    one that any variant has is compared, as 0 where a variant has none."""
    names = list(by_variant["base"])
    names += sorted({m for v in VARIANTS[1:] for m in by_variant[v]
                     if m.startswith(ERROR_TYPE_SHARE)} - set(names))
    out = {}
    for metric in names:
        if metric in NOT_COMPARED or not isinstance(by_variant["base"].get(metric, 0.0),
                                                    (int, float)):
            continue
        row = {v: by_variant[v].get(metric, 0.0) if metric.startswith(ERROR_TYPE_SHARE)
               else by_variant[v][metric] for v in VARIANTS}
        for v in VARIANTS[1:]:
            row[f"{v}_delta"] = round(row[v] - row["base"], 4)
        out[metric] = row
    return out


def paired_outcomes(suite: str, tasks: dict[str, list[dict]]) -> dict[str, dict[str, list]]:
    """{judged metric: {variant: per-probe outcomes in base's probe order}}."""
    if suite in JUDGED:
        metric, field, _ = JUDGED[suite]
        keyed = {v: {probe_key(t): t[field] for t in rows} for v, rows in tasks.items()}
        order = list(keyed["base"])
        for v in VARIANTS[1:]:
            if set(keyed[v]) != set(order):
                raise ValueError(f"{suite}: {v} was scored on other probes than base; rerun eval")
        return {metric: {v: [keyed[v][k] for k in order] for v in VARIANTS}}
    out = {}
    domains = sorted({t["domain"] for t in tasks["base"]})
    for domain in domains:
        keyed = {v: {probe_key(t): t["loss"] for t in rows if t["domain"] == domain}
                 for v, rows in tasks.items()}
        order = list(keyed["base"])
        out[f"{domain}_loss"] = {v: [keyed[v][k] for k in order] for v in VARIANTS}
    return out


def probe_key(task: dict) -> str:
    return str(task.get("task_id") or task.get("query") or task.get("question"))


def judge(variant: str, base: list, other: list, budget: float | None, higher_is_better: bool,
          resamples: int, seed: int) -> dict:
    delta, low, high = paired_delta([float(x) for x in base], [float(x) for x in other],
                                    resamples, seed)
    row = {f"{variant}_ci95_low": round(low, 4), f"{variant}_ci95_high": round(high, 4)}
    if all(isinstance(x, bool) for x in base + other):
        row[f"{variant}_p"] = round(mcnemar_exact(base, other), 4)
    row[f"{variant}_verdict"] = verdict(delta, low, high, budget, higher_is_better)
    return row


if __name__ == "__main__":
    run_stage(main)
