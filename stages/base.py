"""base: the model every variant starts from.

Reads   params seed, system_prompt, model, paths; data/sources/ (model=tiny only)
Writes  models/base/ (weights for tiny; tokenizer, config and base.json for every model),
        metrics/base.json (the same figures, the wall time, and the run's versions and
        machine: stages.core.runinfo)
Run     dvc repro base   (or: python -m stages.base)

model=tiny builds a ~3M-parameter Qwen2 model and its own byte-level BPE tokenizer and trains
it from scratch on the built-in corpus: general QA, code tasks and, as a real base model has
seen much of the world, the reference answers of the built-in eval suites, plus its original
identity. That gives it capabilities a fine-tune can lose. A hub model is recorded by id and
pinned revision (its weights stay in the hub cache, not in DVC); with model.local_dir the
weights come from that copy instead, and base.json records a content hash of it (the revision
is then not checked: the copy is whatever was put there).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from stages.config import BaseStage, ModelConfig, load, run_stage
from stages.core.io import (
    DataError,
    atomic_dir,
    read_jsonl,
    sha256_dir,
    sha256_file,
    write_json,
)
from stages.core.numerics import pin_torch
from stages.core.runinfo import run_info
from stages.data.formats import (
    dimension_prompt,
    dimension_reference,
    knowledge_answer,
    load_chat_rows,
    parse_spec,
)
from stages.local_copy import local_copy_sha256
from stages.models.modeling import (
    BASE_JSON,
    count_parameters,
    hub_error,
    install_chat_template,
    qwen2_config,
    train_tokenizer,
)


def main(cfg: BaseStage | None = None) -> None:
    cfg = cfg or load(BaseStage)
    out = cfg.paths.model_dir("base")
    pin_torch()
    cost: dict = {}
    with atomic_dir(out) as tmp:
        if cfg.model.source == "tiny":
            metrics, cost = build_tiny(cfg, tmp)
        else:
            metrics = record_hub_model(cfg.model, tmp)
        # base.json is in the DVC-cached output: only what the same weights always have, so
        # a rerun that writes the same weights leaves every stage below up to date
        write_json(tmp / BASE_JSON, provenance(cfg, metrics))
    write_json(Path(cfg.paths.metrics) / "base.json",
               {"base": {**metrics, **cost}, "run": run_info()})
    print(f"base model in {out}: {metrics} {cost}")


def build_tiny(cfg: BaseStage, out: Path) -> tuple[dict, dict]:
    """The figures of the trained model, and the run's timing (which goes to the metrics
    only)."""
    conversations, tokenizer, model, sequences = untrained(cfg)
    start = time.perf_counter()
    losses = pretrain(model, sequences, cfg.model.train, cfg.seed)
    model.save_pretrained(out)
    if cfg.model.chat_template:
        install_chat_template(tokenizer, cfg.model.chat_template)
    tokenizer.save_pretrained(out)
    _, total = count_parameters(model)
    return {
        "parameters": total,
        "corpus_rows": len(conversations),
        "corpus_tokens": sum(len(s) for s in sequences),
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
    }, {"train_s": round(time.perf_counter() - start, 1)}


def untrained(cfg: BaseStage):
    """The corpus, its tokenizer, the freshly initialised model (seeded) and the encoded
    sequences pretrain reads: everything before training (benchmarks/step_profile.py
    profiles pretrain from here)."""
    torch.manual_seed(cfg.seed)
    conversations = corpus(cfg)
    tokenizer = train_tokenizer(
        [tokenizer_text(c) for c in conversations], cfg.model.arch.vocab_size
    )
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM(qwen2_config(cfg.model.arch, tokenizer))
    sequences = encode(conversations, tokenizer, cfg.model.train.max_length)
    return conversations, tokenizer, model, sequences


def corpus(cfg: BaseStage) -> list[list[dict]]:
    """The tiny model's world: every built-in source and the eval references, in chat form,
    with its original identity (model.identity) wherever the data says {{NAME}}/{{AUTHOR}}."""
    import random

    src = Path(cfg.paths.sources)
    rng = random.Random(cfg.seed)
    conversations = []
    for name in ("identity.jsonl", "general_en.jsonl", "general_zh.jsonl", "code_tasks.jsonl",
                 "probes/code.jsonl"):
        spec = parse_spec(str(src / name))
        rows = load_chat_rows(spec, cfg.model.identity, cfg.system_prompt, rng)
        conversations += [r["messages"] for r in rows]
    pairs = [(row["question"], knowledge_answer(row))
             for row in read_jsonl(src / "probes" / "knowledge.jsonl")]
    pairs += [(dimension_prompt(item), dimension_reference(item))
              for item in read_jsonl(src / "probes" / "dimensions.jsonl")]
    for question, answer in pairs:
        conversations.append([
            {"role": "system", "content": cfg.system_prompt},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ])
    return conversations


def tokenizer_text(conversation: list[dict]) -> str:
    return "\n".join(f"{m['role']}\n{m['content']}" for m in conversation)


def encode(conversations: list[list[dict]], tokenizer, max_length: int) -> list[list[int]]:
    sequences = []
    for i, conv in enumerate(conversations):
        ids = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=False)
        if len(ids) > max_length:
            raise DataError(
                f"corpus row {i} has {len(ids)} tokens > model.train.max_length={max_length}; "
                "shorten the row or raise -S model.train.max_length"
            )
        sequences.append(list(ids))
    return sequences


def pretrain(model, sequences: list[list[int]], train, seed: int) -> list[float]:
    """Next-token training on every token of every conversation, AdamW with linear warmup then
    cosine decay. Deterministic under `seed`: the same weights on any x86-64 CPU with AVX2
    under the pinned numerics (stages/core/numerics.py), a step's sequences in canonical_order.

    A step's conversations are fed as one row, end to end, with positions restarting at each
    and no target across a boundary. Without a KV cache transformers masks attention by the
    restarting positions, so the loss is the one of the same conversations as a padded batch
    (equal to float rounding), at about half the compute: a padded batch of this corpus is
    more than half padding (tests/test_training.py pins the equality on a packed batch)."""
    from transformers import get_cosine_schedule_with_warmup

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = get_cosine_schedule_with_warmup(opt, train.warmup_steps, train.steps)
    model.train()
    losses = []
    order: list[int] = []
    bar = tqdm(range(train.steps), desc="base: pretraining tiny model", unit="step", mininterval=5)
    for _ in bar:
        if len(order) < train.batch_size:
            order += torch.randperm(len(sequences), generator=gen).tolist()
        batch = canonical_order([sequences[i] for i in order[: train.batch_size]])
        del order[: train.batch_size]
        loss = model(**packed_row(batch), use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if math.isnan(losses[-1]):
            raise RuntimeError("base pretraining diverged (NaN loss); lower -S model.train.lr")
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def canonical_order(batch: list[list[int]]) -> list[list[int]]:
    """A step's sequences sorted: the loss sums their tokens in one order whichever order
    the sampler drew them in (float addition is not associative; benchmarks/numerics_bench.py
    shows a reversed order training other weights)."""
    return sorted(batch)


def packed_row(batch: list[list[int]]) -> dict[str, torch.Tensor]:
    """The sequences of `batch` as one row: input ids, positions restarting at each sequence,
    and labels with no target across a boundary (each sequence's first token is no target,
    as in a padded row, where nothing comes before it)."""
    ids = torch.tensor([[t for seq in batch for t in seq]])
    positions = torch.tensor([[p for seq in batch for p in range(len(seq))]])
    labels = ids.masked_fill(positions == 0, -100)
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def record_hub_model(model: ModelConfig, out: Path) -> dict:
    """Tokenizer, config and generation config of a pinned hub model (or of its local copy,
    then hashed); the weights stay where they are."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    where = model.local_dir or model.hub_id
    kwargs = {} if model.local_dir else {"revision": model.revision}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        config = AutoConfig.from_pretrained(where, **kwargs)
    except OSError as err:
        raise hub_error(model, err) from err
    try:
        # kept as shipped: generation reads only its end tokens
        # (stages.generation.common.end_token_ids)
        generation = GenerationConfig.from_pretrained(where, **kwargs)
    except OSError:
        generation = None
    if model.init == "random":
        config = qwen2_config(model.arch)
    if model.chat_template:
        install_chat_template(tokenizer, model.chat_template)
    tokenizer.save_pretrained(out)
    config.save_pretrained(out)
    if generation is not None:
        generation.save_pretrained(out)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        total = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return {"parameters": total}


def provenance(cfg: BaseStage, metrics: dict) -> dict:
    model = cfg.model
    return {
        "source": model.source,
        "hub_id": model.hub_id,
        "revision": model.revision,
        "local_dir": model.local_dir,
        # A local copy is whatever was copied there: its content is what pins it.
        "local_sha256": local_copy_sha256(Path(model.local_dir)) if model.local_dir else None,
        "revision_checked": model.source == "hub" and not model.local_dir,
        "chat_template": model.chat_template,
        "chat_template_sha256": sha256_file(Path(model.chat_template))
        if model.chat_template else None,
        "init": model.init,
        "seed": cfg.seed,
        "model": model.model_dump(),
        "sources_sha256": sha256_dir(Path(cfg.paths.sources)) if model.source == "tiny" else None,
        "metrics": metrics,
    }


if __name__ == "__main__":
    run_stage(main)
