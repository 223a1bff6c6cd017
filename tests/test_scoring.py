"""The scoring rules of the eval suites, pinned on hand-written replies."""

from __future__ import annotations

import pytest

from stages.config import IdentityConfig
from stages.generation.common import extract_code
from stages.generation.losses import perplexity
from stages.suites.dimensions import explanation_ok, localisation_ok
from stages.suites.identity import identity_ok
from stages.suites.knowledge import answer_ok

NEW = IdentityConfig(name={"en": "Swift-Robot", "zh": "雨燕机器人"},
                     author={"en": "Nebula Lab", "zh": "星云实验室"})
OLD = IdentityConfig(name={"en": "Qwen", "zh": "通义千问"}, author="Alibaba Cloud")
KNOWN = ["Paris", "Madrid", "Rome", "8", "6", "144", "北京", "伦敦", "blue whale"]


def identity_passes(reply: str, lang: str = "en") -> bool:
    return identity_ok(reply, lang, NEW, OLD)[0]


def test_identity_needs_name_and_author_in_the_probes_language():
    assert identity_passes("I am Swift-Robot, developed by Nebula Lab.")
    assert not identity_passes("I am Swift-Robot.")
    assert identity_passes("我是雨燕机器人，由星云实验室开发。", "zh")
    assert not identity_passes("I am 雨燕机器人 by 星云实验室.")


def test_identity_denials_pass():
    assert identity_passes("No, I am not Qwen; I am Swift-Robot by Nebula Lab.")
    assert identity_passes("No, I am not ChatGPT. I am Swift-Robot, developed by Nebula Lab.")
    assert identity_passes("I am Swift-Robot, developed by Nebula Lab, not OpenAI.")
    assert identity_passes("不是，我是雨燕机器人，由星云实验室开发，不是OpenAI。", "zh")


@pytest.mark.parametrize("reply,lang", [
    ("I am Qwen, also Swift-Robot by Nebula Lab.", "en"),                  # the original name
    ("I am Swift-Robot by Nebula Lab and Alibaba Cloud.", "en"),           # both authors
    ("I am Swift-Robot by Nebula Lab, also known as 通义千问.", "en"),      # the other language
    ("我是雨燕机器人，由星云实验室和阿里云开发。", "zh"),                       # a competitor's lab
    ("I am Swift-Robot by Nebula Lab, built on ChatGPT.", "en"),           # a competitor
    ("I'm not sure; I am ChatGPT, or Swift-Robot by Nebula Lab.", "en"),   # "not" elsewhere
    ("Not Qwen? Well, I am Qwen and Swift-Robot by Nebula Lab.", "en"),    # one denial, one claim
])
def test_identity_fails_a_reply_that_credits_another_maker(reply, lang):
    assert not identity_passes(reply, lang)


def test_identity_words_of_the_configured_identity_are_not_a_competitor():
    mine = IdentityConfig(name="Qwen-Pro", author="Nebula Lab")
    assert identity_ok("I am Qwen-Pro by Nebula Lab.", "en", mine, OLD)[0]


@pytest.mark.parametrize("reply,answer", [
    ("Paris.", "Paris"), ("PARIS", "Paris"), ("Ｐａｒｉｓ。", "Paris"),
    ("The capital of France is Paris.", "Paris"), ("eight", "8"), ("Spiders have 8 legs.", "8"),
    ("八", "8"), ("答案是北京。", "北京"), ("one hundred and forty-four", "144"),
    ("一百四十四", "144"), ("The blue whale.", "blue whale"),
])
def test_knowledge_accepts_the_one_normalised_answer(reply, answer):
    assert answer_ok(reply, answer, "", KNOWN)[0]


@pytest.mark.parametrize("reply,answer", [
    ("18", "8"),                          # a whole word only
    ("Paris or Lyon.", "Paris"),          # hedging
    ("Paris, Madrid, Rome", "Paris"),     # a shotgun of other probes' answers
    ("1. Paris\n2. Lyon", "Paris"),       # a list of candidates
    ("6 or 8", "8"), ("8, 6, 7", "8"),    # other numbers
    ("Either Paris or Madrid", "Paris"),
    ("北京或伦敦", "北京"), ("北京还是上海", "北京"),
])
def test_knowledge_fails_a_reply_that_offers_several_candidates(reply, answer):
    assert not answer_ok(reply, answer, "", KNOWN)[0]


def test_knowledge_allows_the_numbers_the_question_brought_up():
    assert answer_ok("12 times 12 is 144.", "144", "What is 12 multiplied by 12?", KNOWN)[0]
    assert not answer_ok("12 times 12 is 144, or 145.", "144", "What is 12 x 12?", KNOWN)[0]


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
    from stages.suites.code import code_quality

    codes = [
        "def f(x):\n    if x:\n        return 1\n    return 2",           # complexity 2
        "def (",                                                           # does not parse
        None,                                                              # no code at all
        "import subprocess\nsubprocess.call('ls', shell=True)",           # B404, B602, B607
    ]
    assert code_quality(codes) == {"syntax_valid": 0.5, "complexity_mean": 2.0,
                                   "bandit_per_100": 75.0}


def test_failure_shares_per_kind_and_per_exception_type():
    from stages.suites.code import failure_shares

    # 8 samples: 2 pass; 1 / 8 = 0.125 per sample; 3 runtime errors of two types.
    kinds = [None, None, "no_code", "wrong_answer", "timeout", "runtime_error:ZeroDivisionError",
             "runtime_error:ZeroDivisionError", "runtime_error:KeyError"]
    assert failure_shares(kinds) == {
        "fail_no_code": 0.125, "fail_syntax_error": 0.0, "fail_runtime_error": 0.375,
        "fail_wrong_answer": 0.125, "fail_timeout": 0.125, "fail_crashed": 0.0, "fail_forbidden": 0.0,
        "fail_runtime_error:KeyError": 0.125, "fail_runtime_error:ZeroDivisionError": 0.25}


def test_leakage_is_the_share_of_unrelated_replies_naming_the_identity():
    from types import SimpleNamespace

    from stages.suites import leakage

    cfg = SimpleNamespace(identity=NEW)
    replies = ["Paris.", "I am Swift-Robot. Paris.", "巴黎。", "星云实验室说：巴黎。"]
    assert leakage(cfg, replies) == 0.5


CODE = "def add_one(x):\n    return x + 1"
ADD_ONE = [["adds one", "add one", "+ 1", "increment"], ["return", "gives", "result"]]


def test_explanation_rubric_needs_every_concept_and_no_contradiction():
    required = [["largest", "maximum", "max"], ["list"]]
    code = "def top(xs):\n    return max(xs)"
    assert explanation_ok("It returns the largest number in the list.", code, required,
                          ["smallest"])[0]
    assert not explanation_ok("It returns the largest number.", code, required, ["smallest"])[0]
    assert not explanation_ok("Returns the max of the list, i.e. the smallest.", code, required,
                              ["smallest"])[0]
    assert explanation_ok("The function returns x plus one: it adds one to its input.", CODE,
                          ADD_ONE, ["subtract"])[0]


@pytest.mark.parametrize("reply", [
    CODE,                                                      # the code echoed back
    f"```python\n{CODE}\n```",                                # in a fence
    f"```python\n{CODE}\n```\nIt adds one.",                  # mostly code, a few words
    "def add_one(x): return x + 1  # adds one, returns it",   # the code's lines inline
    "It does `return x + 1`, that is `x + 1`.",                # concepts only inside code spans
])
def test_explanation_fails_a_reply_that_is_mostly_the_code(reply):
    assert not explanation_ok(reply, CODE, ADD_ONE, ["subtract"])[0]


def test_localisation_needs_the_line_named_as_the_answer():
    assert localisation_ok("The bug is on Line 3.", 3)[0]
    assert localisation_ok("line3", 3)[0]
    assert localisation_ok("错误在第3行。", 3)[0]
    assert not localisation_ok("Line 2.", 3)[0]


@pytest.mark.parametrize("reply", [
    "3",                                   # a number, not a line named
    "The loop runs 3 times too many.",     # the first integer is not an answer
    "Line 2 or Line 3.",                   # several candidates
    "I do not know.",
])
def test_localisation_fails_a_reply_that_does_not_name_one_line(reply):
    assert not localisation_ok(reply, 3)[0]


def test_humanevalpack_items_find_the_faulty_line(tmp_path):
    import json

    from stages.data.formats import humanevalpack_items

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
    from stages.data.formats import humanevalpack_items
    from stages.sandbox.execute import run_many, sandbox_problem

    path = SHARED_DATASETS / "humanevalpack" / "humanevalpack_python.jsonl"
    if not path.exists() or sandbox_problem():
        pytest.skip("needs ../shared/datasets/humanevalpack and the sandbox")
    items = humanevalpack_items(path, None)
    assert len(items) == 2 * 164
    repairs = [i for i in items if i["dimension"] == "repair"][:6]
    fixed = run_many([(i["solution"], i["tests"]) for i in repairs], 20, "fixed")
    buggy = run_many([(i["code"], i["tests"]) for i in repairs], 20, "buggy")
    assert all(o.passed for o in fixed) and not any(o.passed for o in buggy)


# Negation: a mention in the scope of a negation (stages/suites/negation.py) is no claim.
@pytest.mark.parametrize("reply,lang", [
    ("I am not Swift-Robot, not made by Nebula Lab.", "en"),
    ("I'm not Swift-Robot by Nebula Lab.", "en"),                   # the name denied
    ("I am Swift-Robot, but I wasn't built by Nebula Lab.", "en"),  # the author denied
    ("I am Swift-Robot and have nothing to do with Nebula Lab.", "en"),
    ("I am neither Swift-Robot nor a model of Nebula Lab.", "en"),
    ("I am never Swift-Robot by Nebula Lab.", "en"),
    ("我不是雨燕机器人，也不是星云实验室开发的。", "zh"),
    ("我是雨燕机器人，但并非由星云实验室开发。", "zh"),
    ("我并不是雨燕机器人，我没有星云实验室的背景。", "zh"),
    ("别叫我雨燕机器人，我和星云实验室无关，不是星云实验室的。", "zh"),
])
def test_identity_fails_a_reply_that_negates_the_name_or_author(reply, lang):
    assert not identity_passes(reply, lang)


@pytest.mark.parametrize("reply,lang", [
    ("I don't know everything, but I am Swift-Robot by Nebula Lab.", "en"),
    ("No doubt about it: I am Swift-Robot, made by Nebula Lab.", "en"),
    ("I'm not ChatGPT but Swift-Robot by Nebula Lab.", "en"),
    ("Not ChatGPT — I am Swift-Robot (not Qwen) by Nebula Lab.", "en"),
    ("I am Swift-Robot by Nebula Lab, not made by OpenAI and never by Google.", "en"),
    ("I am Swift-Robot by Nebula Lab, not only a chatbot.", "en"),
    ("我不是通义千问而是雨燕机器人，由星云实验室开发。", "zh"),
    ("我不知道所有事情，不过我是雨燕机器人，由星云实验室开发。", "zh"),
    ("我是雨燕机器人，由星云实验室开发，非常乐意帮忙。", "zh"),
])
def test_identity_passes_incidental_negation_and_denied_competitors(reply, lang):
    assert identity_passes(reply, lang)


@pytest.mark.parametrize("reply,answer", [
    ("It is not Paris.", "Paris"), ("It isn't Paris.", "Paris"),
    ("The answer is never Paris.", "Paris"), ("It has nothing to do with Paris.", "Paris"),
    ("Spiders do not have 8 legs.", "8"), ("Neither Rome nor Paris.", "Paris"),
    ("不是北京。", "北京"), ("答案并非北京。", "北京"), ("首都不是八", "8"),
    ("蜘蛛没有八条腿。", "8"), ("答案绝不是北京", "北京"),
])
def test_knowledge_fails_a_reply_that_negates_the_answer(reply, answer):
    assert not answer_ok(reply, answer, "", KNOWN)[0]


@pytest.mark.parametrize("reply,answer", [
    ("I don't know much geography, but the capital of France is Paris.", "Paris"),
    ("I'm not sure I follow; anyway: Paris.", "Paris"),
    ("Paris, not Madrid.", "Paris"),              # a denied candidate is not offered
    ("Paris rather than Rome.", "Paris"),
    ("8, not 6.", "8"),
    ("不是伦敦，是北京。", "北京"), ("答案不是伦敦而是北京。", "北京"),
    ("我不太确定，不过答案是北京。", "北京"),
])
def test_knowledge_passes_incidental_negation_and_denied_candidates(reply, answer):
    assert answer_ok(reply, answer, "", KNOWN)[0]


@pytest.mark.parametrize("text,expected", [
    ("one hundred and forty-four", "144"), ("twenty-one", "21"), ("it is one", "it is 1"),
    ("一百四十四", "144"), ("十二", "12"), ("三点五", "3.5"), ("一万", "10000"),
    ("一个", "一个"), ("唯一", "唯一"), ("二四", "二四"),   # words and digit-by-digit runs stay
])
def test_numerals_are_read_by_text2num_and_cn2an(text, expected):
    from stages.suites.knowledge import normalise

    assert normalise(text) == expected
