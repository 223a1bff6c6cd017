"""The forgetting score: the mean of the retention suites' paired deltas, each suite weighing
the same, with the bounded score interval (stats.paired_bounded) on the pooled, reweighted
differences; its coverage simulated on suites of one size and of mixed sizes."""

from __future__ import annotations

import numpy as np
import pytest

from stages.stats.forgetting import CI_METHOD, retention, retention_delta
from stages.stats.paired import paired_bounded, paired_pass


def test_every_suite_weighs_the_same_whatever_its_size():
    """10 probes all lost in one suite, 1,000 unchanged in another: -0.5, not the pooled
    -10/1010. The weights are 1/20 and 1/2000, so the scaled differences are ten -1s and a
    thousand 0s, and the interval is 1010 / 20 = 50.5 times that of -10 of 1010."""
    base = {"a": [True] * 10, "b": [True] * 500 + [False] * 500}
    variant = {"a": [False] * 10, "b": [True] * 500 + [False] * 500}
    r = retention_delta(base, variant)
    assert r.delta == pytest.approx(-0.5)
    pooled = paired_bounded([-1.0] * 10 + [0.0] * 1000)
    assert (r.low, r.high) == (pytest.approx(pooled.low * 50.5), pytest.approx(pooled.high * 50.5))
    assert r.low < -0.5 < r.high < 0 and r.p < 0.05


def test_hand_worked_mixed_sizes():
    # suite A: 2 probes, both lost; suite B: 4 probes, unchanged: score (-1 + 0) / 2 = -0.5;
    # w = 1/4 (A), 1/8 (B): scaled differences (-1, -1, 0, 0, 0, 0), factor 6 / 4 = 1.5
    r = retention_delta({"a": [1, 1], "b": [1, 0, 1, 0]}, {"a": [0, 0], "b": [1, 0, 1, 0]})
    pooled = paired_bounded([-1, -1, 0, 0, 0, 0])
    assert r.delta == pytest.approx(-0.5)
    assert (r.low, r.high) == (pytest.approx(1.5 * pooled.low), pytest.approx(1.5 * pooled.high))


def test_one_pass_fail_suite_is_exactly_the_pass_fail_interval():
    rng = np.random.default_rng(3)
    base = list(rng.random(300) < 0.6)
    variant = [b if rng.random() < 0.8 else not b for b in base]
    ours, exact = retention_delta({"s": base}, {"s": variant}), paired_pass(base, variant)
    assert (ours.delta, ours.low, ours.high, ours.p) == pytest.approx(
        (exact.delta, exact.low, exact.high, exact.p))


def test_constant_deltas_do_not_collapse_the_interval():
    """Every pair moving by the same amount is no proof that every probe would: the old
    bootstrap read [-0.2, -0.2] here."""
    base = {"arc_challenge": [0.5] * 20, "hellaswag": [0.9] * 30}
    variant = {"arc_challenge": [0.4] * 20, "hellaswag": [0.6] * 30}
    r = retention_delta(base, variant)
    assert r.delta == pytest.approx(-0.2)
    assert r.low < -0.2 < r.high


def test_reported_per_variant_over_the_suites_that_ran():
    outcomes = {"arc_challenge": {"base": [1, 1, 0, 1], "sft": [1, 0, 0, 1]},
                "winogrande": {"base": [0, 1, 1, 1], "sft": [0, 1, 1, 0]}}
    row = retention(["hellaswag", "arc_challenge", "winogrande"], outcomes, "sft")
    assert row["suites"] == ["arc_challenge", "winogrande"]
    assert row["base"] == 0.75 and row["sft"] == 0.5 and row["sft_delta"] == -0.25
    assert row["sft_ci95_low"] < -0.25 < row["sft_ci95_high"]
    assert row["sft_ci_method"] == CI_METHOD and 0 < row["sft_p"] <= 1
    assert retention(["hellaswag"], outcomes, "sft") == {}


def test_unpaired_outcomes_are_refused():
    with pytest.raises(ValueError, match="unpaired"):
        retention_delta({"a": [1, 0]}, {"a": [1]})
    with pytest.raises(ValueError, match="suites differ"):
        retention_delta({"a": [1]}, {"b": [1]})


# Coverage: suite mixes (probes a suite) and cells ({suite index: (P(base only), P(variant
# only))}, unlisted suites unchanged). Pass/fail outcomes; the truth is the mean over
# suites of P(variant only) - P(base only).
RETENTION_MIXES = ((25, 25, 25), (50, 50, 50), (164, 164, 164), (400, 400, 400),
                   (25, 50, 164, 400))
RETENTION_CELLS = {
    "one-way drop in one suite": {0: (0.10, 0.0)},
    "one-way drops in all": {i: (0.04, 0.0) for i in range(4)},
    "two-way changes": {i: (0.10, 0.05) for i in range(4)},
    "no change": {},
}


def retention_coverage_table(interval, draws: int = 1000, seed: int = 27
                             ) -> dict[tuple[tuple[int, ...], str], float]:
    """Share of seeded draws a (mix, cell) whose 95% CI holds the true score, with
    `interval(base, variant) -> (low, high, p)` on {suite: outcomes}; draws with the same
    per-suite counts share one interval. Where there is a p, p < 0.05 must hold exactly when
    the CI excludes 0."""
    rng = np.random.default_rng(seed)
    table = {}
    for mix in RETENTION_MIXES:
        for name, cell in RETENTION_CELLS.items():
            probs = [cell.get(i, (0.0, 0.0)) for i in range(len(mix))]
            truth = float(np.mean([p01 - p10 for p10, p01 in probs]))
            counts = [rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=draws)[:, :2]
                      for n, (p10, p01) in zip(mix, probs, strict=True)]
            keys = np.concatenate(counts, axis=1)
            seen, times = np.unique(keys, axis=0, return_counts=True)
            covered = 0
            for key, k in zip(seen.tolist(), times.tolist(), strict=True):
                base, variant = {}, {}
                for s, n in enumerate(mix):
                    b, c = key[2 * s], key[2 * s + 1]
                    base[f"s{s}"] = [1] * b + [0] * c + [1] * (n - b - c)
                    variant[f"s{s}"] = [0] * b + [1] * c + [1] * (n - b - c)
                low, high, p = interval(base, variant)
                if p is not None:
                    assert (p < 0.05) == (low > 0 or high < 0), (mix, name, key, low, high, p)
                covered += k * (low - 1e-12 <= truth <= high + 1e-12)
            table[(mix, name)] = covered / draws
    return table


def bounded_score(base, variant) -> tuple[float, float, float]:
    r = retention_delta(base, variant)
    return r.low, r.high, r.p


def test_forgetting_ci_holds_its_coverage_on_every_mix_and_cell():
    table = retention_coverage_table(bounded_score)
    low = {cell: cov for cell, cov in table.items() if cov < 0.93}
    assert not low, f"coverage below 0.93: {low}"
