"""Data users already hold, through curate on the tiny model's tokenizer: tool conversations
(sharegpt, OpenAI, ms-swift), content parts and loss weights, KTO labels, LLaMA-Factory v1
preference pairs; fields no reader understands; drops that explain themselves; preference
data decontaminated. Each format is a ten-row file the test writes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from conftest import SHARED_DATASETS, read_json, stage_cfg
from stages import curate, dpo
from stages.config import CurateStage, DpoStage
from stages.core.io import read_jsonl
from stages.data.formats import DataError
from stages.models.modeling import load_tokenizer

WEATHER = {"name": "get_weather", "description": "Current weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def write(path: Path, rows: list[dict]) -> str:
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")
    return str(path)


def run(pipeline, tmp_path, **data) -> dict:
    """curate with the session's tiny base tokenizer and `data` overriding params.data."""
    _, params = pipeline
    params = copy.deepcopy(params)
    params["paths"].update(curated=str(tmp_path / "curated"), metrics=str(tmp_path / "metrics"))
    # the tiny tokenizer spends ~600 tokens on a tool schema and a call
    params["data"]["clean"]["max_tokens"] = 16384
    params["data"].update({"preference_source": None, **data})
    curate.main(stage_cfg(CurateStage, params))
    return read_json(tmp_path / "curated" / "card.json")


def curated(tmp_path) -> list[dict]:
    return read_jsonl(tmp_path / "curated" / "sft.jsonl")


def rendered(tokenizer, row: dict) -> tuple[str, str]:
    """(the whole rendered row, the part the loss covers) with the training template."""
    from stages.data.cleaning import training_template

    out = tokenizer.apply_chat_template(
        row["messages"], tools=row.get("tools"), chat_template=training_template(tokenizer),
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    return tokenizer.decode(ids), tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])


def schemas(text: str) -> str:
    """The tool schemas of a rendered prompt: between the <tools> tags of the system turn."""
    return text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]


def city(i: int) -> str:
    return ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lima", "Quito", "Cairo",
            "Delhi"][i]


# ---- tool use: three layouts of the same ten conversations ------------------------------

def sharegpt_tool_rows() -> list[dict]:
    return [{"conversations": [
        {"from": "human", "value": f"What is the weather in {city(i)} today?"},
        {"from": "function_call",
         "value": json.dumps({"name": "get_weather", "arguments": {"city": city(i)}})},
        {"from": "observation", "value": json.dumps({"temp_c": 10 + i, "sky": "clear"})},
        {"from": "gpt", "value": f"It is {10 + i} degrees and clear in {city(i)}."}],
        "tools": json.dumps([WEATHER])} for i in range(10)]


def openai_tool_rows() -> list[dict]:
    return [{"messages": [
        {"role": "user", "content": f"What is the weather in {city(i)} today?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": city(i)})}}]},
        {"role": "tool", "tool_call_id": f"call_{i}",
         "content": json.dumps({"temp_c": 10 + i, "sky": "clear"})},
        {"role": "assistant", "content": f"It is {10 + i} degrees and clear in {city(i)}."}],
        "tools": [{"type": "function", "function": WEATHER}]} for i in range(10)]


def swift_tool_rows() -> list[dict]:
    return [{"tools": json.dumps([WEATHER]), "messages": [
        {"role": "user", "content": f"What is the weather in {city(i)} today?"},
        {"role": "tool_call",
         "content": json.dumps({"name": "get_weather", "arguments": {"city": city(i)}})},
        {"role": "tool_response", "content": json.dumps({"temp_c": 10 + i, "sky": "clear"})},
        {"role": "assistant", "content": f"It is {10 + i} degrees and clear in {city(i)}."}]}
        for i in range(10)]


@pytest.mark.parametrize("layout,rows", [("sharegpt", sharegpt_tool_rows),
                                         ("openai", openai_tool_rows),
                                         ("swift", swift_tool_rows)])
def test_tool_conversations_keep_calls_and_schemas_and_train_on_the_calls(
        pipeline, tmp_path, layout, rows):
    card = run(pipeline, tmp_path, sources=[write(tmp_path / f"{layout}.jsonl", rows())])
    assert card["sources"][layout]["rows_out"] == 10 and not card["sources"][layout]["drops"]
    tok = load_tokenizer(Path(pipeline[0]) / "models" / "base")
    out = curated(tmp_path)
    assert len(out) == 10
    for row in out:
        assert row["tools"] == [{"type": "function", "function": WEATHER}]
        call = row["messages"][2]
        assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == \
            "get_weather"
        place = call["tool_calls"][0]["function"]["arguments"]["city"]
        text, trained = rendered(tok, row)
        assert '"name": "get_weather"' in schemas(text)
        expected_call = f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{place}"}}}}'
        assert expected_call in trained  # the call is a target
        assert "temp_c" in text and "temp_c" not in trained  # the tool's answer is not
        assert f"clear in {place}." in trained
        assert "What is the weather" not in trained


def test_sft_labels_cover_the_calls_and_not_the_tool_responses(pipeline, tmp_path):
    """What TRL trains on, from the curated file sft reads."""
    from trl import SFTTrainer

    from stages.config import SftStage
    from stages.models.modeling import load_base_model
    from stages.sft import chat_dataset, lora_config, training_args

    run(pipeline, tmp_path, sources=[write(tmp_path / "tools.jsonl", sharegpt_tool_rows())])
    root, params = pipeline
    params = copy.deepcopy(params)
    params["sft"]["max_length"] = 2048  # the whole conversation, schema included
    cfg = stage_cfg(SftStage, params)
    phase = cfg.sft.phases["main"]
    tok = load_tokenizer(root / "models" / "base")
    trainer = SFTTrainer(
        model=load_base_model(root / "models" / "base", "float32"),
        args=training_args(cfg, phase, 1, {"bf16": False, "fp16": False}, tmp_path / "ck"),
        train_dataset=chat_dataset(tmp_path / "curated" / "sft.jsonl", phase, cfg),
        processing_class=tok, peft_config=lora_config(cfg.sft.lora))
    for example in trainer.train_dataset:
        text = tok.decode(example["input_ids"])
        trained = tok.decode([t for t in example["labels"] if t != -100])
        assert '"description": "Current weather of a city"' in text
        assert trained.startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": "')
        assert "temp_c" in text and "temp_c" not in trained
        assert "null" not in text  # no argument keys merged in from other rows


def test_a_template_that_cannot_render_tools_stops_curate_naming_the_source(pipeline,
                                                                            tmp_path):
    """The tiny model with plain ChatML (generation markers, no tool handling)."""
    root, params = pipeline
    models = tmp_path / "models"
    shutil.copytree(root / "models" / "base", models / "base")
    plain = ("{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' }}"
             "{%- if message['role'] == 'assistant' %}{% generation %}"
             "{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
             "{%- else %}{{- message['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}")
    (models / "base" / "chat_template.jinja").write_text(plain)
    params = copy.deepcopy(params)
    params["paths"].update(models=str(models), curated=str(tmp_path / "curated"),
                           metrics=str(tmp_path / "metrics"))
    src = write(tmp_path / "tools.jsonl", sharegpt_tool_rows())
    params["data"].update(preference_source=None, sources=[src])
    with pytest.raises(DataError, match=rf"data source {src} \(.*tools\.jsonl:1\) has tool "
                                        "calls and tool schemas.*leaves out"):
        curate.main(stage_cfg(CurateStage, params))
    assert not (tmp_path / "curated").exists()


@pytest.mark.parametrize("bad,message", [
    ({"from": "function_call", "value": "get_weather(city=Paris)"},
     r"bad\.jsonl:1: turn 1: a tool call is not valid JSON"),
    ({"from": "function_call", "value": json.dumps({"arguments": {"city": "Paris"}})},
     r"bad\.jsonl:1: turn 1: tool call without a function name"),
    ({"from": "function_call", "value": json.dumps({"name": "f", "arguments": [1]})},
     r"arguments of tool call 'f' must be an object"),
])
def test_a_broken_tool_call_names_file_row_and_turn(pipeline, tmp_path, bad, message):
    row = sharegpt_tool_rows()[0]
    row["conversations"][1] = bad
    with pytest.raises(DataError, match=message):
        run(pipeline, tmp_path, sources=[write(tmp_path / "bad.jsonl", [row])])


def test_a_tool_response_without_a_call_is_dropped_as_invalid(pipeline, tmp_path):
    rows = sharegpt_tool_rows()
    del rows[3]["conversations"][1]
    card = run(pipeline, tmp_path, sources=[write(tmp_path / "t.jsonl", rows)])
    assert card["sources"]["t"]["drops"] == {"invalid": 1}
    assert card["sources"]["t"]["drop_examples"]["invalid"] == {
        "row": f"{tmp_path / 't.jsonl'}:4", "why": "turn 1: a tool response with no tool call before it"}


@pytest.mark.skipif(not (SHARED_DATASETS / "llamafactory" / "glaive_toolcall_zh_demo.json").exists(),
                    reason="../shared/datasets/llamafactory/glaive_toolcall_zh_demo.json not present")
def test_glaive_toolcall_demo_keeps_its_tool_conversations(pipeline, tmp_path):
    path = SHARED_DATASETS / "llamafactory" / "glaive_toolcall_zh_demo.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    with_calls = sum(any(t["from"] == "function_call" for t in r["conversations"]) for r in raw)
    card = run(pipeline, tmp_path, sources=[str(path)])
    entry = card["sources"]["glaive_toolcall_zh_demo"]
    out = curated(tmp_path)
    calls = [r for r in out if any(m.get("tool_calls") for m in r["messages"])]
    print(f"glaive: {entry['rows_in']} in, {entry['rows_out']} kept ({len(calls)} with tool "
          f"calls of {with_calls} in the file), drops {entry['drops']}")
    # two rows of the demo answer an `observation` turn that follows no function_call (the
    # call is written into the gpt text): they cannot be trained as tool use
    assert entry["rows_in"] == 300 and entry["drops"]["invalid"] == 2
    assert entry["drop_examples"]["invalid"] == {
        "row": f"{path}:row 198", "why": "turn 2: a tool response with no tool call before it"}
    assert entry["rows_out"] == len(out) == 300 - sum(entry["drops"].values())
    assert len(calls) >= 0.9 * with_calls - sum(entry["drops"].values())
    tok = load_tokenizer(Path(pipeline[0]) / "models" / "base")
    for row in calls:
        text, trained = rendered(tok, row)
        assert all(f'"name": "{t["function"]["name"]}"' in schemas(text) for t in row["tools"])
        for m in row["messages"]:
            for c in m.get("tool_calls", []):
                assert f'<tool_call>\n{{"name": "{c["function"]["name"]}"' in trained
                assert json.dumps(c["function"]["arguments"], ensure_ascii=False) in trained
            if m["role"] == "tool":
                assert m["content"] in text and m["content"] not in trained


# ---- content parts and loss weights ------------------------------------------------------

def parts_rows(style: str) -> list[dict]:
    key = "text" if style == "openai" else "value"
    return [{"messages": [
        {"role": "user", "content": [{"type": "text", key: f"Name a prime above {i * 10}."}]},
        {"role": "assistant", "content": [{"type": "text", key: "Here is one:"},
                                          {"type": "text", key: f"{[11, 13, 23, 31, 41, 53, 61, 71, 83, 97][i]}."}]}]}
        for i in range(10)]


@pytest.mark.parametrize("style", ["openai", "llamafactory_v1"])
def test_text_parts_become_text(pipeline, tmp_path, style):
    card = run(pipeline, tmp_path, sources=[write(tmp_path / f"{style}.jsonl", parts_rows(style))])
    assert card["sources"][style]["rows_out"] == 10
    assert curated(tmp_path)[0]["messages"][-1]["content"].startswith("Here is one:\n")


@pytest.mark.parametrize("part", [{"type": "image_url", "image_url": {"url": "x.png"}},
                                  {"type": "input_audio", "input_audio": {}},
                                  {"type": "reasoning", "value": "hmm"}])
def test_a_non_text_part_is_refused_naming_file_and_row(pipeline, tmp_path, part):
    rows = parts_rows("openai")
    rows[6]["messages"][0]["content"].append(part)
    with pytest.raises(DataError, match=rf"parts\.jsonl:7: turn 0 has a content part of type "
                                        rf"'{part['type']}'; this project trains text models"):
        run(pipeline, tmp_path, sources=[write(tmp_path / "parts.jsonl", rows)])
    assert not (tmp_path / "curated").exists()


def weighted_rows() -> list[dict]:
    """LLaMA-Factory v1: every turn weighted; the first answer is context."""
    return [{"messages": [
        {"role": "user", "content": [{"type": "text", "value": f"Count to {i + 2}."}],
         "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": f"context-reply-{i}"}],
         "loss_weight": 0.0},
        {"role": "user", "content": [{"type": "text", "value": "Again, in words."}],
         "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": f"target-reply-{i}"}],
         "loss_weight": 1.0}]} for i in range(10)]


def test_a_turn_with_loss_weight_0_is_context_not_a_target(pipeline, tmp_path):
    run(pipeline, tmp_path, sources=[write(tmp_path / "v1.jsonl", weighted_rows())])
    tok = load_tokenizer(Path(pipeline[0]) / "models" / "base")
    rows = curated(tmp_path)
    assert len(rows) == 10
    for row in rows:
        i = int(row["messages"][-1]["content"].rsplit("-", 1)[1])
        assert row["messages"][2] == {"role": "assistant", "content": f"context-reply-{i}",
                                      "loss_weight": 0}
        text, trained = rendered(tok, row)
        assert f"context-reply-{i}" in text and f"context-reply-{i}" not in trained
        assert trained == f"target-reply-{i}<|im_end|>"


@pytest.mark.parametrize("change,message", [
    ({"loss_weight": 0.5}, r"turn 3: loss_weight=0.5; only 0 \(context\) and 1"),
    ({"loss": False, "loss_weight": None}, None),  # ms-swift's spelling: the target is context
])
def test_loss_weights_other_than_0_and_1_are_refused(pipeline, tmp_path, change, message):
    rows = weighted_rows()
    rows[0]["messages"][3].update(change)
    src = write(tmp_path / "w.jsonl", rows)
    if message:
        with pytest.raises(DataError, match=message):
            run(pipeline, tmp_path, sources=[src])
    else:
        card = run(pipeline, tmp_path, sources=[src])
        assert card["sources"]["w"]["drops"] == {"invalid": 1}
        assert "every assistant turn has loss_weight 0" in \
            card["sources"]["w"]["drop_examples"]["invalid"]["why"]


def test_a_trained_user_turn_is_refused(pipeline, tmp_path):
    rows = weighted_rows()
    rows[2]["messages"][0]["loss_weight"] = 1.0
    with pytest.raises(DataError, match=r"w\.jsonl:3: turn 0: loss_weight=1 on a user turn"):
        run(pipeline, tmp_path, sources=[write(tmp_path / "w.jsonl", rows)])


# ---- fields that change meaning ----------------------------------------------------------

def qa_rows(extra: dict | None = None) -> list[dict]:
    return [{"instruction": f"What is {i} times three?", "input": "", "output": f"{3 * i}.",
             **(extra or {})} for i in range(10)]


@pytest.mark.parametrize("field", ["weight", "rejected_output", "images"])
def test_an_unknown_row_field_names_file_row_and_field(pipeline, tmp_path, field):
    rows = qa_rows()
    rows[4][field] = 1
    with pytest.raises(DataError, match=rf"f\.jsonl:5: field '{field}' is not read by the "
                                        r"alpaca format.*ignore_fields"):
        run(pipeline, tmp_path, sources=[write(tmp_path / "f.jsonl", rows)])


def test_harmless_and_ignored_fields_pass(pipeline, tmp_path):
    src = write(tmp_path / "f.jsonl", qa_rows({"id": "x", "metadata": {"a": 1}, "note": "mine"}))
    card = run(pipeline, tmp_path, sources=[{"path": src, "ignore_fields": ["note"]}])
    assert card["sources"]["f"]["rows_out"] == 10


def test_an_unknown_turn_field_is_an_error(pipeline, tmp_path):
    rows = openai_tool_rows()
    rows[1]["messages"][3]["reasoning_content"] = "let me think"
    with pytest.raises(DataError, match=r"t\.jsonl:2: turn 3 of 'messages': field "
                                        r"'reasoning_content' is not read"):
        run(pipeline, tmp_path, sources=[write(tmp_path / "t.jsonl", rows)])


# ---- KTO ---------------------------------------------------------------------------------

def kto_rows(tag: str = "label") -> list[dict]:
    """Ten rows: the even ones right (desirable), the odd ones wrong (undesirable)."""
    return [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant",
                           "content": f"{i} plus {i} is {2 * i if i % 2 == 0 else 2 * i + 1}."}],
             tag: i % 2 == 0} for i in range(10)]


@pytest.mark.parametrize("tag", ["label", "kto_tag"])
def test_a_kto_file_as_sft_source_trains_only_its_desirable_rows(pipeline, tmp_path, capsys,
                                                                 tag):
    card = run(pipeline, tmp_path, sources=[write(tmp_path / "kto.jsonl", kto_rows(tag))])
    assert card["sources"]["kto"]["drops"] == {"undesirable": 5}
    assert card["sources"]["kto"]["rows_out"] == 5
    answers = {r["messages"][-1]["content"] for r in curated(tmp_path)}
    assert answers == {f"{i} plus {i} is {2 * i}." for i in range(0, 10, 2)}
    log = capsys.readouterr().out
    assert "kto: KTO labels: only the 5 kept rows marked desirable are SFT targets; 5 rows " \
           "marked undesirable (label false) are not" in log
    assert read_json(tmp_path / "metrics" / "curate.json")["curate"]["drops"]["undesirable"] == 5


def test_a_kto_label_that_is_not_a_boolean_is_refused(pipeline, tmp_path):
    rows = kto_rows()
    rows[3]["label"] = "bad"
    with pytest.raises(DataError, match=r"kto\.jsonl:4: KTO field 'label' must be true"):
        run(pipeline, tmp_path, sources=[write(tmp_path / "kto.jsonl", rows)])


def test_a_kto_file_as_preference_data_trains_with_kto_end_to_end(pipeline, tmp_path):
    root, params = pipeline
    kto = write(tmp_path / "kto.jsonl", kto_rows())
    card = run(pipeline, tmp_path, sources=[write(tmp_path / "qa.jsonl", qa_rows())],
               preferences=[kto])
    prefs = read_jsonl(tmp_path / "curated" / "prefs.jsonl")
    assert len(prefs) == 10 and sum(p["label"] for p in prefs) == 5
    assert prefs[0]["prompt"][0]["role"] == "system" and prefs[0]["completion"][0]["role"] == \
        "assistant"
    assert card["preferences"]["preferences/kto"]["rows_out"] == 10
    from test_dpo import dpo_workspace, option

    work = dpo_workspace(pipeline, tmp_path / "run", option("kto"))
    work["paths"]["curated"] = str(tmp_path / "curated")
    metrics = dpo.main(stage_cfg(DpoStage, work))
    assert metrics["loss_type"] == "kto" and metrics["rows"] == 10 and metrics["steps"] == 2


# ---- preference files --------------------------------------------------------------------

def v1_pairs() -> list[dict]:
    def side(i, answer):
        return [{"role": "user", "content": [{"type": "text", "value": f"Spell {i} in words."}],
                 "loss_weight": 0.0},
                {"role": "assistant", "content": [{"type": "text", "value": answer}],
                 "loss_weight": 1.0}]
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return [{"chosen_messages": side(i, words[i]), "rejected_messages": side(i, words[9 - i]),
             "extra_info": "demo"} for i in range(10)]


def test_llamafactory_v1_preference_pairs_load(pipeline, tmp_path):
    run(pipeline, tmp_path, sources=[write(tmp_path / "qa.jsonl", qa_rows())],
        preferences=[write(tmp_path / "v1.jsonl", v1_pairs())])
    prefs = read_jsonl(tmp_path / "curated" / "prefs.jsonl")
    assert len(prefs) == 10
    assert [m["role"] for m in prefs[3]["prompt"]] == ["system", "user"]
    assert prefs[3]["chosen"] == [{"role": "assistant", "content": "three"}]
    assert prefs[3]["rejected"] == [{"role": "assistant", "content": "six"}]


def test_a_planted_contaminated_code_task_never_reaches_the_pairs(pipeline, tmp_path):
    root, params = pipeline
    probe = read_jsonl(Path(params["paths"]["sources"]) / "probes" / "code.jsonl")[0]
    tasks = read_jsonl(Path(params["data"]["preference_source"]))
    planted = {"task_id": "planted/0", "prompt": probe["prompt"], "solution": probe["solution"],
               "tests": probe["tests"], "entry_point": probe.get("entry_point", "")}
    src = write(tmp_path / "tasks.jsonl", [*tasks, planted])
    prefs_with_secret = write(tmp_path / "user.jsonl", [
        {"prompt": "Show me my config.", "chosen": "I cannot share keys.",
         "rejected": f"aws_access_key_id = {AWS_KEY}"},
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go away."}])
    card = run(pipeline, tmp_path, sources=[write(tmp_path / "qa.jsonl", qa_rows())],
               preference_source=src, preferences=[prefs_with_secret])
    prefs = read_jsonl(tmp_path / "curated" / "prefs.jsonl")
    assert "planted/0" not in {p["task_id"] for p in prefs}
    assert probe["solution"].strip()[:40] not in (tmp_path / "curated" / "prefs.jsonl").read_text()
    assert AWS_KEY not in (tmp_path / "curated" / "prefs.jsonl").read_text()
    pairs = card["preferences"]["preferences/tasks"]
    assert pairs["drops"]["decontaminated"] >= 1
    assert pairs["drop_examples"]["decontaminated"]["why"].endswith(
        f"eval item probes/code:{probe['task_id']}")
    assert card["preferences"]["preferences/user"]["drops"] == {"secret": 1}
    metrics = read_json(tmp_path / "metrics" / "curate.json")["curate"]
    assert metrics["pair_drops"]["secret"] == 1 and metrics["pair_drops"]["decontaminated"] >= 1
    report = read_jsonl(tmp_path / "curated" / "decontamination.jsonl")
    assert {"source": "preferences/tasks", "row": "planted/0",
            "eval_item": f"probes/code:{probe['task_id']}"} in report


# ---- every drop explains itself ----------------------------------------------------------

def test_a_source_that_loses_most_rows_says_why_in_the_log(pipeline, tmp_path, capsys):
    rows = qa_rows()
    for i in (1, 2, 3, 5, 7, 8):
        rows[i] = {"messages": [{"role": "user", "content": "hi"},
                                {"role": "robot", "content": "beep"}]}
    src = write(tmp_path / "most.jsonl", rows)
    run(pipeline, tmp_path, sources=[src, write(tmp_path / "qa.jsonl", qa_rows())])
    log = capsys.readouterr().out
    assert (f"curate: most kept 4 of 10 rows; top drop reasons: invalid 6 (e.g. {src}:2: turn 1:"
            " unknown role 'robot')\n") in log
    assert "curate: qa kept" not in log  # it lost 4 of 10 (duplicates of most): not most


def test_no_rows_left_names_every_reason_with_an_example(pipeline, tmp_path):
    rows = kto_rows()
    for row in rows[::2]:
        row["messages"][1]["content"] = " "
    src = write(tmp_path / "none.jsonl", rows)
    with pytest.raises(DataError) as err:
        run(pipeline, tmp_path, sources=[src])
    message = str(err.value)
    assert message.startswith("no training rows left after cleaning:\nnone kept 0 of 10 rows")
    assert f"undesirable 5 (e.g. {src}:2: KTO label false" in message
    assert f"invalid 5 (e.g. {src}:1: turn 1: empty assistant turn)" in message
    assert not (tmp_path / "curated").exists()


def test_a_preference_file_is_drawn_per_its_count(pipeline, tmp_path):
    run(pipeline, tmp_path, sources=[write(tmp_path / "qa.jsonl", qa_rows())],
        preferences=[f"{write(tmp_path / 'v1.jsonl', v1_pairs())}#4"])
    prefs = read_jsonl(tmp_path / "curated" / "prefs.jsonl")
    assert len(prefs) == 4 and len({p["task_id"] for p in prefs}) == 4


def test_tool_calls_in_kto_rows_are_refused(pipeline, tmp_path):
    rows = [{**r, "label": True} for r in openai_tool_rows()]
    with pytest.raises(DataError, match=r"k\.jsonl:1: tool calls in preference data"):
        run(pipeline, tmp_path, sources=[write(tmp_path / "qa.jsonl", qa_rows())],
            preferences=[write(tmp_path / "k.jsonl", rows)])


def test_plain_conversations_render_as_plain_chatml(pipeline):
    """The tool-aware tiny template renders rows without tools exactly as ChatML did, so the
    base corpus and every earlier row tokenize as before."""
    tok = load_tokenizer(Path(pipeline[0]) / "models" / "base")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
        "<|im_start|>assistant\n")
