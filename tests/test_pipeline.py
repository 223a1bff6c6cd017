"""Each stage's main() end to end on tiny artifacts in a temporary directory."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import read_json, stage_cfg
from stages.config import BaseStage, EvalStage, SummaryStage
from stages.core.io import read_jsonl
from stages.sandbox.execute import run_tests
from stages.suites.code import FAILURE_KINDS


def test_base_writes_a_qwen2_model_with_its_tokenizer_and_chatml(pipeline):
    root, params = pipeline
    base_dir = root / "models" / "base"
    config = read_json(base_dir / "config.json")
    assert config["model_type"] == "qwen2"
    assert config["num_hidden_layers"] == 2
    meta = read_json(base_dir / "base.json")
    assert meta["source"] == "tiny" and meta["seed"] == params["seed"]
    template = (base_dir / "chat_template.jinja").read_text()
    assert "{% generation %}" in template and "<|im_start|>" in template
    metrics = read_json(root / "metrics" / "base.json")["base"]
    assert metrics["parameters"] == sum(
        t.numel() for t in load_file(base_dir / "model.safetensors").values()
    )


def test_base_is_deterministic_under_the_seed(pipeline, tmp_path):
    from stages import base

    root, params = pipeline
    params = {**params, "paths": {**params["paths"], "models": str(tmp_path / "models"),
                                  "metrics": str(tmp_path / "metrics")}}
    base.main(stage_cfg(BaseStage, params))
    first = load_file(root / "models" / "base" / "model.safetensors")
    again = load_file(tmp_path / "models" / "base" / "model.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_base_trains_a_packed_row_on_the_loss_of_the_padded_batch():
    """Pretraining feeds a step's conversations as one row (stages.base.packed_row); the loss
    must be the padded batch's: same targets, no attention or target across a boundary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from stages.base import packed_row

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         intermediate_size=64)).train()
    batch = [[5, 9, 11, 3], [7, 8], [20, 21, 22, 23, 24, 25], [30, 31, 32]]
    width = max(map(len, batch))
    ids = torch.tensor([seq + [0] * (width - len(seq)) for seq in batch])
    mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in batch])
    padded = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100),
                   use_cache=False).loss
    packed = model(**packed_row(batch), use_cache=False).loss
    assert packed.item() == pytest.approx(padded.item(), abs=1e-6)


def test_curate_fills_identity_and_builds_verified_pairs(pipeline):
    root, params = pipeline
    rows = read_jsonl(root / "curated" / "sft.jsonl")
    assert len(rows) == 12 + 4 + 4 + 6
    for row in rows:
        text = json.dumps(row, ensure_ascii=False)
        assert "{{" not in text
        assert row["messages"][0] == {"role": "system", "content": params["system_prompt"]}
        assert row["messages"][-1]["role"] == "assistant"
    identity = [r for r in rows if r["source"] == "identity"]
    assert all("Swift-Robot" in r["messages"][-1]["content"] or "雨燕机器人" in
               r["messages"][-1]["content"] for r in identity)

    pairs = read_jsonl(root / "curated" / "prefs.jsonl")
    assert pairs, "code tasks with comparisons and constants must yield pairs"
    tasks = {t["task_id"]: t for t in read_jsonl(params["data"]["preference_source"])}
    for pair in pairs:
        tests = tasks[pair["task_id"]]["tests"]
        chosen = pair["chosen"][0]["content"].removeprefix("```python\n").removesuffix("\n```")
        rejected = pair["rejected"][0]["content"].removeprefix("```python\n").removesuffix("\n```")
        assert run_tests(chosen, tests, 10).passed
        assert not run_tests(rejected, tests, 10).passed

    metrics = read_json(root / "metrics" / "curate.json")["curate"]
    assert metrics["rows"] == len(rows)
    assert metrics["sources"]["identity"]["rows_out"] == 12
    assert metrics["pairs"] == len(pairs)
    probes = read_jsonl(root / "curated" / "probes" / "identity.jsonl")
    assert all("{{" not in p["response"] for p in probes)


def test_sft_changes_lora_weights_and_leaves_base_weights_alone(pipeline):
    from peft import PeftModel

    from stages.models.modeling import load_base_model

    root, _ = pipeline
    adapter = load_file(root / "models" / "sft" / "adapter_model.safetensors")
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b), "lora_B starts at zero"

    base_weights = load_file(root / "models" / "base" / "model.safetensors")
    model = PeftModel.from_pretrained(load_base_model(root / "models" / "base", "float32"),
                                      str(root / "models" / "sft"))
    merged = model.get_base_model().state_dict()
    for name, tensor in base_weights.items():
        module, _, kind = name.rpartition(".")
        current = merged.get(f"{module}.base_layer.{kind}", merged.get(name))
        assert torch.equal(current, tensor), name

    provenance = read_json(root / "models" / "sft" / "provenance.json")
    assert provenance["base"]["source"] == "tiny" and len(provenance["data_sha256"]) == 64
    metrics = read_json(root / "metrics" / "sft" / "main.json")["sft"]["main"]
    assert metrics["steps"] >= 1 and 0 < metrics["trainable_share"] < 1
    assert metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["peak_memory_mib"] > 0 and metrics["peak_memory_kind"] == "rss"
    adapter_bytes = (root / "models" / "sft" / "adapter_model.safetensors").stat().st_size
    assert metrics["adapter_mb"] == round(adapter_bytes / 2**20, 3)
    plots = root / "metrics" / "sft" / "main" / "plots" / "metrics"
    for tsv in ["train/loss.tsv", "train/lr.tsv", "train/grad_norm.tsv"] + [
            f"lora_grad_norm/{p}.tsv" for p in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                           "up_proj", "down_proj")]:
        lines = (plots / tsv).read_text().splitlines()
        assert lines[0].split("\t") == ["step", tsv.removesuffix(".tsv").split("/")[-1]]
        assert [int(line.split("\t")[0]) for line in lines[1:]] == \
            list(range(1, metrics["steps"] + 1)), tsv
    assert not (root / "checkpoints").exists() or not any((root / "checkpoints").rglob("*.json"))


def test_sft_trains_on_assistant_tokens_only(pipeline):
    """The mask TRL builds for a real chat row covers the answer and its end token only."""
    from datasets import Dataset
    from trl import SFTTrainer

    from stages.config import SftStage
    from stages.models.modeling import load_base_model, load_tokenizer
    from stages.sft import lora_config, training_args

    root, params = pipeline
    cfg = stage_cfg(SftStage, params)
    tok = load_tokenizer(root / "models" / "base")
    row = {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": "Who are you?"},
                        {"role": "assistant", "content": "I am Swift-Robot."}]}
    trainer = SFTTrainer(
        model=load_base_model(root / "models" / "base", "float32"),
        args=training_args(cfg, cfg.sft.phases["main"], 1, {"bf16": False, "fp16": False},
                           root / "mask-check"),
        train_dataset=Dataset.from_list([row]),
        processing_class=tok,
        peft_config=lora_config(cfg.sft.lora),
    )
    example = trainer.train_dataset[0]
    trained = [label for label in example["labels"] if label != -100]
    assert tok.decode(trained) == "I am Swift-Robot.<|im_end|>"
    assert len(example["labels"]) == len(example["input_ids"]) > len(trained)


def test_dpo_continues_from_sft_and_saves_only_its_adapter(pipeline):
    root, _ = pipeline
    dpo_dir = root / "models" / "dpo"
    assert (dpo_dir / "adapter_model.safetensors").exists()
    assert not (dpo_dir / "ref").exists()
    sft = load_file(root / "models" / "sft" / "adapter_model.safetensors")
    dpo = load_file(dpo_dir / "adapter_model.safetensors")
    assert sft.keys() == dpo.keys()
    assert any(not torch.equal(sft[k], dpo[k]) for k in sft)
    metrics = read_json(root / "metrics" / "dpo.json")["dpo"]
    assert 0 <= metrics["reward_accuracies"] <= 1
    assert read_json(dpo_dir / "provenance.json")["parent_adapter"].endswith("sft")
    assert (root / "metrics" / "dpo" / "plots" / "metrics" / "rewards" / "margins.tsv").exists()


@pytest.mark.parametrize("variant", ["base", "sft", "dpo"])
def test_eval_scores_every_suite_and_keeps_per_task_outcomes(pipeline, variant):
    from stages import eval as eval_stage

    root, params = pipeline
    cfg = stage_cfg(EvalStage, params)
    for suite in params["eval"]["suites"]:
        eval_stage.main(variant, suite, cfg)
        metrics = read_json(root / "metrics" / "eval" / variant / f"{suite}.json")
        assert list(metrics) == [suite]
        tasks = read_jsonl(root / "metrics" / "tasks" / variant / f"{suite}.jsonl")
        if suite == "perplexity":
            assert len(tasks) == 3 * 3
            assert all(v > 0 for k, v in metrics[suite].items() if k.endswith("_ppl"))
        else:
            assert len(tasks) == 3
            key = {"code": "pass@1", "identity": "consistency", "knowledge": "accuracy",
                   "dimensions": "score"}[suite]
            assert metrics[suite][key] == pytest.approx(sum(t["passed"] for t in tasks) / 3,
                                                        abs=1e-4)
        assert len({t["id"] for t in tasks}) == len(tasks)
        assert all(t["prompt"] and isinstance(t["reply"], str) and t["metric"] for t in tasks)
        cost = read_json(root / "metrics" / "cost" / variant / f"{suite}.json")[suite]
        assert cost["wall_s"] > 0 and cost["probes"] == len(tasks)
        if suite != "perplexity":  # time to first token, seen inside the first batch's call
            assert 0 < cost["ttft_s"] < cost["wall_s"] and cost["tokens_per_s"] > 0
        assert not {"tokens_per_s", "ttft_s", "wall_s"} & set(metrics[suite])
        if suite == "code":
            assert all(t["detail"] for t in tasks)
            failed = sum(t["detail"] != "passed" for t in tasks) / 3
            assert sum(metrics[suite][f"fail_{k}"] for k in FAILURE_KINDS) == pytest.approx(
                failed, abs=1e-3)


def test_summary_reports_each_variant_and_its_delta(pipeline):
    from stages import summary

    root, params = pipeline
    for variant in ("base", "sft", "dpo"):
        if not (root / "metrics" / "eval" / variant / "code.json").exists():
            pytest.skip("runs after the eval tests")
    result = summary.main(stage_cfg(SummaryStage, params))
    written = read_json(root / "metrics" / "summary.json")
    assert written == result
    row = written["code"]["pass@1"]
    assert row["sft_delta"] == pytest.approx(row["sft"] - row["base"], abs=1e-4)


def test_sampling_gives_pass_at_k_per_task(pipeline):
    from stages import eval as eval_stage

    root, params = pipeline
    params = {**params, "eval": {**params["eval"], "samples": 3, "temperature": 0.8}}
    metrics = eval_stage.main("base", "code", stage_cfg(EvalStage, params))
    tasks = read_jsonl(root / "metrics" / "tasks" / "base" / "code.jsonl")
    assert all(len(t["statuses"]) == 3 for t in tasks)
    # pass@1 = mean of c/n; pass@3 = share of tasks with at least one correct sample
    assert metrics["pass@1"] == pytest.approx(sum(t["correct"] / 3 for t in tasks) / 3, abs=1e-4)
    assert metrics["pass@3"] == pytest.approx(sum(t["correct"] > 0 for t in tasks) / 3, abs=1e-4)
    assert all(t["passed"] == round(t["correct"] / 3, 4) for t in tasks)
    # diversity of the 3 samples per task (stages/stats/diversity.py), and its mean in the metrics
    assert all(set(t["diversity"]) == {"distinct_2", "self_similarity"} for t in tasks)
    assert all(0 <= v <= 1 for t in tasks for v in t["diversity"].values())
    assert metrics["self_similarity"] == pytest.approx(
        sum(t["diversity"]["self_similarity"] for t in tasks) / len(tasks), abs=1e-4)


def test_dimensions_suite_adds_humanevalpack_probes(pipeline, tmp_path):
    from stages import eval as eval_stage

    root, params = pipeline
    pack = tmp_path / "pack.jsonl"
    pack.write_text(json.dumps({
        "task_id": "Python/0", "entry_point": "inc", "bug_type": "value misuse",
        "declaration": "def inc(x):\n", "canonical_solution": "    return x + 1\n",
        "buggy_solution": "    return x + 2\n", "test": "def check(inc):\n    assert inc(1) == 2\n",
    }) + "\n")
    params = {**params, "benchmarks": {**params["benchmarks"], "humanevalpack": str(pack)}}
    metrics = eval_stage.main("base", "dimensions", stage_cfg(EvalStage, params))
    tasks = read_jsonl(root / "metrics" / "tasks" / "base" / "dimensions.jsonl")
    assert [t["id"] for t in tasks[-2:]] == ["Python/0/repair", "Python/0/localisation"]
    assert "repair_pack" in metrics and "localisation_pack" in metrics


def test_dora_trains_a_dora_adapter(pipeline, tmp_path):
    from stages import sft
    from stages.config import SftStage

    root, params = pipeline
    params = {**params, "sft": {**params["sft"], "method": "dora"},
              "paths": {**params["paths"], "metrics": str(tmp_path / "metrics")}}
    models = tmp_path / "models"
    models.mkdir()
    (models / "base").symlink_to(root / "models" / "base")
    params["paths"]["models"] = str(models)
    sft.main(stage_cfg(SftStage, params))
    assert read_json(models / "sft" / "adapter_config.json")["use_dora"] is True
    weights = load_file(models / "sft" / "adapter_model.safetensors")
    assert any("lora_magnitude_vector" in k for k in weights)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_qlora_on_cpu_stops_before_loading_anything(pipeline, tmp_path, monkeypatch):
    from stages import sft
    from stages.config import ConfigError, SftStage

    _, params = pipeline
    params = {**params, "sft": {**params["sft"], "method": "qlora"},
              "paths": {**params["paths"], "models": str(tmp_path / "nothing-here")}}
    with pytest.raises(ConfigError, match="4-bit with bitsandbytes, which needs a CUDA GPU"):
        sft.main(stage_cfg(SftStage, params))
    assert not (tmp_path / "nothing-here").exists()
