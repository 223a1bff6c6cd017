"""Scoring before and after issue 22 side by side: the time the warm sandboxes take to judge
reference solutions, and how many forged replies (tests/forgeries.py) each judge passes.

    python -m benchmarks.sandbox_bench --humaneval ../shared/datasets/humanevalplus/HumanEvalPlus-v0.1.10.jsonl

"before" is `stages/` at --before (default 0978008, main before the verdict moved out of the
sandbox: the child held the nonce and printed the verdict), unpacked from git into a
temporary folder; "after" is this checkout. Each round runs one fresh process per side, the
order alternating by round, and each process times, on warm sandboxes (one per core):
  - code: the 25 built-in code probes' reference solutions (run_many), --code-repeats times;
  - humaneval+: every canonical solution, base and plus splits (evalplus_harness.check).
Then, once per side, the forgeries: on every code probe, on the first --forged-tasks
humaneval+ tasks, and on a BigCodeBench-style task (a unittest TestCases). A forgery counts
as passed on a task when the judge says it passed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from benchmarks import harness, record

BCB_TEST = """import unittest
class TestCases(unittest.TestCase):
    def test_small(self):
        self.assertEqual(task_func(2), 4)
    def test_zero(self):
        self.assertEqual(task_func(0), 0)
"""


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--humaneval", type=Path, required=True,
                        help="an evalplus HumanEval+ .jsonl")
    parser.add_argument("--before", default="0978008", help="git revision of the old judge")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code-repeats", type=int, default=20)
    parser.add_argument("--forged-tasks", type=int, default=20)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--forgeries", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    before = Path(tempfile.mkdtemp(prefix="sandbox-bench-before-"))
    archive = subprocess.run(["git", "archive", args.before, "stages"], cwd=record.REPO,
                             check=True, capture_output=True).stdout
    tarfile.open(fileobj=BytesIO(archive)).extractall(before, filter="data")
    sides = {"before": before, "after": record.REPO}
    times: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(args.rounds):
        for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            times[side].append(run_worker(args, sides[side], forgeries=False))
            print(side, times[side][-1], flush=True)
    forged = {side: run_worker(args, path, forgeries=True) for side, path in sides.items()}
    print(json.dumps(forged, indent=1))

    figures = []
    for key, label in (("code_s", f"code: 25 reference solutions x {args.code_repeats}"),
                       ("humaneval_s", "humaneval+: 164 canonical solutions, base + plus")):
        median = {s: statistics.median(t[key] for t in times[s]) for s in sides}
        figures += [record.figure(f"{label}, before", round(median["before"], 2), "s"),
                    record.figure(f"{label}, after", round(median["after"], 2), "s"),
                    record.figure(f"{label}, after / before",
                                  round(median["after"] / median["before"], 2), "x")]
    for side in sides:
        figures.append(record.figure(f"humaneval+ canonical solutions passed, {side}",
                                     times[side][0]["humaneval_passed"], "of 164"))
    for side in sides:
        for suite, total in (("code", "code_total"), ("humaneval+", "humaneval_total"),
                             ("bigcodebench", "bcb_total")):
            passed = forged[side][suite]
            figures.append(record.figure(
                f"forged replies passed, {suite}, {side}", sum(passed.values()),
                f"of {forged[side][total]} ({', '.join(f'{k} {v}' for k, v in passed.items() if v) or 'none'})"))
    notes = (f"{args.rounds} rounds, medians; before = stages/ at {args.before}, after = this "
             f"checkout. Forgeries: {', '.join(forged['after']['names'])}; each tried on the 25 "
             f"code probes, the first {args.forged_tasks} humaneval+ tasks and one "
             "BigCodeBench-style task.")
    record.write("sandbox_bench", "Scoring in warm sandboxes, before and after the verdict "
                 "moved out of the sandbox (issue 22)", figures, notes, args.json)


def run_worker(args, side: Path, forgeries: bool) -> dict:
    # Run from the side's folder; PYTHONPATH finds this package, and the worker puts the
    # side's stages/ first before importing it.
    argv = [sys.executable, "-m", "benchmarks.sandbox_bench", "--worker", str(side),
            "--humaneval", str(args.humaneval.resolve()), "--code-repeats",
            str(args.code_repeats), "--forged-tasks", str(args.forged_tasks)]
    env = {**os.environ, "PYTHONPATH": str(record.REPO)}
    out = subprocess.run(argv + (["--forgeries"] if forgeries else []), cwd=side, check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sandbox_api():
    """run_many and the evalplus harness of this side's stages/: issue 24 moved them into
    stages/sandbox/ and stages/suites/, where a side from before it does not have them."""
    try:
        from stages.sandbox.execute import run_many
        from stages.suites import evalplus_harness as harness
    except ImportError:
        from stages import evalplus_suite as harness
        from stages.execute import run_many
    return run_many, harness


def worker(args) -> dict:
    sys.path.insert(0, str(args.worker))  # this side's stages/ first
    sys.path.insert(1, str(record.REPO / "tests"))
    run_many, harness = sandbox_api()
    check, load_benchmark, sandbox_pool = harness.check, harness.load_benchmark, harness.sandbox_pool

    probes = [json.loads(line) for line in
              (record.REPO / "data/sources/probes/code.jsonl").read_text().splitlines()]
    bench = load_benchmark("humaneval+", str(args.humaneval))
    cores = max(1, os.cpu_count() or 1)
    if args.forgeries:
        return forgery_counts(args, probes, bench, cores)
    jobs = [(p["solution"], p["tests"]) for p in probes]
    run_many(jobs[:1], 10, "warm-up")
    start = time.perf_counter()
    code_ok = [all(o.passed for o in run_many(jobs, 10, "code"))
               for _ in range(args.code_repeats)]
    code_s = time.perf_counter() - start
    assert all(code_ok), "a reference solution failed"

    from concurrent.futures import ThreadPoolExecutor

    tasks = list(bench.problems)
    with sandbox_pool(cores, unsafe=False) as pool, ThreadPoolExecutor(cores) as threads:
        check(bench, tasks[0], "x = 1\n", False, pool)  # start the sandboxes
        start = time.perf_counter()
        verdicts = list(threads.map(
            lambda t: check(bench, t, bench.problems[t]["prompt"]
                            + bench.problems[t]["canonical_solution"], False, pool), tasks))
        humaneval_s = time.perf_counter() - start
    passed = sum(v["base"] == v["plus"] == "pass" for v in verdicts)
    return {"code_s": code_s, "humaneval_s": humaneval_s, "humaneval_passed": passed}


def forgery_counts(args, probes, bench, cores) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from forgeries import forged

    from stages.suites import bigcodebench as bcb

    run_many, harness = sandbox_api()
    check, sandbox_pool = harness.check, harness.sandbox_pool
    names = list(forged("f"))
    code = {n: 0 for n in names}
    jobs = [(name, (c, p["tests"])) for p in probes for name, c in forged(p["entry_point"]).items()]
    for (name, _), o in zip(jobs, run_many([j for _, j in jobs], 10, "forged"), strict=True):
        code[name] += o.passed
    humaneval = {n: 0 for n in names}
    tasks = list(bench.problems)[: args.forged_tasks]
    pairs = [(t, n, bench.problems[t]["prompt"] + c) for t in tasks
             for n, c in forged(bench.problems[t]["entry_point"]).items()]
    with sandbox_pool(cores, unsafe=False) as pool, ThreadPoolExecutor(cores) as threads:
        verdicts = list(threads.map(lambda p: judged(check, bench, p[0], p[2], False, pool),
                                    pairs))
    for (_, name, _), v in zip(pairs, verdicts, strict=True):
        humaneval[name] += v.get("base") == v.get("plus") == "pass"
    task = {"code_prompt": "def task_func(x):\n", "test": BCB_TEST}
    bigcodebench = {n: int(judged(bcb.run_one, bcb.calibrate(task, c), task, 20.0)
                           .get("status") == "pass") for n, c in forged("task_func").items()}
    return {"names": names, "code": code, "code_total": len(jobs), "humaneval+": humaneval,
            "humaneval_total": len(pairs), "bigcodebench": bigcodebench,
            "bcb_total": len(names)}


def judged(judge, *args) -> dict:
    """The judge's verdict; {} when the forged reply made the judge itself raise (the old
    evalplus harness did, on a forged report that lacks a key): not a pass."""
    try:
        return judge(*args)
    except Exception:
        return {}


if __name__ == "__main__":
    main()
