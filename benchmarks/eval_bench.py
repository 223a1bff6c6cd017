"""Eval stages' wall time: the same eval stages run by the code of an earlier commit and by
this checkout's HEAD, side by side, with the same models, probes and params.

    python -m benchmarks.eval_bench --before 3472e34 --repeats 3 --threads 1

Each side is `stages/`, `params.yaml` and `dvc.yaml` exported from its commit (`git archive`)
into a temporary directory that links this checkout's `models/` and `data/` (so `dvc repro
base curate` first), and every eval stage runs there with the command that side's dvc.yaml
gives it (`python -m stages.eval --variant V --suite S` before stages.warm, `python -m
stages.warm eval ...` after), one process each, the two sides alternating (order reversed
every other round, --repeats rounds). A round is what one `dvc repro` of the evals costs:
warm servers are stopped before it, so each round of a side that has them pays for starting
one. A stage's seconds are its whole process (imports, loading, generation, judging,
writing); the in-stage seconds are the `wall_s` its cost file records (generation and judging
alone). The totals are the median over rounds of a round's sum. Both sides must write the
same replies: the record says per suite whether they did. Variants sft and dpo need their
adapters (`dvc repro dpo`); --variants picks. Writes benchmarks/results/eval_bench.json
(--json PATH: elsewhere).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import yaml

from benchmarks import harness, record

REPO = Path(__file__).resolve().parent.parent
SUITES = ("code", "identity", "knowledge", "perplexity", "dimensions")


def export(ref: str, into: Path) -> str:
    """`stages/`, `params.yaml` and `dvc.yaml` of commit `ref` in `into`, this checkout's
    models/ and data/ linked; the commit's short sha."""
    sha = subprocess.run(["git", "rev-parse", "--short=10", ref], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    tar = subprocess.run(["git", "archive", sha, "stages", "params.yaml", "dvc.yaml"], cwd=REPO,
                         check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    for name in ("models", "data"):
        (into / name).symlink_to(REPO / name)
    return sha


def eval_command(side: Path, variant: str, suite: str) -> list[str]:
    """The eval stage's command as the side's dvc.yaml writes it, for one variant and suite."""
    cmd = yaml.safe_load((side / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["eval"]["cmd"]
    return shlex.split(cmd.replace("${item.variant}", variant).replace("${item.suite}", suite))


def stage_env(work: Path, threads: int | None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "STAGES_WARM_DIR": str(work)}  # this run's warm servers, and only them
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_eval(side: Path, variant: str, suite: str, env: dict) -> dict:
    began = time.perf_counter()
    done = subprocess.run(eval_command(side, variant, suite), cwd=side, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"eval {variant}/{suite} failed in {side}:\n{done.stderr[-3000:]}")
    if "stages.warm:" in done.stderr:  # it fell back to a process of its own: say so
        print(f"  {side.name} {variant}/{suite}: "
              f"{next(x for x in done.stderr.splitlines() if 'stages.warm:' in x)}")
    cost = json.loads((side / "metrics" / "cost" / variant / f"{suite}.json").read_text())[suite]
    rows = [json.loads(line) for line in
            (side / "metrics" / "tasks" / variant / f"{suite}.jsonl").read_text().splitlines()]
    return {"seconds": seconds, "wall_s": cost["wall_s"], "tokens_per_s": cost["tokens_per_s"],
            "replies": [r.get("reply") for r in rows]}


def stop_servers(env: dict) -> None:
    # a server unlinks its socket before it answers --stop: the next call starts a new one
    subprocess.run(["python", "-m", "stages.warm", "--stop"], cwd=REPO, env=env, check=True,
                   capture_output=True)


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
    env = stage_env(work, args.threads)
    for side, sha in shas.items():
        print(f"{side} ({sha}): {' '.join(eval_command(sides[side], 'V', 'S'))}")
    for r in range(args.repeats):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        stop_servers(env)
        for st in stages:
            for name in order:
                runs[st][name].append(run_eval(sides[name], *st, env))
                last = runs[st][name][-1]
                print(f"  round {r + 1}: {name} eval {st[0]}/{st[1]}: {last['seconds']:.1f} s "
                      f"(in-stage {last['wall_s']:.1f} s, {last['tokens_per_s']} tokens/s)",
                      flush=True)

    def med(st, name, key):
        return statistics.median(x[key] for x in runs[st][name])

    figures, same = [], {}
    for st in stages:
        label = f"eval@{st[0]}-{st[1]}"
        same[label] = all(x["replies"] == y["replies"]
                          for x, y in zip(runs[st]["before"], runs[st]["after"], strict=True))
        for name in sides:
            for key, what in (("seconds", "stage"), ("wall_s", "in-stage")):
                figures.append(record.figure(f"{label}, {name} ({shas[name]}), {what}",
                                             round(med(st, name, key), 2), "s"))
    totals = {(name, key): statistics.median(sum(runs[st][name][r][key] for st in stages)
                                             for r in range(args.repeats))
              for name in sides for key in ("seconds", "wall_s")}
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
             "its dvc.yaml's eval command from its own export of stages/, params.yaml and "
             "dvc.yaml, with this checkout's models/ and data/. Torch threads: "
             f"{args.threads or 'the stages default (2)'}. {args.repeats} rounds, the sides "
             "alternating, warm servers stopped before each round (each round pays for "
             "starting one); per-stage figures are medians over rounds, totals the median "
             "of a round's sum. Stage seconds are the whole process; in-stage seconds "
             "are the cost file's wall_s (generation and judging). Same replies on both "
             f"sides: {'every suite' if not differ else 'not in ' + ', '.join(differ)}.")
    record.write("eval_bench", "Eval stages' wall time: before and after", figures, notes,
                 args.json)


if __name__ == "__main__":
    main()
