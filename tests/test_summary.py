"""Deltas pinned by hand."""

from __future__ import annotations

import pytest

from stages.summary import compare


def test_compare_gives_values_and_deltas_against_base():
    # base 0.5, sft 0.75, dpo 0.25 -> deltas +0.25 and -0.25; counts are not compared.
    result = compare({
        "base": {"pass@1": 0.5, "passed": 2, "tasks": 4},
        "sft": {"pass@1": 0.75, "passed": 3, "tasks": 4},
        "dpo": {"pass@1": 0.25, "passed": 1, "tasks": 4},
    })
    assert result == {"pass@1": {"base": 0.5, "sft": 0.75, "dpo": 0.25,
                                 "sft_delta": 0.25, "dpo_delta": -0.25}}


def test_compare_covers_every_numeric_metric():
    result = compare({v: {"code_loss": x, "code_ppl": y} for v, x, y in
                      [("base", 1.0, 2.0), ("sft", 1.5, 3.0), ("dpo", 0.5, 1.0)]})
    assert result["code_loss"]["sft_delta"] == pytest.approx(0.5)
    assert result["code_ppl"]["dpo_delta"] == pytest.approx(-1.0)
