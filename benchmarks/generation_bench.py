"""Generation throughput: our batched, adapter-aware generate() against plain batched
transformers `generate`, transformers' continuous batching (`generate_batch`) and evalplus's
own `hf` codegen (one prompt at a time under --greedy), on the same model and HumanEval+ tasks.

    python -m benchmarks.generation_bench \\
        --dataset-path ../shared/datasets/humanevalplus/HumanEvalPlus-v0.1.10.jsonl --tasks 48 \\
        --threads 1

All run in this process on the same loaded weights, greedy, with evalplus's chat wording
and the same max_new_tokens (512). Ours is eval's default on CPU (eval.batching=ours, or
auto): a rolling batch over the KV cache, where an ended row's place goes to the next
prompt at once. Plain generate is what a user writes with transformers: the same prompts in
input order, left-padded batches of the same size, one model.generate per batch with the
same end and pad tokens. generate_batch is called directly with ours' GenerationConfig and
prompt tokens (what eval.batching=continuous runs). All sides run in interleaved rounds
(--repeats, order reversed every other round), at --batch-size and at batch 1, and the ratios
are medians of per-round ratios. To explain what batching gains, it also times one decoding
step at batch 1 and at --batch-size (every row forced to the same length), counts the
row-steps of plain batches that produced a token, and splits ours' time into prefill and
decoding forwards. evalplus also stops at a closing code fence, so it may generate different
lengths. The figure that compares is generated tokens per second (each row up to and
including its end token); the dataset file is read directly (evalplus's decoder needs no
dataset). Needs models/base (`dvc repro base`). Writes its record to
benchmarks/results/generation_bench.json (generation_bench-<n>threads.json with --threads n > 1;
--json PATH: elsewhere). About 2.5 minutes on two
CPU cores, nearly all of it evalplus's side. With torch's default of one thread per core,
any other process on the machine stalls torch's threads at every operation of this tiny
model: 16 prompts (455 tokens, batch 16) took 2.1 s at 1 thread and 52.9 s at 2 threads on
two cores while another process kept one core busy. --threads 1 keeps the figures comparable
on a shared machine.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from benchmarks import harness, record

REPO = Path(__file__).resolve().parent.parent
MAX_NEW_TOKENS = 512  # both sides; the tiny model's context is 512 positions
# run_codegen's chat wording (evalplus 0.3.1, instruct prompts)
INSTRUCTION = ("Please provide a self-contained Python script that solves the following "
               "problem in a markdown code block:")
RESPONSE_PREFIX = ("Below is a Python script with a self-contained function that solves the "
                   "problem and passes corresponding tests:")


def count_generated(model) -> list[int]:
    """Record how many tokens each generate() call of `model` produces (outputs minus
    prompt), whatever stopped it: the same count as ours, special tokens included."""
    counts: list[int] = []
    inner = model.generate

    def counting(*args, **kwargs):
        out = inner(*args, **kwargs)
        prompt = kwargs.get("input_ids", args[0] if args else None)
        counts.append(int(out.shape[-1] - prompt.shape[-1]))
        return out

    model.generate = counting
    return counts


def plain_generate(model, tokenizer, conversations, max_new_tokens: int, batch_size: int,
                   cost) -> list[str]:
    """What a user writes with plain transformers: the prompts in input order, left-padded
    batches of `batch_size`, one `model.generate` per batch, greedy, the same end and pad
    tokens as ours (so the same stopping), counted the same way."""
    import torch

    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
               for c in conversations]
    replies = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt",
                            padding=True, add_special_tokens=False)
            began = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
            cost.seconds += time.perf_counter() - began
            new = out[:, enc["input_ids"].shape[1]:]
            cost.tokens += int((new != tokenizer.pad_token_id).sum())
            cost.steps += new.shape[1]
            cost.slots += new.numel()
            replies += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return replies


def step_seconds(model, tokenizer, conversations, batch_size: int, steps: int = 64) -> float:
    """Seconds per decoding step at `batch_size` when every row runs `steps` steps (no row
    ends early): the cost of a step alone, without the rows that finished and wait."""
    import torch

    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
               for c in conversations[:batch_size]]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        began = time.perf_counter()
        model.generate(**enc, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return (time.perf_counter() - began) / steps


def continuous_batching(model, tokenizer, conversations, decoding, batch_size: int,
                        cost) -> list[str]:
    """transformers' continuous batching called directly: `generate_batch` on the same
    prompts (ours' chat template and tokens), the same GenerationConfig as ours (every knob
    explicit), at most `batch_size` rows a step. On CPU the manager cannot size its paged
    cache from GPU memory, so the cache is sized here for the workload: pages of 32 tokens,
    enough blocks for every row at its longest."""
    from transformers import ContinuousBatchingConfig

    from stages.generation.common import chat_prompts

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"]
           for p in chat_prompts(tokenizer, conversations)]
    longest = max(map(len, ids)) + decoding.max_new_tokens
    config = ContinuousBatchingConfig(max_requests_per_batch=batch_size, page_size=32,
                                      num_blocks=batch_size * (longest // 32 + 2),
                                      max_batch_tokens=max(2048, max(map(len, ids))))
    began = time.perf_counter()
    out = model.generate_batch(ids, generation_config=decoding.generation_config(),
                               continuous_batching_config=config, warmup=False)
    cost.seconds += time.perf_counter() - began
    results = [out[f"req_{i}"] for i in range(len(ids))]
    cost.tokens += sum(len(r.generated_tokens) for r in results)
    return [tokenizer.decode(r.generated_tokens, skip_special_tokens=True).strip()
            for r in results]


class Count:
    def __init__(self):
        self.tokens, self.seconds, self.steps, self.slots = 0, 0.0, 0, 0


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--dataset-path", required=True, type=Path)
    parser.add_argument("--tasks", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved rounds of ours and plain generate; medians")
    harness.threads(parser, help="torch CPU threads (default: torch's, one per core); 1 keeps "
                             "the figures steady on a machine other work shares")
    parser.add_argument("--no-evalplus", action="store_true",
                        help="leave out evalplus's hf codegen (about 2 minutes)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "base")
    args = parser.parse_args()
    harness.pin_threads(args.threads)
    import torch

    from stages.generation.common import GenerationCost, chat_prompts, greedy
    from stages.generation.hf import generate
    from stages.models.modeling import load_base_model, load_tokenizer

    tasks = [json.loads(line) for line in args.dataset_path.read_text().splitlines()][: args.tasks]
    tokenizer = load_tokenizer(args.model)
    decoding = greedy(args.model, tokenizer, MAX_NEW_TOKENS)  # both sides: argmax, no penalty
    model = load_base_model(args.model, "float32").eval()
    conversations = [[{"role": "user", "content": f"{INSTRUCTION}\n```python\n"
                                                  f"{t['prompt'].strip()}\n```"}] for t in tasks]
    prompt_tokens = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"])
                        for p in chat_prompts(tokenizer, conversations))
    b = args.batch_size

    # Each side's seconds are the whole call: templating, tokenizing, decoding, and for ours
    # also its time-to-first-token probe of the first batch. Tokens: every generated token up
    # to each row's end, counted the same way on both sides.
    def ours(batch_size):
        cost = GenerationCost()
        replies, seconds = harness.timed(generate, model, tokenizer, conversations, decoding,
                                         batch_size, "ours", cost)
        return cost.tokens / seconds, seconds, cost.tokens, replies

    def plain(batch_size):
        count = Count()
        replies, seconds = harness.timed(plain_generate, model, tokenizer, conversations,
                                         MAX_NEW_TOKENS, batch_size, count)
        return count.tokens / seconds, seconds, count.tokens, replies, count

    def direct_cb(batch_size):
        count = Count()
        replies, seconds = harness.timed(continuous_batching, model, tokenizer, conversations,
                                         decoding, batch_size, count)
        return count.tokens / seconds, seconds, count.tokens, replies

    sides = {f"ours, batch {b}": lambda: ours(b), f"plain generate, batch {b}": lambda: plain(b),
             f"generate_batch (continuous batching), {b} rows": lambda: direct_cb(b),
             "ours, batch 1": lambda: ours(1), "plain generate, batch 1": lambda: plain(1)}
    # Untimed warm-up: the first generate call in a process pays one-off costs.
    generate(model, tokenizer, conversations[:b], greedy(args.model, tokenizer, 8), b, "warm-up")
    plain_generate(model, tokenizer, conversations[:b], 8, b, Count())
    runs: dict[str, list] = {side: [] for side in sides}
    for r in range(args.repeats):
        for side in (list(sides) if r % 2 == 0 else list(reversed(sides))):
            runs[side].append(sides[side]())
            print(f"  round {r + 1}: {side}: {runs[side][-1][0]:,.0f} tokens/s "
                  f"({runs[side][-1][1]:.1f} s, {runs[side][-1][2]} tokens)", flush=True)
    rate = {side: statistics.median(x[0] for x in rs) for side, rs in runs.items()}
    seconds = {side: statistics.median(x[1] for x in rs) for side, rs in runs.items()}

    def paired(a: str, z: str) -> float:
        return statistics.median(x[0] / y[0] for x, y in zip(runs[a], runs[z], strict=True))

    ours_b, plain_b = f"ours, batch {b}", f"plain generate, batch {b}"
    vs_plain = paired(ours_b, plain_b)
    batching = paired(ours_b, "ours, batch 1")
    plain_batching = paired(plain_b, "plain generate, batch 1")
    same = all(x[3] == y[3] for x, y in zip(runs[ours_b], runs[plain_b], strict=True))
    cb_side = f"generate_batch (continuous batching), {b} rows"
    vs_cb = paired(ours_b, cb_side)
    cb_batching = paired(cb_side, "ours, batch 1")
    same_cb = all(x[3] == y[3] for x, y in zip(runs[ours_b], runs[cb_side], strict=True))
    count = runs[plain_b][0][4]
    steps_1, steps_b = (step_seconds(model, tokenizer, conversations, n) for n in (1, b))
    split_1, split_b = (forward_seconds(model, lambda n=n: ours(n)) for n in (1, b))
    # prefill costs the same at any batch size (ours prefills a prompt at a time), so the
    # most batching can gain is ours at batch 1 over its prefill alone
    ceiling = (split_1["prefill"] + split_1["decoding"]) / split_b["prefill"]

    theirs = None
    if not args.no_evalplus:
        theirs = evalplus_codegen(args, model, tasks)

    print(f"model {args.model} on CPU={not torch.cuda.is_available()} (torch threads "
          f"{torch.get_num_threads()}), {len(tasks)} HumanEval+ tasks, greedy, max_new_tokens "
          f"{MAX_NEW_TOKENS}, {args.repeats} interleaved rounds, medians")
    for side in sides:
        print(f"  {side:<28} {rate[side]:>7,.0f} tokens/s  {seconds[side]:6.1f} s")
    print(f"  ours / plain generate, batch {b}: {vs_plain:.2f}x (same replies: {same})")
    print(f"  batch {b} / batch 1: ours {batching:.2f}x, plain generate {plain_batching:.2f}x")
    print(f"  ours batch {b} / generate_batch: {vs_cb:.2f}x; generate_batch / ours batch 1: "
          f"{cb_batching:.2f}x (same replies as ours: {same_cb})")
    print(f"  why: a decoding step costs {steps_1 * 1e3:.1f} ms at batch 1 and "
          f"{steps_b * 1e3:.1f} ms at batch {b} ({steps_b / steps_1:.1f}x for {b}x the rows); "
          f"in plain batches of {b}, {count.tokens} of {count.slots} row-steps "
          f"({100 * count.tokens / count.slots:.0f}%) produced a token, the rest waited for "
          "the batch's longest reply")
    print(f"  ours' forwards: prefill {split_1['prefill']:.2f} s at batch 1, "
          f"{split_b['prefill']:.2f} s at batch {b}; decoding {split_1['decoding']:.2f} s at "
          f"batch 1 ({split_1['steps']} steps), {split_b['decoding']:.2f} s at batch {b} "
          f"({split_b['steps']} steps); ceiling with free decoding {ceiling:.2f}x")
    if theirs:
        print(f"  evalplus hf codegen: {theirs['seconds']:.1f} s, {theirs['tokens']} tokens, "
              f"{theirs['rate']:,.1f} tokens/s; ours batch {b} / evalplus "
              f"{rate[ours_b] / theirs['rate']:.1f}x")

    figures = []
    for side in sides:
        figures.append(record.figure(side, round(rate[side]), "tokens/s"))
        figures.append(record.figure(side, round(seconds[side], 1), "s"))
    figures += [
        record.figure(f"ours / plain generate, batch {b}, tokens/s", round(vs_plain, 2), "x"),
        record.figure(f"ours batch {b} / ours batch 1, tokens/s", round(batching, 2), "x"),
        record.figure(f"plain batch {b} / plain batch 1, tokens/s", round(plain_batching, 2),
                      "x"),
        record.figure(f"ours batch {b} / generate_batch, tokens/s", round(vs_cb, 2), "x"),
        record.figure("generate_batch / ours batch 1, tokens/s", round(cb_batching, 2), "x"),
        record.figure("decoding step, batch 1", round(steps_1 * 1e3, 1), "ms"),
        record.figure(f"decoding step, batch {b}", round(steps_b * 1e3, 1), "ms"),
        record.figure(f"row-steps that produced a token, plain batch {b}",
                      round(100 * count.tokens / count.slots), "%"),
        record.figure("ours batch 1: prefill forwards", round(split_1["prefill"], 2), "s"),
        record.figure("ours batch 1: decoding forwards", round(split_1["decoding"], 2), "s"),
        record.figure(f"ours batch {b}: prefill forwards", round(split_b["prefill"], 2), "s"),
        record.figure(f"ours batch {b}: decoding forwards", round(split_b["decoding"], 2),
                      "s"),
        record.figure(f"ours batch {b}: decoding steps", split_b["steps"], "steps"),
        record.figure(f"ceiling of ours batch {b} / batch 1 (decoding free)", round(ceiling, 2),
                      "x"),
    ]
    if theirs:
        theirs_label = ("evalplus HuggingFaceDecoder.codegen, one prompt at a time (as "
                        "--greedy runs it)")
        figures += [record.figure(theirs_label, round(theirs["seconds"], 1), "s"),
                    record.figure(theirs_label, round(theirs["rate"], 1), "tokens/s"),
                    record.figure(f"ours batch {b} / evalplus, tokens/s",
                                  round(rate[ours_b] / theirs["rate"], 1), "x")]
    model_path = args.model.resolve()
    model_name = model_path.relative_to(REPO) if model_path.is_relative_to(REPO) else model_path
    device = ("GPU" if torch.cuda.is_available()
              else f"CPU (torch threads: {torch.get_num_threads()})")
    notes = (f"Same process, same weights ({model_name}), {len(tasks)} HumanEval+ prompts, "
             f"greedy, max_new_tokens {MAX_NEW_TOKENS}, evalplus's chat wording, float32 on "
             f"{device}; {args.repeats} interleaved rounds, medians, ratios paired by round. "
             "Ours: a rolling batch over the KV cache (an ended row's place goes to the next "
             "prompt, longest first; prompts of one length prefilled together, never "
             "padded, each from the keys and values of the opening all prompts share, "
             "computed once). Plain generate: the "
             "prompts in input order, left-padded batches, one model.generate per batch with "
             f"the same end and pad tokens. Same replies as plain generate: {same}; "
             "generate_batch (continuous batching, called directly with the same "
             "GenerationConfig and prompt tokens, paged cache sized for the workload) gives "
             f"the same replies as ours: {same_cb}. Generated tokens counted the same way "
             "everywhere (each row up to and including its end token). A plain decoding step "
             f"costs {steps_b / steps_1:.1f}x at batch {b} what it costs at batch 1, and in "
             f"plain batches of {b} only {100 * count.tokens / count.slots:.0f}% of the "
             "row-steps produce a token (a batch runs until its longest reply ends); ours "
             "computes no row-step that does not. What bounds ours now is prefill: "
             f"{split_b['prefill']:.2f} s of prompt forwards at batch {b} against "
             f"{split_b['decoding']:.2f} s of decoding ({split_b['steps']} steps), and "
             f"{split_1['prefill']:.2f} s + {split_1['decoding']:.2f} s at batch 1; prompts "
             f"average {prompt_tokens / len(tasks):.0f} tokens and replies "
             f"{runs[ours_b][0][2] / len(tasks):.0f}, and a prompt's forward is already a "
             f"matrix product that batching does not make cheaper, so batch {b} can gain at "
             f"most {ceiling:.2f}x here even if decoding cost nothing.")
    # one record per thread count: the 1-thread figures compare on a shared machine, the
    # 2-thread ones are what the stages run with (stages.core.numerics)
    name = "generation_bench" + (f"-{args.threads}threads" if (args.threads or 1) > 1 else "")
    record.write(name, "Generation: ours against plain generate, generate_batch and evalplus"
                 + (f" ({args.threads} threads)" if name != "generation_bench" else ""),
                 figures, notes, args.json)


def forward_seconds(model, run) -> dict:
    """Seconds of `model`'s prefill forwards (more than one new token) and decoding forwards
    (one) during `run()`, and the number of decoding steps."""
    split = {"prefill": 0.0, "decoding": 0.0, "steps": 0}
    inner = model.forward

    def timed(*args, **kwargs):
        began = time.perf_counter()
        out = inner(*args, **kwargs)
        kind = "prefill" if kwargs["input_ids"].shape[1] > 1 else "decoding"
        split[kind] += time.perf_counter() - began
        split["steps"] += kind == "decoding"
        return out

    model.forward = timed
    try:
        run()
    finally:
        del model.forward
    return split


def evalplus_codegen(args, model, tasks) -> dict:
    from evalplus.provider import make_model

    decoder = make_model(model=str(args.model), backend="hf", dataset="humaneval", batch_size=1,
                         temperature=0.0, dtype="float32", instruction_prefix=INSTRUCTION,
                         response_prefix=RESPONSE_PREFIX)
    decoder.max_new_tokens = MAX_NEW_TOKENS
    generated = count_generated(decoder.model)
    seconds = 0.0
    for t in tasks:
        start = time.perf_counter()
        decoder.codegen(t["prompt"].strip() + "\n", do_sample=False, num_samples=1)
        seconds += time.perf_counter() - start
    return {"seconds": seconds, "tokens": sum(generated), "rate": sum(generated) / seconds}


if __name__ == "__main__":
    main()
