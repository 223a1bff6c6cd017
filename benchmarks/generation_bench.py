"""Generation throughput: our batched, adapter-aware generate() against evalplus's own `hf`
codegen (one prompt at a time under --greedy), on the same model and HumanEval+ tasks.

    python benchmarks/generation_bench.py \\
        --dataset-path ../shared/datasets/humanevalplus/HumanEvalPlus-v0.1.10.jsonl --tasks 48 \\
        --threads 1

Both run in this process on the same loaded weights, greedy, with evalplus's chat wording
and the same max_new_tokens (512); evalplus also stops at a closing code fence, so the two
sides may generate different lengths. The figure that compares is generated tokens per
second (each side's outputs re-tokenized with the model's tokenizer); tasks per second is
printed too. The dataset file is read directly (evalplus's decoder needs no dataset).
Needs models/base (`dvc repro base`). Writes its record to
benchmarks/results/generation_bench.json (--json PATH: elsewhere). About 2.5 minutes on two
CPU cores, nearly all of it evalplus's side. With torch's default of one thread per core,
any other process on the machine stalls torch's threads at every operation of this tiny
model: 16 prompts (455 tokens, batch 16) took 2.1 s at 1 thread and 52.9 s at 2 threads on
two cores while another process kept one core busy. --threads 1 keeps the figures comparable
on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import record

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-path", required=True, type=Path)
    parser.add_argument("--tasks", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's, one per core); 1 keeps "
                             "the figures steady on a machine other work shares")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "base")
    parser.add_argument("--json", type=Path, help="where to write the result record")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from stages.generate import GenerationCost, generate, greedy
    from stages.modeling import load_base_model, load_tokenizer

    tasks = [json.loads(line) for line in args.dataset_path.read_text().splitlines()][: args.tasks]
    tokenizer = load_tokenizer(args.model)
    model = load_base_model(args.model, "float32").eval()
    conversations = [[{"role": "user", "content": f"{INSTRUCTION}\n```python\n"
                                                  f"{t['prompt'].strip()}\n```"}] for t in tasks]
    cost = GenerationCost()
    decoding = greedy(args.model, tokenizer, MAX_NEW_TOKENS)
    generate(model, tokenizer, conversations, decoding, args.batch_size, "ours", cost)
    # cost.seconds: the batched generate calls alone (not the separate time-to-first-token
    # probe); cost.tokens: every generated token up to each row's end, special ones included.
    ours_s, ours_tokens = cost.seconds, cost.tokens
    single = GenerationCost()
    generate(model, tokenizer, conversations, decoding, 1, "ours, batch 1", single)

    from evalplus.provider import make_model

    decoder = make_model(model=str(args.model), backend="hf", dataset="humaneval", batch_size=1,
                         temperature=0.0, dtype="float32", instruction_prefix=INSTRUCTION,
                         response_prefix=RESPONSE_PREFIX)
    decoder.max_new_tokens = MAX_NEW_TOKENS
    generated = count_generated(decoder.model)
    theirs_s = 0.0
    for t in tasks:
        start = time.perf_counter()
        decoder.codegen(t["prompt"].strip() + "\n", do_sample=False, num_samples=1)
        theirs_s += time.perf_counter() - start
    theirs_tokens = sum(generated)

    ours_rate, theirs_rate = ours_tokens / ours_s, theirs_tokens / theirs_s
    print(f"model {args.model} on CPU={not torch.cuda.is_available()}, "
          f"{len(tasks)} HumanEval+ tasks, greedy, max_new_tokens {MAX_NEW_TOKENS}")
    print(f"  ours (batch {args.batch_size}): {ours_s:.1f} s, {ours_tokens} tokens, "
          f"{ours_rate:,.0f} tokens/s, {len(tasks) / ours_s:.2f} tasks/s")
    print(f"  evalplus hf codegen (one prompt at a time, as --greedy runs it): "
          f"{theirs_s:.1f} s, {theirs_tokens} tokens, {theirs_rate:,.0f} tokens/s, "
          f"{len(tasks) / theirs_s:.2f} tasks/s")
    single_rate = single.tokens / single.seconds
    print(f"  ours (batch 1): {single.seconds:.1f} s, {single.tokens} tokens, "
          f"{single_rate:,.0f} tokens/s")
    print(f"  ratio ours batch {args.batch_size} / evalplus (tokens/s): "
          f"{ours_rate / theirs_rate:.1f}x; from batching alone (ours batch {args.batch_size} / "
          f"ours batch 1): {ours_rate / single_rate:.1f}x")

    device = "GPU" if torch.cuda.is_available() else f"CPU (torch threads: {torch.get_num_threads()})"
    ours_label = f"ours, batch {args.batch_size} (stages.generate.generate)"
    theirs_label = "evalplus HuggingFaceDecoder.codegen, one prompt at a time (as --greedy runs it)"
    figures = [
        record.figure(ours_label, round(ours_s, 1), "s"),
        record.figure(ours_label, ours_tokens, "tokens"),
        record.figure(ours_label, round(ours_rate), "tokens/s"),
        record.figure("ours, batch 1", round(single.seconds, 1), "s"),
        record.figure("ours, batch 1", round(single_rate), "tokens/s"),
        record.figure(theirs_label, round(theirs_s, 1), "s"),
        record.figure(theirs_label, theirs_tokens, "tokens"),
        record.figure(theirs_label, round(theirs_rate, 1), "tokens/s"),
        record.figure("ours / evalplus, tokens/s", round(ours_rate / theirs_rate, 1), "x"),
        record.figure(f"ours batch {args.batch_size} / ours batch 1, tokens/s",
                      round(ours_rate / single_rate, 1), "x"),
    ]
    model_path = args.model.resolve()
    model_name = model_path.relative_to(REPO) if model_path.is_relative_to(REPO) else model_path
    notes = (f"Same process, same weights ({model_name}), {len(tasks)} HumanEval+ prompts, "
             f"greedy, max_new_tokens {MAX_NEW_TOKENS}, evalplus's chat wording, on {device}; "
             "generated tokens counted the same way on both sides. Target: ours at least 4x "
             "evalplus in tokens/s.")
    record.write("generation_bench", "Generation: ours against evalplus's hf codegen", figures,
                 notes, args.json)


if __name__ == "__main__":
    main()
