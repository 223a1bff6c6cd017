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
import queue
import secrets
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from stages.io import UserError

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
code = open(WORK + "/solution.py", encoding="utf-8").read()
tests = open(WORK + "/tests.py", encoding="utf-8").read().split("\n#--test--\n")
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


def prelude(drop_privileges: bool, extra_paths: list[str]) -> str:
    # Unsandboxed, the interpreter may live where the unprivileged user cannot read it.
    return (f"DROP_PRIVILEGES = {drop_privileges}\nNOBODY = {NOBODY}\nWORK = 'work'\n"
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


def run_tests(code: str, tests: list[str], timeout_s: float, *, sandbox: bool = True,
              pool: SandboxPool | None = None) -> Outcome:
    """Run `code` then each assert of `tests`; `sandbox=False` only behind the opt-in. With a
    `pool`, in one of its warm sandboxes (a forked child per program), else in a new one."""
    files = {"solution.py": code.encode(), "tests.py": "\n#--test--\n".join(tests).encode()}
    if pool is not None:
        result = pool.run(TESTS_PROGRAM, files, timeout_s, MEMORY_BYTES)
    else:
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
    workers = max(1, os.cpu_count() or 1)
    with SandboxPool(workers, sandbox) as boxes, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_tests, code, tests, timeout_s, sandbox=sandbox, pool=boxes)
                   for code, tests in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, unit="task", leave=False)]


# Warm sandboxes. Starting bubblewrap and an interpreter (and, for evalplus, numpy) costs
# about 0.3 s of CPU per program, more than most samples take to run. A warm sandbox starts
# once and runs a trusted server that forks one child per program; the child sets the
# limits, becomes `nobody` and runs the program, as a fresh sandbox would. Why a sample
# cannot reach the host or any other sample:
#   - The host: the child is inside the same bubblewrap sandbox as before (read-only file
#     system, no network, its own pid/ipc/uts namespaces, as `nobody`, the same limits), and
#     the host's wall-clock timeout still kills the whole sandbox if the server does not
#     answer in time.
#   - Later samples: each child is forked from the server, which never runs untrusted code,
#     so no Python state carries over. Before the next program the server kills every other
#     process in the sandbox's pid namespace (kill(-1) from pid 2 reaches only the sandbox)
#     and deletes everything in the writable tmpfs, so no process, file or output is left.
#     Each program's files arrive in a directory of their own that is read-only inside; the
#     host sends one job at a time, so a child's copy of the server holds only its own job.
#   - The server: it runs as root inside (when the pipeline runs as root) and the child as
#     `nobody`, so the child can neither signal nor ptrace it; when the pipeline runs as an
#     unprivileged user both share one uid, and the server makes itself non-dumpable (no
#     ptrace, no /proc/<pid>/mem or fd of it); a child that kills it gets no verdict
#     (crashed) and the next program starts a fresh sandbox. The child closes the server's
#     pipes to the host before the program runs; its only output is a file the server reads
#     after it has ended, capped by the file-size limit as before.
SERVER = r"""
import importlib, json, os, resource, select, shutil, signal, struct, tempfile, time
for _name in PRELOAD:
    importlib.import_module(_name)
import ctypes
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
SCRATCH = "/tmp" if ISOLATED else tempfile.mkdtemp(prefix="stages-warm-")
MOUNTS = {"python", "venv", "work"}  # the read-only mount points under /tmp


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def send(message):
    data = json.dumps(message).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(1, data):]


def child(job, rundir, out):
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(null, 2)
        os.closerange(3, 1 << 16)  # the server's pipes to the host among them
        os.chdir(rundir)
        os.environ.update(job["env"])
        cpu = int(job["timeout_s"]) + 1
        memory = job["memory_bytes"]
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))
        if DROP_PRIVILEGES and os.getuid() == 0:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        code = compile("import os, sys\n" + job["program"], "<program>", "exec")
        exec(code, {"__name__": "__main__", "NONCE": job["nonce"], "WORK": job["work"]})
    except BaseException:
        pass
    finally:
        try:
            import sys
            sys.stdout.flush()
        finally:
            os._exit(0)


def wait(pid, timeout_s):
    # True when the child outlived its time; it is killed then.
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)
    if not ready:
        os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return not ready


def others():
    me = os.getpid()
    return [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def clean(pid, rundir):
    if ISOLATED:
        # Its own pid namespace: every process but init (1) and this one came from a program.
        for _ in range(2000):
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if not others():
                break
            time.sleep(0.001)
        else:
            raise RuntimeError("processes left in the sandbox")
        for place in ("/tmp", "/dev/shm"):
            for name in os.listdir(place):
                if place == "/tmp" and name in MOUNTS:
                    continue
                path = os.path.join(place, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(rundir, ignore_errors=True)


send({"ready": True})
while True:
    try:
        job = json.loads(read_exact(struct.unpack(">I", read_exact(4))[0]))
    except EOFError:  # the host is done (or gone)
        break
    rundir = tempfile.mkdtemp(dir=SCRATCH)
    os.chmod(rundir, 0o777)
    out = tempfile.TemporaryFile(dir=SCRATCH)
    pid = os.fork()
    if pid == 0:
        child(job, rundir, out.fileno())
    timed_out = wait(pid, job["timeout_s"])
    clean(pid, rundir)
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - 65536))
    output = out.read().decode("utf-8", "replace")
    out.close()
    send({"id": job["id"], "timed_out": timed_out, "output": output})
"""
SERVER_ANSWER_S = 10.0  # beyond a program's own timeout: forking, cleaning up, replying
SERVER_START_S = 60.0


class WarmSandbox:
    """One sandbox with a warm interpreter that runs programs one at a time, each in a child
    forked for it (see the comment above SERVER). Starts on first use, and again after a
    program that left it broken."""

    def __init__(self, sandbox: bool, preload: tuple[str, ...] = ()):
        self.sandbox, self.preload = sandbox, preload
        self.proc: subprocess.Popen | None = None
        self.jobs = 0
        self.scratch = tempfile.mkdtemp(prefix="stages-warm-")
        os.chmod(self.scratch, 0o755)  # readable by the unprivileged sandbox user
        self.work = os.path.join(self.scratch, "work")
        os.mkdir(self.work)

    def run(self, program: str, files: dict[str, bytes], timeout_s: float, memory_bytes: int,
            env: dict[str, str] | None = None) -> ProgramResult:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.jobs += 1
        job_id, nonce = self.jobs, secrets.token_hex(16)
        work = os.path.join(self.work, str(job_id))
        os.mkdir(work)
        os.chmod(work, 0o755)
        try:
            for name, data in files.items():
                with open(os.path.join(work, name), "wb") as f:
                    f.write(data)
            inside = f"{SANDBOX_WORK}/{job_id}" if self.sandbox else work
            self.send({"id": job_id, "nonce": nonce, "program": program, "work": inside,
                       "timeout_s": timeout_s, "memory_bytes": memory_bytes, "env": env or {}})
            try:
                reply = self.receive(timeout_s + SERVER_ANSWER_S)
            except TimeoutError:
                self.close()
                return ProgramResult(None, True)
            except (EOFError, OSError):  # the server died: this program gets no verdict
                self.close()
                return ProgramResult(None, False)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if reply.get("id") != job_id:
            self.close()
            raise RuntimeError(f"warm sandbox answered job {reply.get('id')} for {job_id}")
        if reply["timed_out"]:
            return ProgramResult(None, True)
        return _verdict(reply["output"], nonce)

    def start(self) -> None:
        self.close()
        head = (f"PRELOAD = {list(self.preload)!r}\nISOLATED = {self.sandbox}\n"
                f"DROP_PRIVILEGES = {self.sandbox}\nNOBODY = {NOBODY}\n"
                f"FILE_BYTES = {FILE_BYTES}\nPROCESSES = {PROCESSES}\n")
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
            ready = self.receive(SERVER_START_S)
        except (TimeoutError, EOFError, OSError) as err:
            self.close()
            raise SandboxUnavailable(f"the warm sandbox did not start ({type(err).__name__}); "
                                     f"preloading {list(self.preload)}") from None
        if ready != {"ready": True}:
            self.close()
            raise SandboxUnavailable(f"the warm sandbox started wrongly: {ready!r}")

    def send(self, message: dict) -> None:
        data = json.dumps(message).encode()
        self.proc.stdin.write(struct.pack(">I", len(data)) + data)
        self.proc.stdin.flush()

    def receive(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()

        def read_exact(n: int) -> bytes:
            data = b""
            while len(data) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
                chunk = os.read(fd, n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data

        return json.loads(read_exact(struct.unpack(">I", read_exact(4))[0]))

    def close(self) -> None:
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
    """`workers` warm sandboxes (each started on first use); run() takes a free one, so up
    to `workers` threads run programs at once. `preload`: modules the server imports once,
    so every child has them (they count toward the child's address-space limit)."""

    def __init__(self, workers: int, sandbox: bool, preload: tuple[str, ...] = ()):
        self.boxes = [WarmSandbox(sandbox, preload) for _ in range(workers)]
        self.free: queue.SimpleQueue[WarmSandbox] = queue.SimpleQueue()
        for box in self.boxes:
            self.free.put(box)

    def run(self, program: str, files: dict[str, bytes], timeout_s: float, memory_bytes: int,
            env: dict[str, str] | None = None) -> ProgramResult:
        box = self.free.get()
        try:
            return box.run(program, files, timeout_s, memory_bytes, env)
        finally:
            self.free.put(box)

    def close(self) -> None:
        for box in self.boxes:
            box.remove()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
