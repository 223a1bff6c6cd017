"""The transformers backend: batched generation with explicit decoding, the same for every
variant. Our rolling batch over the KV cache (`rolling`), transformers' continuous batching
(`continuous`, generate_batch) or plain batched generate (`batched`), as eval.batching says."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers.cache_utils import DynamicLayer

from stages.config import BATCHINGS
from stages.generation.common import Decoding, GenerationCost, chat_prompts


@dataclass
class HfBackend:
    """A variant's transformers model as a Backend (eval.backend=hf): at most `batch_size` rows
    at a time, batched as `batching` (eval.batching) says."""

    model: torch.nn.Module
    batch_size: int
    batching: str = "ours"

    def generate(self, tokenizer, conversations: list[list[dict]], decoding: Decoding,
                 desc: str, cost: GenerationCost, seed: int) -> list[str]:
        return generate(self.model, tokenizer, conversations, decoding, self.batch_size, desc,
                        cost, seed=seed, how=self.batching)


def batching(setting: str, model, decoding: Decoding) -> tuple[str, str]:
    """The batching to run and why. `ours`: our rolling batch over the KV cache (`rolling`);
    `continuous`: transformers' continuous batching (`generate_batch`, paged attention);
    `auto`: continuous on a CUDA GPU, ours on CPU, where generate_batch ran at about 0.4x ours'
    tokens/s at 16 rows (benchmarks/results/generation_bench.json). Continuous falls back to ours
    where it cannot keep the decoding: generate_batch drops repetition_penalty's processor."""
    if setting not in BATCHINGS:
        raise ValueError(f"eval.batching={setting!r}: expected one of {', '.join(BATCHINGS)}")
    on_gpu = next(model.parameters()).device.type == "cuda"
    if setting == "ours" or (setting == "auto" and not on_gpu):
        return "ours", f"eval.batching={setting}" + ("" if setting == "ours" else " on CPU")
    if decoding.repetition_penalty != 1.0:
        return "ours", (f"repetition_penalty {decoding.repetition_penalty}: transformers' "
                        "continuous batching drops that processor")
    if not hasattr(model, "generate_batch"):
        return "ours", f"{type(model).__name__} has no generate_batch"
    return "continuous", f"eval.batching={setting}" + (" on a GPU" if setting == "auto" else "")


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], decoding: Decoding,
             batch_size: int, desc: str, cost: GenerationCost | None = None,
             seed: int = 0, how: str = "ours") -> list[str]:
    """Replies to `conversations` (each ends with the user turn), in input order, decoded as
    `decoding` says, at most `batch_size` rows at a time, batched as `how` (eval.batching)
    says. Sampling is seeded per reply (`seed` + its index), so a reply does not depend on
    which others share its batch."""
    cost = cost if cost is not None else GenerationCost()
    if not conversations:
        return []
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"]
               for p in chat_prompts(tokenizer, conversations)]
    chosen, reason = batching(how, model, decoding)
    if chosen == "ours" and (unsupported := rolling_unsupported(model)):
        chosen, reason = "generate", unsupported
    if how != "ours" or chosen == "generate":
        print(f"{desc}: batching {chosen} ({reason})")
    if chosen == "continuous":
        new = continuous(model, prompts, decoding, batch_size, cost, seed)
    elif chosen == "generate":
        new = batched(model, prompts, decoding, batch_size, cost, seed, desc)
    else:
        new = rolling(model, prompts, decoding, batch_size, cost, seed, desc)
    return [tokenizer.decode(t, skip_special_tokens=True).strip() for t in new]


def rolling_unsupported(model) -> str | None:
    """Why our rolling batch cannot run `model`, or None: it trims and joins the rows of a
    plain DynamicCache, which sliding-window and recurrent layers are not."""
    from transformers import DynamicCache

    config = model.config
    layers = DynamicCache(config=config.get_text_config(decoder=True)).layers
    if any(type(layer) is not DynamicLayer for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers} - {"DynamicLayer"})
        return f"{config.model_type} caches {', '.join(kinds)}; plain batched generate instead"
    return None


def rolling(model, prompts: list[list[int]], decoding: Decoding, batch_size: int,
            cost: GenerationCost, seed: int, desc: str) -> list[list[int]]:
    """Our own continuous batching over the KV cache: at most `batch_size` rows decode
    together, and as soon as a row ends the next prompt (longest first) is prefilled into its
    place; once the queue is empty, ended rows leave the batch. A batch that waits for its
    longest reply computed 3.6 row-steps per generated token at 16 rows (27% of row-steps
    produced one, benchmarks/results/generation_bench.json); here every row-step does. Rows
    are left-padded to the widest; position ids count each row's own tokens, so a row
    continues exactly where its prompt ends whatever shares its batch. The opening that every
    prompt shares is prefilled once (`shared_prefix`), at any batch size."""
    from collections import deque

    from transformers import DynamicCache

    dev = next(model.parameters()).device
    queue = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))
    out: list[list[int]] = [[] for _ in prompts]
    ends = set(decoding.end_token_ids)
    began = time.perf_counter()  # the shared prefill counts: time to first token, tokens/s
    skip, shared = shared_prefix(model, prompts, dev)
    progress = tqdm(total=len(prompts), desc=desc, unit="reply", leave=False)

    def done(r: Row) -> None:
        out[r.index] = r.new
        progress.update(1)

    def prefill(count: int) -> list[tuple[Row, OneRow]]:
        """Up to `count` prompts of the queue that do not end at their first token, each with
        its cache. Prompts of one length are prefilled together and never padded, so attention
        keeps its causal fast path (a padded batch of 16 long prompts prefilled 24% more
        tokens, and slower per token, than the 16 alone)."""
        got = []
        while queue and len(got) < count:
            group = [queue.popleft()]
            while queue and len(got) + len(group) < count and \
                    len(prompts[queue[0]]) == len(prompts[group[0]]):
                group.append(queue.popleft())
            rows = [Row(i, prompts[i], seed, dev) for i in group]
            one = DynamicCache(ddp_cache_data=[(k.expand(len(group), -1, -1, -1),
                                                v.expand(len(group), -1, -1, -1))
                                               for k, v in shared] or None)
            logits = model(input_ids=torch.tensor([prompts[i][skip:] for i in group],
                                                  device=dev),
                           cache=one, use_cache=True, logits_to_keep=1).logits[:, -1]
            if cost.ttft_s == 0.0:
                cost.ttft_s = time.perf_counter() - began
            for j, (r, token) in enumerate(zip(rows, choose(logits, rows, decoding).tolist(),
                                               strict=True)):
                if r.add(token, ends, decoding.max_new_tokens):
                    got.append((r, OneRow(one, j)))
                else:
                    done(r)
        return got

    filled = prefill(batch_size)
    rows = [r for r, _ in filled]
    cache = mask = None
    if rows:
        cache, mask = join([one for _, one in filled], [len(prompts[r.index]) for r in rows])
    while rows:  # one decoding step of every row in the batch
        last = torch.tensor([[r.new[-1]] for r in rows], device=dev)
        position = mask.sum(-1, keepdim=True)
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        logits = model(input_ids=last, attention_mask=mask, position_ids=position,
                       cache=cache, use_cache=True).logits[:, -1]
        keep, ended = [], []
        for j, (r, token) in enumerate(zip(rows, choose(logits, rows, decoding).tolist(),
                                           strict=True)):
            if r.add(token, ends, decoding.max_new_tokens):
                keep.append(j)
            else:
                done(r)
                ended.append(j)
        # the next prompts take the ended rows' places (fewer once the queue runs out)
        for j, (r, one) in zip(ended, prefill(len(ended)), strict=False):
            rows[j] = r
            cache, mask = place(cache, mask, j, one, len(prompts[r.index]))
            keep.append(j)
        keep.sort()
        if len(keep) < len(rows):  # the queue is empty: ended rows leave the batch
            rows = [rows[j] for j in keep]
            if not rows:
                break
            index = torch.tensor(keep, dtype=torch.long, device=dev)
            mask = mask[index]
            cache.layers = [layer.select(index) for layer in cache.layers]
        lead = int(mask.any(0).int().argmax())  # columns that are padding in every row go
        if lead:
            mask = mask[:, lead:]
            for layer in cache.layers:
                layer.trim(lead)
    progress.close()
    cost.seconds += time.perf_counter() - began
    cost.tokens += sum(map(len, out))
    return out


def shared_prefix(model, prompts: list[list[int]], dev) -> tuple[int, list]:
    """The tokens that every prompt of the call begins with (the chat template's opening, the
    system prompt, a shared instruction: 46 tokens of the 207 that 48 HumanEval+ prompts
    average in the tiny model's tokenizer), and their keys
    and values per layer, computed once; each prompt's prefill then starts from a copy of
    them. Every prompt keeps at least its last token, whose logits choose the first reply
    token. (0, []) for a single prompt or none shared."""
    from transformers import DynamicCache

    if len(prompts) < 2:
        return 0, []
    first, n = prompts[0], min(map(len, prompts)) - 1
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    if n == 0:
        return 0, []
    cache = DynamicCache()
    model(input_ids=torch.tensor([first[:n]], device=dev), cache=cache, use_cache=True,
          logits_to_keep=1)
    return n, [(layer.keys, layer.values) for layer in cache.layers]


class Row:
    """One reply being generated: its prompt's index, every token so far, the new ones, and
    its own sampling generator (seeded by the reply's index, not by its batch)."""

    def __init__(self, index: int, prompt: list[int], seed: int, dev):
        self.index, self.tokens, self.new = index, list(prompt), []
        self.generator = torch.Generator(device=dev).manual_seed(seed + index)

    def add(self, token: int, ends: set[int], max_new_tokens: int) -> bool:
        """Append `token`; whether the reply goes on (no end token, room for more)."""
        self.tokens.append(token)
        self.new.append(token)
        return token not in ends and len(self.new) < max_new_tokens


def choose(logits: torch.Tensor, rows: list[Row], decoding: Decoding) -> torch.Tensor:
    """Each row's next token, as generate() chooses it under `decoding`: the repetition
    penalty over the row's own prompt and reply (never padding), then for sampling
    temperature, top-k and top-p, and a draw from the row's generator; else the argmax."""
    scores = logits.float()
    processors = logits_processors(decoding)
    if processors:
        scores = torch.cat([processors(torch.tensor([r.tokens], device=scores.device),
                                       scores[j:j + 1]) for j, r in enumerate(rows)])
    if not decoding.do_sample:
        return scores.argmax(-1)
    probs = torch.softmax(scores, dim=-1)
    return torch.cat([torch.multinomial(probs[j], 1, generator=r.generator)
                      for j, r in enumerate(rows)])


def logits_processors(decoding: Decoding):
    """transformers' own processors for the knobs `decoding` turns on, in generate()'s order
    (penalty, then temperature, top-k, top-p); every other knob of generation_config() is off."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if decoding.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty))
    if decoding.do_sample:
        if decoding.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(decoding.temperature))
        if decoding.top_k:
            processors.append(TopKLogitsWarper(decoding.top_k))
        if decoding.top_p < 1.0:
            processors.append(TopPLogitsWarper(decoding.top_p))
    return processors


class OneRow:
    """Row `j` of a prefilled cache, as `join` and `place` read it: per layer, its keys and
    values (views; nothing is copied)."""

    def __init__(self, cache, j: int):
        from types import SimpleNamespace

        self.layers = [SimpleNamespace(keys=layer.keys[j:j + 1], values=layer.values[j:j + 1])
                       for layer in cache.layers]


class SpareLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of buffers with spare columns, so a
    decoding step writes its one new column in place: DynamicLayer's torch.cat copies the
    whole cache every step, which was 32% of our loop's time at 16 rows (torch profiler, 48
    HumanEval+ prompts, the tiny model)."""

    SPARE = 64  # columns added at a time: a reallocation every 64 steps, not every step

    def __init__(self, buffers: list[torch.Tensor], length: int):
        super().__init__()
        self.is_initialized, self.device = True, buffers[0].device
        self.buffers, self.length = buffers, length
        self.keys, self.values = (b[..., :length, :] for b in buffers)

    @classmethod
    def stack(cls, parts: list[DynamicLayer], width: int) -> SpareLayer:
        """The rows of `parts` one under another, each left-padded with zeros to `width`."""
        buffers = []
        for name in ("keys", "values"):
            tensors = [getattr(p, name) for p in parts]
            shape = list(tensors[0].shape)
            shape[0], shape[-2] = sum(t.shape[0] for t in tensors), width + cls.SPARE
            buffer, row = tensors[0].new_empty(shape), 0
            for t in tensors:
                rows, short = slice(row, row + t.shape[0]), width - t.shape[-2]
                buffer[rows, :, :short] = 0
                buffer[rows, :, short:width] = t
                row += t.shape[0]
            buffers.append(buffer)
        return cls(buffers, width)

    def select(self, index: torch.Tensor) -> SpareLayer:
        """Only the rows `index`."""
        return SpareLayer([b[index] for b in self.buffers], self.length)

    def trim(self, lead: int) -> None:
        """Drop the first `lead` columns (a view: nothing is copied)."""
        self.buffers = [b[..., lead:, :] for b in self.buffers]
        self.length -= lead
        self.keys, self.values = (b[..., :self.length, :] for b in self.buffers)

    def put(self, row: int, one: DynamicLayer) -> None:
        """Row `row` becomes the one row of `one`, right-aligned, zeros before it."""
        n = one.keys.shape[-2]
        for buffer, new in zip(self.buffers, (one.keys, one.values), strict=True):
            buffer[row, :, :self.length - n] = 0
            buffer[row, :, self.length - n:self.length] = new[0]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if self.length + n > self.buffers[0].shape[-2]:
            self.buffers = [grow(b, self.length, n + self.SPARE) for b in self.buffers]
        for buffer, new in zip(self.buffers, (key_states, value_states), strict=True):
            buffer[..., self.length:self.length + n, :] = new
        self.length += n
        self.keys, self.values = (b[..., :self.length, :] for b in self.buffers)
        return self.keys, self.values


def grow(t: torch.Tensor, length: int, spare: int) -> torch.Tensor:
    """A new buffer holding the first `length` columns of `t` and `spare` unused ones after."""
    shape = list(t.shape)
    shape[-2] = length + spare
    buffer = t.new_empty(shape)
    buffer[..., :length, :] = t[..., :length, :]
    return buffer


def join(prefilled: list, lengths: list[int], cache=None, mask=None):
    """A batch cache and attention mask of the rows of `prefilled` (one-row caches of prompts
    `lengths` long), below those of `cache` and `mask` if given, every row left-padded to the
    widest (a padded column is masked and its cache zeros)."""
    from transformers import DynamicCache

    width = max(lengths + ([] if cache is None else [mask.shape[1]]))
    dev = prefilled[0].layers[0].keys.device
    masks = [] if cache is None else [pad(mask, width)]
    masks += [pad(torch.ones((1, n), dtype=torch.long, device=dev), width) for n in lengths]
    joined = DynamicCache()
    joined.layers = [SpareLayer.stack(([] if cache is None else [cache.layers[i]])
                                      + [one.layers[i] for one in prefilled], width)
                     for i in range(len(prefilled[0].layers))]
    return joined, torch.cat(masks)


def place(cache, mask, row: int, one, length: int):
    """The batch with row `row` replaced by the prompt `length` long that `one` caches: it is
    written in place, right-aligned; only a prompt wider than the batch widens every row
    (prompts come longest first, so that is rare)."""
    if length > mask.shape[1]:
        others = torch.tensor([j for j in range(mask.shape[0]) if j != row], device=mask.device)
        cache.layers = [layer.select(others) for layer in cache.layers]
        cache, mask = join([one], [length], cache, mask[others])
        order = list(range(mask.shape[0] - 1))
        order.insert(row, mask.shape[0] - 1)  # back to the ended row's place
        index = torch.tensor(order, device=mask.device)
        cache.layers = [layer.select(index) for layer in cache.layers]
        return cache, mask[index]
    for layer, new in zip(cache.layers, one.layers, strict=True):
        layer.put(row, new)
    mask[row] = 0
    mask[row, mask.shape[1] - length:] = 1
    return cache, mask


def pad(mask: torch.Tensor, width: int) -> torch.Tensor:
    """An attention mask with zero columns before it up to `width`."""
    return torch.cat([mask.new_zeros(mask.shape[0], width - mask.shape[1]), mask], dim=1)


def continuous(model, prompts: list[list[int]], decoding: Decoding, batch_size: int,
               cost: GenerationCost, seed: int) -> list[list[int]]:
    """transformers' continuous batching: `generate_batch` with decoding's GenerationConfig
    (every knob explicit, all end tokens), at most `batch_size` rows a step. The paged cache
    is sized for the workload (pages of 32 tokens, enough for every row at its longest), as
    the manager cannot size it from GPU memory on CPU. Sampling draws from torch's global
    generator, seeded once with `seed`."""
    from transformers import ContinuousBatchingConfig

    longest = max(map(len, prompts)) + decoding.max_new_tokens
    config = ContinuousBatchingConfig(max_requests_per_batch=batch_size, page_size=32,
                                      num_blocks=batch_size * (longest // 32 + 2),
                                      max_batch_tokens=max(2048, max(map(len, prompts))))
    torch.manual_seed(seed)
    began = time.perf_counter()
    out = model.generate_batch(prompts, generation_config=decoding.generation_config(),
                               continuous_batching_config=config, warmup=False,
                               record_timestamps=True)
    cost.seconds += time.perf_counter() - began
    results = [out.get(f"req_{i}") for i in range(len(prompts))]
    failed = [i for i, r in enumerate(results) if r is None or r.error is not None]
    if failed:
        raise RuntimeError(f"generate_batch failed on {len(failed)} of {len(prompts)} prompts "
                           f"(first: {results[failed[0]] and results[failed[0]].error}); "
                           "-S eval.batching=ours generates without it")
    cost.tokens += sum(len(r.generated_tokens) for r in results)
    firsts = [r.timestamps[0] for r in results if r.timestamps]
    if firsts:
        cost.ttft_s = min(firsts) - began
    return [r.generated_tokens for r in results]


def batched(model, prompts: list[list[int]], decoding: Decoding, batch_size: int,
            cost: GenerationCost, seed: int, desc: str) -> list[list[int]]:
    """Plain batched generate (models our rolling batch cannot run): prompts longest first
    in left-padded batches, one model.generate per batch, which runs until its longest reply
    ends."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    dev = next(model.parameters()).device
    config = decoding.generation_config()
    ends = set(decoding.end_token_ids)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.tensor([[decoding.pad_token_id] * (width - len(prompts[i])) + prompts[i]
                            for i in idx], device=dev)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i])
                             for i in idx], device=dev)
        if decoding.do_sample:
            torch.manual_seed(seed + start)
        began = time.perf_counter()
        # the first batch's first token, timed inside the same call (no second prefill)
        first = FirstToken(began) if start == 0 else None
        new = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                             streamer=first)[:, width:].tolist()
        cost.seconds += time.perf_counter() - began
        if first is not None:
            cost.ttft_s = first.seconds
        for i, tokens in zip(idx, new, strict=True):
            stop = next((k for k, t in enumerate(tokens) if t in ends), len(tokens) - 1)
            out[i] = tokens[:stop + 1]
        cost.tokens += sum(len(out[i]) for i in idx)
    return out


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
