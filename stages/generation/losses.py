"""The loss of a reply under the variant, per token: what the perplexity suite scores, always
with the transformers model (no backend generates here)."""

from __future__ import annotations

import math

import torch

from stages.generation.common import chat_prompts


@torch.no_grad()
def assistant_losses(model, tokenizer, conversations: list[list[dict]],
                     batch_size: int) -> list[tuple[float, int]]:
    """For each conversation, the summed next-token loss over the assistant's reply (the last
    turn) and its end token, and their count: the tokens after the prompt as `chat_prompts`
    renders it, through the first end token. No {% generation %} markers needed, so a
    checkpoint's own template (Qwen's has none) scores the same tokens as the tiny model's
    marked one. Scored `batch_size` at a time, longest first and right-padded (a causal model
    never attends forward, so the padding after a row changes none of its logits)."""
    spans = [reply_span_ids(tokenizer, c) for c in conversations]
    dev = next(model.parameters()).device
    order = sorted(range(len(spans)), key=lambda i: -len(spans[i][1]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(spans)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(spans[i][1]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long, device=dev)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            prompt, full = spans[i]
            ids[j, :len(full)] = torch.tensor(full, device=dev)
            labels[j, len(prompt):len(full)] = ids[j, len(prompt):len(full)]
            mask[j, :len(full)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target,
                                                 ignore_index=-100, reduction="none").sum(-1)
        for j, i in enumerate(idx):
            out[i] = (loss[j].item(), int((target[j] != -100).sum()))
    return out


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
