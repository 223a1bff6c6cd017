"""Training throughput: our sft stage against plain TRL, packing against padding, and
real-sized shapes with random weights.

    python -m benchmarks.train_bench ours-vs-plain --repeats 3
    python -m benchmarks.train_bench packing --repeats 3
    python -m benchmarks.train_bench shapes --model tiny --max-length 256 --steps 5
    python -m benchmarks.train_bench shapes --model qwen2.5-7b-instruct --max-length 2048 \\
        --steps 10 [--qlora] [--json shapes.json]          # bf16 and --qlora need CUDA

ours-vs-plain: a temporary pipeline built as tests/conftest.py's `pipeline` fixture builds it
(the base and curate stages on the tiny test params; `--data repo` uses the repo's own
data.sources instead of the 26-row test mix), then the same SFT run on both sides, in
alternating order: `run_ours` calls stages.sft.main(cfg); `run_plain` loads the same base model
and rows with transformers and datasets and calls TRL's SFTTrainer directly with the same
hyperparameters (LoRA, assistant_only_loss). One instrumentation of trl.SFTTrainer measures both
sides: training tokens (non-pad input tokens of every micro-batch), target tokens
(labels != -100), and seconds inside trainer.train(); wall seconds cover the whole call (load,
train, save). `--set KEY=VALUE` changes the params both sides read. `--packing bfd` packs on both sides
(plain: packing_strategy "bfd"; ours: sft.packing=true, which packs best-fit decreasing).

packing: our sft stage on the same rows: padded batches of 8 rows (sft.packing false), and
packed (sft.packing true) with 1 packed sequence per micro-batch (and with --packed-8 also 8,
one flattened row), the global batch 8 throughout. `--data codealpaca` takes --rows rows of
Code Alpaca (lengths from a few dozen tokens to sft.max_length). It also reports each side's
mean training loss and optimizer steps, and the loss of 8 rows at the base weights padded and
packed, which must be equal. It also checks that a packed row's logits equal the row's alone
under the attention that training runs (no KV cache), and prints how far they are off with a
KV cache, where transformers ignores the restarting positions.

shapes: a Qwen2 model with the `arch` numbers of conf/model/<name>.yaml and random weights,
LoRA r 8 on every linear layer (QLoRA: 4-bit NF4 base with --qlora), gradient checkpointing,
batch 1 of max_length random tokens; tokens/s over --steps after --warmup steps and peak
memory (torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CODEALPACA = REPO.parent / "shared" / "datasets" / "codealpaca" / "code_alpaca_2k.json"
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's stages, and conftest's builders

from benchmarks import harness, record  # noqa: E402
from benchmarks.record import figure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Each part writes its record to benchmarks/results/train_bench-<part>.json; "
               "--json PATH (after the part) writes it elsewhere.")
    sub = parser.add_subparsers(dest="part", required=True)
    for name in ("ours-vs-plain", "packing"):
        p = sub.add_parser(name)
        p.add_argument("--repeats", type=int, default=3, help="timed runs per side")
        p.add_argument("--data", choices=["test", "repo", "codealpaca"], default="repo",
                       help="test: conftest's 26-row mix; repo: params.yaml data.sources; "
                            "codealpaca: --rows rows of --codealpaca (varied lengths)")
        p.add_argument("--codealpaca", type=Path, default=CODEALPACA,
                       help="Code Alpaca .json (instruction/input/output)")
        p.add_argument("--rows", type=int, default=400, help="with --data codealpaca")
        p.add_argument("--arch", choices=["test", "repo"], default="test",
                       help="test: conftest's 2-layer model; repo: params.yaml's tiny model")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param both sides read, e.g. sft.phases.main.epochs=2")
        harness.json_flag(p)
        p.add_argument("--keep", action="store_true", help="keep the temporary pipeline")
    sub.choices["packing"].add_argument(
        "--packed-8", action="store_true",
        help="also 8 packed sequences per micro-batch (one flattened row; slow without "
             "FlashAttention, 0.65x padded on the repo's data)")
    sub.choices["ours-vs-plain"].add_argument(
        "--packing", choices=["none", "bfd"], default="none",
        help="plain: SFTConfig(packing=True, packing_strategy='bfd'); ours: sft.packing=true")
    s = sub.add_parser("shapes")
    s.add_argument("--model", default="tiny", help="a conf/model/<name>.yaml with `arch`")
    s.add_argument("--max-length", type=int, default=2048, help="tokens per step (batch 1)")
    s.add_argument("--steps", type=int, default=10, help="timed steps")
    s.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    s.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="auto: bfloat16 on a GPU, float32 on CPU")
    s.add_argument("--qlora", action="store_true", help="4-bit NF4 base (CUDA only)")
    s.add_argument("--seed", type=int, default=0)
    harness.json_flag(s)
    for p in sub.choices.values():
        harness.threads(p)
    args = parser.parse_args()
    harness.pin_threads(args.threads)

    if args.part == "shapes":
        details = bench_shapes(args)
        name, title = "train_bench-shapes", f"Training memory and speed, {args.model} shape"
        figures = [figure("parameters", details["parameters"]),
                   figure("trainable (LoRA r 8, all-linear)", details["trainable"]),
                   figure("max length (batch 1, gradient checkpointing)", args.max_length,
                          "tokens"),
                   figure("time per step", details["s_per_step"], "s"),
                   figure("throughput", details["tokens_per_s"], "tokens/s"),
                   figure("peak memory", details["peak_gib"], "GiB")]
        notes = (f"{details['device']}, {details['dtype']}, qlora {details['qlora']}; peak "
                 f"memory: {details['memory']}")
    else:
        details = bench_sft(args)
        name = f"train_bench-{args.part}"
        title = ("Training throughput: the sft stage against plain TRL"
                 if args.part == "ours-vs-plain"
                 else "Packing against padded batches (the sft stage)")
        figures = [figure(f"{side}: median tokens/s", round(m["tokens_per_s"]), "tokens/s")
                   for side, m in details["medians"].items()]
        figures += [figure(f"{side} / {details['baseline']}: tokens/s ratio",
                           round(r["tokens_per_s"], 2)) for side, r in details["ratios"].items()]
        lengths = details["row_tokens"]
        notes = (f"{args.repeats} interleaved runs per side, ratios paired by round; data "
                 f"{args.data} (rows of {lengths['min']} to {lengths['max']} tokens, median "
                 f"{lengths['median']:.0f}), model {args.arch}; each side trained on "
                 f"{details['medians'][details['baseline']]['tokens']:.0f} tokens")
        if "packed_loss" in details:
            padded, packed = details["packed_loss"]
            figures.append(figure("loss of 8 rows at the base weights, padded", round(padded, 6)))
            figures.append(figure("loss of 8 rows at the base weights, packed", round(packed, 6)))
        for side, m in details["medians"].items():
            figures.append(figure(f"{side}: mean training loss (median of runs)",
                                  round(m["loss"], 4)))
            figures.append(figure(f"{side}: optimizer steps", m["steps"]))
        if "packed_logit_difference" in details:
            apart, seeing = details["packed_logit_difference"]
            notes += (f"; a packed row's logits against the row alone: max difference {apart:.1e}"
                      f" as training runs (no KV cache), {seeing:.2f} with a KV cache")
    record.write(name, title, figures, notes, args.json)


def bench_sft(args) -> dict:
    import shutil

    root = Path(tempfile.mkdtemp(prefix="train_bench_"))
    try:
        data = f"{args.codealpaca}#{args.rows}" if args.data == "codealpaca" else args.data
        params = build_pipeline(root, data, args.arch, args.set)
        lengths = row_lengths(params)
        print(f"pipeline in {root}: {len(lengths)} sft rows of {lengths[0]} to {lengths[-1]} "
              f"tokens (median {statistics.median(lengths):.0f}), sft params {params['sft']}")
        if args.part == "ours-vs-plain":
            sides = {"plain": lambda i: run_plain(params, root / f"plain{i}", args.packing),
                     "ours": lambda i: run_ours(params, args.packing)}
            baseline = "plain"
        else:
            sides = {"padded": lambda i: run_ours(params),
                     "packed-1": lambda i: run_ours(params, "bfd", per_device=1)}
            if args.packed_8:
                sides["packed-8"] = lambda i: run_ours(params, "bfd", per_device=8)
            baseline = "padded"
        runs = interleaved(sides, args.repeats)
        details = summarise(runs, baseline, args)
        details["row_tokens"] = {"min": lengths[0], "median": statistics.median(lengths),
                                 "max": lengths[-1]}
        if args.part == "packing":
            details["packed_logit_difference"] = packed_logit_difference(params)
            details["packed_loss"] = packed_loss(params)
        return details
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def build_pipeline(root: Path, data: str, arch: str, overrides: list[str]) -> dict:
    """base + curate into `root`, as the `pipeline` fixture does; returns the params."""
    import yaml

    from conftest import repo_params, stage_cfg, tiny_params
    from stages import base, curate
    from stages.config import BaseStage, CurateStage

    params = tiny_params(root)
    if data == "repo":
        params["data"]["sources"] = [str(REPO / src) for src in repo_params()["data"]["sources"]]
    elif data != "test":  # a source spec of its own: PATH#N
        if not Path(data.partition("#")[0]).exists():
            raise SystemExit(f"{data.partition('#')[0]} does not exist; pass --codealpaca PATH")
        params["data"]["sources"] = [data]
    if arch == "repo":
        params["model"]["arch"] = repo_params()["model"]["arch"]
    for item in overrides:
        key, _, value = item.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    base.main(stage_cfg(BaseStage, params))
    curate.main(stage_cfg(CurateStage, params))
    return params


def row_lengths(params: dict) -> list[int]:
    """Tokens per curated SFT row under the chat template, sorted."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(params["paths"]["models"]) / "base")
    rows = [json.loads(line) for line in
            (Path(params["paths"]["curated"]) / "sft.jsonl").read_text(encoding="utf-8").splitlines()]
    return sorted(len(tokenizer(tokenizer.apply_chat_template(row["messages"], tokenize=False))
                      ["input_ids"]) for row in rows)


def run_ours(params: dict, packing: str = "none", per_device: int | None = None) -> dict:
    """Our path: stages.sft.main on the pipeline's params; it writes models/sft and metrics/
    under the pipeline root. "bfd" sets sft.packing=true (the stage packs best-fit
    decreasing); `per_device` sets sft.per_device_batch_size."""
    import copy

    from conftest import stage_cfg
    from stages import sft
    from stages.config import SftStage

    params = copy.deepcopy(params)
    params["sft"]["packing"] = packing == "bfd"
    if per_device:
        params["sft"]["per_device_batch_size"] = per_device
    with measured() as stats:
        start = time.perf_counter()
        sft.main(stage_cfg(SftStage, params))
        stats["wall_s"] = time.perf_counter() - start
    return stats


def run_plain(params: dict, out: Path, packing: str = "none") -> dict:
    """Plain TRL: the same base model, rows and hyperparameters, no project code."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    sft, lora = params["sft"], params["sft"]["lora"]
    (phase,) = sft["phases"].values()  # the single-phase config
    base_dir = Path(params["paths"]["models"]) / "base"
    data_file = Path(params["paths"]["curated"]) / "sft.jsonl"
    cuda = torch.cuda.is_available()
    dtype = params["model"]["dtype"]
    with measured() as stats:
        start = time.perf_counter()
        rows = [json.loads(line) for line in data_file.read_text(encoding="utf-8").splitlines()]
        dataset = Dataset.from_list([{"messages": row["messages"]} for row in rows])
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype))
        config = SFTConfig(
            output_dir=str(out),
            learning_rate=phase["lr"],
            num_train_epochs=phase["epochs"],
            max_steps=phase["max_steps"] or -1,
            per_device_train_batch_size=sft["per_device_batch_size"],
            gradient_accumulation_steps=sft["batch_size"] // sft["per_device_batch_size"],
            max_length=sft["max_length"],
            warmup_steps=sft["warmup_ratio"],  # below 1: a share of the total steps
            weight_decay=sft["weight_decay"],
            lr_scheduler_type=sft["lr_scheduler"],
            assistant_only_loss=True,
            packing=packing != "none",
            packing_strategy="bfd",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=params["seed"],
            use_cpu=not cuda,
            # TRL 1.16 turns checkpointing on by default; the same setting as the stage's
            gradient_checkpointing=sft["gradient_checkpointing"],
            bf16=dtype == "bfloat16" and cuda,
            fp16=dtype == "float16" and cuda,
        )
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
            peft_config=LoraConfig(r=lora["r"], lora_alpha=lora["alpha"],
                                   lora_dropout=lora["dropout"],
                                   target_modules=lora["target_modules"],
                                   use_dora=sft["method"] == "dora", task_type="CAUSAL_LM"),
        )
        trainer.train()
        trainer.save_model(str(out / "adapter"))
        stats["wall_s"] = time.perf_counter() - start
    return stats


@contextmanager
def measured():
    """Count what every SFTTrainer in the block trains on and time its train() calls."""
    from trl import SFTTrainer

    stats = {"tokens": 0, "targets": 0, "micro_batches": 0, "train_s": 0.0, "loss": [],
             "steps": 0}
    own = {name: SFTTrainer.__dict__.get(name) for name in ("training_step", "train")}
    step, train = SFTTrainer.training_step, SFTTrainer.train

    def counting_step(self, model, inputs, *args, **kwargs):
        if "attention_mask" in inputs:
            stats["tokens"] += int(inputs["attention_mask"].sum())
        else:  # padding-free (bfd packing): one flattened row, no pad tokens
            stats["tokens"] += int(inputs["input_ids"].numel())
        stats["targets"] += int((inputs["labels"] != -100).sum())
        stats["micro_batches"] += 1
        return step(self, model, inputs, *args, **kwargs)

    def timed_train(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            out = train(self, *args, **kwargs)
        finally:
            stats["train_s"] += time.perf_counter() - start
        stats["loss"].append(out.training_loss)  # the mean training loss of the run
        stats["steps"] += out.global_step
        return out

    SFTTrainer.training_step, SFTTrainer.train = counting_step, timed_train
    try:
        yield stats
    finally:
        for name, fn in own.items():
            if fn is None:
                delattr(SFTTrainer, name)
            else:
                setattr(SFTTrainer, name, fn)


def interleaved(sides: dict, repeats: int) -> list[dict]:
    """One untimed warm-up run per side, then `repeats` rounds, the order reversed every other
    round so that drift in the machine's load falls on both sides alike."""
    names = list(sides)
    for name in names:
        print(f"warm-up: {name}")
        attempt(sides[name], name, -1)
    runs = []
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            runs.append(attempt(sides[name], name, i))
    return runs


def attempt(run, name: str, i: int) -> dict:
    try:
        stats = run(i)
    except Exception as err:  # a failing side is a finding, not the end of the benchmark
        print(f"{name} run {i} failed: {type(err).__name__}: {err}")
        return {"side": name, "repeat": i, "error": f"{type(err).__name__}: {err}"}
    stats.update(side=name, repeat=i, tokens_per_s=stats["tokens"] / stats["train_s"],
                 loss=statistics.mean(stats["loss"]) if stats["loss"] else float("nan"))
    return stats


def summarise(runs: list[dict], baseline: str, args) -> dict:
    print(f"\n{'side':<8} {'run':>3} {'wall s':>7} {'train s':>8} {'micro-b':>7} "
          f"{'tokens':>8} {'targets':>8} {'tokens/s':>9}")
    for r in runs:
        if "error" in r:
            print(f"{r['side']:<8} {r['repeat']:>3} failed: {r['error'].splitlines()[0][:70]}")
            continue
        print(f"{r['side']:<8} {r['repeat']:>3} {r['wall_s']:>7.2f} {r['train_s']:>8.2f} "
              f"{r['micro_batches']:>7} {r['tokens']:>8} {r['targets']:>8} "
              f"{r['tokens_per_s']:>9.0f}")
    medians = {}
    for side in dict.fromkeys(r["side"] for r in runs):
        ok = [r for r in runs if r["side"] == side and "error" not in r]
        if ok:
            medians[side] = {key: statistics.median(r[key] for r in ok)
                             for key in ("wall_s", "train_s", "tokens_per_s", "tokens", "targets",
                                         "loss", "steps")}
    # Ratios are taken within each round (the two runs sat next to each other in time), then
    # the median over rounds.
    by_round = {(r["side"], r["repeat"]): r for r in runs if "error" not in r}
    ratios = {}
    for side in medians:
        pairs = [(by_round[side, i], by_round[baseline, i]) for i in range(args.repeats)
                 if (side, i) in by_round and (baseline, i) in by_round]
        if side != baseline and pairs:
            ratios[side] = {
                "tokens_per_s": statistics.median(a["tokens_per_s"] / b["tokens_per_s"]
                                                  for a, b in pairs),
                "wall_s": statistics.median(a["wall_s"] / b["wall_s"] for a, b in pairs),
            }
    print(f"\nmedians over the timed runs; ratios against {baseline}, paired by round")
    for side, m in medians.items():
        line = (f"  {side:<8} wall {m['wall_s']:.2f} s, train {m['train_s']:.2f} s, "
                f"{m['tokens_per_s']:.0f} tokens/s, {m['tokens']:.0f} tokens, "
                f"{m['targets']:.0f} targets")
        if side in ratios:
            line += (f"; tokens/s ratio {ratios[side]['tokens_per_s']:.2f}, "
                     f"wall ratio {ratios[side]['wall_s']:.2f}")
        print(line)
    return {"part": args.part, "baseline": baseline,
            "data": args.data, "arch": args.arch, "overrides": args.set,
            "repeats": args.repeats, "runs": runs, "medians": medians, "ratios": ratios}


def packed_logit_difference(params: dict) -> tuple[float, float]:
    """Max |logit difference| of the second of two rows packed padding-free (as the stage's
    packing feeds them) against that row alone: as training runs (no KV cache, so
    transformers masks by the restarting positions), then with a KV cache, where the mask
    ignores them and the row attends to the one before it."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from stages.models.training import packing_attention

    model = AutoModelForCausalLM.from_pretrained(Path(params["paths"]["models"]) / "base",
                                                 attn_implementation=packing_attention()).eval()
    first, second = list(range(10, 17)), list(range(40, 45))
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": first + second, "seq_lengths": [len(first), len(second)]}])
    batch.pop("labels")
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
        apart, seeing = (float((model(**batch, use_cache=cache).logits[0, len(first):] - alone)
                               .abs().max()) for cache in (False, True))
    print(f"attention implementation: {model.config._attn_implementation}; max |logit "
          f"difference| of the second packed row against it alone: {apart:.2e} without a KV "
          f"cache (as in training), {seeing:.2e} with one")
    return apart, seeing


def packed_loss(params: dict, rows: int = 8) -> tuple[float, float]:
    """The mean next-token loss of the first `rows` curated SFT rows at the base weights, as
    one padded batch and packed padding-free into one row (TRL's collator, restarting
    positions, no KV cache): equal up to float rounding if packing trains on the same
    objective."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from stages.models.training import packing_attention

    where = Path(params["paths"]["models"]) / "base"
    tokenizer = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where, attn_implementation=packing_attention())
    model.eval()
    lines = (Path(params["paths"]["curated"]) / "sft.jsonl").read_text(encoding="utf-8")
    ids = [tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True,
                                         return_dict=False) for line in lines.splitlines()[:rows]]
    padded = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(
        [{"input_ids": x} for x in ids])
    packed = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                             padding_free=True)(
        [{"input_ids": sum(ids, []), "seq_lengths": [len(x) for x in ids]}])
    with torch.no_grad():
        losses = tuple(float(model(**batch, use_cache=False).loss) for batch in (padded, packed))
    print(f"loss of {rows} rows at the base weights: padded {losses[0]:.6f}, packed "
          f"{losses[1]:.6f}")
    return losses


LORA_R = 8


def bench_shapes(args) -> dict:
    import resource

    import torch
    import yaml

    from stages.config import ArchConfig
    from stages.models.modeling import qwen2_config

    cuda = torch.cuda.is_available()
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if cuda else "float32")
    if not cuda and (dtype_name != "float32" or args.qlora):
        asked = "--qlora (bitsandbytes 4-bit)" if args.qlora else f"--dtype {dtype_name}"
        raise SystemExit(f"error: {asked} needs a CUDA GPU and this machine has none; on CPU "
                         "run --dtype float32 without --qlora, on a small shape (e.g. --model "
                         "tiny --max-length 256)")
    conf = REPO / "conf" / "model" / f"{args.model}.yaml"
    if not conf.exists():
        names = sorted(p.stem for p in conf.parent.glob("*.yaml"))
        raise SystemExit(f"error: no {conf}; choose one of {names}")
    raw = yaml.safe_load(conf.read_text(encoding="utf-8")).get("arch")
    if raw is None:
        raise SystemExit(f"error: {conf} has no `arch` numbers to build the model from")
    arch = ArchConfig(**raw)
    if args.max_length > arch.max_position_embeddings:
        raise SystemExit(f"error: --max-length {args.max_length} exceeds the model's "
                         f"max_position_embeddings {arch.max_position_embeddings}")

    dev = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = build_lora_model(qwen2_config(arch), dtype, dev, args.qlora)
    build_s = time.perf_counter() - start
    weights_gib = None
    if cuda:  # the GPU peak covers training only: building a QLoRA model holds 16-bit weights
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        weights_gib = torch.cuda.memory_allocated() / 2**30
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # A 4-bit weight is stored two values to a uint8 element.
    total = sum(p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)
                for p in model.parameters())

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, arch.vocab_size, (1, args.max_length), device=dev)
    autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32)
    model.train()
    losses = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync(cuda)
            start = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    sync(cuda)
    seconds = time.perf_counter() - start
    losses = [float(loss) for loss in losses]

    if cuda:
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
        memory = "torch.cuda.max_memory_allocated during training (weights included)"
    else:  # ru_maxrss is in KiB on Linux
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        memory = "peak RSS of the process (model build included)"
    details = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": args.model, "parameters": total, "trainable": trainable,
        "dtype": dtype_name, "qlora": args.qlora, "lora_r": LORA_R, "batch": 1,
        "max_length": args.max_length, "gradient_checkpointing": True,
        "warmup_steps": args.warmup, "steps": args.steps, "build_s": round(build_s, 1),
        "s_per_step": round(seconds / args.steps, 3),
        "tokens_per_s": round(args.max_length * args.steps / seconds, 1),
        "weights_gib": None if weights_gib is None else round(weights_gib, 2),
        "peak_gib": round(peak_gib, 2), "memory": memory,
        "first_loss": round(losses[0], 3), "last_loss": round(losses[-1], 3),
    }
    print(f"\n{'model':<28} {'params':>8} {'trainable':>10} {'dtype':>9} {'qlora':>5} "
          f"{'length':>6} {'s/step':>7} {'tokens/s':>9} {'peak GiB':>9}")
    print(f"{args.model:<28} {total / 1e9:>7.3f}B {trainable / 1e6:>9.2f}M {dtype_name:>9} "
          f"{str(args.qlora):>5} {args.max_length:>6} {details['s_per_step']:>7.3f} "
          f"{details['tokens_per_s']:>9.1f} {details['peak_gib']:>9.2f}")
    print(f"peak memory: {memory}; weights after build: {details['weights_gib']} GiB (GPU "
          f"only); build {build_s:.1f} s; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return details


def build_lora_model(config, dtype, dev, qlora: bool):
    """Random weights in `dtype` on `dev`, LoRA r 8 on every linear layer, gradient
    checkpointing on; with `qlora` the decoder's linear layers become 4-bit NF4 first."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    config.use_cache = False
    with dev:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if qlora:
        quantize_decoder(model, dtype)
        # What the sft stage does after loading in 4-bit: freeze, and upcast every weight that
        # is not 4-bit (norms, embeddings, lm_head) to float32.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, lora_dropout=0.05,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def quantize_decoder(model, compute_dtype) -> None:
    """Swap every nn.Linear of the decoder layers for a bitsandbytes NF4 Linear4bit holding the
    same (random) weights, double-quantized and computing in `compute_dtype`: the layout
    stages.models.modeling.four_bit_config gives a pretrained model. Random weights have nothing to
    load, so the swap is done here, layer by layer, instead of through from_pretrained."""
    import bitsandbytes as bnb
    import torch

    for layer in model.model.layers:  # one layer at a time: its 16-bit weights are freed next
        linears = [(parent, name, child) for parent in layer.modules()
                   for name, child in parent.named_children()
                   if isinstance(child, torch.nn.Linear)]
        for parent, name, child in linears:
            q = bnb.nn.Linear4bit(child.in_features, child.out_features,
                                  bias=child.bias is not None, compute_dtype=compute_dtype,
                                  compress_statistics=True, quant_type="nf4", device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False,
                                         compress_statistics=True, quant_type="nf4")
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, q.to(child.weight.device))  # Params4bit quantizes on the move
        del linears
    model.is_loaded_in_4bit = True  # as from_pretrained sets it: PEFT then uses its bnb LoRA layer


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
