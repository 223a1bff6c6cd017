"""code: the built-in mini code tasks. The first fenced code block of each reply runs with the
task's asserts in the sandbox; pass@1 (and pass@n when sampling).

Probes: data/curated/probes/code.jsonl {"id", "prompt", "entry_point", "solution", "tests"}.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from stages.config import EvalStage
from stages.generation.common import extract_code
from stages.sandbox.execute import run_many
from stages.stats.paired import pass_at_k
from stages.suites import all_replies, leakage, probe_dir, read_probes

JUDGED = "pass@1"
SAMPLED = True  # eval.samples replies per task when sampling
# Why a code sample failed, for every suite that runs code: no code in the reply, code that
# does not compile, an exception (by type), a wrong value, a time limit, no verdict at all,
# or (BigCodeBench only, whose tests share the sample's process) code that reaches into the
# test harness.
FAILURE_KINDS = ("no_code", "syntax_error", "runtime_error", "wrong_answer", "timeout", "crashed",
                 "forbidden")


def probes(cfg: EvalStage, name: str) -> list[dict]:
    return read_probes(probe_dir(cfg) / "code.jsonl", cfg.eval.limit)


def prompt(cfg: EvalStage, probe: dict) -> str:
    return probe["prompt"]


def judge(cfg: EvalStage, probes: list[dict], replies: list[list[str]]) -> list[dict]:
    codes = [[extract_code(r) for r in rs] for rs in replies]
    runnable = [(c, p["tests"]) for cs, p in zip(codes, probes, strict=True) for c in cs
                if c is not None]
    outcomes = iter(run_many(runnable, cfg.eval.timeout_s, "eval: running tests",
                             cfg.unsafe_execution))
    rows = []
    for probe, cs in zip(probes, codes, strict=True):
        statuses = [next(outcomes).status if c is not None else "no_code" for c in cs]
        correct = statuses.count("passed")
        rows.append({"id": probe["id"], "passed": per_task(cfg, correct), "correct": correct,
                     "detail": statuses[0], "statuses": statuses, "codes": cs})
    return rows


def reference(cfg: EvalStage, probe: dict) -> str:
    return probe["solution"]


def aggregate(cfg: EvalStage, rows: list[dict]) -> dict:
    kinds = [None if s == "passed" else s for r in rows for s in r["statuses"]]
    return {**pass_metrics(cfg, [r["correct"] for r in rows]),
            "passed": sum(r["correct"] == cfg.eval.samples for r in rows), "tasks": len(rows),
            **failure_shares(kinds), **code_quality([c for r in rows for c in r["codes"]]),
            "identity_leakage": leakage(cfg, all_replies(rows))}


def pass_metrics(cfg: EvalStage, correct: list[int]) -> dict:
    """pass@1 (and pass@n when sampling) by the unbiased estimator, averaged over tasks."""
    n = cfg.eval.samples
    out = {"pass@1": round(sum(pass_at_k(n, c, 1) for c in correct) / len(correct), 4)}
    if n > 1:
        out[f"pass@{n}"] = round(sum(pass_at_k(n, c, n) for c in correct) / len(correct), 4)
    return out


def per_task(cfg: EvalStage, correct: int) -> bool | float:
    """The per-task outcome summary pairs on: pass/fail when greedy, c/n when sampling."""
    return correct == 1 if cfg.eval.samples == 1 else round(correct / cfg.eval.samples, 4)


def failure_shares(kinds: list[str | None]) -> dict[str, float]:
    """Share of all samples per failure kind, None being a pass: fail_<kind> for every kind
    (they sum to 1 - the share passed), then fail_runtime_error:<Type> for each exception type
    that occurred (they sum to fail_runtime_error). 4 samples [None, "wrong_answer",
    "runtime_error:ZeroDivisionError", "runtime_error:KeyError"] give fail_wrong_answer 0.25,
    fail_runtime_error 0.5 and 0.25 for each type."""
    n = len(kinds)
    shares = {f"fail_{kind}": sum(k is not None and k.split(":")[0] == kind for k in kinds) / n
              for kind in FAILURE_KINDS}
    for kind in sorted({k for k in kinds if k is not None and k.startswith("runtime_error:")}):
        shares[f"fail_{kind}"] = kinds.count(kind) / n
    return {k: round(v, 4) for k, v in shares.items()}


def code_quality(codes: list[str | None]) -> dict:
    """Share of replies with code that parses, mean cyclomatic complexity of that code
    (radon), and bandit security findings per 100 replies. Both tools only parse the code."""
    from radon.complexity import cc_visit

    valid = []
    for code in codes:
        try:
            if code is not None:
                ast.parse(code)
                valid.append(code)
        except (SyntaxError, ValueError):
            pass
    blocks = [b.complexity for code in valid for b in cc_visit(code)]
    return {
        "syntax_valid": round(len(valid) / len(codes), 4) if codes else 0.0,
        "complexity_mean": round(sum(blocks) / len(blocks), 3) if blocks else 0.0,
        "bandit_per_100": round(100 * bandit_findings(valid) / len(codes), 2) if codes else 0.0,
    }


def bandit_findings(codes: list[str]) -> int:
    if not codes:
        return 0
    with tempfile.TemporaryDirectory(prefix="stages-bandit-") as tmp:
        for i, code in enumerate(codes):
            Path(tmp, f"sample_{i}.py").write_text(code, encoding="utf-8")
        out = subprocess.run([sys.executable, "-m", "bandit", "-q", "-f", "json", "-r", tmp],
                             capture_output=True, text=True, timeout=600)
    try:
        return len(json.loads(out.stdout)["results"])
    except (json.JSONDecodeError, KeyError):
        raise RuntimeError(f"bandit failed: {out.stderr.strip()[-500:]}") from None
