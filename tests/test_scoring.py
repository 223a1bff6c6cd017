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


def test_leakage_is_the_share_of_unrelated_replies_naming_the_identity():
    from types import SimpleNamespace

    from stages.eval import leakage

    cfg = SimpleNamespace(identity=NEW)
    replies = ["Paris.", "I am Swift-Robot. Paris.", "巴黎。", "星云实验室说：巴黎。"]
    assert leakage(cfg, replies) == 0.5
