"""Deltas pinned by hand."""

from __future__ import annotations

import json
import math

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


def write_suite(root, suite: str, metrics: dict[str, dict], rows: dict[str, list[dict]]):
    import json

    for variant in ("base", "sft", "dpo"):
        out = root / "eval" / variant
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{suite}.json").write_text(json.dumps({suite: metrics[variant]}))
        tasks = root / "tasks" / variant
        tasks.mkdir(parents=True, exist_ok=True)
        (tasks / f"{suite}.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                          for r in rows[variant]))


def summary_of(tmp_path, suites: list[str], **budget):
    from conftest import repo_params, stage_cfg
    from stages import summary
    from stages.config import SummaryStage

    params = repo_params()
    params["paths"]["metrics"] = str(tmp_path)
    params["eval"]["suites"] = suites
    params["eval"]["budget"] = budget
    return summary.main(stage_cfg(SummaryStage, params))


def test_summary_pairs_probes_by_id_and_judges_against_the_budget(tmp_path):
    import json

    outcomes = {"base": [True] * 8, "sft": [False] * 7 + [True], "dpo": [True] * 8}
    rows = {v: [{"id": f"t{i}", "metric": "pass@1", "passed": p} for i, p in enumerate(ps)]
            for v, ps in outcomes.items()}
    rows["dpo"].reverse()                            # pairing is by id, not by line
    write_suite(tmp_path, "code", {v: {"pass@1": sum(ps) / 8, "passed": sum(ps), "tasks": 8}
                                   for v, ps in outcomes.items()}, rows)
    row = summary_of(tmp_path, ["code"], code=0.02)["code"]["pass@1"]
    # sft: b = 7 discordant, all one way: z = -7 / sqrt(7), p = erfc(sqrt(7 / 2)); the CI's
    # top is below -0.02
    assert row["sft_delta"] == -0.875 and row["sft_n"] == 8
    assert row["sft_p"] == pytest.approx(math.erfc(math.sqrt(3.5)), rel=1e-3)
    assert row["sft_ci95_high"] < -0.02 and row["sft_verdict"] == "over-budget"
    assert row["sft_ci_method"] == row["dpo_ci_method"] == "tango-score"
    # dpo: nothing discordant on 8 probes is no proof of "no drop": the score interval is
    # +-z^2 / (n + z^2) = +-3.8415 / 11.8415, which holds -0.02
    assert row["dpo_delta"] == 0.0 and row["dpo_verdict"] == "inconclusive"
    assert row["dpo_ci95_low"] == pytest.approx(-0.3244, abs=1e-4) == -row["dpo_ci95_high"]
    assert row["dpo_p"] == 1.0
    bars = {v: json.loads((tmp_path / "capability" / f"{v}.json").read_text())
            for v in ("base", "sft", "dpo")}
    assert bars == {"base": [{"metric": "code pass@1", "value": 1.0}],
                    "sft": [{"metric": "code pass@1", "value": 0.125}],
                    "dpo": [{"metric": "code pass@1", "value": 1.0}]}


def test_a_small_drop_on_few_probes_is_inconclusive_and_says_how_many_would_tell(tmp_path):
    outcomes = {"base": [True] * 10, "sft": [False] + [True] * 9, "dpo": [True] * 10}
    rows = {v: [{"id": f"t{i}", "metric": "score", "passed": p} for i, p in enumerate(ps)]
            for v, ps in outcomes.items()}
    write_suite(tmp_path, "dimensions", {v: {"score": sum(ps) / 10} for v, ps in
                                         outcomes.items()}, rows)
    row = summary_of(tmp_path, ["dimensions"], dimensions=0.05)["dimensions"]["score"]
    # -0.1 with a CI from below -0.1 to above 0: it holds -0.05, so the probes cannot tell;
    # b = 1: z = -1, p = erfc(1 / sqrt(2)) = 0.3173
    assert row["sft_verdict"] == "inconclusive"
    assert row["sft_p"] == pytest.approx(0.3173, abs=1e-4)
    # the paired non-inferiority sample size: 7.849 (psi - delta^2) / (delta + b)^2 with
    # psi = 1/10 discordant: 7.849 * (0.1 - 0.01) / 0.05^2 = 282.6
    assert row["sft_probes_needed"] == math.ceil(7.8489 * (0.1 - 0.01) / 0.05 ** 2) == 283
    assert row["sft_mdd"] == 0.4                             # 4 / 10


def test_every_probe_of_a_suite_counts_not_the_last_one(tmp_path):
    # 36 probes with distinct ids: n is 36 (the old key collapsed them into one)
    outcomes = {"base": [True] * 36, "sft": [True] * 30 + [False] * 6, "dpo": [True] * 36}
    rows = {v: [{"id": f"gen-{i}", "metric": "score", "passed": p} for i, p in enumerate(ps)]
            for v, ps in outcomes.items()}
    write_suite(tmp_path, "dimensions", {v: {"score": sum(ps) / 36} for v, ps in
                                         outcomes.items()}, rows)
    row = summary_of(tmp_path, ["dimensions"])["dimensions"]["score"]
    # b = 6: z = -sqrt(6), p = erfc(sqrt(3)) = 0.0143
    assert row["sft_n"] == 36 and row["sft_p"] == pytest.approx(math.erfc(math.sqrt(3)),
                                                                rel=1e-3)
    assert row["sft_verdict"] == "regressed"                 # no budget: p < 0.05, CI < 0


def test_perplexity_verdict_uses_the_token_weighted_delta(tmp_path):
    # base 1 nat/token on both probes; sft: the 90-token probe rises by 0.1 per token and the
    # 10-token one by 1.0: weighted delta (9 + 10) / 100 = 0.19 (unweighted: 0.55)
    def probe(i, nats, tokens):
        return {"id": f"p{i}", "metric": "code_loss", "nats": nats, "tokens": tokens}
    rows = {"base": [probe(0, 90.0, 90), probe(1, 10.0, 10)],
            "sft": [probe(0, 99.0, 90), probe(1, 20.0, 10)],
            "dpo": [probe(0, 90.0, 90), probe(1, 10.0, 10)]}
    metrics = {"base": {"code_loss": 1.0}, "sft": {"code_loss": 1.19}, "dpo": {"code_loss": 1.0}}
    write_suite(tmp_path, "perplexity", metrics, rows)
    row = summary_of(tmp_path, ["perplexity"], perplexity=0.1)["perplexity"]["code_loss"]
    assert row["sft_delta"] == pytest.approx(0.19)
    assert row["sft_n"] == 2 and "sft_p" not in row
    assert row["dpo_verdict"] == "within-noise"


def test_summary_refuses_variants_scored_on_other_probes(tmp_path):
    rows = {v: [{"id": f"t{i}", "metric": "pass@1", "passed": True} for i in range(3)]
            for v in ("base", "sft", "dpo")}
    rows["sft"][2]["id"] = "other"
    write_suite(tmp_path, "code", {v: {"pass@1": 1.0} for v in rows}, rows)
    with pytest.raises(ValueError, match=r"sft was scored on other probes than base \(missing "
                                         r"\['t2'\], extra \['other'\]\)"):
        summary_of(tmp_path, ["code"])


def test_learned_and_forgot_pair_the_target_and_the_retention_suites(tmp_path):
    # identity (the target): base 0/4, sft 4/4; knowledge and dimensions (retention): sft
    # loses 1 of 4 and 2 of 4: forgetting = mean(-0.25, -0.5) = -0.375
    def rows(passed):
        return [{"id": f"p{i}", "metric": "m", "passed": p} for i, p in enumerate(passed)]
    for suite, sft in [("identity", [True] * 4), ("knowledge", [False] + [True] * 3),
                       ("dimensions", [False, False, True, True])]:
        base = [suite != "identity"] * 4
        write_suite(tmp_path, suite, {v: {"m": sum(p) / 4} for v, p in
                                      [("base", base), ("sft", sft), ("dpo", base)]},
                    {"base": rows(base), "sft": rows(sft), "dpo": rows(base)})
    from conftest import repo_params, stage_cfg
    from stages import summary
    from stages.config import SummaryStage

    params = repo_params()
    params["paths"]["metrics"] = str(tmp_path)
    params["eval"].update(suites=["identity", "knowledge", "dimensions"], budget={},
                          retention=["knowledge", "dimensions", "hellaswag"], target="identity")
    entry = summary.main(stage_cfg(SummaryStage, params))["learned_forgot"]
    assert entry["learned"]["suite"] == "identity" and entry["learned"]["sft_delta"] == 1.0
    forgot = entry["forgot"]
    assert forgot["suites"] == ["knowledge", "dimensions"]        # hellaswag did not run
    assert forgot["sft_delta"] == -0.375 and forgot["dpo_delta"] == 0.0
    assert forgot["sft_ci95_low"] <= -0.375 <= forgot["sft_ci95_high"]
    bars = json.loads((tmp_path / "capability" / "sft.json").read_text())
    assert [b["metric"] for b in bars] == ["identity m", "knowledge m", "dimensions m"]


def test_the_committed_summary_reads_consistently():
    """metrics/summary.json as committed: every judged metric pairs all of its suite's probes,
    p < 0.05 exactly when the CI excludes 0, and each verdict follows from the CI and budget."""
    import json

    from conftest import REPO, repo_params
    from stages.core.io import read_jsonl
    from stages.stats.paired import verdict

    params = repo_params()
    summary = json.loads((REPO / "metrics" / "summary.json").read_text(encoding="utf-8"))
    probes = REPO / "data" / "sources" / "probes"
    count = {name: len(read_jsonl(probes / f"{name}.jsonl"))
             for name in ("code", "identity", "knowledge", "dimensions")}
    expected_n = {("code", "pass@1"): count["code"], ("identity", "consistency"): count["identity"],
                  ("knowledge", "accuracy"): count["knowledge"],
                  ("dimensions", "score"): count["dimensions"],
                  ("perplexity", "code_loss"): count["code"],
                  ("perplexity", "general_loss"): count["knowledge"],
                  ("perplexity", "identity_loss"): count["identity"]}
    judged = [(suite, metric, row) for suite, metrics in summary.items()
              for metric, row in metrics.items() if "sft_verdict" in row]
    assert {(s, m) for s, m, _ in judged} >= {k for k in expected_n if k[0] in summary}
    for suite, metric, row in judged:
        for v in ("sft", "dpo"):
            where = f"{suite} {metric} {v}"
            if (suite, metric) in expected_n and params["eval"]["limit"] is None:
                assert row[f"{v}_n"] == expected_n[(suite, metric)], where
            low, high = row[f"{v}_ci95_low"], row[f"{v}_ci95_high"]
            if f"{v}_p" in row:
                assert (row[f"{v}_p"] < 0.05) == (low > 0 or high < 0), where
            higher = not metric.endswith("_loss")
            assert row[f"{v}_verdict"] == verdict(low, high, params["eval"]["budget"].get(suite),
                                                  higher), where
