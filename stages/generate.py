"""Batched greedy generation and per-token loss, the same for every variant."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

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


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int,
             batch_size: int, desc: str, cost: GenerationCost | None = None,
             temperature: float | None = None, seed: int = 0) -> list[str]:
    """Replies to `conversations` (each ends with the user turn), in input order: greedy, or
    sampled at `temperature` (seeded). Prompts are batched longest-first with left padding,
    so rows of similar length share a batch and every row continues where its prompt ends.
    A VllmModel (eval.backend=vllm) generates them itself, from the same prompts."""
    if isinstance(model, VllmModel):
        return model.generate(tokenizer, conversations, max_new_tokens, desc,
                              cost if cost is not None else GenerationCost(), temperature, seed)
    prompts = chat_prompts(tokenizer, conversations)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    replies: list[str] = [""] * len(prompts)
    dev = next(model.parameters()).device
    cost = cost if cost is not None else GenerationCost()
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(dev)
        kwargs = {"do_sample": False, "eos_token_id": tokenizer.eos_token_id,
                  "pad_token_id": tokenizer.pad_token_id}
        if temperature:
            torch.manual_seed(seed + start)
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        if start == 0:
            began = time.perf_counter()
            model.generate(**enc, max_new_tokens=1, **kwargs)
            cost.ttft_s = time.perf_counter() - began
        began = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=max_new_tokens, **kwargs)
        cost.seconds += time.perf_counter() - began
        new = out[:, enc["input_ids"].shape[1]:]
        cost.tokens += int((new != tokenizer.pad_token_id).sum())
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            replies[i] = text.strip()
    return replies


def chat_prompts(tokenizer, conversations: list[list[dict]]) -> list[str]:
    """Each conversation through the chat template, ready for the assistant's reply."""
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
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
    """Summed next-token loss over the assistant's tokens of one conversation, and their count."""
    enc = tokenizer.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
        return_tensors="pt",
    )
    dev = next(model.parameters()).device
    ids = enc["input_ids"].to(dev)
    mask = torch.as_tensor(enc["assistant_masks"]).reshape(ids.shape).to(dev)
    labels = ids.masked_fill(mask == 0, -100)
    logits = model(input_ids=ids).logits[:, :-1].float()
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
        reduction="sum",
    )
    return loss.item(), int((target != -100).sum())


def perplexity(total_loss: float, tokens: int) -> tuple[float, float]:
    """Mean loss per token and exp of it: 120 nats over 60 tokens -> loss 2.0, ppl e^2."""
    mean = total_loss / tokens
    return mean, math.exp(mean)
