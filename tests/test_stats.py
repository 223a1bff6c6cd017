"""The numbers behind "is this delta real?", pinned on hand-worked examples."""

from __future__ import annotations

import math

import pytest

from stages.stats import (
    mcnemar_exact,
    min_discordant_all_one_way,
    paired_graded,
    paired_pass,
    paired_weighted,
    pass_at_k,
    probes_needed,
    verdict,
)


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


def test_pass_fail_ci_four_of_fifty_discordant_all_one_way():
    # b = 4, c = 0 of n = 50: theta = c / m has the exact CI [0, 1 - 0.025**(1/4)], and the
    # delta (m / n)(2 theta - 1) = 0.08 (2 theta - 1): [-0.08, 0.08 (2 (0.60237) - 1)].
    base, variant = [True] * 50, [False] * 4 + [True] * 46
    r = paired_pass(base, variant)
    upper = 0.08 * (2 * (1 - 0.025 ** 0.25) - 1)
    assert (r.delta, r.n) == (-0.08, 50)
    assert r.low == pytest.approx(-0.08) and r.high == pytest.approx(upper)
    assert r.p == pytest.approx(2 / 2 ** 4)                  # 0.125: not significant ...
    assert r.low < 0 < r.high                                 # ... and the CI holds 0
    assert r.mdd == pytest.approx(6 / 50)


def test_pass_fail_ci_without_discordant_pairs():
    r = paired_pass([True, False, True], [True, False, True])
    assert (r.delta, r.low, r.high, r.p) == (0.0, 0.0, 0.0, 1.0)


def test_pass_fail_ci_all_discordant():
    # n = m = 10, c = 10: theta in [0.025**(1/10), 1] = [0.6915, 1] -> delta in [0.383, 1].
    r = paired_pass([False] * 10, [True] * 10)
    assert r.delta == 1.0 and r.high == pytest.approx(1.0)
    assert r.low == pytest.approx(2 * 0.025 ** 0.1 - 1)
    assert r.p == pytest.approx(2 / 2 ** 10)


def test_pass_fail_ci_excludes_zero_exactly_when_mcnemar_is_significant():
    # every split of m discordant pairs for n = 60 probes
    for m in range(1, 25):
        for c in range(m + 1):
            base = [True] * (m - c) + [False] * c + [True] * (60 - m)
            variant = [False] * (m - c) + [True] * c + [True] * (60 - m)
            r = paired_pass(base, variant)
            assert (r.p < 0.05) == (r.low > 0 or r.high < 0), (m, c, r)


def test_fewest_one_way_discordant_pairs_that_are_significant():
    assert min_discordant_all_one_way() == 6            # 2 / 2**5 = 0.0625, 2 / 2**6 = 0.031
    r = paired_pass([True] * 6 + [True] * 4, [False] * 6 + [True] * 4)
    assert r.p < 0.05 and r.high < 0
    r = paired_pass([True] * 5 + [True] * 5, [False] * 5 + [True] * 5)
    assert r.p > 0.05 and r.high > 0


def test_graded_t_interval_by_hand():
    # d = (0.5, 0.5, 0, 0): mean 0.25, sd 0.288675, t(0.975, 3) = 3.182446
    r = paired_graded([0.0] * 4, [0.5, 0.5, 0.0, 0.0])
    half = 3.182446 * 0.288675 / 2
    assert r.delta == 0.25 and r.p is None
    assert (r.low, r.high) == (pytest.approx(0.25 - half, abs=1e-5),
                               pytest.approx(0.25 + half, abs=1e-5))
    assert paired_graded([0.1, 0.2], [0.3, 0.4]) == paired_graded([0.1, 0.2], [0.3, 0.4])
    same = paired_graded([0.0, 1.0, 0.0], [0.5, 1.5, 0.5])
    assert (same.low, same.high) == (0.5, 0.5)


def test_weighted_delta_is_per_token_and_rejects_unpaired_input():
    # 10 and 30 tokens whose losses rise by 2 and 6 nats: delta (2 + 6) / 40 = 0.2. A third,
    # 1-token probe rising by 5 nats makes it 13 / 41 = 0.317; the unweighted mean of the
    # per-probe deltas would say (0.2 + 0.2 + 5) / 3 = 1.8.
    r = paired_weighted([1.0, 3.0], [3.0, 9.0], [10, 30], 500, 0)
    assert (r.delta, r.low, r.high) == (pytest.approx(0.2),) * 3
    r = paired_weighted([1.0, 3.0, 0.0], [3.0, 9.0, 5.0], [10, 30, 1], 500, 0)
    assert r.delta == pytest.approx(13 / 41)
    assert r.low <= r.delta <= r.high
    again = paired_weighted([1.0, 3.0, 0.0], [3.0, 9.0, 5.0], [10, 30, 1], 500, 0)
    assert (again.low, again.high) == (r.low, r.high)            # seeded
    with pytest.raises(ValueError, match="unpaired"):
        paired_weighted([1.0], [1.0, 2.0], [1, 1], 100, 0)


@pytest.mark.parametrize("low,high,budget,higher,expected", [
    (0.02, 0.18, 0.02, True, "improved"),
    (-0.015, -0.005, 0.02, True, "regressed"),      # a real drop, inside the budget
    (-0.12, 0.02, 0.02, True, "inconclusive"),      # the CI reaches past -budget
    (-0.12, -0.03, 0.02, True, "over-budget"),      # the whole CI is past -budget
    (-0.05, 0.05, 0.1, True, "within-noise"),
    (-0.40, -0.20, None, True, "regressed"),        # no budget for this suite
    (-0.40, 0.20, None, True, "within-noise"),
    (0.15, 0.30, 0.1, False, "over-budget"),        # loss rose more than 0.1 for sure
    (0.05, 0.30, 0.1, False, "inconclusive"),
    (-0.30, -0.10, 0.1, False, "improved"),         # loss fell
])
def test_verdicts_read_the_ci_against_the_budget(low, high, budget, higher, expected):
    assert verdict(low, high, budget, higher) == expected


def test_probes_needed_to_tell_the_delta_from_the_budget():
    # delta -0.08, CI [-0.08, 0.01638]; budget 0.05: -0.05 lies above the delta, so the CI's
    # upper side (0.09638) must shrink below the gap 0.03: 50 (0.09638 / 0.03)^2 = 516.1
    r = paired_pass([True] * 50, [False] * 4 + [True] * 46)
    assert probes_needed(r, 0.05) == math.ceil(50 * ((r.high + 0.08) / 0.03) ** 2) == 517
    # 6 of 25 lost: delta -0.24 at the CI's lower end, the upper end -0.0196 just above -0.02
    near = paired_pass([True] * 25, [False] * 6 + [True] * 19)
    assert probes_needed(near, 0.02) == 26                # just past 25: nearly resolved
    # a loss that rose: negated, the delta is below -b, and the side towards -b is the one
    # from the delta to the loss CI's lower end
    w = paired_weighted([1.0, 3.0, 0.0], [3.0, 9.0, 5.0], [10, 30, 1], 500, 0)
    gap = abs(-w.delta + 0.1)
    assert probes_needed(w, 0.1, higher_is_better=False) == math.ceil(
        3 * ((w.delta - w.low) / gap) ** 2)
    assert probes_needed(r, None) is None
    assert probes_needed(paired_pass([True] * 20, [False] + [True] * 19), 0.05) is None  # on -b
