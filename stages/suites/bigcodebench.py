"""BigCodeBench: function-level tasks that call real libraries, judged by each task's own
unittest TestCases, every sample run in our bubblewrap sandbox (stages/sandbox/execute.py).

Suites  bigcodebench-complete, bigcodebench-instruct (the full 1,140 tasks of
        benchmarks.bigcodebench), bigcodebench-complete-hard, bigcodebench-instruct-hard (the
        -Hard subset's file, benchmarks.bigcodebench_hard)
Reads   benchmarks.bigcodebench / bigcodebench_hard (BigCodeBench.jsonl: task_id,
        complete_prompt, instruct_prompt, canonical_solution, code_prompt, test,
        entry_point, libs), eval.limit, eval.bigcodebench_timeout_s, unsafe_execution
Gives   one row per task: {"id": task_id, "passed", "status" (pass / fail / timeout, as
        bigcodebench names them), "failure" (the kind, as for humaneval+), "detail" (the
        failing tests), "reply"}

As bigcodebench 0.2.5 does it: the prompt is its instruction ("Please provide a
self-contained Python script ...") with the task's complete_prompt in a code fence
(complete) or its instruct_prompt (instruct); the reply is sanitized (evalplus's sanitize,
from which bigcodebench's own is derived) and "calibrated" (the task's code_prompt and
`pass` put in front, so a reply that drops the imports still has them); the solution and the
task's test module are executed in one module, `TestCases` is run by unittest, and the
task passes when every test ran without a failure or an error inside the time limit.
bigcodebench's own runner is not used: its package requires vllm and pins a transformers
and numpy that would replace this project's, and its default execution posts the samples
to a remote service. Its tasks import about 70 third-party libraries: `pip install
'.[bigcodebench]'` installs them; tasks whose libraries are missing stop the suite with
their names, unless eval.bigcodebench_missing_libs is `skip`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from stages.config.suites import BIGCODEBENCH, names
from stages.core.io import DataError, MissingInput, read_jsonl_lines
from stages.sandbox.execute import SandboxPool, program_text, require_sandbox, run_program
from stages.suites import unique_ids
from stages.suites.code import failure_shares

NAMES = names(BIGCODEBENCH)
JUDGED = "pass@1"
FIELDS = ("task_id", "complete_prompt", "instruct_prompt", "canonical_solution", "code_prompt",
          "test", "entry_point", "libs")
INSTRUCTION = ("Please provide a self-contained Python script that solves the following "
               "problem in a markdown code block:")
# Address space per sample. bigcodebench's default cap is 30 GiB; 4 GiB (evalplus's) holds
# pandas, sklearn and matplotlib imported together, where the mini suite's 1 GiB does not,
# and two samples at a time stay within a 16 GiB machine.
MEMORY_BYTES = 4 << 30
# Import names of the task libraries that are not their PyPI names (for the error message).
PYPI_NAMES = {"sklearn": "scikit-learn", "bs4": "beautifulsoup4", "cv2": "opencv-python-headless",
              "PIL": "pillow", "dateutil": "python-dateutil", "skimage": "scikit-image",
              "Crypto": "pycryptodome", "docx": "python-docx", "flask_mail": "Flask-Mail",
              "flask_restful": "Flask-RESTful", "flask_login": "Flask-Login",
              "flask_wtf": "Flask-WTF", "Levenshtein": "python-Levenshtein", "yaml": "pyyaml",
              "mpl_toolkits": "matplotlib"}

# Runs work/job.json's solution with its task's tests in one module and reports the outcome.
HARNESS = program_text("programs/bigcodebench.py")


# BigCodeBench's tests are unittest classes that pass DataFrames, figures and mocks to and
# from the solution, so they cannot be split into plain values judged outside (as the other
# code suites are): the solution and its tests share one process, and the harness
# (stages/sandbox/programs/bigcodebench.py) reports the outcome next to a nonce. What guards
# that verdict: the host checks that the report names every test the task's TestCases
# defines (parsed here), and before a sample runs, `forgery_marks` rejects the constructs
# that reach the nonce or the runner from inside:
# frame and object introspection (sys._getframe, f_back, inspect.currentframe/stack, gc,
# __globals__, __subclasses__, ...), builtins patching, assigning to the attributes of the
# modules and classes the harness uses (unittest, sys, os, json, io, builtins, ...), an
# equality of its own (__eq__/__ne__), and exec/eval/compile of anything but a constant
# string (which is screened in turn). It is a deny-list over the code as written: code that
# assembles these names at run time (getattr with a computed string, a module imported by a
# computed name) gets past it, which the split suites do not depend on.
INTROSPECTION = frozenset({
    "_getframe", "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame",
    "gi_frame", "cr_frame", "ag_frame", "currentframe", "getouterframes", "getinnerframes",
    "getframeinfo", "get_objects", "get_referrers", "get_referents", "settrace", "setprofile",
    "__globals__", "__code__", "__closure__", "__subclasses__", "__builtins__", "__mro__",
    "__bases__", "f_trace"})
INSPECT_FRAMES = frozenset({"stack", "trace", "currentframe", "getouterframes",
                            "getinnerframes", "getframeinfo"})
BANNED_MODULES = frozenset({"gc", "builtins", "__main__", "__builtin__"})
# Modules (and unittest's classes) whose attributes the harness relies on.
GUARDED = frozenset({"unittest", "sys", "os", "json", "io", "builtins", "contextlib", "types",
                     "traceback", "TestCase", "TestResult", "TestLoader", "TestSuite",
                     "TextTestRunner"})
OWN_EQUALITY = frozenset({"__eq__", "__ne__"})
DYNAMIC = frozenset({"exec", "eval", "compile", "__import__", "globals", "vars", "locals",
                     "breakpoint"})


def forgery_marks(code: str) -> list[str]:
    """What in `code` could reach the harness's nonce or its test runner from inside (see
    above); [] for code without any. Code that does not parse has none (it fails anyway)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    marks = []
    guarded = set(GUARDED)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in BANNED_MODULES:
                    marks.append(f"import {alias.name}")
                if top in GUARDED:
                    guarded.add(alias.asname or top)
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            if top in BANNED_MODULES:
                marks.append(f"from {node.module} import")
            for alias in node.names:
                if top == "inspect" and alias.name in INSPECT_FRAMES | INTROSPECTION:
                    marks.append(f"inspect.{alias.name}")
                if alias.name in INTROSPECTION or (top == "sys" and alias.name == "modules"):
                    marks.append(alias.name)
                if top in GUARDED or alias.name in GUARDED:
                    guarded.add(alias.asname or alias.name)
        elif isinstance(node, ast.Attribute):
            if node.attr in INTROSPECTION:
                marks.append(node.attr)
            if isinstance(node.value, ast.Name) and (
                    (node.value.id == "inspect" and node.attr in INSPECT_FRAMES)
                    or (node.value.id == "sys" and node.attr == "modules")):
                marks.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in INTROSPECTION:
            marks.append(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value in INTROSPECTION | BANNED_MODULES:
            marks.append(repr(node.value))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name in OWN_EQUALITY:
            marks.append(f"def {node.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in DYNAMIC:
                arg = node.args[0] if node.args else None
                if node.func.id in ("exec", "eval", "compile") and isinstance(arg, ast.Constant) \
                        and isinstance(arg.value, str):
                    marks += forgery_marks(arg.value)
                else:
                    marks.append(f"{node.func.id}()")
            elif node.func.id in ("setattr", "delattr") and node.args and \
                    _root(node.args[0]) in guarded:
                marks.append(f"{node.func.id}({_root(node.args[0])}, ...)")
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else
                   node.targets if isinstance(node, ast.Delete) else [])
        for target in targets:
            if isinstance(target, ast.Attribute) and _root(target) in guarded:
                marks.append(f"assigns {ast.unparse(target)}")
    return sorted(set(marks))


def _root(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def test_names(test: str) -> list[str]:
    """The test methods of the task's TestCases, as the harness reports them."""
    for node in ast.parse(test).body:
        if isinstance(node, ast.ClassDef) and node.name == "TestCases":
            return sorted(n.name for n in node.body
                          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                          and n.name.startswith("test"))
    return []


def probes(cfg, name: str) -> list[dict]:
    """The tasks of the suite's file, in file order, the first eval.limit of them; with
    eval.bigcodebench_missing_libs=skip, those whose libraries are not installed left out."""
    tasks = load_tasks(data_path(cfg, name))
    if cfg.eval.bigcodebench_missing_libs == "skip":
        tasks = [t for t in tasks if not missing_libs([t])]
    tasks = tasks[: cfg.eval.limit] if cfg.eval.limit else tasks
    split = "instruct" if "instruct" in name else "complete"
    return unique_ids([{"id": t["task_id"], "suite": name, "split": split, **t} for t in tasks],
                      f"{name} tasks")


def prompt(cfg, probe: dict) -> str:
    """bigcodebench's chat prompt: the instruction, then the task (complete: its code and
    docstring in a fence; instruct: its description in words)."""
    if probe["split"] == "complete":
        return f"{INSTRUCTION}\n```\n{probe['complete_prompt'].strip()}\n```\n"
    return f"{INSTRUCTION}\n{probe['instruct_prompt'].strip()}\n"


def judge(cfg, probes: list[dict], replies: list[list[str]]) -> list[dict]:
    """Sanitize, calibrate and run every reply against its task's tests in the sandbox;
    one row per task (replies[i][0] is the one judged; a task passes when it does)."""
    from evalplus.sanitize import sanitize

    require_libs(cfg, probes)
    codes = [sanitize(rs[0], p["entry_point"]).strip() or None
             for p, rs in zip(probes, replies, strict=True)]
    outcomes = run_all(cfg, [(calibrate(p, c), p) if c else None
                             for p, c in zip(probes, codes, strict=True)])
    return [{"id": p["id"], "suite": p["suite"], "passed": o["status"] == "pass", "status": o["status"],
             "failure": o["failure"], "detail": o["detail"], "reply": rs[0]}
            for p, rs, o in zip(probes, replies, outcomes, strict=True)]


def aggregate(cfg, rows: list[dict]) -> dict:
    """pass@1 (greedy: the share of tasks passed), failure shares as for humaneval+, and the
    data's md5."""
    n = len(rows)
    name = {r.get("suite") for r in rows}
    out = {"pass@1": round(sum(r["passed"] for r in rows) / n, 4), "tasks": n,
           **failure_shares([None if r["passed"] else r["failure"] for r in rows])}
    if len(name) == 1 and None not in name:
        out["dataset_md5"] = hashlib.md5(data_path(cfg, name.pop()).read_bytes()).hexdigest()
    return out


def calibrate(probe: dict, code: str) -> str:
    """bigcodebench's calibration: the task's code_prompt (its imports and signature) and
    `pass` before the solution, which then redefines the function."""
    return probe["code_prompt"] + "\n    pass\n" + code


def canonical(probe: dict) -> str:
    """The reference solution as bigcodebench checks its ground truth."""
    return probe["complete_prompt"] + "\n" + probe["canonical_solution"]


def run_all(cfg, jobs: list[tuple[str, dict] | None]) -> list[dict]:
    """Each (code, task) in a fresh sandbox of its own (run_program: the pool's warm ones stay
    unstarted, it only bounds how many run at once), two at a time; None: no code in the
    reply."""
    sandbox = require_sandbox(cfg.unsafe_execution)

    def one(job):
        if job is None:
            return {"status": "fail", "failure": "no_code", "detail": "no code in the reply"}
        return run_one(job[0], job[1], cfg.eval.bigcodebench_timeout_s, sandbox)

    with SandboxPool(2, sandbox) as pool:
        return pool.map(one, jobs, desc="bigcodebench: tests")


def run_one(code: str, task: dict, timeout_s: float, sandbox: bool = True) -> dict:
    """The verdict on `code` (calibrated) for `task`; a sample with forgery_marks fails
    (forbidden) without running, and a pass whose report misses one of the task's tests
    is no pass (crashed)."""
    marks = forgery_marks(code)
    if marks:
        return {"status": "fail", "failure": "forbidden",
                "detail": "reaches into the test harness: " + ", ".join(marks)}
    job = {"code": code, "test": task["test"]}
    result = run_program(HARNESS, {"job.json": json.dumps(job).encode()}, timeout_s=timeout_s,
                         memory_bytes=MEMORY_BYTES, sandbox=sandbox)
    if result.payload is None:
        kind = "timeout" if result.timed_out else "crashed"
        return {"status": "timeout" if result.timed_out else "fail", "failure": kind,
                "detail": "no verdict" if not result.timed_out else f"over {timeout_s} s"}
    out = {k: result.payload.get(k) for k in ("status", "failure", "detail")}
    missed = sorted(set(test_names(task["test"])) - set(result.payload.get("ran") or []))
    if out["status"] == "pass" and missed:
        return {"status": "fail", "failure": "crashed",
                "detail": f"reported a pass without running {missed}"}
    return out


def data_path(cfg, name: str) -> Path:
    key = "bigcodebench_hard" if name.endswith("-hard") else "bigcodebench"
    path = getattr(cfg.benchmarks, key)
    if path is None:
        raise DataError(f"suite {name} needs its data: set -S benchmarks.{key}=FILE (e.g. "
                         "../shared/datasets/benchmarks/bigcodebench/BigCodeBench.jsonl)")
    if not Path(path).is_file():
        raise MissingInput(f"benchmarks.{key}: {path} does not exist")
    return Path(path)


def load_tasks(path: Path) -> list[dict]:
    tasks, seen = [], set()
    for lineno, row in read_jsonl_lines(path):
        missing = [f for f in FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise DataError(f"{path}:{lineno}: missing {missing}; a BigCodeBench row has "
                            f"{list(FIELDS)}")
        if row["task_id"] in seen:
            raise DataError(f"{path}:{lineno}: task_id {row['task_id']} appears twice")
        seen.add(row["task_id"])
        libs = row["libs"]
        if isinstance(libs, str):  # v0.1.0 stores the list as its Python repr
            try:
                libs = ast.literal_eval(libs)
            except (ValueError, SyntaxError):
                raise DataError(f"{path}:{lineno}: libs {libs[:80]!r} is not a list") from None
        tasks.append({f: row[f] for f in FIELDS} | {"libs": libs})
    if not tasks:
        raise DataError(f"{path}: no tasks")
    return tasks


def missing_libs(tasks: list[dict]) -> dict[str, int]:
    """{third-party library: tasks that need it} for libraries this interpreter cannot
    import (the sandbox runs the same interpreter)."""
    out: dict[str, int] = {}
    for t in tasks:
        for lib in t["libs"]:
            if lib in sys.stdlib_module_names or lib_available(lib):
                continue
            out[lib] = out.get(lib, 0) + 1
    return out


def lib_available(lib: str) -> bool:
    try:
        return importlib.util.find_spec(lib) is not None
    except (ImportError, ValueError):
        return False


def require_libs(cfg, probes: list[dict]) -> None:
    missing = missing_libs(probes)
    if missing:
        listed = ", ".join(f"{PYPI_NAMES.get(k, k)} ({v} tasks)"
                           for k, v in sorted(missing.items(), key=lambda kv: -kv[1]))
        raise RuntimeError(
            f"BigCodeBench tasks need libraries that are not installed: {listed}. Install "
            "them with `pip install '.[bigcodebench]'`, or leave those tasks out with "
            "-S eval.bigcodebench_missing_libs=skip")
