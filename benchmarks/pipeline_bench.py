"""Where a fresh clone's `dvc repro` spends its time: seconds per stage and in total.

    python -m benchmarks.pipeline_bench                  # the default pipeline, as committed
    python -m benchmarks.pipeline_bench -S model.train.steps=600 [-S ...]
    python -m benchmarks.pipeline_bench --before 9cee6e5   # that commit's clone, then HEAD's

Clones the committed HEAD into a temporary directory (no DVC cache there, so every stage
runs; uncommitted changes are not in the clone), then runs `dvc repro` there once, as a user
of a fresh clone would (with -S: `dvc exp run -S ...` instead, which composes params.yaml
first). DVC prints `Running stage '<name>'` as each stage starts; a stage's time is from its
line to the next stage's (or the end), so DVC's own hashing and bookkeeping after a stage
count toward it. Prints the stages in the order they ran, each suite's eval stages summed
over the variants, and the total. With --before REF, a fresh clone of REF runs first the
same way and the record adds its eval and total seconds and HEAD's ratios to them (the two
runs one after the other on the same machine). Writes benchmarks/results/pipeline_bench.json (--json
PATH: elsewhere). The stages run with torch's default threads, as `dvc repro` runs them, so
on a machine other work shares the figures measure that work too: the record gives the load
average.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import harness, record

REPO = Path(__file__).resolve().parent.parent
RUNNING = re.compile(r"^Running stage '([^']+)'")


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param override (dvc exp run -S)")
    parser.add_argument("--threads", type=int,
                        help="OMP_NUM_THREADS for the stages (torch's threads); default: "
                             "torch's, one per core, as a user's dvc repro runs")
    parser.add_argument("--before", metavar="REF",
                        help="first run a fresh clone of this earlier commit the same way, "
                             "then HEAD's, and record both and their ratios")
    parser.add_argument("--keep", action="store_true", help="keep the clones and their logs")
    args = parser.parse_args()

    argv = (["dvc", "exp", "run", *[a for o in args.set for a in ("-S", o)]] if args.set
            else ["dvc", "repro"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    runs = [measure(ref, argv, env, args.keep) for ref in [args.before, "HEAD"] if ref]

    figures = []
    for n, (head, stages, total) in enumerate(runs):
        side = f" ({head})" if args.before else ""
        by_suite = summed(stages)
        print(f"\n{head}: {'stage':<28} {'s':>7}")
        for name, seconds in stages:
            print(f"  {name:<34} {seconds:>7.1f}")
        print(f"  {'total (dvc ' + argv[1] + ')':<34} {total:>7.1f}")
        print("  by stage kind (eval summed over variants):")
        for key, seconds in sorted(by_suite.items(), key=lambda kv: -kv[1]):
            print(f"    {key:<32} {seconds:>7.1f}  {100 * seconds / total:4.1f}%")
        if n == len(runs) - 1:  # HEAD's stages one by one
            figures += [record.figure(name, round(seconds, 1), "s") for name, seconds in stages]
        figures += [record.figure(f"{key}, summed{side}", round(seconds, 1), "s")
                    for key, seconds in sorted(by_suite.items(), key=lambda kv: -kv[1])
                    if key.startswith("eval@")]
        figures.append(record.figure(f"all eval stages{side}", round(evals(stages), 1), "s"))
        figures.append(record.figure(f"total{side}, {' '.join(argv)}", round(total, 1), "s"))
    if args.before:
        (before, b_stages, b_total), (after, a_stages, a_total) = runs
        figures.append(record.figure(f"all eval stages, {after} / {before}",
                                     round(evals(a_stages) / evals(b_stages), 2), "x"))
        figures.append(record.figure(f"total, {after} / {before}",
                                     round(a_total / b_total, 2), "x"))
    threads = (f"OMP_NUM_THREADS={args.threads}" if args.threads
               else "torch's default threads (one per core)")
    clones = " and then ".join(f"of {head}" for head, _, _ in runs)
    notes = (f"A fresh clone {clones}, each with no DVC cache, `{' '.join(argv)}` run once in "
             "each, one after the other. A stage's time runs from DVC's `Running stage` line "
             f"to the next one's, DVC's hashing after it included. Stages ran with {threads}.")
    record.write("pipeline_bench", "A fresh clone's dvc repro, stage by stage", figures,
                 notes, args.json)


def measure(ref: str, argv: list[str], env: dict[str, str],
            keep: bool) -> tuple[str, list[tuple[str, float]], float]:
    """`argv` in a fresh clone of `ref`: its short sha, its stages' seconds, the total."""
    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", ref], cwd=clone, check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True,
                          capture_output=True, text=True).stdout.strip()
    for name, value in (("user.name", "pipeline-bench"), ("user.email", "bench@localhost")):
        subprocess.run(["git", "config", name, value], cwd=clone, check=True)
    if (REPO.parent / "shared").exists():  # for overrides naming ../shared/datasets
        (work / "shared").symlink_to(REPO.parent / "shared")
    print(f"{' '.join(argv)} in a fresh clone of {head} ({clone})", flush=True)
    stages, total, log = timed_run(argv, clone, env)
    (work / "repro.log").write_text(log)
    if keep:
        print(f"clone and log kept in {work}")
    else:
        shutil.rmtree(work)
    return head, stages, total


def summed(stages: list[tuple[str, float]]) -> dict[str, float]:
    """Seconds by stage kind, each eval suite summed over the variants."""
    by_suite: dict[str, float] = defaultdict(float)
    for name, seconds in stages:
        stage, _, item = name.partition("@")
        key = f"eval@*-{item.split('-', 1)[1]}" if stage == "eval" and "-" in item else stage
        by_suite[key] += seconds
    return by_suite


def evals(stages: list[tuple[str, float]]) -> float:
    return sum(seconds for name, seconds in stages if name.startswith("eval@"))


def timed_run(argv: list[str], cwd: Path,
              env: dict[str, str]) -> tuple[list[tuple[str, float]], float, str]:
    """Run `argv`, timestamping each `Running stage` line as DVC prints it."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, env=env)
    marks: list[tuple[str, float]] = []
    lines = []
    for line in proc.stdout:
        lines.append(line)
        match = RUNNING.match(line)
        if match:
            marks.append((match.group(1), time.perf_counter()))
            print(f"  {time.perf_counter() - start:7.1f} s  {match.group(1)}", flush=True)
    proc.wait()
    end = time.perf_counter()
    log = "".join(lines)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}); its end:\n"
                 + "".join(lines[-30:]))
    stages = [(name, (marks[i + 1][1] if i + 1 < len(marks) else end) - began)
              for i, (name, began) in enumerate(marks)]
    return stages, end - start, log


if __name__ == "__main__":
    main()
