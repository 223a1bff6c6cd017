"""Paired statistics for "is this delta real?": every variant is scored on the same probes as
base, so each probe gives one (base, variant) pair.

  paired_delta   mean of variant - base, with a percentile bootstrap 95% CI over probes
  mcnemar_exact  exact two-sided McNemar p-value for pass/fail outcomes
  verdict        improved / regressed / within-noise / over-budget
  pass_at_k      the unbiased pass@k estimator (evalplus's)
"""

from __future__ import annotations

import numpy as np

# scipy.stats is imported where it is used: it takes seconds to import, and the eval stages
# and stages.score need only pass_at_k from here.


def paired_delta(base: list[float], variant: list[float], resamples: int,
                 seed: int) -> tuple[float, float, float]:
    """(mean delta, CI low, CI high). Probes are resampled with replacement, keeping each
    probe's pair together; the CI is the 2.5th and 97.5th percentile of the resampled means.
    With every pair differing by the same d, the CI collapses to [d, d]."""
    if len(base) != len(variant):
        raise ValueError(f"unpaired outcomes: {len(base)} base vs {len(variant)} variant probes")
    diffs = np.asarray(variant, dtype=float) - np.asarray(base, dtype=float)
    delta = float(diffs.mean())
    if len(diffs) < 2 or np.all(diffs == diffs[0]):
        return delta, delta, delta
    from scipy import stats

    result = stats.bootstrap((diffs,), np.mean, n_resamples=resamples, confidence_level=0.95,
                             method="percentile", random_state=np.random.default_rng(seed))
    return delta, float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_exact(base: list[bool], variant: list[bool]) -> float:
    """Two-sided exact McNemar test: only the discordant probes count. With b probes that
    base passed and the variant failed, and c the other way, p = P(Binom(b + c, 1/2) is at
    least as far from (b + c) / 2 as b). b=1, c=9: p = 2 * (1 + 10) / 2**10 = 0.0215."""
    b = sum(1 for x, y in zip(base, variant, strict=True) if x and not y)
    c = sum(1 for x, y in zip(base, variant, strict=True) if y and not x)
    if b + c == 0:
        return 1.0
    from scipy import stats

    return float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def verdict(delta: float, low: float, high: float, budget: float | None,
            higher_is_better: bool = True) -> str:
    """over-budget: the drop is larger than the budget allows (whatever the noise);
    improved / regressed: the whole 95% CI is above / below zero; else within-noise."""
    if not higher_is_better:
        delta, low, high = -delta, -high, -low
    if budget is not None and delta < -budget - 1e-12:
        return "over-budget"
    if low > 0:
        return "improved"
    if high < 0:
        return "regressed"
    return "within-noise"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass (Chen et al. 2021), as evalplus computes
    it: 1 - C(n - c, k) / C(n, k). n=5, c=2, k=1 -> 0.4; n=5, c=2, k=2 -> 1 - 3/10 = 0.7."""
    from evalplus.eval import estimate_pass_at_k

    return float(estimate_pass_at_k([n], [c], k)[0])
