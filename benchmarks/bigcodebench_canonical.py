"""BigCodeBench's canonical solutions through our judge: how many pass in the sandbox with the
libraries installed here, and why the others fail.

    python -m benchmarks.bigcodebench_canonical \\
        --data ../shared/datasets/benchmarks/bigcodebench/BigCodeBench.jsonl

Each task's reference solution (complete_prompt + canonical_solution, as bigcodebench checks
its ground truth) runs with the task's unittest TestCases in its own bubblewrap sandbox
(stages.suites.bigcodebench.run_one), two at a time. Tasks whose libraries are not
installed are counted apart and not run. Prints the count passed, then every failure with
its kind and the first failing test. Writes benchmarks/results/bigcodebench_canonical.json.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import harness, record


def main() -> None:
    from stages.sandbox.execute import require_sandbox
    from stages.suites.bigcodebench import load_tasks, missing_libs

    parser = harness.parser(__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    require_sandbox(False)
    tasks = load_tasks(args.data)[: args.limit]
    runnable = [t for t in tasks if not missing_libs([t])]
    skipped = missing_libs([t for t in tasks if missing_libs([t])])
    outcomes, seconds = harness.timed(judge, runnable, args.timeout)
    passed = sum(o["status"] == "pass" for o in outcomes)
    lines = [f"{len(tasks)} tasks; {len(tasks) - len(runnable)} not run (libraries not "
             f"installed: {dict(skipped)}); {passed}/{len(runnable)} canonical solutions "
             f"pass in the sandbox ({seconds:.0f} s)"]
    kinds = Counter(o["failure"] for o in outcomes if o["status"] != "pass")
    lines.append(f"failure kinds: {dict(kinds.most_common())}")
    for t, o in zip(runnable, outcomes, strict=True):
        if o["status"] != "pass":
            detail = " | ".join(o["detail"].strip().splitlines()[-1:] or [""])
            first = o["detail"].split("\n", 1)[0]
            lines.append(f"  {t['task_id']}: {o['status']} {o['failure']} [{first[:80]}] "
                         f"{detail[:200]}")
    print("\n".join(lines))
    record.write("bigcodebench_canonical", "BigCodeBench canonical solutions in the sandbox",
                 [record.figure("tasks", len(tasks)),
                  record.figure("not run: libraries not installed", len(tasks) - len(runnable)),
                  record.figure("canonical solutions passing", passed),
                  record.figure("canonical solutions run", len(runnable)),
                  record.figure("wall time, two at a time", round(seconds), "s")],
                 "\n".join(lines), args.json)


def judge(tasks: list[dict], timeout: float) -> list[dict]:
    """Each task's canonical solution through the suite's judge, two at a time."""
    from stages.suites.bigcodebench import canonical, run_one

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda t: run_one(canonical(t), t, timeout), tasks))


if __name__ == "__main__":
    main()
