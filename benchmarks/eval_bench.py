"""Eval stages' wall time: the same eval stages run by the code of an earlier commit and by
this checkout's HEAD, side by side, with the same models, probes and params.

    python -m benchmarks.eval_bench --before 3472e34 --repeats 2 --threads 1

Each side is `stages/` and `params.yaml` exported from its commit (`git archive`) into a
temporary directory that links this checkout's `models/` and `data/` (so `dvc repro base
curate` first), and every eval stage runs there as dvc.yaml runs it, `python -m stages.eval
--variant V --suite S`, one process each, the two sides alternating (order reversed every
other round, --repeats rounds, medians). A stage's seconds are its whole process (imports,
loading, generation, judging, writing); the in-stage seconds are the `wall_s` its cost file
records (generation and judging alone). Both sides must write the same replies: the record
says per suite whether they did. Variants sft and dpo need their adapters (`dvc repro dpo`);
--variants picks. Writes benchmarks/results/eval_bench.json (--json PATH: elsewhere).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from benchmarks import harness, record

REPO = Path(__file__).resolve().parent.parent
SUITES = ("code", "identity", "knowledge", "perplexity", "dimensions")


def export(ref: str, into: Path) -> str:
    """`stages/` and `params.yaml` of commit `ref` in `into`, this checkout's models/ and
    data/ linked; the commit's short sha."""
    sha = subprocess.run(["git", "rev-parse", "--short=10", ref], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    tar = subprocess.run(["git", "archive", sha, "stages", "params.yaml"], cwd=REPO,
                         check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    for name in ("models", "data"):
        (into / name).symlink_to(REPO / name)
    return sha


def run_eval(side: Path, variant: str, suite: str, threads: int | None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    began = time.perf_counter()
    done = subprocess.run(["python", "-m", "stages.eval", "--variant", variant, "--suite", suite],
                          cwd=side, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"eval {variant}/{suite} failed in {side}:\n{done.stderr[-3000:]}")
    cost = json.loads((side / "metrics" / "cost" / variant / f"{suite}.json").read_text())[suite]
    rows = [json.loads(line) for line in
            (side / "metrics" / "tasks" / variant / f"{suite}.jsonl").read_text().splitlines()]
    return {"seconds": seconds, "wall_s": cost["wall_s"], "tokens_per_s": cost["tokens_per_s"],
            "replies": [r.get("reply") for r in rows]}


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--before", required=True, help="the earlier commit (e.g. main's)")
    parser.add_argument("--after", default="HEAD", help="the later commit (default HEAD)")
    parser.add_argument("--variants", nargs="+", default=["base"])
    parser.add_argument("--suites", nargs="+", default=list(SUITES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int,
                        help="OMP_NUM_THREADS for the stages; default: the stages' own (2)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    sides = {"before": work / "before", "after": work / "after"}
    shas = {name: export(ref, sides[name]) for name, ref in
            (("before", args.before), ("after", args.after))}
    stages = [(v, s) for v in args.variants for s in args.suites]
    runs: dict[tuple, dict[str, list[dict]]] = {st: {"before": [], "after": []} for st in stages}
    for r in range(args.repeats):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for st in stages:
            for name in order:
                runs[st][name].append(run_eval(sides[name], *st, args.threads))
                last = runs[st][name][-1]
                print(f"  round {r + 1}: {name} eval {st[0]}/{st[1]}: {last['seconds']:.1f} s "
                      f"(in-stage {last['wall_s']:.1f} s, {last['tokens_per_s']} tokens/s)",
                      flush=True)

    def med(st, name, key):
        return statistics.median(x[key] for x in runs[st][name])

    figures, same = [], {}
    totals = {(name, key): 0.0 for name in sides for key in ("seconds", "wall_s")}
    for st in stages:
        label = f"eval@{st[0]}-{st[1]}"
        same[label] = all(x["replies"] == y["replies"]
                          for x, y in zip(runs[st]["before"], runs[st]["after"], strict=True))
        for name in sides:
            for key, what in (("seconds", "stage"), ("wall_s", "in-stage")):
                totals[name, key] += med(st, name, key)
                figures.append(record.figure(f"{label}, {name} ({shas[name]}), {what}",
                                             round(med(st, name, key), 2), "s"))
    for key, what in (("seconds", "stage"), ("wall_s", "in-stage")):
        for name in sides:
            figures.append(record.figure(f"all {len(stages)} eval stages, {name}, {what}",
                                         round(totals[name, key], 1), "s"))
        figures.append(record.figure(f"all {len(stages)} eval stages, after / before, {what}",
                                     round(totals["after", key] / totals["before", key], 2),
                                     "x"))
    for line in figures:
        print(f"  {line['label']}: {line['value']} {line['unit']}")
    differ = [label for label, ok in same.items() if not ok]
    notes = (f"Before: the code of {shas['before']}; after: {shas['after']}; each run as "
             "`python -m stages.eval` from its own export of stages/ and params.yaml, with "
             "this checkout's models/ and data/. Torch threads: "
             f"{args.threads or 'the stages default (2)'}. {args.repeats} rounds, the sides "
             "alternating, medians. Stage seconds are the whole process; in-stage seconds "
             "are the cost file's wall_s (generation and judging). Same replies on both "
             f"sides: {'every suite' if not differ else 'not in ' + ', '.join(differ)}.")
    record.write("eval_bench", "Eval stages' wall time: before and after", figures, notes,
                 args.json)


if __name__ == "__main__":
    main()
