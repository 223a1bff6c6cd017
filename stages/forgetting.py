"""The forgetting score: how much general ability a variant kept, as one number with a paired
95% CI (Biderman et al. 2024, "LoRA Learns Less and Forgets Less": the mean of HellaSwag,
ARC-Challenge and WinoGrande, next to the target skill).

    score = mean over the retention suites s of  mean over s's probes of (variant - base)

Each suite weighs the same whatever its size (the paper averages benchmark scores). The CI
is a stratified paired bootstrap: in each resample every suite's probes are redrawn with
replacement within that suite, each probe keeping its (base, variant) pair, and the
resampled suite means are averaged; the CI is the 2.5th and 97.5th percentile of those
averages. (summary pairs one pass/fail suite with Tango's score interval, stats.paired_pass; for a
mean over suites of different sizes there is no such closed form, hence the bootstrap.)

Summary calls it per variant with the judged per-probe outcomes of eval.retention's suites
(those that ran), paired by id as for every other suite:

    retention(cfg.eval.retention, {suite: {"base": [...], "sft": [...]}}, "sft",
              cfg.eval.bootstrap_resamples, cfg.seed)
"""

from __future__ import annotations

import numpy as np

from stages.io import DataError

CHUNK = 256  # resamples drawn at once: 256 x the largest suite's probes of indices in memory


def retention_delta(base: dict[str, list[float]], variant: dict[str, list[float]],
                    resamples: int, seed: int) -> tuple[float, float, float]:
    """(mean of the per-suite mean deltas, CI low, CI high) over the suites in `base`.
    Suite A with every pair at -0.1 and suite B with every pair at -0.3 give (-0.2, -0.2,
    -0.2): each resample of a constant suite has the same mean."""
    if not base:
        raise DataError("no retention suite to average; run at least one of eval.retention")
    if set(base) != set(variant):
        raise ValueError(f"retention suites differ: base {sorted(base)}, variant {sorted(variant)}")
    diffs = {}
    for suite in sorted(base):
        if len(base[suite]) != len(variant[suite]) or not base[suite]:
            raise ValueError(f"{suite}: unpaired outcomes ({len(base[suite])} base vs "
                             f"{len(variant[suite])} variant probes)")
        diffs[suite] = (np.asarray(variant[suite], dtype=float)
                        - np.asarray(base[suite], dtype=float))
    delta = float(np.mean([d.mean() for d in diffs.values()]))
    rng = np.random.default_rng(seed)
    totals = np.zeros(resamples)
    for d in diffs.values():
        for start in range(0, resamples, CHUNK):
            n = min(CHUNK, resamples - start)
            totals[start:start + n] += d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    means = totals / len(diffs)
    low, high = np.percentile(means, [2.5, 97.5])
    return delta, float(low), float(high)


def retention(suites: list[str], outcomes: dict[str, dict[str, list[float]]], variant: str,
              resamples: int, seed: int) -> dict:
    """The forgetting score of `variant` against base over the configured retention suites
    that ran (`outcomes`: {suite: {variant name: per-probe judged outcomes in base's probe
    order}}): {"suites": [...], "base": mean score, <variant>: mean score, "<variant>_delta",
    "<variant>_ci95_low", "<variant>_ci95_high", "<variant>_ci_method"}; {} when none of them
    ran."""
    ran = [s for s in suites if s in outcomes]
    if not ran:
        return {}
    base = {s: [float(x) for x in outcomes[s]["base"]] for s in ran}
    other = {s: [float(x) for x in outcomes[s][variant]] for s in ran}
    delta, low, high = retention_delta(base, other, resamples, seed)
    return {"suites": ran,
            "base": round(float(np.mean([np.mean(v) for v in base.values()])), 4),
            variant: round(float(np.mean([np.mean(v) for v in other.values()])), 4),
            f"{variant}_delta": round(delta, 4), f"{variant}_ci95_low": round(low, 4),
            f"{variant}_ci95_high": round(high, 4),
            f"{variant}_ci_method": "stratified-percentile-bootstrap"}
