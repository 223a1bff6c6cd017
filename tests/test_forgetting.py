"""The forgetting score: the mean of the retention suites' paired deltas, each suite weighing
the same, with a stratified paired bootstrap CI."""

from __future__ import annotations

import numpy as np
import pytest

from stages.forgetting import retention, retention_delta
from stages.stats import paired_pass


def test_constant_deltas_give_their_mean_and_a_collapsed_ci():
    base = {"arc_challenge": [0.5] * 20, "hellaswag": [0.9] * 30}
    variant = {"arc_challenge": [0.4] * 20, "hellaswag": [0.6] * 30}
    delta, low, high = retention_delta(base, variant, 500, seed=0)
    assert (delta, low, high) == pytest.approx((-0.2, -0.2, -0.2))


def test_every_suite_weighs_the_same_whatever_its_size():
    """10 probes all lost in one suite, 1,000 unchanged in another: -0.5, not the pooled
    -10/1010."""
    base = {"a": [True] * 10, "b": [True] * 500 + [False] * 500}
    variant = {"a": [False] * 10, "b": [True] * 500 + [False] * 500}
    delta, low, high = retention_delta(base, variant, 200, seed=0)
    assert delta == pytest.approx(-0.5)
    assert low == high == pytest.approx(-0.5)


def test_one_suite_agrees_with_the_exact_paired_interval_of_stats():
    """One suite of 300 pass/fail pairs: the same delta as stats.paired_pass, and a bootstrap
    CI within 0.01 of its exact (Clopper-Pearson on the discordant pairs) interval."""
    rng = np.random.default_rng(3)
    base = list(rng.random(300) < 0.6)
    variant = [b if rng.random() < 0.8 else not b for b in base]
    ours = retention_delta({"s": base}, {"s": variant}, 4000, seed=1)
    exact = paired_pass(base, variant)
    assert ours[0] == pytest.approx(exact.delta)
    assert ours[1] == pytest.approx(exact.low, abs=0.01)
    assert ours[2] == pytest.approx(exact.high, abs=0.01)
    assert ours[1] < ours[0] < ours[2]


def test_seeded_and_reported_per_variant_over_the_suites_that_ran():
    outcomes = {"arc_challenge": {"base": [1, 1, 0, 1], "sft": [1, 0, 0, 1]},
                "winogrande": {"base": [0, 1, 1, 1], "sft": [0, 1, 1, 0]}}
    row = retention(["hellaswag", "arc_challenge", "winogrande"], outcomes, "sft", 500, 7)
    assert row["suites"] == ["arc_challenge", "winogrande"]
    assert row["base"] == 0.75 and row["sft"] == 0.5 and row["sft_delta"] == -0.25
    assert row["sft_ci95_low"] <= -0.25 <= row["sft_ci95_high"]
    assert row == retention(["hellaswag", "arc_challenge", "winogrande"], outcomes, "sft", 500, 7)
    assert retention(["hellaswag"], outcomes, "sft", 500, 7) == {}


def test_unpaired_outcomes_are_refused():
    with pytest.raises(ValueError, match="unpaired"):
        retention_delta({"a": [1, 0]}, {"a": [1]}, 10, 0)
    with pytest.raises(ValueError, match="suites differ"):
        retention_delta({"a": [1]}, {"b": [1]}, 10, 0)
