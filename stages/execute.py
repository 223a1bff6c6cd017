"""Run untrusted Python (model-written code, injected defects) against asserts, out of process.

Each program runs in a fresh `python -I` child in a throwaway directory, with limits on
memory, CPU time, file size and processes, and a wall-clock timeout enforced from this side.
The child proves it reached the end of the tests by printing a nonce it read from stdin
before the untrusted code ran, so code that exits early with status 0 does not pass.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

MEMORY_BYTES = 1 << 30
FILE_BYTES = 1 << 20

HARNESS = r"""
import sys
nonce = sys.stdin.readline().strip()
sys.stdin.close()
code = open("solution.py", encoding="utf-8").read()
tests = open("tests.py", encoding="utf-8").read().split("\n#--test--\n")
try:
    compiled = compile(code, "solution.py", "exec")
except SyntaxError:
    print("STATUS syntax_error", flush=True)
    sys.exit(3)
env = {"__name__": "__solution__"}
try:
    exec(compiled, env)
    for test in tests:
        exec(test, env)
except AssertionError:
    print("STATUS wrong_answer", flush=True)
    sys.exit(1)
except BaseException as err:
    print("STATUS runtime_error " + type(err).__name__, flush=True)
    sys.exit(2)
print("PASSED " + nonce, flush=True)
"""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str
    """passed, wrong_answer, syntax_error, runtime_error:<Type>, timeout, crashed"""


def _limits() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()  # its own process group, so a timeout kills everything it started


def run_tests(code: str, tests: list[str], timeout_s: float) -> Outcome:
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="stages-exec-") as work:
        with open(os.path.join(work, "solution.py"), "w", encoding="utf-8") as f:
            f.write(code)
        with open(os.path.join(work, "tests.py"), "w", encoding="utf-8") as f:
            f.write("\n#--test--\n".join(tests))
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", HARNESS],
            cwd=work,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
            preexec_fn=_limits,
        )
        try:
            out, _ = proc.communicate((nonce + "\n").encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Outcome(False, "timeout")
        finally:
            _kill_group(proc)
    text = out.decode("utf-8", "replace")
    if f"PASSED {nonce}" in text.splitlines():
        return Outcome(True, "passed")
    for line in text.splitlines():
        if line.startswith("STATUS "):
            return Outcome(False, line[7:].replace(" ", ":"))
    return Outcome(False, "crashed")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_many(jobs: list[tuple[str, list[str]]], timeout_s: float, desc: str) -> list[Outcome]:
    """run_tests over (code, tests) pairs, one child per core at a time, in input order."""
    workers = max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_tests, code, tests, timeout_s) for code, tests in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, unit="task", leave=False)]
