"""Run untrusted Python (model-written code, injected defects) against asserts, in a sandbox.

Every program runs in its own bubblewrap sandbox (Debian package `bubblewrap`):
  - the whole file system read-only, a fresh tmpfs /tmp, and a throwaway work directory as
    the only writable place, deleted afterwards;
  - no network (its own empty network namespace), its own pid, ipc and uts namespaces, so
    it can neither reach nor signal any process outside;
  - as an unprivileged user (uid 65534 when the pipeline runs as root), so the process
    limit holds and no capability is left;
  - limits on address space, CPU time, file size and process count, and a wall-clock
    timeout enforced from this side, which kills the whole sandbox.
The program reports its verdict next to a nonce it read from stdin before the untrusted
code ran, so code that exits early with status 0, or prints a verdict, does not pass.

Where bubblewrap cannot start, execution is refused unless the caller opts into running
without a sandbox (`unsafe_execution: true`), which only isolates by process.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

MEMORY_BYTES = 1 << 30
FILE_BYTES = 1 << 20
PROCESSES = 64
NOBODY = 65534
SCRATCH_BYTES = 16 << 20  # the only writable space inside: a 16 MiB tmpfs at /tmp
SANDBOX_PYTHON = "/tmp/python"  # where the interpreter's prefix is mounted inside
SANDBOX_VENV = "/tmp/venv"  # the virtual environment, when there is one
SANDBOX_WORK = "/tmp/work"  # the program and its tests, read-only

# Prepended to every program: read the per-run nonce, then (as root) become `nobody`.
PRELUDE = r"""
import os, sys
NONCE = sys.stdin.readline().strip()
sys.stdin.close()
if DROP_PRIVILEGES and os.getuid() == 0:
    os.setgroups([]); os.setgid(NOBODY); os.setuid(NOBODY)
"""

# Runs work/solution.py, then each assert of work/tests.py, and reports the outcome.
TESTS_PROGRAM = r"""
import json
def report(status):
    print("RESULT " + NONCE + " " + json.dumps({"status": status}), flush=True)
    sys.exit(0)
code = open("work/solution.py", encoding="utf-8").read()
tests = open("work/tests.py", encoding="utf-8").read().split("\n#--test--\n")
try:
    compiled = compile(code, "solution.py", "exec")
except (SyntaxError, ValueError):
    report("syntax_error")
env = {"__name__": "__solution__"}
try:
    exec(compiled, env)
    for test in tests:
        exec(test, env)
except AssertionError:
    report("wrong_answer")
except BaseException as err:
    report("runtime_error:" + type(err).__name__)
report("passed")
"""


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str
    """passed, wrong_answer, syntax_error, runtime_error:<Type>, timeout, crashed"""


@dataclass(frozen=True)
class ProgramResult:
    payload: dict | None
    """The JSON the program reported with the right nonce; None if it never did."""
    timed_out: bool


def bwrap_command(work: str, program: str) -> list[str]:
    mounts = ["--ro-bind", sys.base_prefix, SANDBOX_PYTHON]
    paths = []
    if sys.prefix != sys.base_prefix:  # a virtual environment: its packages too
        mounts += ["--ro-bind", sys.prefix, SANDBOX_VENV]
        paths = [p.replace(sys.prefix, SANDBOX_VENV, 1) for p in sys.path
                 if p.startswith(sys.prefix)]
    return [
        "bwrap",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--perms", "1777", "--size", str(SCRATCH_BYTES), "--tmpfs", "/tmp",
        *mounts,
        "--ro-bind", work, SANDBOX_WORK,
        "--chdir", "/tmp",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        "--",
        f"{SANDBOX_PYTHON}/bin/python{sys.version_info.major}.{sys.version_info.minor}",
        "-I", "-c", prelude(drop_privileges=True, extra_paths=paths) + program,
    ]


def prelude(drop_privileges: bool, extra_paths: list[str]) -> str:
    # Unsandboxed, the interpreter may live where the unprivileged user cannot read it.
    return (f"DROP_PRIVILEGES = {drop_privileges}\nNOBODY = {NOBODY}\n"
            f"import sys as _sys\n_sys.path[:0] = {extra_paths!r}\n{PRELUDE}")


@functools.cache
def sandbox_problem() -> str | None:
    """None when bubblewrap runs here, else why it does not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    probe = run_tests("def f():\n    return 1\n", ["assert f() == 1"], 30.0, sandbox=True)
    if not probe.passed:
        return f"bubblewrap is installed but a trivial program failed in it ({probe.status})"
    return None


def require_sandbox(unsafe: bool) -> bool:
    """True to run sandboxed; False to run unsandboxed (only with the explicit opt-in)."""
    problem = sandbox_problem()
    if problem is None:
        return True
    if unsafe:
        print(f"WARNING: {problem}; running model-written code WITHOUT a sandbox because "
              "unsafe_execution is set", file=sys.stderr)
        return False
    raise SandboxUnavailable(
        f"{problem}. Model-written code only runs inside the bubblewrap sandbox: install it "
        "(Debian/Ubuntu: `sudo apt-get install bubblewrap`) and make sure unprivileged user "
        "namespaces are allowed, or accept the risk with -S unsafe_execution=true."
    )


def _limits(timeout_s: float, memory_bytes: int) -> None:
    import resource

    cpu = int(timeout_s) + 1
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))
    os.setsid()  # its own process group, so a timeout kills everything it started


def run_tests(code: str, tests: list[str], timeout_s: float, *, sandbox: bool = True) -> Outcome:
    """Run `code` then each assert of `tests`; `sandbox=False` only behind the opt-in."""
    files = {"solution.py": code.encode(), "tests.py": "\n#--test--\n".join(tests).encode()}
    result = run_program(TESTS_PROGRAM, files, timeout_s, MEMORY_BYTES, sandbox)
    if result.timed_out:
        return Outcome(False, "timeout")
    if result.payload is None:
        return Outcome(False, "crashed")
    status = result.payload.get("status", "crashed")
    return Outcome(status == "passed", status)


def run_program(program: str, files: dict[str, bytes], timeout_s: float, memory_bytes: int,
                sandbox: bool, env: dict[str, str] | None = None) -> ProgramResult:
    """Run a trusted `program` (which may exec untrusted code) with `files` in ./work,
    read-only. It reports by printing `RESULT <NONCE> <json>`; the nonce comes on stdin, so
    a sample that exits early or prints a marker of its own reports nothing. (Code in the
    same process that inspects the program's frames could find the nonce: the sandbox
    guards the host, not the score against deliberate forgery.)"""
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="stages-exec-") as scratch:
        work = os.path.join(scratch, "work")
        os.mkdir(work)
        os.chmod(scratch, 0o755)  # readable by the unprivileged sandbox user
        for name, data in files.items():
            with open(os.path.join(work, name), "wb") as f:
                f.write(data)
        argv = (bwrap_command(work, program) if sandbox
                else [sys.executable, "-I", "-c", prelude(False, []) + program])
        # stdout goes to an unnamed file outside the sandbox, not a pipe, so the file-size
        # limit caps what a sample prints and nothing inside can swap the file.
        with tempfile.TemporaryFile() as stdout:
            proc = subprocess.Popen(
                argv,
                cwd=scratch,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", **(env or {})},
                preexec_fn=functools.partial(_limits, timeout_s, memory_bytes),
            )
            try:
                proc.communicate((nonce + "\n").encode(), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return ProgramResult(None, True)
            finally:
                _kill_group(proc)
            text = _tail(stdout)
    marker = f"RESULT {nonce} "
    for line in text.splitlines():
        if line.startswith(marker):
            try:
                return ProgramResult(json.loads(line[len(marker):]), False)
            except json.JSONDecodeError:
                break
    return ProgramResult(None, False)


def _tail(f) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - 65536))
    return f.read().decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_many(jobs: list[tuple[str, list[str]]], timeout_s: float, desc: str,
             unsafe: bool = False) -> list[Outcome]:
    """run_tests over (code, tests) pairs, one sandbox per core at a time, in input order."""
    sandbox = require_sandbox(unsafe)
    workers = max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_tests, code, tests, timeout_s, sandbox=sandbox)
                   for code, tests in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, unit="task", leave=False)]
