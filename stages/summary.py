"""summary: every variant against base, metric by metric and probe by probe.

Reads   params seed, variants (base, sft, dpo, and grpo with -S rl=grpo), eval.suites, eval.budget, eval.bootstrap_resamples, paths;
        metrics/eval/<variant>/<suite>.json and metrics/tasks/<variant>/<suite>.jsonl;
        data/reviews/<suite>-<a>-vs-<b>.jsonl (blind A/B judgments, stages/tools/review.py; may be none)
Writes  metrics/summary.json (capability only: no timings), metrics/capability/<variant>.json
        (each judged score of one variant, for `dvc plots show` / `dvc plots diff` as
        horizontal bars)
Run     dvc repro summary   (or: python -m stages.summary)

For every suite metric: each variant's value and its delta against base. For each judged
metric (the rows' `metric`), the probes are paired with base by id and judged the same way
whatever the suite: pass/fail outcomes get Tango's score CI and McNemar score p, grades the
same score interval on fractional discordant pairs, losses a token-weighted paired BCa
bootstrap (stages/stats/paired.py); then a verdict
against eval.budget: over-budget, inconclusive, improved, regressed or within-noise.
Each review file gives summary["review"][suite]["<a>_vs_<b>"]: b's win rate over a among
non-ties with its Clopper-Pearson CI, the sign-test p, and Cohen's kappa against the suite's
automatic judge (stages/stats/reviews.py).

    {"code": {"pass@1": {"base": 0.9, "sft": 0.85, "sft_delta": -0.05, "sft_n": 20,
                         "sft_ci95_low": -0.15, "sft_ci95_high": 0.0,
                         "sft_ci_method": "tango-score", "sft_p": 0.5,
                         "sft_mdd": 0.3, "sft_verdict": "inconclusive",
                         "sft_probes_needed": 300, ...}}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from stages.config import VARIANTS, Suite, SummaryStage, load, run_stage
from stages.core.io import DataError, MissingInput, read_jsonl, write_json
from stages.stats import diversity, similarity
from stages.stats.forgetting import retention
from stages.stats.paired import (
    Paired,
    paired_graded,
    paired_pass,
    paired_weighted,
    probes_needed,
    verdict,
)
from stages.stats.reviews import REVIEWS_DIR, review_summary

NOT_COMPARED = {"passed", "tasks"}
ERROR_TYPE_SHARE = "fail_runtime_error:"
LEARNED_FORGOT = "learned_forgot"  # entries of summary.json that are not suites
REVIEW = "review"


def main(cfg: SummaryStage | None = None) -> dict:
    cfg = cfg or load(SummaryStage)
    summary, scores, tasks = {}, {}, {}
    variants = cfg.variants  # base first, then each trained one the config trains
    for suite in cfg.eval.suites:
        results = {v: read_suite(cfg, v, suite) for v in variants}
        tasks[suite] = {v: results[v][1] for v in variants}
        summary[suite] = compare({v: results[v][0] for v in variants})
        for metric, by_variant in pair_rows(suite, {v: results[v][1] for v in variants}).items():
            row = summary[suite].setdefault(metric, {})
            for variant in variants[1:]:
                row.update(judge(variant, by_variant["base"], by_variant[variant],
                                 cfg.eval.budget.get(suite), cfg))
            if "diversity" in by_variant["base"][0]:
                pair_measures(summary[suite], by_variant, "diversity", diversity.MEASURES)
            if any("similarity" in r for r in by_variant["base"]):
                pair_measures(summary[suite], by_variant, "similarity", similarity.MEASURES)
            if "nats" not in by_variant["base"][0]:  # a loss is not on a score's scale
                scores.setdefault(suite, {v: [outcome(r) for r in rows]
                                          for v, rows in by_variant.items()})
    summary[LEARNED_FORGOT] = learned_forgot(cfg, summary, scores)
    reviews = review_summary(Path(REVIEWS_DIR), tasks, get_args(Suite), tuple(variants),
                             cfg.eval.bootstrap_resamples, cfg.seed)
    if reviews:
        summary[REVIEW] = reviews
    write_json(Path(cfg.paths.metrics) / "summary.json", summary)
    for variant in variants:
        write_json(Path(cfg.paths.metrics) / "capability" / f"{variant}.json",
                   capability_bars(summary, variant))
    for suite, metrics in summary.items():
        for name, row in metrics.items():
            if judged(row) or suite == LEARNED_FORGOT:
                print(f"{suite:>10} {name:<16} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    for suite, pairs in summary.get(REVIEW, {}).items():
        for pair, row in pairs.items():
            print(f"{REVIEW:>10} {suite} {pair} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return summary


def learned_forgot(cfg: SummaryStage, summary: dict, scores: dict) -> dict:
    """What the fine-tune taught and what it cost, one row each. learned: eval.target's
    judged metric, as its suite's row has it; forgot: the forgetting score, the mean paired
    change over the eval.retention suites that ran, each suite weighing the same, with the
    bounded score interval of every graded suite (stages/stats/forgetting.py)."""
    out = {}
    target = summary.get(cfg.eval.target, {})
    metric = next((m for m, row in target.items() if judged(row)), None)
    if metric is not None:
        row = target[metric]
        out["learned"] = {"suite": cfg.eval.target, "metric": metric, "base": row["base"],
                          **{k: row[k] for v in cfg.variants[1:]
                             for k in (v, f"{v}_delta", f"{v}_ci95_low", f"{v}_ci95_high",
                                       f"{v}_ci_method")}}
    forgot: dict = {}
    for variant in cfg.variants[1:]:
        forgot.update(retention(cfg.eval.retention, scores, variant))
    if forgot:
        out["forgot"] = forgot
    return out


def pair_measures(rows: dict, by_variant: dict[str, list[dict]], field: str,
                  measures: tuple[str, ...]) -> None:
    """Each measure a row carries under `field` (diversity of sampled suites,
    stages/stats/diversity.py; similarity to the reference code, stages/stats/similarity.py), paired by
    probe like a grade over the probes that have it: its CI, score-test p and method beside
    the means compare() wrote. No verdict: no budget says how much less varied, or less like
    the references, a variant may be."""
    have = [i for i, r in enumerate(by_variant["base"]) if field in r]
    for measure in measures:
        row = rows.setdefault(measure, {})
        base = [by_variant["base"][i][field][measure] for i in have]
        for v in list(by_variant)[1:]:
            stat = paired_graded(base, [by_variant[v][i][field][measure] for i in have])
            row.update({f"{v}_n": stat.n, f"{v}_ci95_low": round(stat.low, 4),
                        f"{v}_ci95_high": round(stat.high, 4), f"{v}_p": float(f"{stat.p:.4g}"),
                        f"{v}_ci_method": "tango-score-bounded"})


def outcome(row: dict) -> float:
    """A probe's judged outcome as a number: a grade, or 1/0 for a pass/fail."""
    return float(row["score"] if "score" in row else row["passed"])


def capability_bars(summary: dict, variant: str) -> list[dict]:
    """One bar per judged score in [0, 1] of `variant` (losses are not on that scale)."""
    return [{"metric": f"{suite} {metric}", "value": row[variant]}
            for suite, metrics in summary.items() for metric, row in metrics.items()
            if judged(row) and not metric.endswith("_loss")]


def judged(row: dict) -> bool:
    return f"{VARIANTS[1]}_verdict" in row


def read_suite(cfg: SummaryStage, variant: str, suite: str) -> tuple[dict, list[dict]]:
    path, tasks = cfg.paths.eval_file(variant, suite), cfg.paths.tasks_file(variant, suite)
    if not path.exists() or not tasks.exists():
        raise MissingInput(f"{path} or its tasks file is missing; run `dvc repro eval` first")
    return json.loads(path.read_text(encoding="utf-8"))[suite], read_jsonl(tasks)


def compare(by_variant: dict[str, dict]) -> dict:
    """{metric: {base: b, sft: s, dpo: d, sft_delta: s - b, dpo_delta: d - b}} for every
    numeric metric of the suite; counts (passed, tasks) are left out. eval writes a share
    per runtime error type (fail_runtime_error:<Type>) only for the types that occurred, so
    one that any variant has is compared, as 0 where a variant has none."""
    variants = list(by_variant)  # base first
    names = list(by_variant["base"])
    names += sorted({m for v in variants[1:] for m in by_variant[v]
                     if m.startswith(ERROR_TYPE_SHARE)} - set(names))
    out = {}
    for metric in names:
        if metric in NOT_COMPARED or not isinstance(by_variant["base"].get(metric, 0.0),
                                                    (int, float)):
            continue
        row = {v: by_variant[v].get(metric, 0.0) if metric.startswith(ERROR_TYPE_SHARE)
               else by_variant[v][metric] for v in variants}
        for v in variants[1:]:
            row[f"{v}_delta"] = round(row[v] - row["base"], 4)
        out[metric] = row
    return out


def pair_rows(suite: str, tasks: dict[str, list[dict]]) -> dict[str, dict[str, list[dict]]]:
    """{judged metric: {variant: its rows in base's id order}}: every variant must have been
    scored on exactly base's probes."""
    out: dict[str, dict[str, list[dict]]] = {}
    for metric in dict.fromkeys(r["metric"] for r in tasks["base"]):
        keyed = {}
        for v, rows in tasks.items():
            keyed[v] = {}
            for r in rows:
                if r["metric"] == metric:
                    if r["id"] in keyed[v]:
                        raise DataError(f"{suite}: {v} has probe id {r['id']!r} twice; rerun eval")
                    keyed[v][r["id"]] = r
        order = list(keyed["base"])
        for v in list(tasks)[1:]:
            if set(keyed[v]) != set(order):
                missing = sorted(set(order) - set(keyed[v]))[:3]
                extra = sorted(set(keyed[v]) - set(order))[:3]
                raise DataError(f"{suite} {metric}: {v} was scored on other probes than base "
                                 f"(missing {missing}, extra {extra}); rerun eval")
        out[metric] = {v: [keyed[v][k] for k in order] for v in tasks}
    return out


def paired(base: list[dict], other: list[dict], cfg: SummaryStage) -> tuple[Paired, bool, str]:
    """The paired statistic that fits the rows' outcome, whether higher is better, and the
    CI method's name (summary's `<variant>_ci_method`)."""
    if "nats" in base[0]:
        return paired_weighted([r["nats"] for r in base], [r["nats"] for r in other],
                               [r["tokens"] for r in base], cfg.eval.bootstrap_resamples,
                               cfg.seed), False, "paired-bca-bootstrap"
    field = "score" if "score" in base[0] else "passed"
    values = [r[field] for r in base + other]
    if all(x in (0, 1) for x in values):  # bools, or grades that are all 0 or 1
        return paired_pass([bool(r[field]) for r in base], [bool(r[field]) for r in other]), \
            True, "tango-score"
    return paired_graded([float(r[field]) for r in base],
                         [float(r[field]) for r in other]), True, "tango-score-bounded"


def judge(variant: str, base: list[dict], other: list[dict], budget: float | None,
          cfg: SummaryStage) -> dict:
    stat, higher_is_better, method = paired(base, other, cfg)
    row = {f"{variant}_n": stat.n, f"{variant}_ci95_low": round(stat.low, 4),
           f"{variant}_ci95_high": round(stat.high, 4), f"{variant}_ci_method": method}
    if stat.p is not None:  # 4 significant figures: a p of 6e-08 is not 0
        row[f"{variant}_p"] = float(f"{stat.p:.4g}")
    if stat.mdd is not None:
        row[f"{variant}_mdd"] = round(stat.mdd, 4)
    row[f"{variant}_verdict"] = verdict(stat.low, stat.high, budget, higher_is_better)
    if row[f"{variant}_verdict"] == "inconclusive":
        row[f"{variant}_probes_needed"] = probes_needed(stat, budget, higher_is_better)
    return row


if __name__ == "__main__":
    run_stage(main)
