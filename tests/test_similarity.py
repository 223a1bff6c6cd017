"""CodeBLEU and BLEU against the reference solution (issue 23): pinned by hand, what they
cannot tell (a wrong copy of the reference's shape scores high), how eval attaches them to the
code suites' rows, and the summary's pairing over only the probes that have a reference."""

from __future__ import annotations

import json

import pytest

from stages.stats.similarity import aggregate, bleu, codebleu, per_probe

ADD = "def add(a, b):\n    return a + b\n"


def test_identical_code_scores_one_and_no_code_zero():
    assert codebleu(ADD, ADD) == pytest.approx(1.0)
    assert bleu(ADD, ADD) == pytest.approx(1.0)
    assert per_probe([None], ADD) == {"codebleu": 0.0, "bleu": 0.0}
    # the mean over samples: one exact copy and one reply without code
    assert per_probe([ADD, None], ADD) == {"codebleu": 0.5, "bleu": 0.5}
    assert aggregate([{"similarity": {"codebleu": 1.0, "bleu": 0.5}},
                      {"similarity": {"codebleu": 0.0, "bleu": 0.0}}, {"passed": True}]) == {
        "codebleu": 0.5, "bleu": 0.25}
    assert aggregate([{"passed": True}]) == {}


def test_similarity_is_not_correctness():
    # the adversarial pair: a wrong program in the reference's shape beats a right one
    # written another way, which is why the README puts it beside pass@1, never in its place
    wrong_copy = "def add(a, b):\n    return a - b\n"
    right_other = "def add(x, y):\n    total = 0\n    total += x\n    total += y\n    return total\n"
    assert codebleu(wrong_copy, ADD) > 0.6 > codebleu(right_other, ADD)
    assert bleu(wrong_copy, ADD) > bleu(right_other, ADD)


def test_code_suites_rows_carry_similarity(tmp_path):
    from types import SimpleNamespace

    from stages.suites import dimensions, judged_rows

    # judged_rows on a stub suite: a row keeps the code it ran, the suite names the reference
    suite = SimpleNamespace(
        JUDGED="pass@1", judge=lambda cfg, probes, replies: [
            {"id": p["id"], "passed": True, "codes": [ADD if "add" in r[0] else None]}
            for p, r in zip(probes, replies, strict=True)],
        prompt=lambda cfg, p: p["id"], reference=lambda cfg, p: p.get("solution"))
    probes = [{"id": "a", "solution": ADD}, {"id": "b", "solution": ADD}, {"id": "c"}]
    rows = judged_rows(None, suite, probes, [["add"], ["no code"], ["add"]])
    assert rows[0]["similarity"] == {"codebleu": 1.0, "bleu": 1.0}
    assert rows[1]["similarity"] == {"codebleu": 0.0, "bleu": 0.0}
    assert "similarity" not in rows[2]  # no reference, nothing to compare
    # dimensions: only generation and repair have reference code
    assert dimensions.reference(None, {"dimension": "repair", "solution": ADD}) == ADD
    assert dimensions.reference(None, {"dimension": "explanation", "reference": "prose"}) is None


def test_summary_pairs_similarity_over_probes_with_a_reference(tmp_path):
    from test_summary import summary_of, write_suite

    # 10 probes with a reference, where sft copies it (1.0) and base does not (0.0), and
    # 5 prose probes without one, which the pairing must leave out (n = 10, not 15)
    def rows(score: float):
        with_ref = [{"id": f"g{i}", "metric": "pass@1", "passed": True,
                     "similarity": {"codebleu": score, "bleu": score / 2}} for i in range(10)]
        return with_ref + [{"id": f"e{i}", "metric": "pass@1", "passed": True} for i in range(5)]
    by_variant = {"base": rows(0.0), "sft": rows(1.0), "dpo": rows(0.0)}
    metrics = {v: {"pass@1": 1.0, **aggregate(r)} for v, r in by_variant.items()}
    write_suite(tmp_path, "dimensions", metrics, by_variant)
    out = summary_of(tmp_path, ["dimensions"])["dimensions"]
    cb = out["codebleu"]
    assert (cb["base"], cb["sft"], cb["sft_delta"], cb["sft_n"]) == (0.0, 1.0, 1.0, 10)
    assert cb["sft_ci95_low"] > 0 and cb["sft_p"] < 0.05
    assert cb["dpo_ci95_low"] < 0 < cb["dpo_ci95_high"]
    assert out["bleu"]["sft_delta"] == 0.5 and "sft_verdict" not in cb
    json.dumps(out)
