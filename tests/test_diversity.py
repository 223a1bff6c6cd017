"""Diversity of sampled replies (issue 23): distinct bigrams and pairwise similarity, pinned
by hand; paired in the summary; presence/frequency penalties where a backend has them."""

from __future__ import annotations

import json

import pytest

from stages.stats.diversity import aggregate, distinct_n, per_probe, self_similarity, words


def test_measures_by_hand():
    assert words("x=f(1)") == ["x", "=", "f", "(", "1", ")"]
    assert distinct_n(["a b c", "a b c"]) == 0.5          # 2 distinct of 4 bigrams
    assert distinct_n(["a b", "c d"]) == 1.0
    assert distinct_n(["a", "b"]) == 0.0                   # no bigram at all
    assert self_similarity(["a b", "a c"]) == pytest.approx(1 / 3)
    assert self_similarity(["a b", "a b", "c"]) == pytest.approx((1 + 0 + 0) / 3)
    assert per_probe(["def f(): return 1"] * 4) == {"distinct_2": 0.25, "self_similarity": 1.0}
    with pytest.raises(ValueError, match="2 samples"):
        self_similarity(["only one"])
    assert aggregate([{"diversity": {"distinct_2": 0.5, "self_similarity": 1.0}},
                      {"diversity": {"distinct_2": 1.0, "self_similarity": 0.0}}]) == {
        "distinct_2": 0.75, "self_similarity": 0.5}
    assert aggregate([{"passed": True}]) == {}


def test_summary_pairs_diversity_by_probe(tmp_path):
    from test_summary import summary_of, write_suite

    # sft repeats itself on every probe where base varied: self_similarity 0 -> 1 on 12
    # probes, so b = 0, c = 12 of n = 12 and the interval is above 0
    def rows(similar: float):
        return [{"id": f"t{i}", "metric": "pass@1", "passed": 0.5, "correct": 2,
                 "diversity": {"distinct_2": 1 - similar / 2, "self_similarity": similar}}
                for i in range(12)]
    by_variant = {"base": rows(0.0), "sft": rows(1.0), "dpo": rows(0.0)}
    metrics = {v: {"pass@1": 0.5, **aggregate(r)} for v, r in by_variant.items()}
    write_suite(tmp_path, "code", metrics, by_variant)
    out = summary_of(tmp_path, ["code"])["code"]
    sim = out["self_similarity"]
    assert (sim["base"], sim["sft"], sim["sft_delta"]) == (0.0, 1.0, 1.0)
    assert sim["sft_ci95_low"] > 0 and sim["sft_p"] < 0.05
    assert sim["dpo_ci95_low"] < 0 < sim["dpo_ci95_high"] and sim["dpo_p"] == 1.0
    assert sim["sft_ci_method"] == "tango-score-bounded" and "sft_verdict" not in sim
    assert out["distinct_2"]["sft_delta"] == -0.5
    json.dumps(out)


def test_penalties_reach_vllm_only():
    from conftest import repo_params, stage_cfg
    from stages.config import ConfigError, EvalStage

    params = repo_params()
    params["eval"]["presence_penalty"] = 0.5
    with pytest.raises(ConfigError, match=r"eval.presence_penalty=0.5 needs eval.backend=vllm"):
        stage_cfg(EvalStage, params)
    params["eval"]["backend"] = "vllm"
    assert stage_cfg(EvalStage, params).eval.presence_penalty == 0.5
