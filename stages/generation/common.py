"""What every generation backend shares, and nothing backend-specific: the Backend protocol
eval calls, the decoding (every knob explicit), the chat prompts every backend feeds the model,
the cost it measures (tokens/s, time to first token) and the code block of a reply. Both
backends (stages.generation.hf, stages.generation.vllm) import this module; it imports neither.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


class Backend(Protocol):
    """What eval asks of a generating backend (stages.generation.choose picks one):
    stages.generation.hf.HfBackend (transformers) and stages.generation.vllm.VllmBackend."""

    def generate(self, tokenizer, conversations: list[list[dict]], decoding: Decoding,
                 desc: str, cost: GenerationCost, seed: int) -> list[str]:
        """Replies to `conversations` (each ends with the user turn), in input order, from the
        prompts `chat_prompts` renders, decoded as `decoding` says; the generated tokens and
        the time they took are added to `cost`. Sampling is seeded from `seed` (each backend
        says how)."""
        ...


@dataclass
class GenerationCost:
    tokens: int = 0
    """Generated tokens, up to and including each row's end token."""
    seconds: float = 0.0
    ttft_s: float = 0.0
    """Time to the first token of the first batch (its prefill and one decoding step)."""

    def metrics(self) -> dict:
        return {"tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else 0.0,
                "ttft_s": round(self.ttft_s, 4)}


@dataclass(frozen=True)
class Decoding:
    """Every decoding knob of a generation, set here and nowhere else: transformers fills any
    knob left unset from the checkpoint's generation_config.json (Qwen2.5-Instruct ships
    sampling on and repetition_penalty 1.1), so none is left unset."""

    max_new_tokens: int
    end_token_ids: tuple[int, ...]
    """Every end token of the checkpoint: a reply stops at the first of any of them."""
    pad_token_id: int
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    """0: no top-k cut."""
    repetition_penalty: float
    presence_penalty: float = 0.0
    """vLLM only; transformers has no additive penalty (the config refuses it for hf)."""
    frequency_penalty: float = 0.0

    def record(self) -> dict:
        """The decoding as eval writes it next to its metrics."""
        return {**asdict(self), "end_token_ids": list(self.end_token_ids)}

    def generation_config(self):
        from transformers import GenerationConfig

        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence/frequency penalties have no transformers equivalent; "
                             "they apply on the vLLM backend only")

        # Start from transformers' global defaults for every other knob (beams, penalties,
        # n-gram bans, ...), so nothing is left None for generate() to take from the checkpoint.
        knobs = GenerationConfig()._get_default_generation_params()
        del knobs["max_length"]  # max_new_tokens bounds the reply; both set makes a warning
        knobs.update(max_new_tokens=self.max_new_tokens, eos_token_id=list(self.end_token_ids),
                     pad_token_id=self.pad_token_id, do_sample=self.do_sample,
                     repetition_penalty=self.repetition_penalty)
        if self.do_sample:
            knobs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return GenerationConfig(**knobs)


def decoding(eval_cfg, base_dir: Path, tokenizer, sample: bool = False) -> Decoding:
    """The decoding of eval (and chat) from `eval.*`: greedy, or with `sample` drawn at
    eval.temperature, top_p and top_k; repetition_penalty and max_new_tokens either way; the
    end tokens are all of the checkpoint's."""
    return Decoding(
        max_new_tokens=eval_cfg.max_new_tokens,
        end_token_ids=end_token_ids(base_dir, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        do_sample=sample,
        temperature=eval_cfg.temperature if sample else 1.0,
        top_p=eval_cfg.top_p if sample else 1.0,
        top_k=eval_cfg.top_k if sample else 0,
        repetition_penalty=eval_cfg.repetition_penalty,
        presence_penalty=eval_cfg.presence_penalty,
        frequency_penalty=eval_cfg.frequency_penalty,
    )


def greedy(base_dir: Path, tokenizer, max_new_tokens: int) -> Decoding:
    """Plain greedy decoding (argmax at every step, no penalty) up to `max_new_tokens`."""
    return Decoding(max_new_tokens=max_new_tokens, end_token_ids=end_token_ids(base_dir, tokenizer),
                    pad_token_id=tokenizer.pad_token_id, do_sample=False, temperature=1.0,
                    top_p=1.0, top_k=0, repetition_penalty=1.0)


def end_token_ids(base_dir: Path, tokenizer) -> tuple[int, ...]:
    """The tokenizer's end token and every eos id of the checkpoint's generation_config.json
    in `base_dir` (Qwen2.5/Qwen3 Instruct: <|im_end|> 151645 and <|endoftext|> 151643)."""
    ids = [tokenizer.eos_token_id]
    path = Path(base_dir) / "generation_config.json"
    if path.exists():
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    return tuple(dict.fromkeys(ids))


def chat_prompts(tokenizer, conversations: list[list[dict]]) -> list[str]:
    """Each conversation through the chat template, ready for the assistant's reply. Qwen3's
    hybrid-thinking templates get enable_thinking=False: the prompt then ends with the empty
    <think></think> block that TRL's training template renders before every trained reply,
    so the model answers at once, as it was fine-tuned to (other templates ignore the flag)."""
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False,
                                          enable_thinking=False)
            for c in conversations]


def extract_code(reply: str) -> str | None:
    """The first fenced code block, else the whole reply if it looks like code, else None."""
    match = FENCE.search(reply)
    if match:
        return match.group(1).strip() or None
    if re.search(r"^\s*(def|class|import|from)\s", reply, re.MULTILINE):
        return reply.strip()
    return None
