"""The warm sandbox's server (see the comment above SERVER in stages/sandbox/execute.py):
inside the sandbox it forks one child per sample, sets the child's limits and user, relays its
frames to the host capped in size, and cleans up every process and file the sample left.

It runs from source text after programs/wire.py and programs/confine.py; the host puts the
settings in front: PRELOAD, ISOLATED, DROP_PRIVILEGES, MAX_FRAME.
"""

# read_exact and write_all come from programs/wire.py, limit and drop_privileges from
# programs/confine.py, the settings from the host:
# ruff: noqa: F821
import ctypes
import importlib
import json
import os
import select
import shutil
import signal
import struct
import tempfile
import time

# imported once here, so every forked child starts with them warm
for _name in PRELOAD:
    importlib.import_module(_name)
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
SCRATCH = "/tmp" if ISOLATED else tempfile.mkdtemp(prefix="stages-warm-")
MOUNTS = {"python", "venv", "work"}  # the read-only mount points under /tmp
PROGRAMS = {}


def read_host():
    # (kind, payload): b"J" a control message (JSON), b"C" bytes for the child.
    data = read_exact(0, struct.unpack(">I", read_exact(0, 4))[0])
    return data[:1], data[1:]


def to_host(kind, payload):
    write_all(1, struct.pack(">I", len(payload) + 1) + kind + payload)


def child(job, rundir, requests, answers):
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        requests, answers = os.dup(requests), os.dup(answers)
        os.dup2(requests, 3)
        os.dup2(answers, 4)
        os.closerange(5, 1 << 16)  # the server's pipes to the host among them
        os.chdir(rundir)
        os.environ.update(job["env"])
        limit(job["timeout_s"], job["memory_bytes"])
        if DROP_PRIVILEGES:
            drop_privileges()
        exec(PROGRAMS[job["program"]], {"__name__": "__main__", "JOB": job["job"]})
    except BaseException:
        pass
    finally:
        os._exit(0)


def others():
    me = os.getpid()
    return [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def clean(pid, rundir):
    if ISOLATED:
        # Its own pid namespace: every process but init (1) and this one came from a sample.
        # The child is reaped here; init reaps what it started.
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
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
        os.waitpid(pid, 0)


def relay(job_id, requests, answers):
    # Until the host ends the session: its bytes to the child (requests), the child's
    # frames (answers, each capped) to the host. Returns when the host says "end".
    buffer, open_ = bytearray(), True
    while True:
        ready = select.select([0, answers] if open_ else [0], [], [])[0]
        if answers in ready:
            chunk = os.read(answers, 1 << 20)
            buffer += chunk
            while open_ and len(buffer) >= 4:
                size = struct.unpack(">I", buffer[:4])[0]
                if size > MAX_FRAME:
                    chunk = b""
                    break
                if len(buffer) < 4 + size:
                    break
                to_host(b"C", bytes(buffer[4:4 + size]))
                del buffer[:4 + size]
            if not chunk:
                open_ = False
                buffer = bytearray()
                to_host(b"J", json.dumps({"id": job_id, "eof": True}).encode())
        if 0 in ready:
            kind, payload = read_host()
            if kind == b"J":
                return
            if open_:
                try:
                    write_all(requests, struct.pack(">I", len(payload)) + payload)
                except OSError:  # the child closed its end: its eof comes next
                    pass


to_host(b"J", json.dumps({"ready": True}).encode())
while True:
    try:
        kind, payload = read_host()
    except EOFError:  # the host is done (or gone)
        break
    job = json.loads(payload)
    if job["program"] not in PROGRAMS:
        PROGRAMS[job["program"]] = compile(job["program"], "<child>", "exec")
    rundir = tempfile.mkdtemp(dir=SCRATCH)
    os.chmod(rundir, 0o777)
    requests, requests_in = os.pipe()[::-1]
    answers, answers_out = os.pipe()
    pid = os.fork()
    if pid == 0:
        child(job, rundir, requests_in, answers_out)
    os.close(requests_in)
    os.close(answers_out)
    try:
        relay(job["id"], requests, answers)
    except EOFError:
        break
    finally:
        os.close(requests)
        os.close(answers)
        clean(pid, rundir)
    to_host(b"J", json.dumps({"ended": job["id"]}).encode())
