"""stages.score against evalplus.evaluate on the same samples: per-task verdicts side by side
and both wall times. The acceptance check for issue 5 runs it on the canonical solutions.

    python -m benchmarks.score_vs_evalplus --dataset humaneval+ \\
        --dataset-path ../shared/datasets/humanevalplus/HumanEvalPlus-v0.1.10.jsonl

Without --samples, the samples are the dataset's canonical solutions (prompt + solution).
evalplus runs in a child process (its override path is read at import) with a fresh results
file, since it silently reuses an old one. Writes its record to
benchmarks/results/score_vs_evalplus-<dataset>.json (--json PATH: elsewhere). With evalplus's
ground truth cached, about 1.5 minutes for humaneval+ and 5 for mbpp+ on two cores.

--explain TASK_ID instead runs that task's canonical solution the way `evaluate` does:
`check_correctness` submitted to a process pool forked from this process, which then holds
what `evaluate`'s main process holds (every problem and the whole ground truth). The
solution is wrapped so that evalplus's forked child prints its address space (VmSize)
around every call that grows it by 10 MiB or more, or raises; once under evalplus's 4 GiB
cap and once without a cap. Writes no record.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import harness, record

FLAVOUR = {"humaneval+": ("humaneval", "HUMANEVAL_OVERRIDE_PATH"),
           "mbpp+": ("mbpp", "MBPP_OVERRIDE_PATH")}


def canonical_samples(dataset_path: Path, out: Path) -> None:
    with out.open("w") as f:
        for line in dataset_path.read_text().splitlines():
            task = json.loads(line)
            f.write(json.dumps({"task_id": task["task_id"],
                                "solution": task["prompt"] + task["canonical_solution"]}) + "\n")


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--dataset", required=True, choices=sorted(FLAVOUR))
    parser.add_argument("--dataset-path", required=True, type=Path)
    parser.add_argument("--samples", type=Path)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved rounds of both scorers; medians and paired ratios")
    parser.add_argument("--evalplus-parallel", type=int, action="append", default=[],
                        help="also time evalplus.evaluate with this many workers (repeatable)")
    parser.add_argument("--explain", metavar="TASK_ID",
                        help="trace evalplus's check of one canonical solution instead")
    args = parser.parse_args()
    if args.explain:
        explain(args.dataset, args.dataset_path, args.explain)
        return
    work = Path(tempfile.mkdtemp(prefix="score-vs-evalplus-"))
    samples = args.samples or work / "samples.jsonl"
    if args.samples is None:
        canonical_samples(args.dataset_path, samples)
    from evalplus.data.utils import CACHE_DIR

    md5 = hashlib.md5(args.dataset_path.read_bytes()).hexdigest()
    cached = (Path(CACHE_DIR) / f"{md5}.pkl").exists()  # evalplus's ground truth, by data md5
    if not cached:  # computed once here, so that neither side's first round pays for it
        run_evalplus(args, samples, work / "warmup", None)

    # Both sides as a user runs them, each a fresh process from the command line up (start-up,
    # imports and loading the cached ground truth included). The order alternates by round.
    sides = {"stages.score": lambda r: run_ours(args, samples, work / f"ours-{r}")}
    sides["evalplus.evaluate"] = lambda r: run_evalplus(args, samples, work / f"ep-{r}", None)
    for n in args.evalplus_parallel:
        sides[f"evalplus.evaluate, parallel={n}"] = (
            lambda r, n=n: run_evalplus(args, samples, work / f"ep{n}-{r}", n))
    walls: dict[str, list[float]] = {side: [] for side in sides}
    verdicts: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.repeats):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for side in order:
            seconds, result = sides[side](r)
            walls[side].append(seconds)
            verdicts[side].append(result)
            print(f"  round {r + 1}: {side} {seconds:.1f} s", flush=True)

    ours = verdicts["stages.score"]
    differ = sorted({d for mine, ref in zip(ours, verdicts["evalplus.evaluate"], strict=True)
                     for d in compare(mine, ref)})
    unstable = {side: sorted(t for t in verdicts[side][0]
                             if any(v[t] != verdicts[side][0][t] for v in verdicts[side]))
                for side in sides}
    n = len(ours[0])
    base, plus = pass_rates(ours[0])
    their_base, their_plus = pass_rates(verdicts["evalplus.evaluate"][0])
    ratios = {side: statistics.median(o / t for o, t in zip(walls["stages.score"], walls[side],
                                                             strict=True))
              for side in sides if side != "stages.score"}
    print(f"{args.dataset} ({n} tasks, md5 {md5}, {args.repeats} interleaved rounds, "
          f"load average {record.LOAD_AT_START:.2f} at the start, {os.getloadavg()[0]:.2f} now)")
    print(f"  {'side':<34} {'median wall s':>13}  rounds  pass@1 base / plus (round 1)")
    for side in sides:
        b, p = pass_rates(verdicts[side][0])
        print(f"  {side:<34} {statistics.median(walls[side]):>13.1f}  "
              f"{' '.join(f'{w:.1f}' for w in walls[side])}  {b:.4f} / {p:.4f}")
    for side, ratio in ratios.items():
        print(f"  ratio stages.score / {side}, wall (median of paired rounds): {ratio:.2f}x")
    print(f"  tasks whose (base, plus) verdicts differ in some round: {len(differ)}")
    for task_id, mine, ref in differ:
        print(f"    {task_id}: ours {mine}, evalplus {ref}")

    samples_are = (f"samples from {args.samples.name}" if args.samples else
                   "the canonical solutions (prompt + canonical_solution)")
    figures = [
        record.figure("stages.score pass@1 base", round(base, 4)),
        record.figure("stages.score pass@1 plus", round(plus, 4)),
        record.figure("evalplus.evaluate pass@1 base", round(their_base, 4)),
        record.figure("evalplus.evaluate pass@1 plus", round(their_plus, 4)),
    ]
    for side in sides:
        figures.append(record.figure(f"{side} wall, median of {args.repeats}",
                                     round(statistics.median(walls[side]), 1), "s"))
    for side, ratio in ratios.items():
        figures.append(record.figure(f"stages.score / {side}, wall", round(ratio, 2), "x"))
    figures.append(record.figure("tasks whose (base, plus) verdicts differ", len(differ),
                                 f"of {n}"))
    import evalplus

    workers = max(1, (os.cpu_count() or 1) // 2)
    notes = (f"{args.dataset}, {n} tasks, dataset md5 {md5}, evalplus {evalplus.__version__}; "
             f"samples: {samples_are}; evalplus's ground truth "
             f"{'was' if cached else 'was not (computed before the first round)'} cached. "
             f"{args.repeats} interleaved rounds (order alternating), each side a fresh process "
             "(start-up, imports and the cached ground truth included); the ratio is the median "
             f"of the per-round ratios. Rounds (s): "
             + "; ".join(f"{side} {', '.join(f'{w:.1f}' for w in walls[side])}"
                         for side in sides)
             + f". stages.score runs every split in a child forked in one of "
             f"{os.cpu_count()} warm bubblewrap sandboxes; evalplus.evaluate by default uses "
             f"cpu_count // 2 = {workers} worker(s). Differing tasks (ours vs evalplus, "
             "(base, plus)): " + ("; ".join(f"{t} {m} vs {r}" for t, m, r in differ) or "none")
             + ". Tasks whose verdict changed between rounds: "
             + "; ".join(f"{side}: {', '.join(tasks) or 'none'}"
                         for side, tasks in unstable.items())
             + " (evalplus's per-input time limits, 4x the reference time or at least 1 s, "
             "are wall-clock limits, which load on the machine can exceed).")
    name = "score_vs_evalplus-" + args.dataset.replace("+", "plus")
    record.write(name, f"stages.score against evalplus.evaluate: {args.dataset}", figures,
                 notes, args.json)


def run_ours(args, samples: Path, out: Path) -> tuple[float, dict]:
    out.mkdir()
    # stages.score is now `stages.tools.judge --samples`; the records keep the side's old name
    _, seconds = harness.timed(
        subprocess.run, [sys.executable, "-m", "stages.tools.judge", "--suite", args.dataset,
                         "--dataset-path", str(args.dataset_path), "--samples", str(samples),
                         "--out", str(out / "ours.json")], check=True, stderr=subprocess.DEVNULL)
    tasks = json.loads((out / "ours.json").read_text())["tasks"]
    return seconds, {t: (rows[0]["base_status"], rows[0]["plus_status"])
                     for t, rows in tasks.items()}


def run_evalplus(args, samples: Path, out: Path, parallel: int | None) -> tuple[float, dict]:
    """evalplus.evaluate in a fresh process, on a fresh copy of the samples (it silently
    reuses an old results file next to them)."""
    flavour, env = FLAVOUR[args.dataset]
    out.mkdir()
    theirs = out / "evalplus_samples.jsonl"
    theirs.write_bytes(samples.read_bytes())
    _, seconds = harness.timed(
        subprocess.run, [sys.executable, "-c",
                         "from evalplus.evaluate import evaluate; "
                         f"evaluate({flavour!r}, samples={str(theirs)!r}, parallel={parallel!r}, "
                         "i_just_wanna_run=True)"],
        check=True, env={**os.environ, env: str(args.dataset_path.resolve())},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tasks = json.loads((out / "evalplus_samples_eval_results.json").read_text())["eval"]
    return seconds, {t: (rows[0]["base_status"], rows[0]["plus_status"])
                     for t, rows in tasks.items()}


def compare(ours: dict, theirs: dict) -> list[tuple]:
    return [(t, ours[t], theirs[t]) for t in ours if ours[t] != theirs[t]]


def pass_rates(verdicts: dict) -> tuple[float, float]:
    n = len(verdicts)
    return (sum(b == "pass" for b, _ in verdicts.values()) / n,
            sum(b == "pass" and p == "pass" for b, p in verdicts.values()) / n)


# Appended to the solution: wraps the entry point so the forked child reports its own address
# space (VmSize) on stdout; `open` is gone under evalplus's guard, os.open is not.
TRACE = r"""
import os as _os
def _vm_mb():
    fd = _os.open("/proc/self/status", _os.O_RDONLY)
    text = _os.read(fd, 16384).decode()
    _os.close(fd)
    return int(text.split("VmSize:")[1].split()[0]) >> 10
_traced, _state = {ep}, {{"input": 0, "depth": 0}}
def {ep}(*args):
    if _state["depth"]:  # a recursive call
        return _traced(*args)
    i, before = _state["input"], _vm_mb()
    _state["input"] += 1
    _state["depth"] = 1
    try:
        out = _traced(*args)
    except BaseException as err:
        _os.write(1, f"    input {{i}}: {{type(err).__name__}} at {{before}} MiB\n".encode())
        raise
    finally:
        _state["depth"] = 0
    if _vm_mb() - before >= 10:
        _os.write(1, f"    input {{i}}: {{before}} -> {{_vm_mb()}} MiB\n".encode())
    return out
"""


def explain(dataset: str, dataset_path: Path, task_id: str) -> None:
    from concurrent.futures import ProcessPoolExecutor

    from evalplus.evaluate import check_correctness

    from stages.suites.evalplus_harness import load_benchmark

    bench = load_benchmark(dataset, str(dataset_path))
    problem = bench.problems[task_id]
    code = (problem["prompt"] + problem["canonical_solution"]
            + TRACE.format(ep=problem["entry_point"]))
    print(f"{task_id}: this process (as evaluate's main process) {vm_mb()} MiB")
    for label, cap in (("evalplus's 4 GiB cap", 4 << 30), ("no cap", -1)):
        os.environ["EVALPLUS_MAX_MEMORY_BYTES"] = str(cap)  # read in the forked child
        # As evaluate: a pool forked from here; the task's problem and expected outputs
        # are pickled to the worker, which forks the child that runs the solution.
        with ProcessPoolExecutor(1) as pool:
            print(f"  {label}: pool worker {pool.submit(vm_mb).result()} MiB; in the child "
                  "(input index within the split, base then plus):", flush=True)
            result = pool.submit(check_correctness, FLAVOUR[dataset][0], 0, problem, code,
                                 bench.expected[task_id], False, True).result()
        for split in ("base", "plus"):
            stat, details = result[split]
            failing = [i for i, ok in enumerate(details) if not ok]
            print(f"    -> {split} {stat}, failing input {failing or 'none'}", flush=True)


def vm_mb() -> int:
    return int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) >> 10


if __name__ == "__main__":
    main()
