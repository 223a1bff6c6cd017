"""Selective reruns and run-cache restores: what `dvc exp run` reruns when one param
changes, and what it restores without running when the param goes back.

    python -m benchmarks.rerun_bench                          # dpo.beta 0.1 -> 0.2 -> 0.1
    python -m benchmarks.rerun_bench --change sft.lora.r=16   # another param

Clones the repo's committed HEAD into a temporary directory (no DVC cache there, so the
first run builds everything; uncommitted changes are not in the clone), shrinks the pipeline
with the -S overrides in SHRINK so that the whole of it takes minutes on two CPU cores, and
runs `dvc exp run` three times:

    1. SHRINK                            the full pipeline
    2. SHRINK + --change                 one param changed
    3. SHRINK + the param's old value    back again: the run-cache should restore it

For each run it records the wall time and, from DVC's log, the stages that ran ("Running
stage"), that were skipped as unchanged ("didn't change, skipping") and that were restored
from the run-cache ("is cached"). Stage names are taken as DVC prints them (`eval@base-code`,
a foreach `sft@main`), so renamed or added stages need no change here. Writes
benchmarks/results/rerun_bench.json (--json PATH: elsewhere). 7 to 11 minutes on two cores that
other work shared (two runs here).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks import harness, record

# A 2-layer, 64-wide model pretrained for 60 steps; one epoch of sft and dpo; 3 probes per
# eval suite, 24 new tokens each. Every stage still runs its real code.
SHRINK = ["model.train.steps=60", "model.arch.hidden_size=64", "model.arch.num_layers=2",
          "model.arch.intermediate_size=128", "sft.phases.main.epochs=1", "dpo.epochs=1",
          "eval.limit=3",
          "eval.max_new_tokens=24"]
PATTERNS = {
    "ran": re.compile(r"^Running stage '([^']+)'", re.M),
    "skipped as unchanged": re.compile(r"^Stage '([^']+)' didn't change, skipping", re.M),
    "restored from the run-cache": re.compile(r"^Stage '([^']+)' is cached", re.M),
}


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--change", default="dpo.beta=0.2",
                        help="the one override of run 2, KEY=VALUE")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its logs")
    args = parser.parse_args()
    key = args.change.split("=", 1)[0]

    work, clone = record.scratch_clone("rerun-bench")

    results = [exp_run(clone, "1. full run", SHRINK, work)]
    original = lookup(yaml.safe_load((clone / "params.yaml").read_text()), key)
    back = f"{key}={original}"
    results.append(exp_run(clone, f"2. -S {args.change}", [*SHRINK, args.change], work))
    results.append(exp_run(clone, f"3. -S {back} (back)", [*SHRINK, back], work))

    figures = []
    for label, seconds, stages in results:
        figures.append(record.figure(f"{label}: wall", round(seconds, 1), "s"))
        for what, names in stages.items():
            figures.append(record.figure(f"{label}: {what}", compact(names) or "none",
                                         f"{len(names)} stages"))
    notes = (f"A clone of the committed HEAD with no DVC cache, shrunk with -S "
             f"{' -S '.join(SHRINK)}; run 2 adds -S {args.change}, run 3 sets {back} again. "
             "Stage names as DVC prints them; `eval@{a, b}` stands for eval@a and eval@b.")
    record.write("rerun_bench", "Selective reruns and run-cache restores (dvc exp run)",
                 figures, notes, args.json)
    if args.keep:
        print(f"clone and logs kept in {work}")
    else:
        shutil.rmtree(work)


def exp_run(clone: Path, label: str, overrides: list[str],
            work: Path) -> tuple[str, float, dict[str, list[str]]]:
    argv = ["dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)]]
    print(f"{label}: {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    log = work / f"run{label.split('.')[0]}.log"
    log.write_text(done.stdout)
    if done.returncode != 0:
        sys.exit(f"{label} failed ({done.returncode}); the end of {log}:\n"
                 + "\n".join(done.stdout.splitlines()[-30:]))
    stages = {what: pattern.findall(done.stdout) for what, pattern in PATTERNS.items()}
    print(f"  {seconds:.1f} s; " + "; ".join(f"{what}: {compact(names) or 'none'}"
                                             for what, names in stages.items()), flush=True)
    return label, seconds, stages


def lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def compact(names: list[str]) -> str:
    """`eval@base-code, eval@base-identity, summary` -> `eval@{base-code, base-identity},
    summary`: stages of one foreach/matrix group together, in DVC's order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        stage, _, item = name.partition("@")
        groups.setdefault(stage, []).append(item)
    return ", ".join(stage if items == [""] else f"{stage}@{{{', '.join(items)}}}"
                     for stage, items in groups.items())


if __name__ == "__main__":
    main()
