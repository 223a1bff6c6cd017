"""The scoring rules of the eval suites, pinned on hand-written replies."""

from __future__ import annotations

from stages.config import IdentityConfig
from stages.eval import answer_found, identity_ok
from stages.generate import extract_code, perplexity

NEW = IdentityConfig(name={"en": "Swift-Robot", "zh": "雨燕机器人"},
                     author={"en": "Nebula Lab", "zh": "星云实验室"})
OLD = IdentityConfig(name={"en": "Qwen", "zh": "通义千问"}, author="Alibaba Cloud")


def test_identity_needs_name_and_author_in_the_probes_language():
    assert identity_ok("I am Swift-Robot, developed by Nebula Lab.", "Who are you?", "en", NEW, OLD)
    assert not identity_ok("I am Swift-Robot.", "Who are you?", "en", NEW, OLD)
    assert identity_ok("我是雨燕机器人，由星云实验室开发。", "你是谁？", "zh", NEW, OLD)


def test_claiming_the_original_identity_fails_but_denying_it_does_not():
    assert not identity_ok("I am Qwen, also Swift-Robot by Nebula Lab.", "Who are you?", "en",
                           NEW, OLD)
    assert identity_ok("No, I am not Qwen; I am Swift-Robot by Nebula Lab.", "Are you Qwen?",
                       "en", NEW, OLD)


def test_answers_match_whole_words_only():
    assert answer_found("It has 8 legs.", "8")
    assert not answer_found("It has 18 legs.", "8")
    assert answer_found("The capital is paris.", "Paris")
    assert answer_found("答案是长江。", "长江")


def test_code_extraction():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone") == \
        "def f():\n    return 1"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    assert extract_code("I cannot help with that.") is None


def test_perplexity_is_exp_of_mean_token_loss():
    import math

    mean, ppl = perplexity(120.0, 60)
    assert mean == 2.0 and math.isclose(ppl, math.exp(2.0))


def test_code_quality_counts_valid_code_complexity_and_bandit_findings():
    from stages.eval import code_quality

    codes = [
        "def f(x):\n    if x:\n        return 1\n    return 2",           # complexity 2
        "def (",                                                           # does not parse
        None,                                                              # no code at all
        "import subprocess\nsubprocess.call('ls', shell=True)",           # B404, B602, B607
    ]
    assert code_quality(codes) == {"syntax_valid": 0.5, "complexity_mean": 2.0,
                                   "bandit_per_100": 75.0}


def test_failure_shares_per_kind_and_per_exception_type():
    from stages.eval import failure_shares

    # 8 samples: 2 pass; 1 / 8 = 0.125 per sample; 3 runtime errors of two types.
    kinds = [None, None, "no_code", "wrong_answer", "timeout", "runtime_error:ZeroDivisionError",
             "runtime_error:ZeroDivisionError", "runtime_error:KeyError"]
    assert failure_shares(kinds) == {
        "fail_no_code": 0.125, "fail_syntax_error": 0.0, "fail_runtime_error": 0.375,
        "fail_wrong_answer": 0.125, "fail_timeout": 0.125, "fail_crashed": 0.0,
        "fail_runtime_error:KeyError": 0.125, "fail_runtime_error:ZeroDivisionError": 0.25}


def test_leakage_is_the_share_of_unrelated_replies_naming_the_identity():
    from types import SimpleNamespace

    from stages.eval import leakage

    cfg = SimpleNamespace(identity=NEW)
    replies = ["Paris.", "I am Swift-Robot. Paris.", "巴黎。", "星云实验室说：巴黎。"]
    assert leakage(cfg, replies) == 0.5


def test_explanation_rubric_needs_every_concept_and_no_contradiction():
    from stages.eval import explanation_ok

    required = [["largest", "maximum", "max"], ["list"]]
    assert explanation_ok("It returns the largest number in the list.", required, ["smallest"])[0]
    assert not explanation_ok("It returns the largest number.", required, ["smallest"])[0]
    assert not explanation_ok("Returns the max of the list, i.e. the smallest.", required,
                              ["smallest"])[0]


def test_named_line_prefers_line_n_then_the_first_number():
    from stages.eval import named_line

    assert named_line("The bug is on Line 3 where 2 is used.") == 3
    assert named_line("3") == 3
    assert named_line("line2") == 2
    assert named_line("I do not know.") is None


def test_humanevalpack_items_find_the_faulty_line(tmp_path):
    import json

    from stages.data import humanevalpack_items

    row = {"task_id": "Python/0", "entry_point": "inc", "bug_type": "value misuse",
           "declaration": "def inc(x):\n", "canonical_solution": "    y = x\n    return y + 1\n",
           "buggy_solution": "    y = x\n    return y + 2\n",
           "test": "def check(inc):\n    assert inc(1) == 2\n"}
    path = tmp_path / "pack.jsonl"
    path.write_text(json.dumps(row) + "\n")
    repair, localisation = humanevalpack_items(path, None)
    assert localisation["faulty_line"] == 3 and localisation["dimension"] == "localisation"
    assert repair["solution"] == "def inc(x):\n    y = x\n    return y + 1"
    assert repair["tests"] == ["def check(inc):\n    assert inc(1) == 2\n\ncheck(inc)"]


def test_real_humanevalpack_repairs_pass_and_bugs_fail():
    import pytest

    from conftest import SHARED_DATASETS
    from stages.data import humanevalpack_items
    from stages.execute import run_many, sandbox_problem

    path = SHARED_DATASETS / "humanevalpack" / "humanevalpack_python.jsonl"
    if not path.exists() or sandbox_problem():
        pytest.skip("needs ../shared/datasets/humanevalpack and the sandbox")
    items = humanevalpack_items(path, None)
    assert len(items) == 2 * 164
    repairs = [i for i in items if i["dimension"] == "repair"][:6]
    fixed = run_many([(i["solution"], i["tests"]) for i in repairs], 20, "fixed")
    buggy = run_many([(i["code"], i["tests"]) for i in repairs], 20, "buggy")
    assert all(o.passed for o in fixed) and not any(o.passed for o in buggy)
