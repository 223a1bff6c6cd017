"""humaneval+ and mbpp+: evalplus's data, prompt wording, sanitize and comparison rules;
every sample scored on the base and the plus tests in the sandbox with evalplus's expected
outputs (stages/suites/evalplus_harness.py). A task passes when both splits pass.

Probes: the tasks of benchmarks.humanevalplus / benchmarks.mbppplus (a local evalplus .jsonl;
null: evalplus's download), id = the task_id.
"""

from __future__ import annotations

from stages.config import EvalStage
from stages.sandbox.execute import SandboxPool, require_sandbox
from stages.suites import all_replies, leakage, unique_ids
from stages.suites.code import code_quality, failure_shares, pass_metrics, per_task
from stages.suites.evalplus_harness import check, load_benchmark, sandbox_pool

JUDGED = "pass@1"
SAMPLED = True  # eval.samples replies per task when sampling
# The instruction evalplus uses for chat models, then the task's prompt in a code fence.
INSTRUCTION = ("Please provide a self-contained Python script that solves the following "
               "problem in a markdown code block:")


def benchmark(cfg: EvalStage, name: str):
    path = cfg.benchmarks.humanevalplus if name == "humaneval+" else cfg.benchmarks.mbppplus
    return load_benchmark(name, path, cfg.eval.limit or None)


def probes(cfg: EvalStage, name: str) -> list[dict]:
    bench = benchmark(cfg, name)
    task_ids = list(bench.problems)  # the first eval.limit of them when it is set
    return unique_ids([{"id": t, "suite": name, "prompt": bench.problems[t]["prompt"],
                        "entry_point": bench.problems[t]["entry_point"],
                        "reference": canonical(name, bench.problems[t])} for t in task_ids],
                      f"{name} tasks")


def canonical(name: str, problem: dict) -> str:
    """The whole reference program: HumanEval's canonical solution is the body that
    follows the prompt's signature and docstring; MBPP+'s is the program."""
    solution = problem["canonical_solution"]
    return problem["prompt"] + solution if name == "humaneval+" else solution


def reference(cfg: EvalStage, probe: dict) -> str:
    return probe["reference"]


def prompt(cfg: EvalStage, probe: dict) -> str:
    return f"{INSTRUCTION}\n```python\n{probe['prompt'].strip()}\n```"


def judge(cfg: EvalStage, probes: list[dict], replies: list[list[str]]) -> list[dict]:
    from evalplus.sanitize import sanitize  # imported late: evalplus reads env at import

    if not probes:
        return []
    bench = benchmark(cfg, probes[0]["suite"])
    codes = [[sanitize(r, p["entry_point"]).strip() or None for r in rs]
             for rs, p in zip(replies, probes, strict=True)]
    sandbox = require_sandbox(cfg.unsafe_execution)
    no_code = {"base": "no_code", "plus": "no_code", "failure": "no_code"}

    def status(job: tuple[str, str | None]) -> dict:
        task_id, code = job
        return no_code if code is None else check(bench, task_id, code, not sandbox, boxes)

    # warm sandboxes with evalplus loaded: one fork per split instead of a fresh interpreter
    with sandbox_pool(SandboxPool.per_core(), not sandbox) as boxes:
        done = iter(boxes.map(status, [(p["id"], c) for p, cs in zip(probes, codes, strict=True)
                                        for c in cs], desc=f"{bench.name}: tests"))
    statuses = [[next(done) for _ in cs] for cs in codes]
    rows = []
    for probe, cs, ss in zip(probes, codes, statuses, strict=True):
        ok = [s["base"] == "pass" and s["plus"] == "pass" for s in ss]
        rows.append({"id": probe["id"], "suite": probe["suite"], "passed": per_task(cfg, sum(ok)),
                     "correct": sum(ok),
                     "base_correct": sum(s["base"] == "pass" for s in ss),
                     "base_status": ss[0]["base"], "plus_status": ss[0]["plus"],
                     "failure": ss[0]["failure"], "detail": ss[0]["failure"] or "passed",
                     "failures": [s["failure"] for s in ss], "codes": cs})
    return rows


def aggregate(cfg: EvalStage, rows: list[dict]) -> dict:
    import evalplus

    bench = benchmark(cfg, rows[0]["suite"])
    return {
        **pass_metrics(cfg, [r["correct"] for r in rows]),
        "pass@1_base": pass_metrics(cfg, [r["base_correct"] for r in rows])["pass@1"],
        "passed": sum(r["correct"] == cfg.eval.samples for r in rows), "tasks": len(rows),
        **failure_shares([k for r in rows for k in r["failures"]]),
        **code_quality([c for r in rows for c in r["codes"]]),
        "identity_leakage": leakage(cfg, all_replies(rows)),
        "dataset_md5": bench.md5,
        "evalplus_version": evalplus.__version__,
    }
