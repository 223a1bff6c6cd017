"""The forgetting score: how much general ability a variant kept, as one number with a paired
95% CI (Biderman et al. 2024, "LoRA Learns Less and Forgets Less": the mean of HellaSwag,
ARC-Challenge and WinoGrande, next to the target skill).

    score = mean over the retention suites s of  mean over s's probes of (variant - base)

Each suite weighs the same whatever its size (the paper averages benchmark scores), so a
probe of suite s carries the weight w_s = 1 / (S n_s) in the score. The CI is the one method
the summary uses for every bounded outcome, Tango's score interval on fractional discordant
pairs (stats.paired_bounded): the pooled probes' differences, each times w_s / max w (so that
they stay in [-1, 1]), and the interval scaled back by max w times the probes pooled. With
suites of one size the factors are 1 and it is the interval of the pooled differences.
Pooling never understates the variance of the stratified mean (the spread between suites
adds to it), so the coverage stays at least nominal; tests/test_forgetting.py simulates it.

Summary calls it per variant with the judged per-probe outcomes (1/0 or a grade in [0, 1])
of eval.retention's suites that ran, paired by id as for every other suite:

    retention(cfg.eval.retention, {suite: {"base": [...], "sft": [...]}}, "sft")
"""

from __future__ import annotations

import numpy as np

from stages.core.io import DataError
from stages.stats.paired import Paired, paired_bounded

CI_METHOD = "tango-score-bounded"


def retention_delta(base: dict[str, list[float]], variant: dict[str, list[float]]) -> Paired:
    """The forgetting score over the suites in `base` with its 95% CI and score-test p.
    Suite A (2 probes, both -1) and suite B (4 probes, all 0): score (-1 + 0) / 2 = -0.5;
    A's weights are 1 / 4 = max w, B's 1 / 8, so the scaled differences are (-1, -1, 0, 0, 0,
    0), whose interval times max w * 6 = 1.5 is the score's."""
    if not base:
        raise DataError("no retention suite to average; run at least one of eval.retention")
    if set(base) != set(variant):
        raise ValueError(f"retention suites differ: base {sorted(base)}, variant {sorted(variant)}")
    diffs, weights = [], []
    for suite in sorted(base):
        if len(base[suite]) != len(variant[suite]) or not base[suite]:
            raise ValueError(f"{suite}: unpaired outcomes ({len(base[suite])} base vs "
                             f"{len(variant[suite])} variant probes)")
        d = np.asarray(variant[suite], dtype=float) - np.asarray(base[suite], dtype=float)
        diffs.append(d)
        weights.append(np.full(len(d), 1 / (len(base) * len(d))))
    d, w = np.concatenate(diffs), np.concatenate(weights)
    scale = float(w.max() * len(d))
    pooled = paired_bounded(d * w / w.max())
    return Paired(float(np.sum(w * d)), pooled.low * scale, pooled.high * scale, pooled.n,
                  pooled.p, pooled.mdd * scale, pooled.discordant)


def retention(suites: list[str], outcomes: dict[str, dict[str, list[float]]],
              variant: str) -> dict:
    """The forgetting score of `variant` against base over the configured retention suites
    that ran (`outcomes`: {suite: {variant name: per-probe judged outcomes in base's probe
    order}}): {"suites": [...], "base": mean score, <variant>: mean score, "<variant>_delta",
    "<variant>_ci95_low", "<variant>_ci95_high", "<variant>_p", "<variant>_ci_method"}; {}
    when none of them ran."""
    ran = [s for s in suites if s in outcomes]
    if not ran:
        return {}
    base = {s: [float(x) for x in outcomes[s]["base"]] for s in ran}
    other = {s: [float(x) for x in outcomes[s][variant]] for s in ran}
    stat = retention_delta(base, other)
    return {"suites": ran,
            "base": round(float(np.mean([np.mean(v) for v in base.values()])), 4),
            variant: round(float(np.mean([np.mean(v) for v in other.values()])), 4),
            f"{variant}_delta": round(stat.delta, 4), f"{variant}_ci95_low": round(stat.low, 4),
            f"{variant}_ci95_high": round(stat.high, 4), f"{variant}_p": float(f"{stat.p:.4g}"),
            f"{variant}_ci_method": CI_METHOD}
