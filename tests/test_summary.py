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


def test_compare_shows_an_exception_type_any_variant_raised():
    # Only sft raised KeyError: its share is 0 for base and dpo, not missing.
    result = compare({
        "base": {"fail_runtime_error": 0.25, "fail_runtime_error:ZeroDivisionError": 0.25},
        "sft": {"fail_runtime_error": 0.5, "fail_runtime_error:KeyError": 0.5},
        "dpo": {"fail_runtime_error": 0.0},
    })
    assert result["fail_runtime_error:ZeroDivisionError"] == {
        "base": 0.25, "sft": 0.0, "dpo": 0.0, "sft_delta": -0.25, "dpo_delta": -0.25}
    assert result["fail_runtime_error:KeyError"] == {
        "base": 0.0, "sft": 0.5, "dpo": 0.0, "sft_delta": 0.5, "dpo_delta": 0.0}


def test_summary_pairs_probes_and_judges_against_the_budget(tmp_path):
    import json

    from conftest import repo_params, stage_cfg
    from stages import summary
    from stages.config import SummaryStage

    params = repo_params()
    params["paths"]["metrics"] = str(tmp_path)
    params["eval"]["suites"] = ["code"]
    outcomes = {"base": [True, True, True, True], "sft": [True, False, False, False],
                "dpo": [True, True, True, True]}
    for variant, passed in outcomes.items():
        out = tmp_path / "eval" / variant
        out.mkdir(parents=True)
        (out / "code.json").write_text(json.dumps(
            {"code": {"pass@1": sum(passed) / 4, "passed": sum(passed), "tasks": 4}}))
        tasks = tmp_path / "tasks" / variant
        tasks.mkdir(parents=True)
        (tasks / "code.jsonl").write_text("".join(
            json.dumps({"task_id": f"t{i}", "passed": p}) + "\n" for i, p in enumerate(passed)))
    row = summary.main(stage_cfg(SummaryStage, params))["code"]["pass@1"]
    # sft: 1 of 4 -> delta -0.75, b = 3 discordant, p = 2 * (1/2)**3; drop > 2-point budget
    assert row["sft_delta"] == -0.75 and row["sft_p"] == 0.25
    assert row["sft_verdict"] == "over-budget"
    assert row["dpo_delta"] == 0.0 and row["dpo_verdict"] == "within-noise"
    assert (row["dpo_ci95_low"], row["dpo_ci95_high"]) == (0.0, 0.0)
    # the capability bars dvc plots draws, one file per variant
    bars = {v: json.loads((tmp_path / "capability" / f"{v}.json").read_text())
            for v in ("base", "sft", "dpo")}
    assert bars == {"base": [{"metric": "code pass@1", "value": 1.0}],
                    "sft": [{"metric": "code pass@1", "value": 0.25}],
                    "dpo": [{"metric": "code pass@1", "value": 1.0}]}
