"""The evalplus harness: HumanEval+ and MBPP+ with evalplus's data, ground truth and
comparison rules, every sample executed in our sandbox (under evalplus's own guard there, by
the child's `evalplus` job: stages/sandbox/programs/child.py), its outputs compared here. The
humaneval+ and mbpp+ suites (stages/suites/evalplus.py) and `python -m stages.tools.judge
--samples` score with it.

evalplus 0.3.1 facts this relies on: the dataset override paths are read from the
environment when evalplus is imported (so they are set here on its modules directly); a plain .jsonl gives the md5 that public
runs report; the expected outputs come from running the canonical solutions (evalplus caches
them under ~/.cache/evalplus); `evaluate` does not sanitize, so neither does
stages.tools.judge's `score_samples`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from stages.core.io import DataError, MissingInput
from stages.sandbox import plain
from stages.sandbox.execute import OUT_OF_TIME, SampleFailed, SandboxPool, remote_session

DATASETS = {"humaneval+": ("humaneval", "HUMANEVAL_OVERRIDE_PATH"),
            "mbpp+": ("mbpp", "MBPP_OVERRIDE_PATH")}
# evalplus's own memory cap for a sample (reliability_guard); ours matches it so a sample
# that fits under evalplus fits here too.
MEMORY_BYTES = 4 << 30
# evalplus 0.3.1 checks HumanEval/32 (find_zero) by the polynomial's value and then skips
# the line that counts the input as done, so the split never has all its inputs done and
# fails whatever the sample returns (the canonical solution too); its verdict is kept.
NEVER_COUNTED = {("humaneval", "find_zero")}
# What an object that is not a plain value is on this side, for the MBPP tasks whose oracle
# asks only whether the output is None: not None, not a bool, equal to nothing else.
OPAQUE = object()
# What the child that runs a sample imports, loaded once by a warm sandbox's server
# (SandboxPool) so that each forked child starts with them.
PRELOAD = ("contextlib", "json", "evalplus.eval.utils", "numpy")


@dataclass(frozen=True)
class Benchmark:
    name: str
    problems: dict
    expected: dict
    md5: str


def load_benchmark(name: str, path: str | None, first: int | None = None) -> Benchmark:
    """Problems and expected outputs of humaneval+ or mbpp+, from `path` when given, else
    evalplus's download (which needs network); with `first`, only the first `first` tasks
    (eval.limit), whose expected outputs are all that is computed."""
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
    # Expected outputs come from running every canonical solution on every input (minutes
    # for mbpp+); evalplus caches them by the key given, so a subset gets a key of its own
    # and never stands in for the whole file.
    key = md5
    if first is not None and first < len(problems):
        problems = dict(list(problems.items())[:first])
        key = f"{md5}-first{first}"
    return Benchmark(name, problems, get_groundtruth(problems, key, not_none), md5)


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
    its first failing input: syntax_error, runtime_error:<Type>, wrong_answer (a value that
    differs, or is not a plain value), timeout (the per-input limit or the whole split's),
    crashed (ended without an answer); None when both pass. With a `pool` (sandbox_pool) each
    split runs in a child forked in one of its warm sandboxes, else in a sandbox of its own.

    As evalplus's unsafe_execute does, the sample is defined and called on each input in
    turn under its reliability_guard, swallow_io and per-input time_limit, in a child of its
    own per split; unlike it, the child only answers with each return value (sandbox/plain.py)
    and the comparison with the expected output (`matches`) is made here, so the sample
    never sees the expected outputs and cannot forge a verdict."""
    problem, expected = bench.problems[task_id], bench.expected[task_id]
    out, failures = {}, []
    for split in ("base", "plus"):
        out[split], failure = run_split(bench, problem, code, split, expected, unsafe, pool)
        failures.append(failure)
    out["failure"] = next((f for f in failures if f is not None), None)
    return out


def run_split(bench: Benchmark, problem: dict, code: str, split: str, expected: dict,
              unsafe: bool, pool: SandboxPool | None) -> tuple[str, str | None]:
    try:
        compile(code, "solution.py", "exec")
    except (SyntaxError, ValueError):
        return "fail", "syntax_error"
    dataset, entry_point = DATASETS[bench.name][0], problem["entry_point"]
    inputs, outputs = problem[f"{split}_input"], expected[split]
    limits = time_limits(expected[f"{split}_time"])
    requests = [[plain.encode(list(inp)), plain.encode({}), limit]
                for inp, limit in zip(inputs, limits, strict=True)]
    # evalplus's own budget: the per-input limits, at most 60 s, plus process overhead.
    timeout_s = min(60.0, sum(limits)) + 10
    job = {"code": code, "evalplus": True, "memory_bytes": MEMORY_BYTES}
    with remote_session(job, timeout_s, MEMORY_BYTES, not unsafe, pool) as remote:
        if remote.failure is not None:
            return verdict_of(remote.failure)
        if remote.defined.get(entry_point, {}).get("call") is not True:
            return "fail", "runtime_error:NameError"  # no such function, as a call says
        atol = problem["atol"]
        try:
            answers = remote.stream(entry_point, requests)
            for inp, exp, (kind, value) in zip(inputs, outputs, answers, strict=True):
                if kind == "opaque" and dataset == "mbpp" and \
                        entry_point in _evalplus_rules()[2].MBPP_OUTPUT_NOT_NONE_TASKS:
                    value = OPAQUE  # these tasks ask only whether it is None (a re.Match)
                elif kind != "value":
                    return verdict_of(value)
                ok, atol = matches(dataset, entry_point, inp, value, exp, atol)
                if not ok:
                    return "fail", "wrong_answer"
        except SampleFailed as err:
            return verdict_of(err)
    if (dataset, entry_point) in NEVER_COUNTED:
        return "fail", "wrong_answer"
    return "pass", None


def verdict_of(err: BaseException) -> tuple[str, str]:
    """(status, failure kind) of a split whose sample gave no value: evalplus says timeout
    only when the whole split ran out of time; its per-input limit is a fail."""
    if isinstance(err, SampleFailed):
        return ("timeout" if err.detail == OUT_OF_TIME else "fail"), err.kind
    return "fail", "runtime_error:" + type(err).__name__


def matches(dataset: str, entry_point: str, inp: list, out, exp, atol: float) -> tuple[bool, float]:
    """Whether `out` passes for input `inp` by evalplus 0.3.1's rules (unsafe_execute), and
    the atol for the next input: exact equality, else its special oracles (MBPP set
    equality, not-None tasks, three formula checks; HumanEval/32 find_zero by the
    polynomial's value), else for floats np.allclose with rtol 1e-7 and atol (1e-6 when the
    task's is 0 and the expected value is float: evalplus then keeps 1e-6 for the remaining
    inputs of the split, and so does this). Any exception in the comparison is a fail, as
    there. `out` is a plain value decoded here, so every == below is Python's own."""
    np, is_floats, oracles = _evalplus_rules()
    try:
        exact = out == exp
        if dataset == "mbpp":
            if entry_point == "are_equivalent":  # Mbpp/164: any answer
                exact = True
            elif entry_point == "sum_div":  # Mbpp/295
                exact = exact or out == 0
            elif entry_point == "surface_Area":  # Mbpp/581
                exact = exact or abs(out - oracles._surface_Area(*inp)) <= atol
            elif entry_point == "digit_distance_nums":  # Mbpp/558
                exact = exact or out == oracles._digit_distance_nums(*inp)
            elif entry_point in oracles.MBPP_OUTPUT_SET_EQ_TASKS:
                exact = set(out) == set(exp)
            elif entry_point in oracles.MBPP_OUTPUT_NOT_NONE_TASKS:
                exact = out == exp if isinstance(out, bool) else exp == (out is not None)
        if dataset == "humaneval" and entry_point == "find_zero":
            return bool(abs(oracles._poly(*inp, out)) <= atol), atol
        if atol == 0 and is_floats(exp):
            atol = 1e-6
        if not exact and atol != 0:
            ok = type(out) is type(exp) and (not isinstance(exp, (list, tuple))
                                             or len(out) == len(exp))
            return bool(ok and np.allclose(out, exp, rtol=1e-07, atol=atol)), atol
        return bool(exact), atol
    except Exception:
        return False, atol


@functools.cache
def _evalplus_rules():
    # Imported late (evalplus reads its environment at import), once.
    import numpy
    from evalplus.eval import _special_oracle, is_floats

    return numpy, is_floats, _special_oracle
