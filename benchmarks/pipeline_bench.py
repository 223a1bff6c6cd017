"""Where a fresh clone's `dvc repro` spends its time: seconds per stage and in total.

    python -m benchmarks.pipeline_bench                  # the default pipeline, as committed
    python -m benchmarks.pipeline_bench -S model.train.steps=600 [-S ...]

Clones the committed HEAD into a temporary directory (no DVC cache there, so every stage
runs; uncommitted changes are not in the clone), then runs `dvc repro` there once, as a user
of a fresh clone would (with -S: `dvc exp run -S ...` instead, which composes params.yaml
first). DVC prints `Running stage '<name>'` as each stage starts; a stage's time is from its
line to the next stage's (or the end), so DVC's own hashing and bookkeeping after a stage
count toward it. Prints the stages in the order they ran, each suite's eval stages summed
over the variants, and the total. Writes benchmarks/results/pipeline_bench.json (--json
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
    parser.add_argument("--keep", action="store_true", help="keep the clone and its log")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True,
                          capture_output=True, text=True).stdout.strip()
    for name, value in (("user.name", "pipeline-bench"), ("user.email", "bench@localhost")):
        subprocess.run(["git", "config", name, value], cwd=clone, check=True)
    if (REPO.parent / "shared").exists():  # for overrides naming ../shared/datasets
        (work / "shared").symlink_to(REPO.parent / "shared")

    argv = (["dvc", "exp", "run", *[a for o in args.set for a in ("-S", o)]] if args.set
            else ["dvc", "repro"])
    print(f"{' '.join(argv)} in a fresh clone of {head} ({clone})", flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    stages, total, log = timed_run(argv, clone, env)
    (work / "repro.log").write_text(log)

    by_suite: dict[str, float] = defaultdict(float)
    for name, seconds in stages:
        stage, _, item = name.partition("@")
        key = f"eval@*-{item.split('-', 1)[1]}" if stage == "eval" and "-" in item else stage
        by_suite[key] += seconds
    print(f"\n{'stage':<28} {'s':>7}")
    for name, seconds in stages:
        print(f"{name:<28} {seconds:>7.1f}")
    print(f"{'total (dvc ' + argv[1] + ')':<28} {total:>7.1f}")
    print("\nby stage kind (eval summed over variants):")
    for key, seconds in sorted(by_suite.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<26} {seconds:>7.1f}  {100 * seconds / total:4.1f}%")

    figures = [record.figure(name, round(seconds, 1), "s") for name, seconds in stages]
    figures += [record.figure(f"{key}, summed", round(seconds, 1), "s")
                for key, seconds in sorted(by_suite.items(), key=lambda kv: -kv[1])
                if key.startswith("eval@")]
    figures.append(record.figure(f"total, {' '.join(argv)}", round(total, 1), "s"))
    threads = (f"OMP_NUM_THREADS={args.threads}" if args.threads
               else "torch's default threads (one per core)")
    notes = (f"A fresh clone of {head} with no DVC cache; `{' '.join(argv)}` run once. A "
             "stage's time runs from DVC's `Running stage` line to the next one's, DVC's "
             f"hashing after it included. Stages ran with {threads}.")
    record.write("pipeline_bench", "A fresh clone's dvc repro, stage by stage", figures,
                 notes, args.json)
    if args.keep:
        print(f"clone and log kept in {work}")
    else:
        shutil.rmtree(work)


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
