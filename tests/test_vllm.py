"""eval.backend=vllm: what is refused before vLLM starts (any machine), and greedy parity with
the transformers path (a CUDA GPU with vllm installed)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import pytest
import torch

from conftest import stage_cfg, tiny_params, workspace
from stages.config import ConfigError, EvalStage


def eval_cfg(params: dict, **changes) -> EvalStage:
    return stage_cfg(EvalStage, {**params, "eval": {**params["eval"], **changes}})


def test_the_vllm_backend_without_vllm_says_how_to_get_it(pipeline, tmp_path, monkeypatch):
    from stages import eval as eval_stage

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    params = workspace(pipeline, tmp_path)
    (tmp_path / "models" / "sft").symlink_to(pipeline[0] / "models" / "sft")
    with pytest.raises(ConfigError, match=r"needs the vllm package \(pip install vllm.*"
                                          r"-S eval.backend=hf"):
        eval_stage.main("sft", "identity", eval_cfg(params, backend="vllm"))
    assert not (tmp_path / "metrics").exists()


class FakeLLM:
    """Stands in for vllm.LLM: records what it is given and answers each prompt with the
    token ids of "Hello." and the end token."""
    made: list[dict] = []

    def __init__(self, **kwargs):
        self.calls = []
        FakeLLM.made.append({"kwargs": kwargs, "calls": self.calls})

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        self.calls.append({"prompts": prompts, "params": params, "lora": lora_request})
        reply = types.SimpleNamespace(token_ids=self.reply_ids)
        return [types.SimpleNamespace(outputs=[reply]) for _ in prompts]


def fake_vllm(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kwargs: kwargs
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda *args: args
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    FakeLLM.made = []


def test_the_vllm_backend_without_a_gpu_is_refused_before_vllm_starts(pipeline, monkeypatch):
    from stages.generation.vllm import VllmBackend

    fake_vllm(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = eval_cfg(pipeline[1], backend="vllm")
    with pytest.raises(ConfigError, match="needs a CUDA GPU; on this machine use "
                                          "-S eval.backend=hf"):
        VllmBackend(cfg.paths, "sft", "float32", 0)
    assert FakeLLM.made == []


def test_vllm_gets_the_prompt_ids_transformers_gets_and_a_seed_per_sample(pipeline,
                                                                          monkeypatch):
    from stages.eval import conversation
    from stages.generation.common import GenerationCost, chat_prompts, decoding
    from stages.generation.vllm import VllmBackend
    from stages.models.modeling import load_tokenizer

    fake_vllm(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    root, params = pipeline
    cfg = eval_cfg(params, backend="vllm", temperature=0.8, top_p=0.9, top_k=5,
                   repetition_penalty=1.2, presence_penalty=0.5, frequency_penalty=0.25)
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    FakeLLM.reply_ids = tokenizer(" Hello.", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    backend = VllmBackend(cfg.paths, "sft", "float32", 7)
    conversations = [conversation(cfg, q) for q in ("Who are you?", "Who are you?", "2+2?")]
    cost = GenerationCost()
    sampled = decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer, sample=True)
    replies = backend.generate(tokenizer, conversations, sampled, "test", cost, 7)

    (made,) = FakeLLM.made
    assert made["kwargs"]["model"] == str(root / "models" / "base")
    assert made["kwargs"]["enable_lora"] is True and made["kwargs"]["max_lora_rank"] == 8
    first_token, run = made["calls"]
    expected_ids = [tokenizer(text, add_special_tokens=False)["input_ids"]
                    for text in chat_prompts(tokenizer, conversations)]
    assert [p["prompt_token_ids"] for p in run["prompts"]] == expected_ids
    assert run["lora"] == ("sft", 1, str(root / "models" / "sft"))
    assert [p["seed"] for p in run["params"]] == [7, 8, 9]  # repeated prompts sample anew
    assert {p["max_tokens"] for p in run["params"]} == {24}
    assert all(p["stop_token_ids"] == [tokenizer.eos_token_id] and p["ignore_eos"]
               and (p["temperature"], p["top_p"], p["top_k"], p["repetition_penalty"],
                    p["presence_penalty"], p["frequency_penalty"])
               == (0.8, 0.9, 5, 1.2, 0.5, 0.25) for p in run["params"])
    assert [p["max_tokens"] for p in first_token["params"]] == [1]
    assert replies == [tokenizer.decode(FakeLLM.reply_ids, skip_special_tokens=True).strip()] * 3
    assert cost.tokens == 3 * len(FakeLLM.reply_ids)


def test_eval_backend_chooses_the_backend(pipeline, monkeypatch):
    from stages.generation.choose import load_backend
    from stages.generation.hf import HfBackend
    from stages.generation.vllm import VllmBackend

    params = pipeline[1]
    hf = load_backend(eval_cfg(params, backend="hf", batch_size=3, batching="continuous"), "sft")
    assert isinstance(hf, HfBackend) and (hf.batch_size, hf.batching) == (3, "continuous")
    fake_vllm(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert isinstance(load_backend(eval_cfg(params, backend="vllm"), "sft"), VllmBackend)
    assert len(FakeLLM.made) == 1


def test_what_vllm_cannot_serve_is_named(pipeline, tmp_path):
    from stages.generation.vllm import check_servable, lora_slot

    root, _ = pipeline
    assert check_servable(root / "models" / "base", root / "models" / "sft") == 8  # tiny r 8
    assert check_servable(root / "models" / "base", None) == 0
    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((root / "models" / "sft" / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ConfigError, match="is a DoRA adapter, which vLLM does not apply"):
        check_servable(root / "models" / "base", dora)
    random_base = tmp_path / "random-base"
    random_base.mkdir()
    (random_base / "base.json").write_text(json.dumps({"source": "hub", "init": "random"}))
    with pytest.raises(ConfigError, match="model.init=random has none"):
        check_servable(random_base, None)
    assert [lora_slot(r) for r in (1, 8, 12, 64, 65)] == [8, 8, 16, 64, 128]
    with pytest.raises(ConfigError, match="rank 600 is above vLLM's largest"):
        lora_slot(600)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a CUDA GPU")
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_gives_the_greedy_replies_transformers_gives(tmp_path):
    """float32 on both sides, the sft adapter applied; head size 64 (the test fixture's 16 is
    below what vLLM's attention kernels take)."""
    from stages import base, curate, sft
    from stages.config import BaseStage, CurateStage, SftStage
    from stages.eval import conversation
    from stages.generation.common import GenerationCost, greedy
    from stages.generation.hf import generate
    from stages.generation.vllm import VllmBackend
    from stages.models.modeling import load_tokenizer, load_variant

    params = tiny_params(tmp_path)
    params["model"]["arch"].update(hidden_size=256, num_heads=4, num_kv_heads=2,
                                   intermediate_size=512)
    base.main(stage_cfg(BaseStage, params))
    curate.main(stage_cfg(CurateStage, params))
    sft.main(stage_cfg(SftStage, params))
    cfg = eval_cfg(params, backend="vllm")
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    questions = [conversation(cfg, q) for q in ("Who are you?",
                                                "Write a Python function add(a, b).",
                                                "What is the capital of France?", "你是谁？")]
    decoding = greedy(cfg.paths.model_dir("base"), tokenizer, 24)
    hf = generate(load_variant(cfg.paths, "sft", "float32"), tokenizer, questions, decoding, 4,
                  "hf")
    cost = GenerationCost()
    served = VllmBackend(cfg.paths, "sft", "float32", 0).generate(tokenizer, questions,
                                                                 decoding, "vllm", cost, 0)
    assert served == hf
    assert cost.tokens > 0 and cost.ttft_s > 0
