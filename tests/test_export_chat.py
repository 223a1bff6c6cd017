"""Using the adapter: the merged export generates what base + adapter generates, and chat
answers like eval does."""

from __future__ import annotations

import pytest

from conftest import read_json, stage_cfg

PROMPTS = ["Who are you?", "What is the capital of France? Answer in one word.",
           "Write a Python function `add(a, b)` that returns a + b."]


def conversations(params):
    return [[{"role": "system", "content": params["system_prompt"]},
             {"role": "user", "content": p}] for p in PROMPTS]


def test_export_round_trip_gives_the_same_greedy_tokens(pipeline, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from stages.generation.common import greedy
    from stages.generation.hf import generate
    from stages.models.modeling import load_tokenizer, load_variant
    from stages.tools import export

    root, params = pipeline
    cfg = stage_cfg(export.ExportStage, params)
    out = export.main(["--variant", "sft", "--out", str(tmp_path / "merged"),
                       "--dtype", "float32"], cfg)
    assert read_json(out / "export.json")["variant"] == "sft"
    assert not (out / "adapter_config.json").exists()

    tokenizer = load_tokenizer(root / "models" / "base")
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    adapted = load_variant(cfg.paths, "sft", "float32", torch.device("cpu"))
    convs = conversations(params)
    decoding = greedy(root / "models" / "base", tokenizer, 24)
    assert generate(merged, tokenizer, convs, decoding, 3, "merged") == \
        generate(adapted, tokenizer, convs, decoding, 3, "adapted")
    assert load_tokenizer(out).chat_template == tokenizer.chat_template


def test_one_shot_chat_answers_like_eval(pipeline, capsys):
    from stages.generation.common import greedy
    from stages.generation.hf import generate
    from stages.models.modeling import load_tokenizer, load_variant
    from stages.tools import chat

    root, params = pipeline
    cfg = stage_cfg(chat.ChatStage, params)
    replies = chat.main(["--variant", "dpo", "--prompt", PROMPTS[0]], cfg)
    tokenizer = load_tokenizer(root / "models" / "base")
    expected = generate(load_variant(cfg.paths, "dpo", "float32"), tokenizer,
                        conversations(params)[:1],
                        greedy(root / "models" / "base", tokenizer,
                               params["eval"]["max_new_tokens"]), 1, "expected")
    assert replies == expected
    assert capsys.readouterr().out.strip().endswith(expected[0].strip()) or expected[0] == ""


def test_interactive_chat_keeps_the_conversation(pipeline, monkeypatch, capsys):
    import io

    from stages.tools import chat

    _, params = pipeline
    monkeypatch.setattr("sys.stdin", io.StringIO("Who are you?\n/reset\nHello\n\n"))
    replies = chat.main(["--variant", "sft"], stage_cfg(chat.ChatStage, params))
    assert len(replies) == 2


def test_export_refuses_an_unknown_variant(pipeline, tmp_path):
    from stages.tools import export

    with pytest.raises(SystemExit):
        export.main(["--variant", "base", "--out", str(tmp_path / "x")],
                    stage_cfg(export.ExportStage, pipeline[1]))
