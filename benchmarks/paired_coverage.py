"""Coverage of every paired 95% CI the summary reports, on the grids of tests/test_stats.py
and tests/test_forgetting.py (issue 20), each side by side with the method it replaced:

  pass/fail     Tango's score interval vs the exact conditional (Clopper-Pearson on the
                discordant pairs) interval
  graded        the bounded score interval (stats.paired_bounded) vs the paired t-interval
  perplexity    BCa at the expanded level (stats.paired_weighted) vs plain 95% BCa
  forgetting    the bounded score interval on reweighted pooled probes vs the stratified
                percentile bootstrap

    python -m benchmarks.paired_coverage

Each cell: 1,000 seeded draws; the figure is the share of draws whose CI holds the truth.
The draws are the tests' (same seeds, same code), so the new columns are what the tests
assert (>= 0.93 for pass/fail, graded and forgetting; perplexity on two cells, see there).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
from scipy import stats

from benchmarks import harness, record


# The test's own simulation, loaded by path: another installed package may own `tests`.
def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, record.REPO / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_test_stats, _test_forgetting = _load("test_stats"), _load("test_forgetting")
coverage_table, tango = _test_stats.coverage_table, _test_stats.tango


def exact_conditional(b: int, c: int, n: int) -> tuple[float, float, float]:
    """The replaced method, for the comparison only: c ~ Binom(b + c, theta) given the
    discordant pairs, its Clopper-Pearson CI mapped onto delta = ((b + c) / n)(2 theta - 1),
    with the exact McNemar p."""
    m = b + c
    if m == 0:
        return 0.0, 0.0, 1.0
    ci = stats.binomtest(c, m, 0.5).proportion_ci(confidence_level=0.95, method="exact")
    return (m / n * (2 * ci.low - 1), m / n * (2 * ci.high - 1),
            float(stats.binomtest(b, m, 0.5).pvalue))


def paired_t(base, variant) -> tuple[float, float, None]:
    """The replaced graded method: mean(d) +- t(0.975, n - 1) sd(d) / sqrt(n)."""
    d = np.asarray(variant, dtype=float) - np.asarray(base, dtype=float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean() - half, d.mean() + half, None


def plain_bca(base, variant, tokens, draw: int) -> tuple[float, float]:
    """The replaced perplexity level: scipy's paired BCa at 0.95 (same resamples, seed)."""
    d = np.asarray(variant, dtype=float) - np.asarray(base, dtype=float)
    t = np.asarray(tokens, dtype=float)
    if np.ptp(d / t) == 0:
        return float(d.sum() / t.sum()), float(d.sum() / t.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = stats.bootstrap((d, t), lambda x, y, axis=-1: x.sum(axis) / y.sum(axis),
                             paired=True, vectorized=True, n_resamples=999, method="BCa",
                             random_state=np.random.default_rng(draw)).confidence_interval
    return float(ci.low), float(ci.high)


def stratified_percentile(base: dict, variant: dict, resamples: int = 1000
                          ) -> tuple[float, float, None]:
    """The replaced forgetting method: every suite's probes redrawn within the suite, the
    2.5th and 97.5th percentiles of the mean of the resampled suite means."""
    rng = np.random.default_rng(0)
    means = np.zeros(resamples)
    for suite in base:
        d = np.asarray(variant[suite], dtype=float) - np.asarray(base[suite], dtype=float)
        means += d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.percentile(means / len(base), [2.5, 97.5])
    return float(low), float(high), None


def side_by_side(title: str, new: dict, old: dict, new_name: str, old_name: str,
                 figures: list) -> str:
    print(f"\n{title}")
    for key, cov in new.items():
        label = f"{title}, " + ", ".join(str(k) for k in (key if isinstance(key, tuple)
                                                           else (key,)))
        print(f"  {label}: {new_name} {cov:.3f}, {old_name} {old[key]:.3f}")
        figures.append(record.figure(f"{label}: {new_name}", float(cov), "coverage"))
        figures.append(record.figure(f"{label}: {old_name} (old)", float(old[key]), "coverage"))
    return (f"{title}: lowest {new_name} cell {min(new.values()):.3f}, lowest {old_name} "
            f"cell {min(old.values()):.3f}.")


def main() -> None:
    parser = harness.parser(__doc__)
    args = parser.parse_args()
    figures = []
    notes = [side_by_side("pass/fail", coverage_table(tango), coverage_table(exact_conditional),
                          "tango-score", "exact conditional", figures)]
    notes.append(side_by_side("graded", _test_stats.graded_coverage_table(_test_stats.bounded_score),
                              _test_stats.graded_coverage_table(paired_t),
                              "tango-score-bounded", "paired-t", figures))
    notes.append(side_by_side("forgetting",
                              _test_forgetting.retention_coverage_table(
                                  _test_forgetting.bounded_score),
                              _test_forgetting.retention_coverage_table(stratified_percentile),
                              "tango-score-bounded", "stratified percentile", figures))
    with warnings.catch_warnings():  # BCa warns on resamples it cannot correct; counted as is
        warnings.simplefilter("ignore")
        notes.append(side_by_side(
            "perplexity", _test_stats.weighted_coverage_table(_test_stats.expanded_bca),
            _test_stats.weighted_coverage_table(plain_bca), "expanded BCa", "plain BCa",
            figures))
    notes = " ".join(notes) + (
        " 1,000 draws a cell, seeded as in the tests. Pass/fail and graded cells: n probes; "
        "forgetting: probes per retention suite; perplexity: n probes of 20-299 tokens with "
        "lognormal per-token losses. On every pass/fail and graded draw, p < 0.05 exactly when "
        "the CI excludes 0.")
    print(notes)
    record.write("paired_coverage", "Coverage of the paired 95% CIs", figures, notes,
                 args.json)


if __name__ == "__main__":
    main()
