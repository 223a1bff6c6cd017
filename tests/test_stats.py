"""The numbers behind "is this delta real?", pinned on hand-worked examples."""

from __future__ import annotations

import pytest

from stages.stats import mcnemar_exact, paired_delta, pass_at_k, verdict


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4),          # c / n
    (5, 2, 2, 0.7),          # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 0, 1, 0.0),
    (5, 5, 3, 1.0),
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
])
def test_pass_at_k_unbiased_estimator(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_mcnemar_counts_only_discordant_pairs():
    # b = 1 (base passed, variant failed), c = 9: p = 2 * (C(10,0) + C(10,1)) / 2**10
    base = [True] * 1 + [False] * 9 + [True] * 5
    variant = [False] * 1 + [True] * 9 + [True] * 5
    assert mcnemar_exact(base, variant) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact([True, False], [False, True]) == 1.0   # b = c = 1
    assert mcnemar_exact([True, True], [True, True]) == 1.0     # nothing discordant
    # b = 3, c = 0: p = 2 * (1/2)**3
    assert mcnemar_exact([True] * 3, [False] * 3) == pytest.approx(0.25)


def test_bootstrap_of_a_constant_difference_collapses_to_it():
    assert paired_delta([0.0, 1.0, 0.0], [1.0, 2.0, 1.0], 500, 0) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_of_two_probes():
    # diffs (1, 0): a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the
    # 2.5th and 97.5th percentiles are 0 and 1.
    delta, low, high = paired_delta([0.0, 0.0], [1.0, 0.0], 4000, 0)
    assert (delta, low, high) == (0.5, 0.0, 1.0)


def test_bootstrap_is_seeded_and_rejects_unpaired_input():
    base, other = [0, 1, 1, 0, 1, 0, 1, 1], [1, 1, 0, 0, 1, 1, 1, 0]
    assert paired_delta(base, other, 1000, 3) == paired_delta(base, other, 1000, 3)
    with pytest.raises(ValueError, match="unpaired"):
        paired_delta([1, 0], [1], 100, 0)


@pytest.mark.parametrize("delta,low,high,budget,higher,expected", [
    (0.10, 0.02, 0.18, 0.02, True, "improved"),
    (-0.01, -0.03, -0.005, 0.02, True, "regressed"),     # significant but within budget
    (-0.05, -0.12, 0.02, 0.02, True, "over-budget"),     # noisy, but the drop is too big
    (0.0, -0.05, 0.05, 0.02, True, "within-noise"),
    (-0.30, -0.40, -0.20, None, True, "regressed"),      # no budget for this suite
    (0.20, 0.10, 0.30, 0.1, False, "over-budget"),       # loss rose 0.2 > 0.1
    (-0.20, -0.30, -0.10, 0.1, False, "improved"),       # loss fell
])
def test_verdicts(delta, low, high, budget, higher, expected):
    assert verdict(delta, low, high, budget, higher) == expected
