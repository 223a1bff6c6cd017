"""Paired statistics for "is this delta real, and is it within the budget?". Every variant is
scored on the same probes as base, so each probe gives one (base, variant) pair.

  paired_pass      pass/fail outcomes: delta, an exact 95% CI from the discordant pairs and
                   the exact McNemar p-value; the CI excludes 0 exactly when p < 0.05
  paired_graded    scores in [0, 1]: delta with a paired t-interval
  paired_weighted  per-token losses: the token-weighted delta with a paired bootstrap interval
  verdict          non-inferiority against the budget: over-budget / inconclusive / improved /
                   regressed / within-noise
  pass_at_k        the unbiased pass@k estimator (evalplus's)

Each `paired_*` returns a `Paired`: the delta, its 95% CI, the probes paired, the p-value
where there is an exact test, and the smallest drop the probes could tell from zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# scipy.stats is imported where it is used: it takes seconds to import, and the eval stages
# and stages.score need only pass_at_k from here.

ALPHA = 0.05


@dataclass(frozen=True)
class Paired:
    delta: float
    low: float
    high: float
    n: int
    """Probes paired."""
    p: float | None
    """Exact McNemar p-value (pass/fail outcomes only)."""
    mdd: float | None
    """Minimum detectable drop: the smallest drop that could reach significance with these n
    probes (pass/fail: every discordant pair against the variant; others: the CI's
    half-width). None when it cannot be estimated (fewer than 2 probes)."""


def paired_pass(base: list[bool], variant: list[bool]) -> Paired:
    """Pass/fail outcomes. With n probes, b passed by base only and c by the variant only, the
    delta is (c - b) / n. Conditioned on the m = b + c discordant pairs, c ~ Binom(m, θ) and
    delta = (m / n)(2θ - 1), so the exact (Clopper-Pearson) interval for θ maps onto an
    interval for the delta. Under θ = 1/2 the binomial is symmetric, so the CI excludes 0
    exactly when the two-sided exact McNemar test has p < 0.05.

    Hand-worked: n = 50, b = 4, c = 0: delta -0.08; θ in [0, 1 - 0.025^(1/4)] = [0, 0.6024],
    so the CI is [0.08 (0 - 1), 0.08 (2 (0.6024) - 1)] = [-0.08, 0.0164]; p = 2 / 2^4 =
    0.125. n = 10, all discordant for the variant: θ in [0.025^(1/10), 1] = [0.6915, 1], CI
    [0.383, 1.0], p = 2 / 2^10 = 0.00195. No discordant pair: delta 0, CI [0, 0], p 1.
    """
    from scipy import stats

    _same_length(base, variant)
    n = len(base)
    b = sum(1 for x, y in zip(base, variant, strict=True) if x and not y)
    c = sum(1 for x, y in zip(base, variant, strict=True) if y and not x)
    m = b + c
    mdd = min_discordant_all_one_way() / n if n else None
    if m == 0:
        return Paired(0.0, 0.0, 0.0, n, 1.0, mdd)
    ci = stats.binomtest(c, m, 0.5).proportion_ci(confidence_level=1 - ALPHA,
                                                  method="exact")
    scale = m / n
    return Paired((c - b) / n, scale * (2 * ci.low - 1), scale * (2 * ci.high - 1), n,
                  mcnemar_exact(base, variant), mdd)


def mcnemar_exact(base: list[bool], variant: list[bool]) -> float:
    """Two-sided exact McNemar test: only the discordant probes count. With b probes that
    base passed and the variant failed, and c the other way, p = P(Binom(b + c, 1/2) is at
    least as far from (b + c) / 2 as b). b=1, c=9: p = 2 * (1 + 10) / 2**10 = 0.0215."""
    from scipy import stats

    b = sum(1 for x, y in zip(base, variant, strict=True) if x and not y)
    c = sum(1 for x, y in zip(base, variant, strict=True) if y and not x)
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def min_discordant_all_one_way() -> int:
    """Fewest discordant pairs, all one way, that the exact McNemar test calls significant:
    k = 5 gives p = 2 / 32 = 0.0625, k = 6 gives 2 / 64 = 0.03125, so 6. A drop smaller than
    6 / n probes can never be told from noise."""
    k = 1
    while 2 * 0.5 ** k >= ALPHA:
        k += 1
    return k


def paired_graded(base: list[float], variant: list[float]) -> Paired:
    """Scores in [0, 1] (a judge's grade, or c/n passes when sampling): the mean paired
    difference with a paired t-interval, mean(d) +- t(0.975, n-1) sd(d) / sqrt(n).
    d = [0.5, 0.5, 0.0, 0.0]: mean 0.25, sd 0.2887, t(0.975, 3) = 3.182, half-width 0.4593.
    Every pair differing by the same d: the interval is [d, d]."""
    from scipy import stats

    _same_length(base, variant)
    d = np.asarray(variant, dtype=float) - np.asarray(base, dtype=float)
    n = len(d)
    delta = float(d.mean()) if n else 0.0
    if n < 2:
        return Paired(delta, delta, delta, n, None, None)
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return Paired(delta, delta - half, delta + half, n, None, half)


def paired_weighted(base_nats: list[float], variant_nats: list[float], tokens: list[int],
                    resamples: int, seed: int) -> Paired:
    """Per-token loss, token-weighted as the suite reports it: each probe i has summed losses
    l_b, l_v over its t_i tokens (the same text for both), so the delta of the mean loss per
    token is sum(l_v - l_b) / sum(t). The CI is a paired bootstrap over probes of that ratio
    (BCa, `resamples` draws, seeded). Lower is better for a loss: the verdict flips the sign.
    Two probes of 10 and 30 tokens whose losses rise by 2 and 6 nats: delta 8 / 40 = 0.2."""
    from scipy import stats

    _same_length(base_nats, variant_nats)
    _same_length(base_nats, tokens)
    d = np.asarray(variant_nats, dtype=float) - np.asarray(base_nats, dtype=float)
    t = np.asarray(tokens, dtype=float)
    n = len(d)
    delta = float(d.sum() / t.sum()) if n else 0.0
    per_token = d / t
    if n < 2 or np.allclose(per_token, per_token[0]):
        return Paired(delta, delta, delta, n, None, None)
    result = stats.bootstrap((d, t), lambda x, y: x.sum() / y.sum(), paired=True,
                             vectorized=False, n_resamples=resamples,
                             confidence_level=1 - ALPHA, method="BCa",
                             random_state=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Paired(delta, low, high, n, None, (high - low) / 2)


def verdict(low: float, high: float, budget: float | None, higher_is_better: bool = True) -> str:
    """A non-inferiority reading of the delta's 95% CI against the budget b (the largest drop
    allowed), oriented so that higher is better:
      over-budget   the CI's upper end is below -b: the drop is larger than allowed
      inconclusive  the CI contains -b: these probes cannot tell whether it is within budget
      improved      else, the CI is above 0
      regressed     else, the CI is below 0 (a real drop, but within budget)
      within-noise  else
    Without a budget: improved / regressed / within-noise."""
    if not higher_is_better:
        low, high = -high, -low
    eps = 1e-12
    if budget is not None:
        if high < -budget - eps:
            return "over-budget"
        if low <= -budget + eps:
            return "inconclusive"
    if low > eps:
        return "improved"
    if high < -eps:
        return "regressed"
    return "within-noise"


def probes_needed(paired: Paired, budget: float | None, higher_is_better: bool = True) -> int | None:
    """About how many probes would tell an inconclusive delta from the budget. The CI's
    side that reaches -b (from the delta to that end: s) shrinks as 1/sqrt(n), so it stops
    reaching -b once n' = n (s / |delta + b|)^2, delta oriented so that higher is better. An
    estimate: the observed delta is taken as the truth. Knowledge, 50 probes, delta -0.08
    with CI [-0.08, 0.0164] and budget 0.05: -b is above the delta, s = 0.0964, and
    50 (0.0964 / 0.03)^2 = 517. None without a budget, or when the delta sits on -b."""
    if not budget or paired.n < 2:
        return None
    delta, low, high = paired.delta, paired.low, paired.high
    if not higher_is_better:
        delta, low, high = -delta, -high, -low
    gap = abs(delta + budget)
    if gap < 1e-9:
        return None
    side = high - delta if -budget > delta else delta - low
    return math.ceil(paired.n * (side / gap) ** 2 - 1e-9)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass (Chen et al. 2021), as evalplus computes
    it: 1 - C(n - c, k) / C(n, k). n=5, c=2, k=1 -> 0.4; n=5, c=2, k=2 -> 1 - 3/10 = 0.7."""
    from evalplus.eval import estimate_pass_at_k

    return float(estimate_pass_at_k([n], [c], k)[0])


def _same_length(a: list, b: list) -> None:
    if len(a) != len(b):
        raise ValueError(f"unpaired outcomes: {len(a)} base vs {len(b)} variant probes")
