"""warm: run a stage as a child of a server that has the stage's libraries imported already.

    python -m stages.warm eval --variant sft --suite code   # how dvc.yaml runs each eval
    python -m stages.warm --stop                             # end this user's servers now
    STAGES_WARM=0 dvc repro                                  # every stage in its own process

Why: a `dvc repro` runs 15 eval stages, and on the tiny model each spent most of its time
importing torch, transformers, peft and the Qwen2 modeling code before it read a probe
(`python -X importtime`: 3.2-3.7 s of imports in sft/code, knowledge and perplexity
processes of 5.0-5.9 s). The first `python -m stages.warm eval ...` starts a server that imports those once
(the eval stage's own imports plus stages.models.modeling.preload) and then waits on a unix
socket; each call after it forks a child of that server, which runs `python -m stages.eval`'s
code with the caller's arguments, working directory, environment and stdin/stdout/stderr
(passed over the socket), and the caller exits with the child's status. DVC still runs one
command per stage, so its caching per (variant, suite) is untouched, and the child runs the
same code on the same inputs as a fresh process: the eval tasks files are byte-identical
either way (tests/test_warm.py).

A server serves one stage module for one combination of what the child would otherwise have
started from, and its socket is named by a hash of exactly that: the Python executable and
sys.path, the working directory, the environment (less PWD, OLDPWD, SHLVL, _ and the DVC_STAGE that DVC sets per
stage), every file
of the stages package, and the modification times of the site-packages folders on sys.path
(an install or upgrade touches them). Editing the code, setting an environment variable or
upgrading a library therefore starts a new server; the old one exits after
STAGES_WARM_IDLE_S seconds (default IDLE_S) without a call. The sockets and each server's
log live in STAGES_WARM_DIR (default $XDG_RUNTIME_DIR, else the temp folder), in a folder
stages-warm-<uid> only its owner may enter; a server serves only its own user.

What differs from a fresh process: warnings a library prints while it is imported go once to
the server's log, not to each stage; `ps` shows the server's command line for the child.

Where it does not apply, the call becomes `python -m stages.<module>` in the same process
(exec), after one line on stderr saying why: STAGES_WARM=0, a platform other than Linux, an
NVIDIA driver present (a process that has touched CUDA cannot fork a working child, and on
a GPU the model, not the imports, is the cost), or a server that failed to start (the line
names its log). A server that dies while its child runs a stage fails that call (exit 1)
rather than running the stage twice.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDLE_S = 300  # sft and dpo run between the base evals and the rest: minutes on the tiny model
START_S = 300  # the longest a caller waits for a new server to import its libraries
MAX_REQUEST = 1 << 20  # the arguments and environment of one call, as JSON
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with its terminating NUL (unix(7))
# Differ from call to call and are read by nothing a server imports: the shell's, and the
# stage name DVC sets for each command (dvc/stage/run.py, prepare_kwargs). The child still
# gets the caller's values.
VOLATILE_ENV = ("PWD", "OLDPWD", "SHLVL", "_", "DVC_STAGE")
# where pip installs: a folder's mtime moves when a distribution is added, removed or upgraded
# (other sys.path folders, such as the working directory, change as a stage writes)
INSTALL_FOLDERS = ("site-packages", "dist-packages")
PACKAGE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.stop:
        return stop_all()
    if args.serve:
        return serve(args.module, Path(args.serve))
    reason = why_not_warm()
    if reason is None:
        try:
            return call(args.module, args.rest)
        except ServerUnavailable as e:
            reason = str(e)
    print(f"stages.warm: {reason}; running `python -m stages.{args.module}` in this process",
          file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", f"stages.{args.module}", *args.rest])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.warm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop", action="store_true", help="end this user's servers")
    parser.add_argument("--serve", metavar="SOCKET", help=argparse.SUPPRESS)
    parser.add_argument("module", nargs="?", help="the stage: a module of stages/ (eval)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the stage's own arguments")
    args = parser.parse_args(argv)
    if not args.stop and not args.module:
        parser.error("name the stage to run, e.g. `python -m stages.warm eval --variant base "
                     "--suite code`")
    if args.module and not (args.module.isidentifier()
                            and (PACKAGE / f"{args.module}.py").is_file()):
        parser.error(f"stages/{args.module}.py does not exist; the stage is a module of "
                     f"{PACKAGE}")
    return args


class ServerUnavailable(Exception):
    """No server could take the call; the caller runs the stage itself."""


# ---- the caller -----------------------------------------------------------------------------


def why_not_warm() -> str | None:
    if os.environ.get("STAGES_WARM", "1") == "0":
        return "STAGES_WARM=0"
    if not sys.platform.startswith("linux"):
        return f"warm servers fork, which is Linux-only here (this is {sys.platform})"
    if Path("/proc/driver/nvidia").exists():
        return "an NVIDIA driver is present, and a server cannot fork children that use CUDA"
    return None


def call(module: str, rest: list[str]) -> int:
    """Run `module` with `rest` in a server's child; its exit status."""
    path = socket_path(module)
    with locked(path.with_suffix(".lock")):
        conn = connect(path)
        if conn is None:
            conn = start_server(module, path)
    with conn:
        request = json.dumps({"argv": rest, "cwd": os.getcwd(), "env": dict(os.environ)})
        with open(os.devnull, "rb") as null:  # a caller whose stdin is closed gets /dev/null
            fds = [fd if is_open(fd) else null.fileno() for fd in (0, 1, 2)]
            try:
                socket.send_fds(conn, [request.encode()], fds)
            except OSError as e:
                raise ServerUnavailable(f"the server at {path} did not take the call ({e})") \
                    from e
        started = answer(conn)
        if started is None:  # the server left as the call came: nothing ran
            raise ServerUnavailable(f"the server at {path} closed the call unanswered")
        ended = answer(conn)
    if ended is None:  # the stage ran, so it is not run again here
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started["pid"], signal.SIGTERM)
        print(f"stages.warm: the server at {path} died while stages.{module} ran in its child "
              f"{started['pid']} (ended now); its log: {path.with_suffix('.log')}",
              file=sys.stderr)
        return 1
    return ended["status"]


def answer(conn: socket.socket) -> dict | None:
    try:
        message = conn.recv(4096)
    except OSError:
        return None
    return json.loads(message) if message else None


def socket_path(module: str) -> Path:
    """This user's socket folder (created 0700; refused if anyone else can enter it) and the
    socket named for what a child of its server would start from."""
    base = os.environ.get("STAGES_WARM_DIR") or os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base or tempfile.gettempdir()) / f"stages-warm-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ServerUnavailable(f"{folder} must be a folder only you can enter (mode 0700, "
                                "yours); remove it and it is made again")
    path = folder / f"{module}-{start_key(module)}.sock"
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise ServerUnavailable(f"the socket path {path} is longer than a unix socket's "
                                f"{SOCKET_PATH_MAX} bytes; set STAGES_WARM_DIR to a shorter "
                                "folder")
    return path


def start_key(module: str) -> str:
    """A hash of everything a child of the server starts from that a fresh process might not
    share (see the module docstring)."""
    digest = hashlib.sha256()
    env = {k: v for k, v in os.environ.items() if k not in VOLATILE_ENV}
    for part in (sys.executable, sys.version, module, os.getcwd(), json.dumps(sys.path),
                 json.dumps(env, sort_keys=True)):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    for entry in (e for e in sys.path if Path(e).name in INSTALL_FOLDERS):
        try:
            digest.update(str(os.stat(entry or ".").st_mtime_ns).encode() + b"\0")
        except OSError:
            digest.update(b"-\0")
    for file in sorted(p for p in PACKAGE.rglob("*") if p.is_file()
                       and "__pycache__" not in p.parts):
        digest.update(str(file.relative_to(PACKAGE)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:24]


class locked:
    """An exclusive lock on a file: one caller at a time looks for and starts a server."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        os.close(self.fd)


def connect(path: Path) -> socket.socket | None:
    """A connection to the server at `path`, or None where none listens there (a socket a
    dead server left behind is removed)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(str(path))
        return conn
    except OSError as e:
        conn.close()
        if e.errno == errno.ECONNREFUSED:
            path.unlink(missing_ok=True)
        elif e.errno != errno.ENOENT:
            raise ServerUnavailable(f"cannot connect to {path} ({e})") from e
        return None


def start_server(module: str, path: Path) -> socket.socket:
    """Start a server for `module` at `path`, detached (its own session, so it outlives this
    caller and no terminal signal reaches it), and connect once it listens."""
    log = path.with_suffix(".log")
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "stages.warm", "--serve", str(path),
                                   module], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                  start_new_session=True)
    began = time.monotonic()
    while time.monotonic() - began < START_S:
        conn = connect(path)
        if conn is not None:
            return conn
        if server.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ServerUnavailable(f"the server exited with {server.returncode} before it "
                                    f"listened ({tail[0]}; log {log})")
        time.sleep(0.02)
    server.kill()
    raise ServerUnavailable(f"the server did not listen within {START_S} s (log {log})")


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def stop_all() -> int:
    """Ask every server of this user to exit (each finishes the children it runs first)."""
    try:
        folder = socket_path("eval").parent
    except ServerUnavailable as e:
        print(f"stages.warm: {e}", file=sys.stderr)
        return 1
    for path in sorted(folder.glob("*.sock")):
        conn = connect(path)
        if conn is not None:
            with conn:
                conn.send(json.dumps({"stop": True}).encode())
                conn.recv(4096)
            print(f"stopped {path.name}")
    return 0


# ---- the server -----------------------------------------------------------------------------


def serve(module: str, path: Path) -> int:
    """Import what `module` needs, listen at `path`, and fork a child per call until
    STAGES_WARM_IDLE_S (default IDLE_S) seconds pass without one, or --stop."""
    preload(module)
    import threading

    if threading.active_count() != 1:  # a fork copies only the forking thread
        raise SystemExit(f"importing stages.{module}'s libraries started a thread "
                         f"({threading.enumerate()}); a server cannot fork safely")
    server = Server(module, path, float(os.environ.get("STAGES_WARM_IDLE_S", IDLE_S)))
    print(f"serving stages.{module} at {path} (pid {os.getpid()})", flush=True)
    server.run()
    # a clean exit leaves nothing behind; a server that fails to start keeps its log, which
    # the caller names
    for leftover in (path.with_suffix(".log"), path.with_suffix(".lock")):
        leftover.unlink(missing_ok=True)
    return 0


class Server:
    """One thread, one selector: the listening socket, and per running child its pidfd (it
    ends) and its caller's connection (the caller hangs up). No threads, so that a fork never
    copies a lock another thread holds."""

    def __init__(self, module: str, path: Path, idle_s: float):
        self.module, self.path, self.idle_s = module, path, idle_s
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready = path.with_name(f"{path.name}.{os.getpid()}")
        self.listener.bind(str(ready))
        self.listener.listen(16)
        os.rename(ready, path)  # callers see the socket only once it listens
        self.inode = path.stat().st_ino
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, self.accept)
        self.children: dict[int, dict] = {}  # pidfd -> its caller, pid, argv, start
        self.idle_since, self.listening = time.monotonic(), True

    def run(self) -> None:
        while self.listening or self.children:
            if self.listening and not self.children \
                    and time.monotonic() - self.idle_since > self.idle_s:
                self.close()
            for key, _ in self.selector.select(timeout=1.0):
                key.data(key)

    def close(self) -> None:
        """Stop listening: the socket goes first, so a caller that comes now starts another
        server rather than waiting on this one."""
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self.inode:  # not a successor's
                self.path.unlink()
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listening = False

    def accept(self, key) -> None:
        conn, _ = self.listener.accept()
        try:
            message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
        except OSError:
            conn.close()
            return
        request = json.loads(message or b"{}") if own_user(conn) else {}
        if "argv" not in request or len(fds) != 3:  # --stop, or nothing this runs
            for fd in fds:
                os.close(fd)
            if request.get("stop"):
                self.close()
            with conn, contextlib.suppress(OSError):
                conn.send(json.dumps({"status": 0 if request.get("stop") else 2}).encode())
            return
        pid = os.fork()
        if pid == 0:
            closing = [self.listener, conn, *(c["conn"] for c in self.children.values())]
            run_child(self.module, request, fds, closing, self.selector, list(self.children))
        with contextlib.suppress(OSError):  # the child may have set it already
            os.setpgid(pid, pid)
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"pid": pid}).encode())

        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = {"conn": conn, "pid": pid, "argv": request["argv"],
                                "began": time.monotonic()}
        self.selector.register(pidfd, selectors.EVENT_READ, self.reap)
        self.selector.register(conn, selectors.EVENT_READ, self.hang_up)

    def reap(self, key) -> None:
        """A child ended: its status to its caller (a signal's as a shell gives it)."""
        child = self.children.pop(key.fd)
        self.selector.unregister(key.fd)
        os.close(key.fd)
        if child["conn"].fileno() in self.selector.get_map():
            self.selector.unregister(child["conn"])
        status = os.waitstatus_to_exitcode(os.waitpid(child["pid"], 0)[1])
        print(f"call: child {child['pid']} {child['argv']} exited {status} after "
              f"{time.monotonic() - child['began']:.2f} s", flush=True)
        with child["conn"], contextlib.suppress(OSError):  # a caller gone hears nothing
            child["conn"].send(json.dumps({"status": status if status >= 0
                                           else 128 - status}).encode())
        self.idle_since = time.monotonic()

    def hang_up(self, key) -> None:
        """The caller went (killed, or ^C): its child goes too, with its process group."""
        self.selector.unregister(key.fileobj)
        child = next(c for c in self.children.values() if c["conn"] is key.fileobj)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child["pid"], signal.SIGTERM)


def preload(module: str) -> None:
    """The imports a fresh `python -m stages.<module>` makes before its work: the module's
    own top-level imports (its code is run in each child, not here: run once, its module
    state would be shared), and the model-loading code those import lazily."""
    import ast
    import importlib

    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            importlib.import_module(node.module)
    from stages.models.modeling import preload as preload_models

    preload_models()


def own_user(conn: socket.socket) -> bool:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def run_child(module: str, request: dict, fds: list[int], closing: list, selector,
              pidfds: list[int]) -> None:
    """In the forked child: become the caller's process (stdio, directory, environment,
    argv), run the stage as `python -m` would, and exit with its status. Never returns."""
    import atexit
    import io
    import runpy
    import threading
    import traceback

    status = 1
    try:
        os.setpgid(0, 0)  # the server ends this group when the caller hangs up
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        selector.close()
        for thing in closing:
            thing.close()
        for fd in pidfds:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False),
                                     encoding=sys.stdin.encoding, errors=sys.stdin.errors)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False),
                                      encoding=sys.stdout.encoding, errors=sys.stdout.errors,
                                      line_buffering=os.isatty(1),
                                      write_through=sys.stdout.write_through)  # -u, PYTHONUNBUFFERED
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False),
                                      encoding=sys.stderr.encoding, errors="backslashreplace",
                                      line_buffering=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [str(PACKAGE / f"{module}.py"), *request["argv"]]
        status = 0
        runpy.run_module(f"stages.{module}", run_name="__main__", alter_sys=True)
    except SystemExit as e:  # as the interpreter reads sys.exit's argument
        if e.code is None or isinstance(e.code, int):
            status = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        try:  # what interpreter shutdown does before the process ends
            threading._shutdown()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status & 0xFF)


if __name__ == "__main__":
    sys.exit(main())
