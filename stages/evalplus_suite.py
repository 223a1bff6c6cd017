"""HumanEval+ and MBPP+ with evalplus's data, ground truth and comparison rules, every
sample executed in our sandbox rather than in evalplus's guard.

evalplus 0.3.1 facts this relies on: the dataset override paths are read from the
environment when evalplus is imported (so they are set here on its modules directly); a plain .jsonl gives the md5 that public
runs report; the expected outputs come from running the canonical solutions (evalplus caches
them under ~/.cache/evalplus); `evaluate` does not sanitize, so neither does `score_samples`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from stages.execute import SandboxPool, run_program
from stages.io import DataError, MissingInput

DATASETS = {"humaneval+": ("humaneval", "HUMANEVAL_OVERRIDE_PATH"),
            "mbpp+": ("mbpp", "MBPP_OVERRIDE_PATH")}
# evalplus's own memory cap for a sample (reliability_guard); ours matches it so a sample
# that fits under evalplus fits here too.
MEMORY_BYTES = 4 << 30
# What the harness imports, loaded once by a warm sandbox's server (SandboxPool) so that each
# forked child starts with them.
PRELOAD = ("contextlib", "json", "pickle", "evalplus.eval", "evalplus.eval.utils")

HARNESS = r"""
import contextlib, json, pickle, sys
import evalplus.eval as ev
from evalplus.eval.utils import TimeoutException

class Box:
    def __init__(self, value):
        self.value = value

# One split per process: evalplus's reliability_guard disables os functions for good.
job = pickle.load(open(WORK + "/job.pkl", "rb"))

# Why a split fails, without touching how evalplus decides that it does: unsafe_execute runs
# the solution's definition, then each call, inside swallow_io, so an exception leaving block
# k (0: the definition, i + 1: the call on input i) is what the solution raised there. It is
# noted and passes on unchanged; the solution's own frames and recursion depth are as before.
raised, blocks, evalplus_swallow_io = {}, [0], ev.swallow_io

@contextlib.contextmanager
def observed_io():
    block = blocks[0]
    blocks[0] += 1
    with evalplus_swallow_io():
        try:
            yield
        except BaseException as err:
            if isinstance(err, TimeoutException):  # evalplus's per-input time limit
                raised[block] = "timeout"
            elif block == 0 and isinstance(err, KeyError) and err.args == (job["entry_point"],):
                raised[block] = "runtime_error:NameError"  # no such function, as a call says
            else:
                raised[block] = "runtime_error:" + type(err).__name__
            raise

ev.swallow_io = observed_io
stat, progress = Box(ev._UNKNOWN), Box(0)
details = [False] * len(job["inputs"])
ev.unsafe_execute(job["dataset"], job["entry_point"], job["code"], job["inputs"],
                  job["expected"], job["time_limits"], job["atol"], True,
                  stat, details, progress)
status = ev._mapping[stat.value] or "timeout"
done = details[: progress.value]
if status == ev.PASS and (len(done) != len(details) or not all(done)):
    status = ev.FAIL
# With fast_check evalplus stops at the first failing input i, leaving progress at i + 1, or
# at 0 when the definition fails: the failing block is progress. No exception there means the
# call returned and the comparison with the expected output failed.
failure = None
if status != ev.PASS:
    failure = raised.get(progress.value, "wrong_answer")
    if progress.value == 0:
        try:
            compile(job["code"], "solution.py", "exec")
        except (SyntaxError, ValueError):
            failure = "syntax_error"
print("RESULT " + NONCE + " " + json.dumps({"status": status, "failure": failure}), flush=True)
"""


@dataclass(frozen=True)
class Benchmark:
    name: str
    problems: dict
    expected: dict
    md5: str


def load_benchmark(name: str, path: str | None) -> Benchmark:
    """Problems and expected outputs of humaneval+ or mbpp+, from `path` when given, else
    evalplus's download (which needs network)."""
    if name not in DATASETS:
        raise DataError(f"unknown benchmark {name!r}; use one of {sorted(DATASETS)}")
    flavour, env = DATASETS[name]
    if path:
        path = str(Path(path).resolve())
        if not Path(path).exists():
            raise MissingInput(f"{name} file {path} does not exist; fix benchmarks.* ")
        os.environ[env] = path  # for an evalplus imported later, and for child processes
    import evalplus.data.humaneval
    import evalplus.data.mbpp
    from evalplus.data import (
        get_human_eval_plus,
        get_human_eval_plus_hash,
        get_mbpp_plus,
        get_mbpp_plus_hash,
    )
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.evaluate import get_groundtruth

    # evalplus copies the variable into a module global when first imported; set that too,
    # so the path given here wins even if evalplus was imported before.
    module = evalplus.data.humaneval if flavour == "humaneval" else evalplus.data.mbpp
    setattr(module, env, path or None)
    try:
        if flavour == "humaneval":
            problems, md5 = get_human_eval_plus(), get_human_eval_plus_hash()
        else:
            problems, md5 = get_mbpp_plus(), get_mbpp_plus_hash()
    except Exception as err:  # evalplus downloads over the network when no file is given
        raise RuntimeError(
            f"cannot get {name} from evalplus ({type(err).__name__}: {err}); without network, "
            f"point -S benchmarks.{name.replace('+', 'plus')}"
            "=FILE at a local evalplus .jsonl"
        ) from None
    if path:
        md5 = hashlib.md5(Path(path).read_bytes()).hexdigest()
    not_none = MBPP_OUTPUT_NOT_NONE_TASKS if flavour == "mbpp" else []
    return Benchmark(name, problems, get_groundtruth(problems, md5, not_none), md5)


def time_limits(ref_times: list[float]) -> list[float]:
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT

    return [max(DEFAULT_MIN_TIME_LIMIT, DEFAULT_GT_TIME_LIMIT_FACTOR * t) for t in ref_times]


def sandbox_pool(workers: int, unsafe: bool) -> SandboxPool:
    """Warm sandboxes for check(), with evalplus's evaluation code loaded."""
    return SandboxPool(workers, sandbox=not unsafe, preload=PRELOAD)


def check(bench: Benchmark, task_id: str, code: str, unsafe: bool,
          pool: SandboxPool | None = None) -> dict[str, str | None]:
    """{"base": status, "plus": status, "failure": kind} for one solution, statuses as evalplus
    names them (pass, fail, timeout). The kind says why the first failing split failed, at
    its first failing input: syntax_error, runtime_error:<Type>, wrong_answer, timeout (the
    per-input limit or the whole split's), crashed (ended without a verdict); None when
    both pass. It never changes a status. With a `pool` (sandbox_pool) each split runs in a
    child forked in one of its warm sandboxes, else in a sandbox of its own."""
    problem, expected = bench.problems[task_id], bench.expected[task_id]
    out, failures = {}, []
    for split in ("base", "plus"):
        limits = time_limits(expected[f"{split}_time"])
        job = {"dataset": DATASETS[bench.name][0], "entry_point": problem["entry_point"],
               "code": code, "atol": problem["atol"], "inputs": problem[f"{split}_input"],
               "expected": expected[split], "time_limits": limits}
        # evalplus's own budget: the per-input limits, at most 60 s, plus process overhead.
        files = {"job.pkl": pickle.dumps(job)}
        timeout_s = min(60.0, sum(limits)) + 10
        env = {"EVALPLUS_MAX_MEMORY_BYTES": str(MEMORY_BYTES)}
        if pool is not None:
            result = pool.run(HARNESS, files, timeout_s, MEMORY_BYTES, env)
        else:
            result = run_program(HARNESS, files, timeout_s, MEMORY_BYTES, sandbox=not unsafe,
                                 env=env)
        if result.payload is None:
            out[split] = "timeout" if result.timed_out else "fail"
            failures.append("timeout" if result.timed_out else "crashed")
        else:
            out[split] = result.payload["status"]
            failures.append(result.payload["failure"])
    out["failure"] = next((f for f in failures if f is not None), None)
    return out
