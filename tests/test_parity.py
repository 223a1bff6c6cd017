"""The three parity checks of benchmarks/ on a few tasks each, as tests: our scorer against
evalplus.evaluate, our lm-eval suites against lm_eval's CLI, and BigCodeBench's canonical
solutions through our judge. Deselected by default (pyproject.toml's addopts); run them with

    python -m pytest -m parity tests/test_parity.py

Each skips, saying why, without the shared datasets (../shared/datasets beside the repo, or
$BENCHMARK_DATASETS), the tool it compares against, the sandbox or the pipeline's models. The
full runs that write the records are the benchmarks themselves (benchmarks/entries.py)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from benchmarks import bigcodebench_canonical, lm_eval_vs_cli, score_vs_evalplus
from conftest import REPO

pytestmark = pytest.mark.parity
DATASETS = Path(os.environ.get("BENCHMARK_DATASETS", REPO.parent / "shared" / "datasets"))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared datasets; set BENCHMARK_DATASETS)")
    return path


def need_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")


def need_sandbox() -> None:
    from stages.sandbox.execute import sandbox_problem

    problem = sandbox_problem()
    if problem:
        pytest.skip(problem)


def test_our_scorer_agrees_with_evalplus_on_canonical_solutions(tmp_path):
    need_module("evalplus")
    need_sandbox()
    full = need(DATASETS / "humanevalplus" / "HumanEvalPlus-v0.1.10.jsonl")
    # The first 8 tasks: evalplus computes its ground truth for this subset in seconds.
    subset = tmp_path / "HumanEvalPlus-first8.jsonl"
    subset.write_text("".join(full.read_text().splitlines(keepends=True)[:8]))
    samples = tmp_path / "samples.jsonl"
    score_vs_evalplus.canonical_samples(subset, samples)
    args = argparse.Namespace(dataset="humaneval+", dataset_path=subset)
    # run_ours is the one call of our scorer (`stages.tools.judge --samples`).
    _, ours = score_vs_evalplus.run_ours(args, samples, tmp_path / "ours")
    _, theirs = score_vs_evalplus.run_evalplus(args, samples, tmp_path / "evalplus", None)
    assert len(ours) == 8
    assert score_vs_evalplus.compare(ours, theirs) == []


# Replies both scorers must fail, each in its own way: a wrong value, an exception, a syntax
# error and a reply that never returns (the time limit). Forgeries are not here: evalplus
# passes many of them, which is why ours differs (tests/test_forgery.py).
BROKEN = {1: "    return None\n", 2: "    raise ValueError('no')\n", 3: "    return (\n",
          4: "    while True:\n        pass\n"}


def test_both_scorers_fail_the_same_broken_replies(tmp_path):
    need_module("evalplus")
    need_sandbox()
    full = need(DATASETS / "humanevalplus" / "HumanEvalPlus-v0.1.10.jsonl")
    lines = full.read_text().splitlines(keepends=True)[:6]
    subset = tmp_path / "HumanEvalPlus-first6.jsonl"
    subset.write_text("".join(lines))
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as f:
        for i, line in enumerate(lines):
            task = json.loads(line)
            body = BROKEN.get(i, task["canonical_solution"])
            f.write(json.dumps({"task_id": task["task_id"], "solution": task["prompt"] + body})
                    + "\n")
    args = argparse.Namespace(dataset="humaneval+", dataset_path=subset)
    _, ours = score_vs_evalplus.run_ours(args, samples, tmp_path / "ours")
    _, theirs = score_vs_evalplus.run_evalplus(args, samples, tmp_path / "evalplus", None)
    broken = {json.loads(lines[i])["task_id"] for i in BROKEN}
    assert {t for t, (base, _) in ours.items() if base != "pass"} == broken
    assert score_vs_evalplus.compare(ours, theirs) == []


def test_our_lm_eval_suite_agrees_with_the_lm_eval_cli(tmp_path, monkeypatch):
    need_module("lm_eval")
    data = need(DATASETS / "benchmarks")
    need(data / "arc_challenge")
    for model in ("base", "sft"):
        if not (REPO / "models" / model).exists():
            pytest.skip(f"models/{model} is absent: dvc checkout (or dvc repro sft)")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    args = argparse.Namespace(data=data, limit=3, group_limit=None)
    cfg = lm_eval_vs_cli.config("arc_challenge", args)
    ours, _ = lm_eval_vs_cli.run_ours(cfg, "arc_challenge", "sft")
    cli, _ = lm_eval_vs_cli.run_cli(cfg, "arc_challenge", "sft", tmp_path)
    n, agree, same_doc, same_reply = lm_eval_vs_cli.compare("arc_challenge", ours, cli)
    assert n == 3 and agree == same_doc == same_reply == n


def test_bigcodebench_canonical_solutions_fail_only_where_the_record_says():
    need_sandbox()
    data = need(DATASETS / "benchmarks" / "bigcodebench" / "BigCodeBench.jsonl")
    from stages.suites.bigcodebench import load_tasks, missing_libs

    tasks = [t for t in load_tasks(data)[:8] if not missing_libs([t])]
    rec = json.loads((REPO / "benchmarks/results/bigcodebench_canonical.json").read_text())
    known = set(re.findall(r"^  (BigCodeBench/\d+): ", rec["notes"], re.M))
    outcomes = bigcodebench_canonical.judge(tasks, 60.0)
    failed = {t["task_id"] for t, o in zip(tasks, outcomes, strict=True) if o["status"] != "pass"}
    assert failed == known & {t["task_id"] for t in tasks}
