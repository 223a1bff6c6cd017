"""eval.backend=vllm: generation with vLLM, the adapter applied per request (no merge).

Only generation moves to vLLM; perplexity still scores with transformers. The prompts are the
same token ids `stages.generation.hf.generate` feeds transformers (our tokenizer's chat
template, no added special tokens) and the replies are decoded by the same tokenizer, so greedy
outputs can be compared token for token (tests/test_vllm.py, on a GPU with vllm installed).

vLLM is not a dependency of the project: `pip install vllm` on a CUDA machine. It brings its
own torch build, so install it in an environment of its own (README, "Evaluating with vLLM").
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from stages.config import ConfigError
from stages.core.io import MissingInput
from stages.generation.common import Decoding, GenerationCost, chat_prompts
from stages.models.modeling import read_base_json, weights_location

# vLLM allocates LoRA slots for a fixed set of ranks; an adapter's rank is rounded up to one.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VllmBackend:
    """A variant served by vLLM as a Backend: the base weights, and the variant's LoRA adapter
    if any."""

    def __init__(self, paths, variant: str, dtype: str, seed: int):
        base_dir = paths.model_dir("base")
        adapter = None if variant == "base" else paths.model_dir(variant)
        rank = check_servable(base_dir, adapter)
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise ConfigError("eval.backend=vllm needs the vllm package (pip install vllm, on a "
                              "CUDA machine); or -S eval.backend=hf") from None
        if not torch.cuda.is_available():
            raise ConfigError("eval.backend=vllm needs a CUDA GPU; on this machine use "
                              "-S eval.backend=hf")
        where, kwargs = weights_location(base_dir)
        lora = {"enable_lora": True, "max_lora_rank": lora_slot(rank)} if adapter else {}
        self.llm = LLM(model=where, tokenizer=str(base_dir), revision=kwargs.get("revision"),
                       dtype=dtype, seed=seed, **lora)
        self.lora = LoRARequest(variant, 1, str(adapter)) if adapter else None

    def generate(self, tokenizer, conversations: list[list[dict]], decoding: Decoding,
                 desc: str, cost: GenerationCost, seed: int) -> list[str]:
        """Replies in input order, decoded as `decoding` says. vLLM batches the requests itself
        (continuous batching), so eval.batch_size does not apply."""
        from vllm import SamplingParams

        texts = chat_prompts(tokenizer, conversations)
        prompts = [{"prompt_token_ids": ids}
                   for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

        def params(max_tokens: int, request: int) -> SamplingParams:
            # A seed per request: eval.samples repeats each prompt, and one seed for all would
            # draw the same sample each time. Every knob explicit, as on the transformers
            # path; ignore_eos with stop_token_ids: the checkpoint's end tokens, all of them,
            # and no others. vLLM's top_k -1 is "off" (0 here).
            return SamplingParams(
                n=1, temperature=decoding.temperature if decoding.do_sample else 0.0,
                top_p=decoding.top_p, top_k=decoding.top_k or -1,
                repetition_penalty=decoding.repetition_penalty,
                presence_penalty=decoding.presence_penalty,
                frequency_penalty=decoding.frequency_penalty, seed=seed + request,
                max_tokens=max_tokens, ignore_eos=True,
                stop_token_ids=list(decoding.end_token_ids))

        began = time.perf_counter()
        self.llm.generate(prompts[:1], [params(1, 0)], lora_request=self.lora, use_tqdm=False)
        cost.ttft_s = time.perf_counter() - began
        began = time.perf_counter()
        print(f"{desc}: {len(prompts)} prompts to vLLM")
        outputs = self.llm.generate(prompts, [params(decoding.max_new_tokens, i)
                                              for i in range(len(prompts))],
                                    lora_request=self.lora)
        cost.seconds += time.perf_counter() - began
        replies = []
        for out in outputs:
            ids = list(out.outputs[0].token_ids)
            cost.tokens += len(ids)
            replies.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        return replies


def check_servable(base_dir: Path, adapter: Path | None) -> int:
    """What vLLM cannot serve is refused before it starts: random-init bases (no weights to
    load) and DoRA adapters (vLLM applies plain LoRA). Returns the adapter's rank (0: none)."""
    meta = read_base_json(base_dir)
    if meta["source"] == "hub" and meta["init"] == "random":
        raise ConfigError("eval.backend=vllm loads the base weights; model.init=random has none. "
                          "Use -S eval.backend=hf")
    if adapter is None:
        return 0
    config_file = adapter / "adapter_config.json"
    if not config_file.exists():
        raise MissingInput(f"no adapter in {adapter}; run `dvc repro` first")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("use_dora"):
        raise ConfigError(f"{adapter} is a DoRA adapter, which vLLM does not apply; evaluate it "
                          "with -S eval.backend=hf")
    return int(config["r"])


def lora_slot(rank: int) -> int:
    """The smallest rank vLLM allocates that holds `rank`."""
    for slot in VLLM_LORA_RANKS:
        if rank <= slot:
            return slot
    raise ConfigError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); use "
                      "-S eval.backend=hf")

