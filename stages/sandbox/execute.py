"""Run untrusted Python (model-written code, injected defects) against asserts, in a sandbox.

Every program runs in a bubblewrap sandbox (Debian package `bubblewrap`):
  - only the system's directories and the interpreter, read-only (SYSTEM_PATHS), a fresh
    tmpfs /tmp and a throwaway work directory as the only writable place, deleted
    afterwards;
  - no network (its own empty network namespace), its own pid, ipc and uts namespaces, so
    it can neither reach nor signal any process outside;
  - as an unprivileged user (uid 65534 when the pipeline runs as root), so the process
    limit holds and no capability is left;
  - limits on address space, CPU time, file size and process count (programs/confine.py),
    and a wall-clock timeout enforced from this side, which kills the whole sandbox.
The verdict is not the sandbox's to give: the child that runs a sample only answers calls
of its functions with plain values (programs/child.py, stages/sandbox/plain.py), and
run_tests (and stages/suites/evalplus_harness.check) compare them here, where the sample
cannot reach; see the comment above SERVER. run_program, for BigCodeBench's unittest form
only, still runs solution and tests in one process reporting next to a nonce (what guards
it: stages/suites/bigcodebench.py).

What runs inside the sandbox are the files of stages/sandbox/programs/ (and plain.py), read
as text by `program_text`; SandboxPool.map fans a batch of samples out over warm sandboxes.

Where bubblewrap cannot start, execution is refused unless the caller opts into running
without a sandbox (`unsafe_execution: true`), which only isolates by process.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import importlib
import json
import os
import queue
import re
import secrets
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import TypeVar

from tqdm import tqdm

from stages.core.io import UserError
from stages.sandbox import plain
from stages.sandbox.programs import confine

T = TypeVar("T")
R = TypeVar("R")
MEMORY_BYTES = 1 << 30
SCRATCH_BYTES = 16 << 20  # the only writable space inside: a 16 MiB tmpfs at /tmp
SANDBOX_PYTHON = "/tmp/python"  # where the interpreter's prefix is mounted inside
SANDBOX_VENV = "/tmp/venv"  # the virtual environment, when there is one
SANDBOX_WORK = "/tmp/work"  # the program and its tests, read-only
# The host's file system as the sandbox sees it, read-only: the system and the interpreter
# (mounted apart, above), nothing else. Home, the project, its data and caches (the
# benchmarks' reference solutions, evalplus's expected outputs, the probes' tests) are not
# there, so a sample cannot read the answers it is judged against.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")


def program_text(*names: str) -> str:
    """The source of the files `names` (paths under stages/sandbox/: "plain.py",
    "programs/child.py"), joined in order: one program, run inside the sandbox from text."""
    package = resources.files(__package__)
    return "\n".join(package.joinpath(name).read_text(encoding="utf-8") for name in names)


class SandboxUnavailable(UserError, RuntimeError):
    """No working sandbox here: the message says what to install or enable."""


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
    """One program in its own sandbox: the nonce prelude, then `program`."""
    return bwrap_argv(work, prelude(drop_privileges=True, extra_paths=sandbox_paths())
                      + program, die_with_parent=True)


def bwrap_argv(work: str, code: str, die_with_parent: bool) -> list[str]:
    mounts = ["--ro-bind", sys.base_prefix, SANDBOX_PYTHON]
    if sys.prefix != sys.base_prefix:  # a virtual environment: its packages too
        mounts += ["--ro-bind", sys.prefix, SANDBOX_VENV]
    # The interpreter's prefix also where it was installed: its site module finds its
    # packages there.
    system = [arg for path in dict.fromkeys((*SYSTEM_PATHS, sys.base_prefix, sys.prefix))
              for arg in ("--ro-bind-try", path, path)]
    return [
        "bwrap",
        *system,
        "--dev", "/dev",
        "--proc", "/proc",
        "--perms", "1777", "--size", str(SCRATCH_BYTES), "--tmpfs", "/tmp",
        *mounts,
        "--ro-bind", work, SANDBOX_WORK,
        "--chdir", "/tmp",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        *(["--die-with-parent"] if die_with_parent else []),
        "--new-session",
        "--",
        f"{SANDBOX_PYTHON}/bin/python{sys.version_info.major}.{sys.version_info.minor}",
        "-I", "-c", code,
    ]


def sandbox_paths() -> list[str]:
    """The virtual environment's entries of sys.path as the sandbox sees them."""
    if sys.prefix == sys.base_prefix:
        return []
    return [p.replace(sys.prefix, SANDBOX_VENV, 1) for p in sys.path if p.startswith(sys.prefix)]


# In front of every program of its own: read the per-run nonce, then (as root) become `nobody`.
PRELUDE = program_text("programs/confine.py", "programs/prelude.py")


def prelude(drop_privileges: bool, extra_paths: list[str]) -> str:
    # Unsandboxed, the interpreter may live where the unprivileged user cannot read it.
    return (f"DROP_PRIVILEGES = {drop_privileges}\n"
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


def _confine(timeout_s: float, memory_bytes: int) -> None:
    confine.limit(timeout_s, memory_bytes)
    os.setsid()  # its own process group, so a timeout kills everything it started


def run_tests(code: str, tests: list[str], timeout_s: float, *, sandbox: bool = True,
              pool: SandboxPool | None = None) -> Outcome:
    """Define `code` in a sandbox, then run each test of `tests` here, in this process, with
    the names the code defined standing for it: a call of one of its functions is answered by
    the sandbox with a plain value (plain.py), and every assert and comparison is
    decided on this side, where the sample cannot reach. `sandbox=False` only behind the
    opt-in. With a `pool`, in one of its warm sandboxes, else in a new one.

    The sample sees only the arguments of each call: never the expected value, the test, a
    nonce or a verdict channel. An object that is not a plain value fails (wrong_answer), and
    so does a sample that exits, kills its parent or prints (crashed: no answer). Arguments
    go by value, so a test that checks an argument's mutation cannot be judged this way."""
    if not __debug__:
        raise RuntimeError("tests are asserts, and python -O removes them: run without -O")
    try:
        compile(code, "solution.py", "exec")
    except (SyntaxError, ValueError):
        return Outcome(False, "syntax_error")
    checks = [compile(test, f"<test {i}>", "exec") for i, test in enumerate(tests)]
    with remote_session({"code": code}, timeout_s, MEMORY_BYTES, sandbox, pool) as remote:
        try:
            env = remote.namespace()
            for check in checks:
                exec(check, env)
        except SampleFailed as err:
            return Outcome(False, err.kind)
        except AssertionError:
            return Outcome(False, "wrong_answer")
        except Exception as err:
            return Outcome(False, "runtime_error:" + type(err).__name__)
    return Outcome(True, "passed")


def run_program(program: str, files: dict[str, bytes], timeout_s: float, memory_bytes: int,
                sandbox: bool, env: dict[str, str] | None = None) -> ProgramResult:
    """Run a trusted `program` (which may exec untrusted code) with `files` in ./work,
    read-only, in a fresh sandbox. It reports by printing `RESULT <NONCE> <json>`; the nonce
    comes on stdin, so a sample that exits early or prints a marker of its own reports
    nothing. Code in the same process that inspects the program's frames could find the
    nonce, so only BigCodeBench uses this (behind its forgery_marks screen); every other
    suite judges by run_tests or evalplus_harness.check, outside the sandbox."""
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
                preexec_fn=functools.partial(_confine, timeout_s, memory_bytes),
            )
            try:
                proc.communicate((nonce + "\n").encode(), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return ProgramResult(None, True)
            finally:
                _kill_group(proc)
            text = _tail(stdout)
    return _verdict(text, nonce)


def _verdict(text: str, nonce: str) -> ProgramResult:
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
    """run_tests over (code, tests) pairs, one warm sandbox per core, in input order."""
    sandbox = require_sandbox(unsafe)
    with SandboxPool(SandboxPool.per_core(), sandbox) as boxes:
        return boxes.map(lambda job: run_tests(*job, timeout_s, sandbox=sandbox, pool=boxes),
                         jobs, desc=desc)


# What the child that runs a sample executes: the plain-value codec, then its serve loop.
CHILD_PROGRAM = (program_text("programs/wire.py", "plain.py", "programs/child.py")
                 + "\nserve(JOB, 3, 4)\n")
OUT_OF_TIME = "the session's time ran out"
ERROR_KIND = re.compile(r"runtime_error:[A-Za-z_][A-Za-z0-9_]{0,80}|timeout")
# Modules a sample's `import x` may lend the test by name (the test runs here, so only
# modules harmless to import and pure in what they compute).
LENDABLE_MODULES = frozenset({"math", "cmath", "re", "string", "collections", "itertools",
                              "functools", "heapq", "bisect", "statistics", "fractions",
                              "decimal", "operator", "copy", "json", "hashlib", "datetime",
                              "typing", "random"})


class SampleFailed(BaseException):
    """The sample gave no value for a call: `kind` says why (timeout, crashed, wrong_answer
    for a value that is not plain, runtime_error:<Type> that no builtin type names). A
    BaseException, so that a test's own `except Exception` does not swallow it."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


class Remote:
    """The sample's side of one session, as this side sees it: what it defined, and its
    functions to call. Every answer is read as an untrusted claim about a value."""

    def __init__(self, box: WarmSandbox, deadline: float):
        self.box, self.deadline = box, deadline
        self.failure, self.defined = None, {}
        try:
            first = self.answer()
        except SampleFailed as err:
            self.failure = err
            return
        if "error" in first:
            self.failure = self.error(first["error"])
        elif isinstance(first.get("defined"), dict):
            self.defined = first["defined"]
        else:
            self.failure = SampleFailed("crashed", "no definitions")

    def namespace(self) -> dict:
        """Globals for a test: each function the sample defined as a call into the sandbox,
        each plain value it defined as that value, a lendable module it imported as the
        same module here."""
        if self.failure is not None:
            raise self.failure
        env = {"__name__": "__test__", "__builtins__": builtins}
        for name, what in self.defined.items():
            if not isinstance(name, str) or not name.isidentifier() or not isinstance(what, dict):
                continue
            if hasattr(builtins, name):  # `abs` of the sample's own would judge the test's abs()
                continue
            if what.get("call") is True:
                env[name] = self.function(name)
            elif isinstance(what.get("value"), str):
                try:
                    env[name] = plain.decode(what["value"])
                except plain.NotPlain:
                    pass
            elif what.get("module") == name and name in LENDABLE_MODULES:
                env[name] = importlib.import_module(what["module"])
        return env

    def function(self, name: str):
        def call(*args, **kwargs):
            return self.call(name, args, kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def call(self, name: str, args: tuple | list, kwargs: dict | None = None,
             limit_s: float | None = None):
        """The value `name(*args, **kwargs)` returned in the sandbox, or the exception it
        raised (a builtin exception type as itself), or SampleFailed."""
        try:
            request = [plain.encode(list(args)), plain.encode(dict(kwargs or {})), limit_s]
        except plain.NotPlain as err:
            raise TypeError(f"the test passes {name}() an argument that is not a plain "
                            f"value ({err}); this test cannot be judged in the sandbox") from None
        kind, value = next(self.stream(name, [request]))
        if kind == "value":
            return value
        raise value  # an opaque object too: a test compares values

    def stream(self, name: str, requests: list[list]):
        """Ask for all `requests` ([args, kwargs, limit_s], encoded) at once and yield
        ("value", value), ("error", exception) or ("opaque", exception: the call returned
        an object that is not a plain value) for each, as the answers arrive."""
        self.box.to_child({"call": name, "calls": requests})
        left = len(requests)
        while left > 0:
            batch = self.answer().get("answers")
            if not isinstance(batch, list) or not 0 < len(batch) <= left:
                raise SampleFailed("crashed", "an answer that is no batch of values")
            left -= len(batch)
            yield from map(self.read_answer, batch)

    def read_answer(self, message) -> tuple[str, object]:
        if not isinstance(message, dict):
            return "error", SampleFailed("crashed", "an answer that is not an object")
        if "value" in message and isinstance(message["value"], str):
            try:
                return "value", plain.decode(message["value"])
            except plain.NotPlain as err:
                return "error", SampleFailed("wrong_answer", f"not a plain value: {err}")
        if "not_plain" in message:  # a caller that can judge "some object" takes it as such
            return "opaque", SampleFailed("wrong_answer",
                                          f"not a plain value: {message['not_plain']}"[:300])
        if "error" in message:
            return "error", self.error(message["error"])
        return "error", SampleFailed("crashed", "an answer that is no value")

    def answer(self) -> dict:
        message = self.box.from_child(self.deadline)
        if message is None:
            raise SampleFailed("crashed", "the sample ended without answering")
        if message == "timeout":
            raise SampleFailed("timeout", OUT_OF_TIME)
        try:
            message = json.loads(message)
        except (ValueError, RecursionError):
            raise SampleFailed("crashed", "an answer that is not JSON") from None
        if not isinstance(message, dict):
            raise SampleFailed("crashed", "an answer that is not an object")
        return message

    @staticmethod
    def error(kind) -> BaseException:
        if not isinstance(kind, str) or not ERROR_KIND.fullmatch(kind):
            return SampleFailed("crashed", "an unreadable error")
        if kind == "timeout":
            return SampleFailed("timeout", "over its time limit for one call")
        typ = getattr(builtins, kind.split(":", 1)[1], None)
        if isinstance(typ, type) and issubclass(typ, Exception):
            return typ("raised in the sample")
        return SampleFailed(kind)


@contextlib.contextmanager
def remote_session(job: dict, timeout_s: float, memory_bytes: int, sandbox: bool,
                   pool: SandboxPool | None, env: dict[str, str] | None = None):
    """A child running `job` (CHILD_PROGRAM's keys) in a warm sandbox of `pool` (or of its
    own), as a Remote that answers until `timeout_s` from now; ended (every process it
    started killed, its files deleted) on leaving."""
    box = pool.take() if pool is not None else WarmSandbox(sandbox)
    try:
        box.begin(job, timeout_s, memory_bytes, env)
        try:
            yield Remote(box, time.monotonic() + timeout_s)
        finally:
            box.end()
    finally:
        if pool is not None:
            pool.give(box)
        else:
            box.remove()


# Warm sandboxes. Starting bubblewrap and an interpreter (and, for evalplus, numpy) costs
# about 0.3 s of CPU per program, more than most samples take to run. A warm sandbox starts
# once and runs a trusted server that forks one child per sample; the child sets the limits,
# becomes `nobody`, defines the sample and answers calls (CHILD_PROGRAM), relayed by the
# server over pipes. Why a sample cannot reach the host, any other sample, or its verdict:
#   - The verdict: it is decided in the host process (run_tests, evalplus_harness.check)
#     from the plain values the child sends, decoded strictly (plain.py). The child never
#     holds an expected value, a nonce or a channel to anything but the host's questions; its
#     output is /dev/null.
#   - The host: the child is inside the bubblewrap sandbox (read-only file system, no
#     network, its own pid/ipc/uts namespaces, as `nobody`, the limits above), and the host
#     enforces the wall clock: when an answer is late it ends the child, and if the server
#     does not answer then either, it kills the whole sandbox.
#   - Later samples: each child is forked from the server, which never runs untrusted code,
#     so no Python state carries over. When a session ends the server kills every other
#     process in the sandbox's pid namespace (kill(-1) from pid 2 reaches only the sandbox)
#     and deletes everything in the writable tmpfs, so no process, file or output is left.
#   - The server: it runs as root inside (when the pipeline runs as root) and the child as
#     `nobody`, so the child can neither signal nor ptrace it; when the pipeline runs as an
#     unprivileged user both share one uid, and the server makes itself non-dumpable (no
#     ptrace, no /proc/<pid>/mem or fd of it); a child that kills it gets no verdict
#     (crashed) and the next sample starts a fresh sandbox. The child keeps only its two
#     pipes to the server; what it writes there is framed and capped by the server.
SERVER = program_text("programs/wire.py", "programs/confine.py", "programs/server.py")
SERVER_ANSWER_S = 10.0  # beyond a sample's own time: forking, cleaning up, replying
SERVER_START_S = 60.0
MAX_FRAME = 64 << 20  # the most one answer of a child may hold (bytes of JSON)


class WarmSandbox:
    """One sandbox with a warm interpreter that runs one sample at a time, each in a child
    forked for it (see the comment above SERVER). Starts on first use, and again after a
    sample that left it broken."""

    def __init__(self, sandbox: bool, preload: tuple[str, ...] = ()):
        self.sandbox, self.preload = sandbox, preload
        self.proc: subprocess.Popen | None = None
        self.jobs = 0
        self.scratch = tempfile.mkdtemp(prefix="stages-warm-")
        os.chmod(self.scratch, 0o755)  # readable by the unprivileged sandbox user
        self.work = os.path.join(self.scratch, "work")
        os.mkdir(self.work)
        self.live = False

    def begin(self, job: dict, timeout_s: float, memory_bytes: int,
              env: dict[str, str] | None = None) -> None:
        """Fork a child that runs CHILD_PROGRAM on `job`; its answers come by from_child."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.jobs += 1
        self.live = True
        self.control({"id": self.jobs, "program": CHILD_PROGRAM, "job": job,
                      "timeout_s": timeout_s, "memory_bytes": memory_bytes, "env": env or {}})

    def to_child(self, message: dict) -> None:
        if self.proc is not None and self.live:
            try:
                self.write(b"C" + json.dumps(message).encode())
            except OSError:
                self.close()

    def from_child(self, deadline: float) -> str | None:
        """The child's next frame as text; None when it has ended (or the server died);
        "timeout" when nothing came by `deadline`."""
        if self.proc is None or not self.live:
            return None
        try:
            kind, payload = self.receive(deadline - time.monotonic())
        except TimeoutError:
            return "timeout"
        except (EOFError, OSError, ValueError):
            self.close()
            return None
        if kind == b"C":
            return payload.decode("utf-8", "replace")
        self.live = False  # the server only speaks during a session to say the child ended
        return None

    def end(self) -> None:
        """End the session: the server kills the child and everything it started and
        deletes its files; a server that does not confirm in time is killed with them."""
        if self.proc is None:
            return
        try:
            self.write(b"J" + b"{}")
            deadline = time.monotonic() + SERVER_ANSWER_S
            while True:
                kind, payload = self.receive(deadline - time.monotonic())
                if kind == b"J" and json.loads(payload).get("ended") == self.jobs:
                    break
        except (TimeoutError, EOFError, OSError, ValueError):
            self.close()
        self.live = False

    def start(self) -> None:
        self.close()
        head = (f"PRELOAD = {list(self.preload)!r}\nISOLATED = {self.sandbox}\n"
                f"DROP_PRIVILEGES = {self.sandbox}\nMAX_FRAME = {MAX_FRAME}\n")
        if self.sandbox:
            code = f"import sys\nsys.path[:0] = {sandbox_paths()!r}\n{head}{SERVER}"
            # No --die-with-parent: it fires when the starting thread ends, not the process;
            # the server ends when its stdin closes instead, and close() kills the group.
            argv = bwrap_argv(self.work, code, die_with_parent=False)
        else:
            argv = [sys.executable, "-I", "-c", head + SERVER]
        self.proc = subprocess.Popen(
            argv, cwd=self.scratch, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1",
                 "OMP_NUM_THREADS": "1"})
        try:
            kind, ready = self.receive(SERVER_START_S)
        except (TimeoutError, EOFError, OSError) as err:
            self.close()
            raise SandboxUnavailable(f"the warm sandbox did not start ({type(err).__name__}); "
                                     f"preloading {list(self.preload)}") from None
        if (kind, ready) != (b"J", b'{"ready": true}'):
            self.close()
            raise SandboxUnavailable(f"the warm sandbox started wrongly: {ready!r}")

    def control(self, message: dict) -> None:
        self.write(b"J" + json.dumps(message).encode())

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(struct.pack(">I", len(data)) + data)
        self.proc.stdin.flush()

    def receive(self, timeout_s: float) -> tuple[bytes, bytes]:
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()

        def read_exact(n: int) -> bytes:
            data = bytearray()
            while len(data) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
                chunk = os.read(fd, min(n - len(data), 1 << 20))
                if not chunk:
                    raise EOFError
                data += chunk
            return bytes(data)

        data = read_exact(struct.unpack(">I", read_exact(4))[0])
        return data[:1], data[1:]

    def close(self) -> None:
        self.live = False
        if self.proc is not None:
            _kill_group(self.proc)
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self.proc = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


class SandboxPool:
    """`workers` warm sandboxes (each started on first use); a session takes a free one, so
    up to `workers` threads run samples at once (`map`). `preload`: modules the server
    imports once, so every child has them (they count toward the child's address-space
    limit)."""

    def __init__(self, workers: int, sandbox: bool, preload: tuple[str, ...] = ()):
        self.sandbox = sandbox
        self.boxes = [WarmSandbox(sandbox, preload) for _ in range(workers)]
        self.free: queue.SimpleQueue[WarmSandbox] = queue.SimpleQueue()
        for box in self.boxes:
            self.free.put(box)

    @staticmethod
    def per_core() -> int:
        """One warm sandbox per core: a sample's run is CPU-bound."""
        return max(1, os.cpu_count() or 1)

    def map(self, fn: Callable[[T], R], items: Iterable[T], desc: str, unit: str = "task",
            leave: bool = False) -> list[R]:
        """[fn(item) for item in items], up to one call per sandbox at once (each call takes
        a free sandbox from this pool, or runs one of its own), in input order, with a
        progress bar on stderr."""
        items = list(items)
        with ThreadPoolExecutor(len(self.boxes)) as pool:
            return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, unit=unit,
                             leave=leave))

    def take(self) -> WarmSandbox:
        return self.free.get()

    def give(self, box: WarmSandbox) -> None:
        self.free.put(box)

    def close(self) -> None:
        for box in self.boxes:
            box.remove()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
