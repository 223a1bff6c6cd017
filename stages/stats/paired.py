"""Paired statistics for "is this delta real, and is it within the budget?". Every variant is
scored on the same probes as base, so each probe gives one (base, variant) pair.

  paired_pass      pass/fail outcomes: delta, Tango's 95% score interval and the p-value of
                   the McNemar score test it inverts; the CI excludes 0 exactly when p < 0.05
  paired_graded    scores in [0, 1]: the same score interval on the differences, each counted
                   as a fractional discordant pair (`paired_bounded`)
  paired_bounded   any mean of paired differences in [-1, 1] (graded suites, the forgetting
                   score of stages/stats/forgetting.py): one interval method for bounded outcomes
  paired_weighted  per-token losses: the token-weighted delta with a paired bootstrap interval
  verdict          non-inferiority against the budget: over-budget / inconclusive / improved /
                   regressed / within-noise
  pass_at_k        the unbiased pass@k estimator (evalplus's)

Each `paired_*` returns a `Paired`: the delta, its 95% CI, the probes paired, the p-value
where there is a test, and the smallest drop the probes could tell from zero. Coverage of
every interval is simulated in tests/test_stats.py and benchmarks/paired_coverage.py.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from stages.core.io import DataError

# scipy.stats is imported where it is used: it takes seconds to import, and the eval stages
# and stages.tools.judge need only pass_at_k from here.

ALPHA = 0.05


@dataclass(frozen=True)
class Paired:
    delta: float
    low: float
    high: float
    n: int
    """Probes paired."""
    p: float | None
    """McNemar score-test p-value (pass/fail outcomes only)."""
    mdd: float | None
    """Minimum detectable drop: the smallest drop that could reach significance with these n
    probes (pass/fail: every discordant pair against the variant; others: the CI's
    half-width). None when it cannot be estimated (fewer than 2 probes)."""
    discordant: float | None = None
    """Pass/fail only: the share of probes on which base and variant disagree, (b + c) / n."""


def paired_pass(base: list[bool], variant: list[bool]) -> Paired:
    """Pass/fail outcomes: counts the discordant probes, then `paired_pass_counts`."""
    _same_length(base, variant)
    b = sum(1 for x, y in zip(base, variant, strict=True) if x and not y)
    c = sum(1 for x, y in zip(base, variant, strict=True) if y and not x)
    return paired_pass_counts(b, c, len(base))


def paired_pass_counts(b: int, c: int, n: int) -> Paired:
    """n probes, b passed by base only, c by the variant only: delta = (c - b) / n, with
    Tango's score interval (Tango 1998; Fagerland, Lydersen & Laake 2014 recommend it) and
    the p-value of the test it inverts, the asymptotic McNemar score test (`mcnemar_score`).

    For a candidate delta d, let q be the restricted maximum-likelihood probability of
    "base only" given that the true delta is d (the variant-only probability is then q + d):
        q = (-B + sqrt(B^2 - 4AC)) / (2A),  A = 2n,  B = -(b + c) + (2n - c + b) d,
        C = -b d (1 - d)
    and the score statistic is  T(d) = (c - b - n d) / sqrt(n (2q + d (1 - d))).
    The 95% CI is every d with |T(d)| <= z = 1.959964; T falls as d rises, so the ends are the
    roots of T(d) = +z (low) and T(d) = -z (high) on [-1, 1]. At d = 0, q = (b + c) / 2n and
    T(0) = (c - b) / sqrt(b + c), the McNemar score statistic: the CI excludes 0 exactly when
    p < 0.05.

    Hand-worked: b = c = 0, n = 25: for d > 0, q = 0 and T(d) = -sqrt(n d / (1 - d)), so
    n d / (1 - d) = z^2 = 3.8415 gives d = 3.8415 / 28.8415 = 0.1332; by symmetry the CI is
    [-0.1332, 0.1332], p = 1. b = 4, c = 0, n = 50: delta -0.08, T(0) = -4 / 2 = -2, p =
    0.0455, CI [-0.1884, -0.0029] (T(-0.0029) = -3.853 / sqrt(3.864) = -1.960). The smallest all-one-way count with p < 0.05 is 4
    (sqrt(4) = 2 > z; sqrt(3) = 1.73 is not), so the minimum detectable drop is 4 / n.
    """
    if n < 1 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"paired counts out of range: b={b}, c={c}, n={n}")
    low, high = _score_interval(b, c, n)
    return Paired((c - b) / n, low, high, n, mcnemar_score(b, c),
                  min_discordant_all_one_way() / n, discordant=(b + c) / n)


def _score_interval(b: float, c: float, n: int) -> tuple[float, float]:
    """The ends of Tango's interval (see `paired_pass_counts`) for b base-only and c
    variant-only probes of n; b and c may be fractional (`paired_bounded`)."""
    z = _z()
    delta = (c - b) / n

    def score(d: float) -> float:
        if abs(d - delta) < 1e-15:
            return 0.0  # the numerator is 0; skip 0 / 0 when nothing is discordant
        big_b = -(b + c) + (2 * n - c + b) * d
        big_c = -b * d * (1 - d)
        q = (-big_b + math.sqrt(max(big_b * big_b - 8 * n * big_c, 0.0))) / (4 * n)
        var = n * (2 * q + d * (1 - d))
        if var <= 0:
            return math.copysign(math.inf, c - b - n * d)
        return (c - b - n * d) / math.sqrt(var)

    from scipy.optimize import brentq

    edge = 1 - 1e-12
    low = -1.0 if score(-edge) <= z else brentq(lambda d: score(d) - z, -edge, delta,
                                                xtol=1e-14)
    high = 1.0 if score(edge) >= -z else brentq(lambda d: score(d) + z, delta, edge,
                                               xtol=1e-14)
    return float(low), float(high)


def paired_bounded(diffs: list[float] | np.ndarray) -> Paired:
    """The mean of paired differences d_i in [-1, 1] with Tango's score interval, each
    difference counted as a fractional discordant pair: b = sum of the drops max(-d_i, 0),
    c = sum of the gains max(d_i, 0), then the interval of `paired_pass_counts` on (b, c, n).
    On pass/fail differences (-1, 0, +1) it is exactly that interval.

    Why it holds its coverage: the score test takes Var(d_i) = psi - delta^2 with psi the
    mean |d_i|, and since |d_i| <= 1, d_i^2 <= |d_i|, so the true variance is never larger.
    The interval is conservative when the differences are small (the simulated coverage in
    tests/test_stats.py is >= 0.95 on graded data), never zero-width: 25 probes with no
    difference at all read [-0.1332, 0.1332], as 25 pass/fail probes with none discordant
    do, because the data cannot rule out a few unseen full drops. A t-interval would read
    [0, 0] there and covered one-way drops of 4% in 25 probes 65% of the time.

    Hand-worked: d = (-0.5, -0.5, 0, 0): b = 1, c = 0, n = 4, delta -0.25, p = erfc(1 /
    sqrt 2) = 0.3173. The smallest drop it can tell from zero, all one way: b / sqrt(b) > z,
    so b > z^2 = 3.8415 and mdd = 3.8415 / n."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or not len(d):
        raise ValueError("paired_bounded needs a non-empty list of paired differences")
    if np.any(np.abs(d) > 1 + 1e-9) or not np.all(np.isfinite(d)):
        raise ValueError(f"paired differences must lie in [-1, 1]; got {d.min()}..{d.max()}")
    n = len(d)
    b = float(np.clip(-d, 0.0, 1.0).sum())
    c = float(np.clip(d, 0.0, 1.0).sum())
    low, high = _score_interval(b, c, n)
    return Paired((c - b) / n, low, high, n, mcnemar_score(b, c), _z() ** 2 / n,
                  discordant=(b + c) / n)


def mcnemar_score(b: float, c: float) -> float:
    """Two-sided asymptotic McNemar (score) test of b base-only against c variant-only probes:
    z = (c - b) / sqrt(b + c), p = P(|N(0, 1)| >= |z|); p = 1 when nothing is discordant.
    b = 4, c = 0: z = -2, p = 0.0455. b = 1, c = 9: z = 8 / sqrt(10) = 2.530, p = 0.0114."""
    if b + c == 0:
        return 1.0
    return math.erfc(abs(c - b) / math.sqrt(b + c) / math.sqrt(2))


def min_discordant_all_one_way() -> int:
    """Fewest discordant probes, all one way, that the McNemar score test calls significant:
    m probes give |z| = m / sqrt(m) = sqrt(m); sqrt(3) = 1.73 < 1.96 < sqrt(4) = 2, so 4. A
    drop smaller than 4 / n can never be told from noise."""
    z = _z()
    m = 1
    while math.sqrt(m) <= z:
        m += 1
    return m


def _z() -> float:
    """The two-sided 95% normal quantile, 1.959964."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - ALPHA / 2)


def paired_graded(base: list[float], variant: list[float]) -> Paired:
    """Scores in [0, 1] (a judge's grade, or c/n passes when sampling): `paired_bounded` on
    the per-probe differences. base (0, 0, 0, 0), variant (0.5, 0.5, 0, 0): b = 0, c = 1,
    delta 0.25, p = 0.3173."""
    _same_length(base, variant)
    b, v = np.asarray(base, dtype=float), np.asarray(variant, dtype=float)
    outside = [i for i, x in enumerate(np.concatenate([b, v])) if not 0 <= x <= 1]
    if outside:
        i = outside[0] % len(b)
        raise ValueError(f"graded scores must lie in [0, 1]; probe {i} has base {b[i]}, "
                         f"variant {v[i]}")
    return paired_bounded(v - b)


def paired_weighted(base_nats: list[float], variant_nats: list[float], tokens: list[int],
                    resamples: int, seed: int) -> Paired:
    """Per-token loss, token-weighted as the suite reports it: each probe i has summed losses
    l_b, l_v over its t_i tokens (the same text for both), so the delta of the mean loss per
    token is sum(l_v - l_b) / sum(t). Lower is better for a loss: the verdict flips the sign.
    Two probes of 10 and 30 tokens whose losses rise by 2 and 6 nats: delta 8 / 40 = 0.2.

    The CI is scipy's paired BCa bootstrap over probes of that ratio (`resamples` draws,
    seeded) at Hesterberg's expanded level, 1 - 2 Phi(-sqrt(n / (n - 1)) t(0.975, n - 1)),
    which puts back the small-sample width a percentile-type interval lacks (n = 25: 0.965;
    n = 400: 0.951). Losses have no upper bound, so unlike `paired_bounded` no interval can
    promise its coverage on skewed data at small n: benchmarks/paired_coverage.py shows the
    simulated coverage beside plain BCa (25 probes: 0.916 on a smooth shift, 0.764 when rare
    large increases dominate; 400 probes: 0.94 on both). Every probe moving by the same loss per token gives one ratio in every
    resample, so the interval is [delta, delta]: the data allow no other. Where BCa cannot be
    computed (tied jackknife values, as with 2 probes) the percentile interval is used."""
    from scipy import stats

    _same_length(base_nats, variant_nats)
    _same_length(base_nats, tokens)
    d = np.asarray(variant_nats, dtype=float) - np.asarray(base_nats, dtype=float)
    t = np.asarray(tokens, dtype=float)
    n = len(d)
    if n < 2:
        raise DataError(f"a token-weighted delta needs at least 2 paired probes to bound; "
                        f"got {n}: add probes to the suite")
    delta = float(d.sum() / t.sum())
    per_token = d / t
    if np.ptp(per_token) <= 1e-12 * max(1.0, float(np.abs(per_token).max())):
        return Paired(delta, delta, delta, n, None, 0.0)
    level = 1 - 2 * stats.norm.cdf(-math.sqrt(n / (n - 1)) * stats.t.ppf(1 - ALPHA / 2, n - 1))
    for method in ("BCa", "percentile"):
        # BCa's acceleration is 0 / 0 when the jackknife values tie (e.g. 2 probes); the
        # percentile interval of the same resamples is then the one left
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.bootstrap((d, t), _ratio, paired=True, vectorized=True,
                                 n_resamples=resamples, confidence_level=level, method=method,
                                 random_state=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    return Paired(delta, low, high, n, None, (high - low) / 2)


def _ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.sum(axis=axis) / y.sum(axis=axis)


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
    """About how many probes would settle an inconclusive verdict, taking the observed delta
    as the truth. None without a budget, or when the delta sits on -b (no n tells them apart).

    Pass/fail and graded (`paired_bounded`): the sample size of the paired non-inferiority test at one-sided alpha 0.025
    (the 95% CI's side) with 80% power. A probe's difference d_i is -1, 0 or +1, so with
    discordance rate psi = P(d_i != 0) its variance is psi - delta^2, and
        n = (z_0.975 + z_0.8)^2 (psi - delta^2) / (delta + b)^2,  (1.95996 + 0.84162)^2 = 7.849.
    psi is the observed (b + c) / n, floored at the budget: a true drop of b needs at least a
    share b of the probes to flip, so 0 discordant pairs (psi = 0) does not give n = 0.
    Hand-worked: 25 probes all passing on both sides, budget 0.02: psi = 0.02, delta = 0,
    n = 7.849 * 0.02 / 0.02^2 = 392.5 -> 393. Knowledge, 50 probes, 4 lost: delta -0.08,
    psi 0.08, budget 0.05: 7.849 * (0.08 - 0.0064) / 0.03^2 = 641.9 -> 642.

    For graded differences psi is the mean |d_i|, which bounds the variance as in the interval.
    Perplexity deltas: the CI's side that reaches -b (from the delta to that end: s)
    shrinks as 1/sqrt(n), so it stops reaching -b once n' = n (s / |delta + b|)^2, delta
    oriented so that higher is better."""
    if not budget or paired.n < 2:
        return None
    delta, low, high = paired.delta, paired.low, paired.high
    if not higher_is_better:
        delta, low, high = -delta, -high, -low
    gap = abs(delta + budget)
    if gap < 1e-9:
        return None
    if paired.discordant is not None:
        from statistics import NormalDist

        psi = max(paired.discordant, budget)
        factor = (_z() + NormalDist().inv_cdf(0.8)) ** 2
        return math.ceil(factor * max(psi - delta ** 2, 1e-12) / gap ** 2 - 1e-9)
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
