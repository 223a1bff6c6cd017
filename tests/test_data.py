"""Source formats, ms-swift #N sampling and identity substitution."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from stages.config import IdentityConfig
from stages.data.formats import fill_identity, load_chat_rows, parse_spec, sample, to_messages

IDENTITY = IdentityConfig(name={"en": "Swift-Robot", "zh": "雨燕机器人"}, author="Nebula Lab")


def test_sample_beyond_the_source_repeats_it_then_draws_the_rest_without_replacement():
    rows = list(range(10))
    drawn = sample(rows, 25, random.Random(0))
    counts = Counter(drawn)
    assert len(drawn) == 25
    assert sorted(counts.values()) == [2] * 5 + [3] * 5  # 25 = 2 x 10 + 5 distinct extras


def test_sample_below_the_source_draws_without_replacement_and_is_seeded():
    rows = list(range(10))
    a, b = sample(rows, 4, random.Random(7)), sample(rows, 4, random.Random(7))
    assert a == b and len(set(a)) == 4
    assert sample(rows, None, random.Random(0)) == rows


@pytest.mark.parametrize("spec", ["data/x.jsonl#0", "data/x.jsonl#ten", "data/x.jsonl#-3"])
def test_bad_count_is_an_error(spec):
    with pytest.raises(ValueError, match="#N must be a positive integer"):
        parse_spec(spec)


def test_identity_placeholders_are_filled_per_language():
    assert fill_identity("我是{{NAME}}，由{{AUTHOR}}开发。", IDENTITY, "zh", "x") == \
        "我是雨燕机器人，由Nebula Lab开发。"
    assert fill_identity("I am {{name}} by {{author}}.", IDENTITY, "en", "x") == \
        "I am Swift-Robot by Nebula Lab."


def test_a_placeholder_left_over_names_the_row():
    with pytest.raises(ValueError, match=r"src\.jsonl:3: placeholder \{\{NAM\}\}"):
        fill_identity("I am {{NAM}}", IDENTITY, "en", "src.jsonl:3")


@pytest.mark.parametrize("row,expected_user,expected_answer", [
    ({"instruction": "Add", "input": "1 2", "output": "3"}, "Add\n1 2", "3"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
     "hi", "yo"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
     "q", "a"),
    ({"query": "Who?", "response": "Me", "tag": "en"}, "Who?", "Me"),
    ({"prompt": "p", "completion": "c"}, "p", "c"),
    ({"prompt": "Write f", "solution": "def f():\n    return 1", "tests": ["assert f() == 1"]},
     "Write f", "```python\ndef f():\n    return 1\n```"),
])
def test_every_format_becomes_chat_messages(row, expected_user, expected_answer):
    msgs = to_messages(row, "x")
    assert msgs[-2] == {"role": "user", "content": expected_user}
    assert msgs[-1] == {"role": "assistant", "content": expected_answer}


def test_unknown_format_names_the_row_and_its_fields():
    with pytest.raises(ValueError, match=r"f\.jsonl:2: unknown format \(fields \['text'\]\)"):
        to_messages({"text": "x"}, "f.jsonl:2")


def test_load_chat_rows_adds_the_system_prompt_and_fills_identity(tmp_path):
    src = tmp_path / "identity.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"query": "Who are you?", "response": "I am {{NAME}}, made by {{AUTHOR}}.", "tag": "en"},
        {"query": "你是谁？", "response": "我是{{NAME}}。", "tag": "zh"},
    ]))
    rows = load_chat_rows(parse_spec(f"{src}#3"), IDENTITY, "SYS", random.Random(0))
    assert len(rows) == 3
    assert all(r["messages"][0] == {"role": "system", "content": "SYS"} for r in rows)
    answers = {r["messages"][-1]["content"] for r in rows}
    assert answers == {"I am Swift-Robot, made by Nebula Lab.", "我是雨燕机器人。"}


def test_missing_source_file_says_where_to_fix_it(tmp_path):
    with pytest.raises(ValueError, match="does not exist; fix the path in data.sources"):
        load_chat_rows(parse_spec(str(tmp_path / "nope.jsonl")), IDENTITY, "S", random.Random(0))


def test_json_lines_split_on_newlines_only(tmp_path):
    """A JSON string may hold U+2028 or U+0085 unescaped; str.splitlines would cut the row."""
    import json

    from stages.core.io import read_jsonl

    rows = [{"text": "a\u2028b"}, {"text": "c\u0085d\x1ce"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows),
                    encoding="utf-8")
    assert read_jsonl(path) == rows
