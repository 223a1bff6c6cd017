"""curate on real formats and planted problems: every drop reason, every bad input, the
shared public datasets when they are present, determinism under the seed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from conftest import SHARED_DATASETS, read_json, stage_cfg
from stages import curate
from stages.config import CurateStage
from stages.core.io import read_jsonl
from stages.data.formats import DataError

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM\n-----END RSA PRIVATE KEY-----"


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def qa(question: str, answer: str) -> dict:
    return {"instruction": question, "input": "", "output": answer}


def run(pipeline, tmp_path, **data) -> dict:
    """curate with the session's tiny base tokenizer and `data` overriding params.data."""
    _, params = pipeline
    params = copy.deepcopy(params)
    params["paths"].update(curated=str(tmp_path / "curated"), metrics=str(tmp_path / "metrics"))
    params["data"].update(preference_source=None, **data)
    curate.main(stage_cfg(CurateStage, params))
    return read_json(tmp_path / "curated" / "card.json")


def sources(card: dict) -> dict:
    return card["sources"]


def test_each_drop_reason_is_counted(pipeline, tmp_path):
    probe = read_jsonl(Path(pipeline[1]["paths"]["sources"]) / "probes" / "code.jsonl")[0]
    src = write_jsonl(tmp_path / "mixed.jsonl", [
        qa("What is two plus two?", "Four."),                                   # kept
        qa("What is two plus two?", "Four."),                                   # duplicate
        {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
        qa("Show my config.", f"aws_access_key_id = {AWS_KEY}"),                # secret
        qa("Write add.", "```python\ndef add(a, b)\n    return a + b\n```"),   # syntax
        qa("Hi", "Ok"),                                                         # length (< 4 tokens? no: see min)
        qa(probe["prompt"], f"```python\n{probe['solution']}\n```"),            # decontaminated
    ])
    card = run(pipeline, tmp_path, sources=[src],
               clean={**pipeline[1]["data"]["clean"], "min_tokens": 30})
    drops = sources(card)["mixed"]["drops"]
    assert drops == {"invalid": 2, "secret": 1, "syntax": 1, "length": 1,
                     "decontaminated": 1, "duplicate": 1}
    assert sources(card)["mixed"]["rows_out"] == 1
    report = read_jsonl(tmp_path / "curated" / "decontamination.jsonl")
    assert report == [{"source": "mixed", "row": f"{src}:8",
                       "eval_item": f"probes/code:{probe['task_id']}"}]
    metrics = read_json(tmp_path / "metrics" / "curate.json")["curate"]
    assert metrics["drops"]["invalid"] == 2 and metrics["sources"]["mixed"]["drop_secret"] == 1


def test_near_duplicates_go_within_and_across_sources(pipeline, tmp_path):
    long = ("Binary search halves the sorted range at every step, comparing the middle "
            "element with the target and keeping the half that can still contain it.")
    a = write_jsonl(tmp_path / "a.jsonl", [qa("Explain binary search.", long)])
    b = write_jsonl(tmp_path / "b.jsonl", [qa("Explain binary search!", long + " Done")])
    card = run(pipeline, tmp_path, sources=[a, b])
    assert sources(card)["b"]["drops"] == {"duplicate": 1}


def test_other_languages_are_dropped_when_only_python_is_wanted(pipeline, tmp_path):
    src = write_jsonl(tmp_path / "code.jsonl", [
        qa("Write add in JavaScript.", "```js\nfunction add(a, b) { return a + b; }\n```"),
        qa("Write add in Python.", "```python\ndef add(a, b):\n    return a + b\n```"),
    ])
    clean = {**pipeline[1]["data"]["clean"], "code_language": "python"}
    card = run(pipeline, tmp_path, sources=[src], clean=clean)
    assert sources(card)["code"]["drops"] == {"language": 1}


def test_quality_selection_keeps_the_best_rows(pipeline, tmp_path):
    src = write_jsonl(tmp_path / "code.jsonl", [
        qa("Write a function that adds two numbers a and b.",
           "```python\ndef add(a, b):\n    total = a + b\n    return total\n```\nIt adds a and b."),
        qa("Add numbers.", "Use the plus sign."),
        qa("Write code.", "```python\nx = (\n```"),
    ])
    clean = {**pipeline[1]["data"]["clean"], "min_tokens": 0}
    card = run(pipeline, tmp_path, sources=[src], clean=clean,
               quality={"sources": ["code"], "count": 1})
    assert sources(card)["code"]["drops"] == {"syntax": 1, "quality": 1}
    kept = read_jsonl(tmp_path / "curated" / "sft.jsonl")
    assert "def add" in kept[0]["messages"][-1]["content"]


def test_secrets_can_be_redacted_instead(pipeline, tmp_path):
    src = write_jsonl(tmp_path / "cfg.jsonl", [
        qa("Show the deploy key.", f"Here it is:\n{PRIVATE_KEY}\nKeep it safe."),
        qa("Connect to the database.", "Use postgres://admin:hunter2pw@db.internal:5432/app now."),
    ])
    clean = {**pipeline[1]["data"]["clean"], "secrets": "redact"}
    card = run(pipeline, tmp_path, sources=[src], clean=clean)
    assert sources(card)["cfg"]["rows_out"] == 2
    text = (tmp_path / "curated" / "sft.jsonl").read_text()
    assert "hunter2pw" not in text and "BEGIN RSA PRIVATE KEY" not in text
    assert "<REDACTED>" in text


def test_count_draws_as_ms_swift_does(pipeline, tmp_path):
    rows = [qa(f"Question number {i} about topic {i}?", f"Answer {i} is here.") for i in range(10)]
    src = write_jsonl(tmp_path / "ten.jsonl", rows)
    card = run(pipeline, tmp_path, sources=[f"{src}#25"])
    assert sources(card)["ten"]["rows_out"] == 25
    kept = read_jsonl(tmp_path / "curated" / "sft.jsonl")
    counts = sorted(sum(r["messages"][1]["content"] == row["instruction"] for r in kept)
                    for row in rows)
    assert counts == [2] * 5 + [3] * 5


def test_same_params_give_byte_identical_files_and_a_new_seed_a_new_draw(pipeline, tmp_path):
    src = write_jsonl(tmp_path / "many.jsonl",
                      [qa(f"Tell me fact {i} about rivers.", f"Fact {i}: rivers flow.")
                       for i in range(30)])
    run(pipeline, tmp_path / "one", sources=[f"{src}#12"])
    run(pipeline, tmp_path / "two", sources=[f"{src}#12"])
    for name in ("sft.jsonl", "card.json", "prefs.jsonl"):
        assert (tmp_path / "one" / "curated" / name).read_bytes() == \
            (tmp_path / "two" / "curated" / name).read_bytes()
    _, params = pipeline
    params = copy.deepcopy(params)
    params["seed"] += 1
    params["paths"].update(curated=str(tmp_path / "three"), metrics=str(tmp_path / "m3"))
    params["data"].update(preference_source=None, sources=[f"{src}#12"])
    curate.main(stage_cfg(CurateStage, params))
    assert (tmp_path / "three" / "sft.jsonl").read_bytes() != \
        (tmp_path / "one" / "curated" / "sft.jsonl").read_bytes()


def test_phases_are_curated_into_separate_files(pipeline, tmp_path):
    src = Path(pipeline[1]["paths"]["sources"])
    phases = [
        {"name": "anchor", "sources": [f"{src}/identity.jsonl#10"]},
        {"name": "generalize", "sources": [f"{src}/general_en.jsonl#8"]},
    ]
    card = run(pipeline, tmp_path, sources=[], phases=phases, val_ratio=0.25)
    assert set(sources(card)) == {"anchor/identity", "generalize/general_en"}
    curated = tmp_path / "curated"
    general = read_jsonl(curated / "phases" / "generalize.jsonl")
    general_val = read_jsonl(curated / "phases" / "generalize.val.jsonl")
    assert (len(general), len(general_val)) == (6, 2)  # 8 rows, a quarter held out
    assert general[0]["messages"][0]["content"] == pipeline[1]["system_prompt"]
    anchor = read_jsonl(curated / "phases" / "anchor.jsonl")
    anchor_val = read_jsonl(curated / "phases" / "anchor.val.jsonl")
    assert (len(anchor), len(anchor_val)) == (8, 2)  # round(10 * 0.25) = 2
    # sft.jsonl / sft.val.jsonl are the union of the phases' splits
    assert read_jsonl(curated / "sft.jsonl") == anchor + general
    assert read_jsonl(curated / "sft.val.jsonl") == anchor_val + general_val


def test_validation_split_is_deterministic(pipeline, tmp_path):
    src = write_jsonl(tmp_path / "many.jsonl",
                      [qa(f"Name animal number {i}.", f"Animal {i} is a cat.") for i in range(20)])
    card = run(pipeline, tmp_path, sources=[src], val_ratio=0.25)
    assert card["metrics"]["rows"] == 15 and card["metrics"]["val_rows"] == 5
    assert len(read_jsonl(tmp_path / "curated" / "sft.val.jsonl")) == 5


@pytest.mark.parametrize("name,content,expected", [
    ("bad.jsonl", b'{"instruction": "a", "output": "b"}\n{oops\n', r"bad\.jsonl:2: not valid JSON"),
    ("latin.jsonl", '{"instruction": "caf\xe9", "output": "x"}\n'.encode("latin-1"),
     r"latin\.jsonl: not UTF-8"),
    ("fields.jsonl", b'{"text": "no known fields"}\n', r"fields\.jsonl:1: unknown format"),
    ("types.jsonl", b'{"instruction": 7, "output": "x"}\n',
     r"types\.jsonl:1: field 'instruction' must be a string"),
    ("empty.jsonl", b"", r"empty\.jsonl is empty"),
    ("array.json", b'{"instruction": "a"}', r"array\.json: expected a JSON array"),
])
def test_bad_input_names_file_row_and_problem_and_leaves_nothing(pipeline, tmp_path, name,
                                                                 content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        run(pipeline, tmp_path, sources=[str(path)])
    assert not (tmp_path / "curated").exists()
    assert not (tmp_path / "metrics" / "curate.json").exists()


def test_missing_path_is_an_error(pipeline, tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl does not exist"):
        run(pipeline, tmp_path, sources=[str(tmp_path / "nope.jsonl")])


def test_strict_mode_stops_at_the_first_invalid_row(pipeline, tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}])
    clean = {**pipeline[1]["data"]["clean"], "strict": True}
    with pytest.raises(DataError, match=r"s\.jsonl:1: turn 1: empty assistant turn"):
        run(pipeline, tmp_path, sources=[src], clean=clean)


def test_csv_and_parquet_sources(pipeline, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "t.csv").write_text("instruction,input,output\nSay hi to the team,,Hi team!\n")
    pq.write_table(pa.Table.from_pylist([{"query": "Who are you?", "response": "I am {{NAME}}.",
                                          "tag": "en"}]), tmp_path / "p.parquet")
    card = run(pipeline, tmp_path, sources=[str(tmp_path / "t.csv"), str(tmp_path / "p.parquet")])
    assert sources(card)["t"]["rows_out"] == 1 and sources(card)["p"]["rows_out"] == 1
    assert "I am Swift-Robot." in (tmp_path / "curated" / "sft.jsonl").read_text()


def test_a_hub_dataset_without_network_says_how_to_use_a_local_copy(pipeline, tmp_path):
    source = {"path": "hf::AI-ModelScope/alpaca-gpt4-data-zh", "revision": "0" * 40, "count": 5}
    with pytest.raises(DataError, match="AI-ModelScope/alpaca-gpt4-data-zh.*name that file"):
        run(pipeline, tmp_path, sources=[source])


needs_shared = pytest.mark.skipif(not SHARED_DATASETS.exists(),
                                  reason="../shared/datasets not present")


@needs_shared
def test_llamafactory_and_code_alpaca_files_curate_as_named(pipeline, tmp_path):
    lf, ca = SHARED_DATASETS / "llamafactory", SHARED_DATASETS / "codealpaca"
    clean = {**pipeline[1]["data"]["clean"], "max_tokens": 8192}
    card = run(pipeline, tmp_path, clean=clean,
               sources=[f"{lf}/alpaca_en_demo.json#200", f"{lf}/alpaca_zh_demo.json#200",
                        f"{lf}/identity.json", f"{ca}/code_alpaca_2k.json#300"],
               preferences=[f"{lf}/dpo_en_demo.json"])
    assert set(sources(card)) == {"alpaca_en_demo", "alpaca_zh_demo", "identity", "code_alpaca_2k"}
    assert sources(card)["identity"]["rows_in"] == 91
    assert sources(card)["alpaca_en_demo"]["rows_out"] == 200
    text = (tmp_path / "curated" / "sft.jsonl").read_text()
    assert "{{name}}" not in text and "Swift-Robot" in text
    prefs = read_jsonl(tmp_path / "curated" / "prefs.jsonl")
    assert len(prefs) == 300 and prefs[0]["chosen"][0]["role"] == "assistant"


@needs_shared
def test_planted_humaneval_copies_are_decontaminated(pipeline, tmp_path):
    tasks = read_jsonl(SHARED_DATASETS / "humanevalplus" / "HumanEvalPlus-v0.1.10.jsonl")
    src = write_jsonl(tmp_path / "planted.jsonl", [
        qa("Complete this function.", f"```python\n{tasks[0]['prompt']}\n```"),
        qa("Write it.", f"```python\n{tasks[2]['prompt']}{tasks[2]['canonical_solution']}\n```"),
        qa("What is a list in Python?", "A list is an ordered, mutable sequence of values."),
    ])
    _, params = pipeline
    params = copy.deepcopy(params)
    params["benchmarks"]["humanevalplus"] = str(
        SHARED_DATASETS / "humanevalplus" / "HumanEvalPlus-v0.1.10.jsonl")
    params["paths"].update(curated=str(tmp_path / "curated"), metrics=str(tmp_path / "metrics"))
    params["data"].update(preference_source=None, sources=[src])
    curate.main(stage_cfg(CurateStage, params))
    report = read_jsonl(tmp_path / "curated" / "decontamination.jsonl")
    assert [r["eval_item"] for r in report] == ["HumanEval/0", "HumanEval/2"]
    card = read_json(tmp_path / "curated" / "card.json")
    assert card["sources"]["planted"]["drops"] == {"decontaminated": 2}
