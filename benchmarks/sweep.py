"""A parameter sweep as README.md shows it: one `dvc exp run` per value in a fresh clone, then
each experiment's swept value and judged scores with their verdicts, from `dvc exp show --json`.

    python -m benchmarks.sweep sft.lora.r=8,16,32
    python -m benchmarks.sweep sft.lora.r=8,16,32 -S eval.limit=3      # with fixed overrides
    python -m benchmarks.sweep sft.lora.r=8,16,32 --from-json exps.json  # a sweep run by hand

Clones the committed HEAD into a temporary directory (no DVC cache, so the first run also
builds base and curate; uncommitted changes are not in the clone) and runs
`dvc exp run -S KEY=VALUE` for each value, one after another (each trains on every core, as
`dvc queue start -j 1` runs a queue), then reads `dvc exp show --json` there. With
--from-json it reads that output instead, from a sweep you ran yourself (`dvc exp run -S
'KEY=V1,V2' --queue; dvc queue start -j 1`, then `dvc exp show --json > exps.json`).

The record (benchmarks/results/sweep.json; --json PATH: elsewhere) names the baseline commit
the experiments branch from, as its `commit`, and holds one row per experiment and one for the
baseline's committed metrics (not rerun): the swept value and, per --metrics, the --variant's
value and verdict from metrics/summary.json. benchmarks/figures.py renders it into
README.md's sweep table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks import record

METRICS = "code.pass@1,identity.consistency,knowledge.accuracy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="KEY=V1,V2,...: one experiment per value")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override every experiment gets (repeatable)")
    parser.add_argument("--metrics", default=METRICS,
                        help=f"SUITE.METRIC columns, comma-separated (default {METRICS})")
    parser.add_argument("--variant", default="sft", help="whose scores the table shows")
    parser.add_argument("--from-json", type=Path,
                        help="read this `dvc exp show --json` output instead of running")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its logs")
    parser.add_argument("--json", type=Path, help="where to write the result record")
    args = parser.parse_args()
    key, _, values = args.sweep.partition("=")
    if not key or not values:
        parser.error(f"sweep must be KEY=V1,V2,... (got {args.sweep!r})")
    metrics = args.metrics.split(",")

    if args.from_json:
        shown = json.loads(args.from_json.read_text(encoding="utf-8"))
        how = f"read from `dvc exp show --json` ({args.from_json})"
    else:
        shown = run_sweep(key, values.split(","), args.set, args.keep)
        how = ("a fresh clone with no DVC cache, one `dvc exp run` per value, one after "
               "another")
    table = sweep_table(shown, key, metrics, args.variant)
    for row in table["rows"]:
        print(row["experiment"], row["value"], row.get("error") or row["cells"])
    figures = [record.figure(f"{row['experiment']} ({key}={row['value']}): {m} {args.variant}",
                             cell["value"] if cell["value"] is not None else "missing",
                             cell["verdict"] or "")
               for row in table["rows"] if not row.get("error")
               for m, cell in row["cells"].items()]
    overrides = "".join(f" -S {o}" for o in args.set)
    notes = (f"{key} over {values}{overrides}; {how}. The baseline row is the commit's "
             "committed metrics, not rerun. Each figure's unit is its verdict.")
    record.write("sweep", f"Sweep of {key}", figures, notes, args.json,
                 extra={"sweep": table}, state=(table["baseline"], []))


def run_sweep(key: str, values: list[str], overrides: list[str], keep: bool) -> list[dict]:
    work, clone = record.scratch_clone("sweep")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for value in values:
        argv = ["dvc", "exp", "run", "-S", f"{key}={value}",
                *[a for o in overrides for a in ("-S", o)]]
        print(" ".join(argv), flush=True)
        log = work / f"{key}={value}.log"
        with log.open("w") as out:
            done = subprocess.run(argv, cwd=clone, stdout=out, stderr=subprocess.STDOUT, env=env)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({done.returncode}); the end of {log}:\n"
                     + "\n".join(log.read_text().splitlines()[-30:]))
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=clone, check=True,
                           capture_output=True, text=True, env=env).stdout
    if keep:
        print(f"clone and logs kept in {work}")
    else:
        shutil.rmtree(work)
    return json.loads(shown)


def sweep_table(shown: list[dict], key: str, metrics: list[str], variant: str) -> dict:
    """`dvc exp show --json` (a list of baselines, each {rev, name, data, error, experiments:
    [{name, revs: [{rev, name, data, error}]}]}) as {"key", "variant", "metrics",
    "baseline": the baseline's sha, "rows": [{"experiment", "rev", "value", "cells":
    {metric: {"value", "verdict"}}} or with "error"]}. The workspace entry is left out: after
    a sweep it repeats the last experiment."""
    baselines = [b for b in shown if b.get("rev") != "workspace"]
    if len(baselines) != 1:
        raise ValueError(f"expected one baseline commit in `dvc exp show --json`, found "
                         f"{len(baselines)}; run it without --all-commits/--rev")
    base = baselines[0]
    rows = [row(base, f"baseline {base.get('name') or base['rev'][:7]} (committed)", key,
                metrics, variant)]
    for exp in base.get("experiments") or []:
        for state in exp.get("revs") or []:
            rows.append(row(state, exp.get("name") or state.get("name") or state["rev"][:7],
                            key, metrics, variant))
    return {"key": key, "variant": variant, "metrics": metrics, "baseline": base["rev"],
            "rows": rows}


def row(state: dict, name: str, key: str, metrics: list[str], variant: str) -> dict:
    out = {"experiment": name, "rev": state["rev"]}
    if state.get("error") or not state.get("data"):
        return {**out, "value": None, "error": str((state.get("error") or {}).get("msg")
                                                   or state.get("error") or "no data")}
    params = state["data"]["params"]["params.yaml"]["data"]
    summary_path = f"{params['paths']['metrics']}/summary.json"
    summary = ((state["data"].get("metrics") or {}).get(summary_path) or {}).get("data") or {}
    value = params
    for part in key.split("."):
        value = value[part]
    cells = {}
    for metric in metrics:
        suite, _, name_ = metric.partition(".")
        entry = summary.get(suite, {}).get(name_, {})
        cells[metric] = {"value": entry.get(variant), "verdict": entry.get(f"{variant}_verdict")}
    return {**out, "value": value, "cells": cells}


if __name__ == "__main__":
    main()
