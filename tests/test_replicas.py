"""Real checkpoint layouts offline: Qwen2.5-Coder-1.5B-Instruct and Qwen3-8B replicas (the real
tokenizer, chat template, config fields and generation config; tiny random weights, built by
tests/replicas.py) through every stage's main(), and what is specific to real layouts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, read_json, stage_cfg, tiny_params
from replicas import LAYOUTS, build_replica, build_tokenizer
from stages.config import (
    BaseStage,
    ConfigError,
    CurateStage,
    DpoStage,
    EvalStage,
    SftStage,
    SummaryStage,
)
from stages.core.io import read_jsonl

# llama.cpp's Qwen2 tokenizer test vectors (models/ggml-vocab-qwen2.gguf.inp/.out, made with
# the Hugging Face tokenizer of Qwen/Qwen1.5-7B, whose ranks Qwen2.5 and Qwen3 share).
VECTORS = [
    ("ied 4 ½ months", [1122, 220, 19, 220, 26062, 3951]),
    ("Führer", [37, 50753, 261]),
    ("   ", [262]),
    ("\t\n", [1572]),
    ("Hello world", [9707, 1879]),
    (" Hello World!", [21927, 4337, 0]),
    (" this is 🦙.cpp", [419, 374, 11162, 99, 247, 13, 10821]),
    ("w048 7tuijk dsdfhu", [86, 15, 19, 23, 220, 22, 83, 1963, 41808, 11472, 2940, 16739]),
    ("нещо на Български", [78762, 14144, 1456, 13073, 63471, 33594, 3038, 133178, 79012]),
    ("🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ (only emoji that has its own "
     "token)", [145836, 320, 8252, 8, 26525, 114, 378, 235, 149921, 30543, 320, 35673, 99066,
                97534, 8, 25521, 227, 320, 3243, 42365, 429, 702, 1181, 1828, 3950, 8]),
    ("    Hello\n    Hello", [262, 21927, 198, 262, 21927]),
    ("Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
     [9707, 11, 379, 64848, 0, 2585, 525, 498, 26525, 223, 937, 104100, 18493, 22377, 99257,
      16, 18, 16, 19, 16, 20, 16, 35727, 21216]),
    ("333333333", [18] * 9),
]
END_TOKENS = {"<|im_end|>": 151645, "<|endoftext|>": 151643}
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud."


def asked(params: dict, question: str) -> list[dict]:
    """A question as eval asks it: the configured system prompt, then the user's turn."""
    return [{"role": "system", "content": params["system_prompt"]},
            {"role": "user", "content": question}]


def tasks_file(root: Path, variant: str, suite: str) -> Path:
    """Eval's per-probe file (PathsConfig.tasks_file under the replica's metrics folder)."""
    return root / "metrics" / "tasks" / variant / f"{suite}.jsonl"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_replica_tokenizer_gives_the_published_ids(layout):
    tokenizer = build_tokenizer(layout)
    for text, ids in VECTORS:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids, text
    added = LAYOUTS[layout]["added"]
    assert len(tokenizer) == 151643 + len(added)  # 151665 for Qwen2.5, 151669 for Qwen3
    assert tokenizer.convert_tokens_to_ids([t for t, _ in added]) == \
        list(range(151643, 151643 + len(added)))
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 151645)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 151643)


def replica_params(root: Path, layout: str, replica: Path) -> dict:
    """tiny_params with the layout's conf/model entry, its local copy in `replica`, float32,
    two probes per suite and short replies."""
    params = tiny_params(root)
    conf = "qwen2.5-coder-1.5b-instruct" if layout.startswith("qwen2.5") else "qwen3-8b"
    model = yaml.safe_load((REPO / "conf" / "model" / f"{conf}.yaml").read_text())
    params["model"] = {**model, "local_dir": str(replica), "dtype": "float32"}
    # A 151,936-token vocabulary makes every logit row big: a few rows, two steps each.
    src = REPO / "data" / "sources"
    tasks = root / "code_tasks_2.jsonl"
    tasks.write_text("".join((src / "code_tasks.jsonl").read_text().splitlines(True)[:2]))
    params["data"].update(sources=[f"{src}/identity.jsonl#4", f"{src}/general_en.jsonl#2",
                                   f"{src}/general_zh.jsonl#2", str(tasks)],
                          preference_source=str(tasks), augment_pairs=False)
    params["sft"]["phases"]["main"]["max_steps"] = 2
    params["sft"].update(max_length=256, batch_size=4, per_device_batch_size=4)
    params["dpo"].update(max_length=256, batch_size=2, epochs=1)
    params["eval"].update(limit=2, max_new_tokens=8, batch_size=4)
    return params


VARIANT_SUITES = {"sft": ["identity"], "dpo": ["identity"]}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def replica_pipeline(request, tmp_path_factory):
    """Every stage's main() in order on a replica, every default suite for every variant."""
    from stages import base, curate, dpo, sft, summary
    from stages import eval as eval_stage

    layout = request.param
    root = tmp_path_factory.mktemp(f"replica-{layout}")
    replica = build_replica(layout, root / "replica")
    params = replica_params(root, layout, replica)
    base.main(stage_cfg(BaseStage, params))
    curate.main(stage_cfg(CurateStage, params))
    sft.main(stage_cfg(SftStage, params))
    dpo.main(stage_cfg(DpoStage, params))
    # Every suite on base; the adapters load the same way for every suite, so sft and dpo
    # run identity only (the argmax test reads it), which halves the fixture's time.
    for variant, suites in (("base", params["eval"]["suites"]), *VARIANT_SUITES.items()):
        for suite in suites:
            eval_stage.main(variant, suite, stage_cfg(EvalStage, params))
    # summary reads JSON only (no model): over the suites every variant ran
    summary.main(stage_cfg(SummaryStage, {**params, "eval": {**params["eval"],
                                                             "suites": ["identity"]}}))
    return layout, root, params


@pytest.mark.slow
def test_every_stage_and_suite_finishes_on_the_replica(replica_pipeline):
    layout, root, params = replica_pipeline
    for variant, suites in (("base", params["eval"]["suites"]), *VARIANT_SUITES.items()):
        for suite in suites:
            assert (root / "metrics" / "eval" / variant / f"{suite}.json").exists()
    assert read_json(root / "metrics" / "summary.json")
    base_dir = root / "models" / "base"
    assert read_json(base_dir / "config.json")["model_type"] == LAYOUTS[layout]["config"][
        "model_type"]
    assert read_json(base_dir / "generation_config.json")["eos_token_id"] == [151645, 151643]


@pytest.mark.slow
def test_base_hashes_the_local_copy_and_says_the_revision_was_not_checked(replica_pipeline,
                                                                          tmp_path):
    from stages import base

    _, root, params = replica_pipeline
    meta = read_json(root / "models" / "base" / "base.json")
    assert meta["local_dir"] == params["model"]["local_dir"]
    assert meta["revision_checked"] is False and len(meta["local_sha256"]) == 64
    # one byte of the weights changed: another hash
    changed = tmp_path / "replica"
    changed.mkdir()
    for file in Path(meta["local_dir"]).iterdir():
        (changed / file.name).write_bytes(file.read_bytes())
    weights = changed / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    again = copy.deepcopy(params)
    again["model"]["local_dir"] = str(changed)
    again["paths"].update(models=str(tmp_path / "models"), metrics=str(tmp_path / "metrics"))
    base.main(stage_cfg(BaseStage, again))
    assert read_json(tmp_path / "models" / "base" / "base.json")["local_sha256"] != \
        meta["local_sha256"]


def sft_trainer(params: dict, root: Path):
    """The SFTTrainer sft builds, on the replica (its tokenized rows are what sft trains on)."""
    from trl import SFTTrainer

    from stages import sft
    from stages.models.modeling import load_base_model, load_tokenizer
    from stages.models.training import precision_flags

    cfg = stage_cfg(SftStage, params)
    phase = cfg.sft.phases["main"]
    train_file, _ = sft.data_files(cfg, phase)
    return SFTTrainer(
        model=load_base_model(cfg.paths.model_dir("base"), "float32"),
        args=sft.training_args(cfg, phase, 1, precision_flags("fp32"), root / "trainer"),
        train_dataset=sft.chat_dataset(train_file, phase, cfg),
        processing_class=load_tokenizer(cfg.paths.model_dir("base")),
        peft_config=sft.lora_config(cfg.sft.lora))


@pytest.mark.slow
def test_the_loss_mask_covers_exactly_the_replies_and_their_end_token(replica_pipeline):
    layout, root, params = replica_pipeline
    trainer = sft_trainer(params, root)
    tokenizer = trainer.processing_class
    rows = read_jsonl(root / "curated" / "sft.jsonl")
    assert len(trainer.train_dataset) == len(rows)
    # TRL's training variant of each official template also marks the newline on either side
    # of the reply (after `assistant`, after <|im_end|>), and Qwen3's the empty think block
    before = "\n" if layout.startswith("qwen2.5") else "<think>\n\n</think>\n\n"
    for row, sample in zip(rows, trainer.train_dataset, strict=True):
        ids = sample["input_ids"]
        trained = tokenizer.decode([i for i, label in zip(ids, sample["labels"], strict=True)
                                    if label != -100])
        reply = row["messages"][-1]["content"]
        assert trained == before + reply + "<|im_end|>\n"
        assert tokenizer.decode(ids).startswith(
            f"<|im_start|>system\n{params['system_prompt']}<|im_end|>\n")


@pytest.mark.slow
def test_perplexity_scores_each_reply_and_its_end_token(replica_pipeline):
    _, root, params = replica_pipeline
    from stages.models.modeling import load_tokenizer

    tokenizer = load_tokenizer(root / "models" / "base")
    rows = read_jsonl(tasks_file(root, "base", "perplexity"))
    answers = [p["response"] for p in read_jsonl(root / "curated" / "probes" / "identity.jsonl")]
    checked = 0
    for row in rows:
        if row["domain"] == "identity":
            answer = answers[checked]
            assert row["tokens"] == len(tokenizer(answer, add_special_tokens=False)
                                        ["input_ids"]) + 1  # the reply, then <|im_end|>
            checked += 1
    assert checked == params["eval"]["limit"]
    metrics = read_json(root / "metrics" / "eval" / "base" / "perplexity.json")["perplexity"]
    assert all(metrics[f"{d}_loss"] > 0 for d in ("code", "general", "identity"))


@pytest.mark.slow
def test_prompts_carry_the_configured_system_prompt_never_the_checkpoint_default(
        replica_pipeline):
    layout, root, params = replica_pipeline
    from stages.generation.common import chat_prompts
    from stages.models.modeling import load_tokenizer

    tokenizer = load_tokenizer(root / "models" / "base")
    (prompt,) = chat_prompts(tokenizer, [asked(params, "Who are you?")])
    assert prompt.startswith(f"<|im_start|>system\n{params['system_prompt']}<|im_end|>\n")
    assert QWEN_DEFAULT_SYSTEM not in prompt
    # without our system turn the official Qwen2.5 template would add its own
    bare = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert (QWEN_DEFAULT_SYSTEM in bare) == layout.startswith("qwen2.5")
    if layout == "qwen3-8b":
        assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def argmax_reply(model, tokenizer, prompt: str, max_new_tokens: int, end_ids) -> str:
    """Plain greedy decoding by hand: the most likely token at every step, no cache, no
    processors, stopping after the first end token."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax())
            new.append(token)
            if token in end_ids:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_eval_replies_of_every_variant_equal_an_independent_argmax(replica_pipeline):
    _, root, params = replica_pipeline
    from stages.generation.common import chat_prompts
    from stages.models.modeling import load_tokenizer, load_variant

    cfg = stage_cfg(EvalStage, params)
    tokenizer = load_tokenizer(root / "models" / "base")
    queries = [p["query"] for p in read_jsonl(root / "curated" / "probes" / "identity.jsonl")]
    for variant in ("base", "sft", "dpo"):
        model = load_variant(cfg.paths, variant, "float32")
        rows = read_jsonl(tasks_file(root, variant, "identity"))
        assert len(rows) == params["eval"]["limit"]
        for row, query in zip(rows, queries, strict=False):
            (prompt,) = chat_prompts(tokenizer, [asked(params, query)])
            assert row["reply"] == argmax_reply(model, tokenizer, prompt,
                                                params["eval"]["max_new_tokens"],
                                                set(END_TOKENS.values())), variant


@pytest.fixture(scope="module")
def penalised_replica(tmp_path_factory):
    """A Qwen2.5 replica whose generation_config.json samples hot with a strong repetition
    penalty and bans repeated bigrams: everything greedy must not inherit."""
    root = tmp_path_factory.mktemp("penalised")
    replica = build_replica("qwen2.5-coder-1.5b-instruct", root / "replica",
                            generation={"repetition_penalty": 3.0, "temperature": 1.5,
                                        "no_repeat_ngram_size": 2},
                            seed=3)  # weights whose argmax repeats one token: what a penalty changes
    params = replica_params(root, "qwen2.5-coder-1.5b-instruct", replica)
    from stages import base

    base.main(stage_cfg(BaseStage, params))
    return root, params


def test_greedy_is_the_argmax_whatever_the_checkpoint_generation_config_says(
        penalised_replica):
    from stages.generation.common import chat_prompts, decoding
    from stages.generation.hf import generate
    from stages.models.modeling import load_tokenizer, load_variant

    root, params = penalised_replica
    cfg = stage_cfg(EvalStage, {**params, "eval": {**params["eval"], "max_new_tokens": 24}})
    tokenizer = load_tokenizer(root / "models" / "base")
    model = load_variant(cfg.paths, "base", "float32")
    assert model.generation_config.repetition_penalty == 3.0  # loaded with the checkpoint
    questions = [asked(params, q) for q in ("Who are you?", "Write add(a, b) in Python.")]
    greedy = decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer)
    replies = generate(model, tokenizer, questions, greedy, 2, "test")
    expected = [argmax_reply(model, tokenizer, p, 24, set(END_TOKENS.values()))
                for p in chat_prompts(tokenizer, questions)]
    assert all(expected) and replies == expected
    # the check can fail: the checkpoint's own defaults (do_sample=False alone) decode otherwise
    enc = tokenizer(chat_prompts(tokenizer, questions[:1]), return_tensors="pt",
                    add_special_tokens=False)
    inherited = model.generate(**enc, do_sample=False, max_new_tokens=24)
    assert tokenizer.decode(inherited[0, enc["input_ids"].shape[1]:],
                            skip_special_tokens=True).strip() != expected[0]
    assert greedy.record() == {
        "max_new_tokens": 24, "end_token_ids": [151645, 151643], "pad_token_id": 151643,
        "do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
        "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


class AlwaysSays(torch.nn.Module):
    """An lm_head that makes `token` the argmax at every step."""

    def __init__(self, head: torch.nn.Linear, token: int):
        super().__init__()
        self.head, self.token = head, token

    def forward(self, hidden):
        logits = self.head(hidden)
        logits[..., self.token] = logits.max() + 100.0
        return logits


@pytest.mark.parametrize("end", list(END_TOKENS))
def test_generation_stops_at_each_of_the_checkpoint_end_tokens(penalised_replica, end):
    from stages.generation.common import GenerationCost, decoding
    from stages.generation.hf import generate
    from stages.models.modeling import load_tokenizer, load_variant

    root, params = penalised_replica
    cfg = stage_cfg(EvalStage, params)
    tokenizer = load_tokenizer(root / "models" / "base")
    ends = read_json(root / "models" / "base" / "generation_config.json")["eos_token_id"]
    assert END_TOKENS[end] in ends
    model = load_variant(cfg.paths, "base", "float32")
    model.lm_head = AlwaysSays(model.lm_head, END_TOKENS[end])
    calls = []
    model.model.register_forward_hook(lambda *args: calls.append(1))
    greedy = decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer)
    assert generate(model, tokenizer, [asked(params, "Hi")], greedy, 1, "test", GenerationCost()) == [""]
    # one forward (the prefill that makes the first token): the reply ended at its first
    # token instead of running to max_new_tokens (8)
    assert len(calls) == 1


def test_sft_stops_before_loading_the_model_on_a_template_trl_cannot_patch(penalised_replica,
                                                                           tmp_path,
                                                                           monkeypatch):
    from stages import base, sft
    from stages.core.io import write_jsonl
    from stages.models.modeling import load_tokenizer, require_training_template

    root, params = penalised_replica
    params = copy.deepcopy(params)
    params["paths"].update(models=str(tmp_path / "models"), metrics=str(tmp_path / "metrics"),
                           curated=str(tmp_path / "curated"))
    official = Path(params["model"]["local_dir"]) / "chat_template.jinja"
    edited = tmp_path / "edited.jinja"
    edited.write_text(official.read_text() + " ")  # one byte off TRL's copy
    params["model"]["chat_template"] = str(edited)
    base.main(stage_cfg(BaseStage, params))
    rows = [{"messages": [{"role": "system", "content": params["system_prompt"]},
                          {"role": "user", "content": "Who are you?"},
                          {"role": "assistant", "content": "I am Swift-Robot."}], "lang": "en"}]
    write_jsonl(tmp_path / "curated" / "sft.jsonl", rows)
    write_jsonl(tmp_path / "curated" / "sft.val.jsonl", rows)
    loaded = []
    monkeypatch.setattr(sft, "policy", lambda *args: loaded.append(1))
    with pytest.raises(ConfigError, match=r"has no \{% generation %\} markers and TRL has no "
                                          r"training variant.*-S model.chat_template=PATH"):
        sft.main(stage_cfg(SftStage, params))
    assert loaded == []
    assert not (tmp_path / "models" / "sft").exists()

    # the fix the message names: a template with generation markers, used by every stage
    import trl

    marked = Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja"
    params["model"]["chat_template"] = str(marked)
    base.main(stage_cfg(BaseStage, params))
    assert (tmp_path / "models" / "base" / "chat_template.jinja").read_text() == \
        marked.read_text()
    meta = read_json(tmp_path / "models" / "base" / "base.json")
    assert meta["chat_template"] == str(marked) and len(meta["chat_template_sha256"]) == 64
    require_training_template(load_tokenizer(tmp_path / "models" / "base"), "the replica")


@pytest.mark.parametrize("name, total, non_embedding", [
    # the model cards' figures: 8.2B and 6.95B; 1.54B and 1.31B
    ("qwen3-8b", 8_190_735_360, 6_946_075_648),
    ("qwen2.5-coder-1.5b-instruct", 1_543_714_304, 1_310_340_608),
])
def test_the_model_entries_build_the_published_architectures(name, total, non_embedding):
    from transformers import AutoModelForCausalLM

    from stages.config import ArchConfig
    from stages.models.modeling import qwen2_config

    conf = yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())
    arch = ArchConfig(**conf["arch"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(qwen2_config(arch))
    assert model.config.model_type == arch.model_type
    count = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    assert (count, count - embedding * (1 if arch.tie_word_embeddings else 2)) == \
        (total, non_embedding)


def test_the_reply_span_is_what_the_tiny_template_marks(pipeline):
    """On the tiny model's marked template, perplexity scores the same tokens as before (its
    {% generation %} span: the reply and <|im_end|>), so its committed figures stand."""
    from stages.generation.losses import reply_span_ids
    from stages.models.modeling import load_tokenizer

    root, params = pipeline
    tokenizer = load_tokenizer(root / "models" / "base")
    for answer in ("I am Swift-Robot.", "```python\ndef f():\n    return 1\n```", "北京。"):
        conversation = [{"role": "system", "content": params["system_prompt"]},
                        {"role": "user", "content": "Q?"},
                        {"role": "assistant", "content": answer}]
        marked = tokenizer.apply_chat_template(conversation, return_dict=True,
                                               return_assistant_tokens_mask=True)
        prompt, full = reply_span_ids(tokenizer, conversation)
        assert full == marked["input_ids"][:len(full)]
        assert [i for i, m in enumerate(marked["assistant_masks"]) if m] == \
            list(range(len(prompt), len(full)))
