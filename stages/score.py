"""score: HumanEval+ / MBPP+ pass@1 for samples from any model, as `evalplus.evaluate` scores
them, with every sample run in our sandbox.

    python -m stages.score --dataset humaneval+ \\
        --dataset-path ../shared/datasets/humanevalplus/HumanEvalPlus-v0.1.10.jsonl \\
        --samples samples.jsonl --out result.json

SAMPLES.jsonl is evalplus's sample format: one line per sample with `task_id` and either
`solution` (the whole program) or `completion` (appended to the task's prompt). Like
`evalplus.evaluate`, samples are not sanitized (pass --sanitize to run evalplus's sanitize
first). RESULT.json holds pass@1 on the base and the plus tests (plus counts a sample only if
it also passes base, as evalplus does), per-task statuses, why each failing sample failed
(syntax_error, runtime_error:<Type>, wrong_answer, timeout or crashed, at its first failing
input), the dataset md5 and the evalplus version.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from stages.config import run_stage
from stages.evalplus_suite import DATASETS, Benchmark, check, load_benchmark, sandbox_pool
from stages.execute import require_sandbox
from stages.io import DataError, MissingInput, read_jsonl_lines, write_json
from stages.stats import pass_at_k


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--dataset-path", help="local evalplus .jsonl (else evalplus downloads)")
    parser.add_argument("--samples", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sanitize", action="store_true", help="run evalplus's sanitize first")
    parser.add_argument("--unsafe-execution", action="store_true",
                        help="run without the bubblewrap sandbox where it cannot start")
    args = parser.parse_args(argv)

    sandbox = require_sandbox(args.unsafe_execution)
    bench = load_benchmark(args.dataset, args.dataset_path)
    samples = read_samples(args.samples, bench, args.sanitize)
    start = time.perf_counter()
    statuses = score_samples(bench, samples, unsafe=not sandbox)
    result = summarize(bench, samples, statuses, time.perf_counter() - start)
    write_json(args.out, result)
    print(f"{args.dataset}: pass@1 base {result['pass@1']['base']:.4f}, plus "
          f"{result['pass@1']['plus']:.4f} over {result['samples']} samples of "
          f"{result['tasks_scored']} tasks in {result['seconds']:.1f} s -> {args.out}")
    return result


def read_samples(path: Path, bench: Benchmark, sanitize: bool) -> list[dict]:
    if not path.exists():
        raise MissingInput(f"samples file {path} does not exist")
    samples = []
    for lineno, row in read_jsonl_lines(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: a sample is a JSON object, got {type(row).__name__}")
        task_id = row.get("task_id")
        if task_id not in bench.problems:
            raise DataError(f"{path}:{lineno}: task_id {task_id!r} is not in {bench.name}")
        if isinstance(row.get("solution"), str):
            code = row["solution"]
        elif isinstance(row.get("completion"), str):
            code = bench.problems[task_id]["prompt"] + row["completion"]
        else:
            raise DataError(f"{path}:{lineno}: needs a string `solution` or `completion`")
        if sanitize:
            from evalplus.sanitize import sanitize as evalplus_sanitize

            code = evalplus_sanitize(code, bench.problems[task_id]["entry_point"])
        samples.append({"task_id": task_id, "code": code})
    if not samples:
        raise DataError(f"{path} has no samples")
    return samples


def score_samples(bench: Benchmark, samples: list[dict], unsafe: bool) -> list[dict]:
    """{"base": status, "plus": status, "failure": kind} per sample, in one warm sandbox per
    core (each split a child forked there)."""
    workers = max(1, os.cpu_count() or 1)
    with sandbox_pool(workers, unsafe) as boxes, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(check, bench, s["task_id"], s["code"], unsafe, boxes)
                   for s in samples]
        return [f.result() for f in tqdm(futures, desc=f"scoring {bench.name}", unit="sample")]


def summarize(bench: Benchmark, samples: list[dict], statuses: list[dict],
              seconds: float) -> dict:
    """pass@1 per task with the unbiased estimator (n samples, c correct), averaged."""
    import evalplus

    per_task: dict[str, list[dict]] = defaultdict(list)
    for sample, status in zip(samples, statuses, strict=True):
        per_task[sample["task_id"]].append({"base_status": status["base"],
                                            "plus_status": status["plus"],
                                            "failure": status["failure"]})
    base, plus = [], []
    for rows in per_task.values():
        n = len(rows)
        base.append(pass_at_k(n, sum(r["base_status"] == "pass" for r in rows), 1))
        plus.append(pass_at_k(n, sum(r["base_status"] == "pass" and r["plus_status"] == "pass"
                                     for r in rows), 1))
    return {
        "dataset": bench.name,
        "dataset_md5": bench.md5,
        "evalplus_version": evalplus.__version__,
        "samples": len(samples),
        "tasks_scored": len(per_task),
        "pass@1": {"base": round(sum(base) / len(base), 4), "plus": round(sum(plus) / len(plus), 4)},
        "seconds": round(seconds, 1),
        "tasks": dict(per_task),
    }


if __name__ == "__main__":
    run_stage(main)
