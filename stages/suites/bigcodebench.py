"""BigCodeBench: function-level tasks that call real libraries, judged by each task's own
unittest TestCases, every sample run in our bubblewrap sandbox (stages/execute.py).

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from stages.execute import require_sandbox, run_program
from stages.io import DataError, MissingInput, read_jsonl_lines
from stages.suites import unique_ids
from stages.suites.code import failure_shares

NAMES = ("bigcodebench-complete", "bigcodebench-instruct", "bigcodebench-complete-hard",
         "bigcodebench-instruct-hard")
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
HARNESS = r"""
import contextlib, io, json, os, tempfile, time, types, unittest
job = json.load(open("work/job.json", encoding="utf-8"))
# What bigcodebench's reliability_guard sets before a task runs.
os.environ.update(TZ="UTC", OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3",
                  TF_ENABLE_ONEDNN_OPTS="0", MPLBACKEND="Agg")
time.tzset()
os.chdir(tempfile.mkdtemp())
def report(status, failure=None, detail=""):
    print("RESULT " + NONCE + " " + json.dumps({"status": status, "failure": failure,
                                                "detail": detail[-2000:]}), flush=True)
    os._exit(0)
try:
    compiled = compile(job["code"] + "\n" + job["test"], "__test__.py", "exec")
except (SyntaxError, ValueError) as err:
    report("fail", "syntax_error", repr(err))
module = types.ModuleType("__test__")
module.__dict__.update({"__file__": "__test__.py", "__package__": None})
import sys
sys.modules["__test__"] = module
class Result(unittest.TestResult):
    kinds = []
    def addError(self, test, err):
        super().addError(test, err)
        self.kinds.append(err[0].__name__)
sink = io.StringIO()
try:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        exec(compiled, module.__dict__)
        cases = unittest.TestLoader().loadTestsFromTestCase(module.__dict__["TestCases"])
        result = Result()
        cases.run(result)
except BaseException as err:
    report("fail", "runtime_error:" + type(err).__name__, repr(err))
if result.errors:
    test, trace = result.errors[0]
    report("fail", "runtime_error:" + result.kinds[0],
           "; ".join(t.id().split(".")[-1] for t, _ in result.errors + result.failures) + "\n" + trace)
if result.failures:
    report("fail", "wrong_answer",
           "; ".join(t.id().split(".")[-1] for t, _ in result.failures) + "\n" + result.failures[0][1])
if result.testsRun == 0:
    report("fail", "wrong_answer", "no test ran")
report("pass")
"""


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
    """Each (code, task) in its own sandbox, two at a time; None: no code in the reply."""
    sandbox = require_sandbox(cfg.unsafe_execution)

    def one(job):
        if job is None:
            return {"status": "fail", "failure": "no_code", "detail": "no code in the reply"}
        return run_one(job[0], job[1], cfg.eval.bigcodebench_timeout_s, sandbox)

    with ThreadPoolExecutor(2) as pool:
        return list(tqdm(pool.map(one, jobs), total=len(jobs), desc="bigcodebench: tests",
                         unit="task", leave=False))


def run_one(code: str, task: dict, timeout_s: float, sandbox: bool = True) -> dict:
    job = {"code": code, "test": task["test"]}
    result = run_program(HARNESS, {"job.json": json.dumps(job).encode()}, timeout_s=timeout_s,
                         memory_bytes=MEMORY_BYTES, sandbox=sandbox)
    if result.payload is None:
        kind = "timeout" if result.timed_out else "crashed"
        return {"status": "timeout" if result.timed_out else "fail", "failure": kind,
                "detail": "no verdict" if not result.timed_out else f"over {timeout_s} s"}
    return result.payload


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
