"""Batched generation with explicit decoding, and per-token loss, the same for every variant."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from stages.vllm_backend import VllmModel

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


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


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], decoding: Decoding,
             batch_size: int, desc: str, cost: GenerationCost | None = None,
             seed: int = 0) -> list[str]:
    """Replies to `conversations` (each ends with the user turn), in input order, decoded as
    `decoding` says (sampling seeded by `seed`). Prompts are batched longest-first with left
    padding, so rows of similar length share a batch and every row continues where its prompt
    ends. A VllmModel (eval.backend=vllm) generates them itself, from the same prompts."""
    if isinstance(model, VllmModel):
        return model.generate(tokenizer, conversations, decoding, desc,
                              cost if cost is not None else GenerationCost(), seed)
    prompts = chat_prompts(tokenizer, conversations)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    replies: list[str] = [""] * len(prompts)
    dev = next(model.parameters()).device
    cost = cost if cost is not None else GenerationCost()
    config = decoding.generation_config()
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(dev)
        if decoding.do_sample:
            torch.manual_seed(seed + start)
        began = time.perf_counter()
        # the first batch's first token, timed inside the same call (no second prefill)
        first = FirstToken(began) if start == 0 else None
        out = model.generate(**enc, generation_config=config, streamer=first)
        cost.seconds += time.perf_counter() - began
        if first is not None:
            cost.ttft_s = first.seconds
        new = out[:, enc["input_ids"].shape[1]:]
        cost.tokens += int((new != decoding.pad_token_id).sum())
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            replies[i] = text.strip()
    return replies


class FirstToken:
    """A generate() streamer that notes when the first new tokens arrive: generate hands it
    the prompt ids, then each step's tokens, so the second call is the first token."""

    def __init__(self, began: float):
        self.began, self.calls, self.seconds = began, 0, 0.0

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.seconds = time.perf_counter() - self.began

    def end(self) -> None:
        pass


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


@torch.no_grad()
def assistant_loss(model, tokenizer, conversation: list[dict]) -> tuple[float, int]:
    """Summed next-token loss over the assistant's reply (the last turn) and its end token,
    and their count: the tokens after the prompt as `generate` renders it, through the first
    end token. No {% generation %} markers needed, so a checkpoint's own template (Qwen's has
    none) scores the same tokens as the tiny model's marked one."""
    prompt, full = reply_span_ids(tokenizer, conversation)
    dev = next(model.parameters()).device
    ids = torch.tensor([full], device=dev)
    labels = torch.full_like(ids, -100)
    labels[0, len(prompt):] = ids[0, len(prompt):]
    logits = model(input_ids=ids).logits[:, :-1].float()
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
        reduction="sum",
    )
    return loss.item(), int((target != -100).sum())


def reply_span_ids(tokenizer, conversation: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (every turn before the last, with the generation prompt) and
    of the prompt followed by the last (assistant) turn through its end token."""
    from stages.config import StageError

    if conversation[-1]["role"] != "assistant":
        raise ValueError("assistant_loss needs a conversation that ends with the assistant's turn")
    prompt_text = chat_prompts(tokenizer, [conversation[:-1]])[0]
    full_text = tokenizer.apply_chat_template(conversation, tokenize=False, enable_thinking=False)
    if not full_text.startswith(prompt_text):
        raise StageError(
            "the chat template renders the prompt differently on its own than before the "
            f"assistant's reply ({prompt_text[-60:]!r} vs {full_text[len(prompt_text) - 60:][:80]!r}), "
            "so the reply's tokens cannot be found; use a template that renders the prompt the "
            "same way in both cases (-S model.chat_template=PATH)")
    prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if full[:len(prompt)] != prompt:
        raise StageError("the reply's first token merges with the end of the prompt "
                         f"({prompt_text[-30:]!r} + {conversation[-1]['content'][:30]!r})")
    end = tokenizer.eos_token_id
    if end not in full[len(prompt):]:
        raise StageError(f"the chat template does not end the assistant's turn with the end "
                         f"token {tokenizer.eos_token!r}")
    return prompt, full[:full.index(end, len(prompt)) + 1]


def perplexity(total_loss: float, tokens: int) -> tuple[float, float]:
    """Mean loss per token and exp of it: 120 nats over 60 tokens -> loss 2.0, ppl e^2."""
    mean = total_loss / tokens
    return mean, math.exp(mean)
