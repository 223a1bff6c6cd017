"""Hostile samples: each one's tests pass only if its attack worked, so a sandbox that let
it through would score it as passed. Every one must fail, and the host must be unharmed."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from stages.sandbox.execute import SandboxUnavailable, require_sandbox, run_many, sandbox_problem

pytestmark = pytest.mark.skipif(
    sandbox_problem() is not None,
    reason=f"no bubblewrap sandbox here ({sandbox_problem()}); the README setup installs it",
)


@pytest.fixture
def canary():
    """A file in a host directory (the sandbox sees only the system's directories, read-only,
    so not this one): attacks target it."""
    path = f"/var/tmp/stages-canary-{uuid.uuid4().hex}"
    with open(path, "w") as f:
        f.write("intact")
    yield path
    os.unlink(path)


@pytest.fixture
def listener():
    """A TCP server on the host's loopback that counts the connections it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def hostile_samples(canary: str, port: int) -> dict[str, tuple[str, list[str]]]:
    parent = os.getpid()
    return {
        "endless loop": ("def f():\n    while True:\n        pass\nf()\n", ["assert True"]),
        "fork bomb": (
            "import os\nn = 0\nfor _ in range(5000):\n    if os.fork() == 0:\n"
            "        import time; time.sleep(60); os._exit(0)\n    n += 1\n",
            ["assert n == 5000"]),
        "endless allocation": ("blocks = []\nwhile len(blocks) < 64:\n"
                               "    blocks.append(bytearray(1 << 27))\nn = len(blocks)\n",
                               ["assert n == 64"]),
        "delete a host file": (f"import os\nos.remove({canary!r})\n",
                               [f"import os\nassert not os.path.exists({canary!r})"]),
        "overwrite a host file": (f"open({canary!r}, 'w').write('pwned')\n",
                                  [f"assert open({canary!r}).read() == 'pwned'"]),
        "fill the disk": ("import os\nwith open('big', 'wb') as f:\n    for _ in range(64):\n"
                          "        f.write(b'x' * (1 << 20))\nsize = os.path.getsize('big')\n",
                          ["assert size == 64 << 20"]),
        "open a socket": (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), 2)\n"
                          "connected = s is not None\n",
                          ["assert connected"]),
        "write a system directory": ("open('/etc/stages-pwned', 'w').write('x')\nwrote = True\n",
                                     ["assert wrote"]),
        "read the project": ("import os\nseen = os.listdir(" + repr(os.getcwd()) + ")\n",
                             ["assert seen"]),
        "os.system": (f"import os\nrc = os.system('echo pwned > {canary}')\n",
                      [f"assert rc == 0 and open({canary!r}).read().startswith('pwned')"]),
        "posix.system": (f"import posix\nrc = posix.system('rm -f {canary}')\n",
                         [f"import os\nassert rc == 0 and not os.path.exists({canary!r})"]),
        "ctypes": ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                   f"rc = libc.system(b'rm -f {canary}')\n",
                   [f"import os\nassert rc == 0 and not os.path.exists({canary!r})"]),
        "kill the parent": (f"import os, signal\nos.kill({parent}, signal.SIGKILL)\n",
                            ["assert True"]),
        # Worked if it could see another process (not the namespace's init) and every one is
        # dead afterwards. (kill(-1) also returns 0 when it found processes it may not
        # signal, so its return says nothing.)
        "kill everything": (
            "import os, signal, time\n"
            "def alive():\n"
            "    pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
            "    return {p for p in pids if int(p) not in (1, os.getpid())\n"
            "            and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z'}\n"
            "before = alive()\nos.kill(-1, signal.SIGKILL)\ntime.sleep(0.2)\nafter = alive()\n",
            ["assert before and not before & after"]),
        "exit early": ("import os\nos._exit(0)\n", ["assert True"]),
        "endless output": ("while True:\n    print('x' * 4096)\n", ["assert True"]),
    }


def test_every_hostile_sample_fails_and_the_host_is_unharmed(canary, listener):
    port, accepted = listener
    samples = hostile_samples(canary, port)
    start = time.monotonic()
    outcomes = dict(zip(samples, run_many(list(samples.values()), 5.0, "hostile"), strict=True))
    assert {name: o.status for name, o in outcomes.items() if o.passed} == {}
    assert open(canary).read() == "intact" and not os.path.exists("/etc/stages-pwned")
    assert accepted == []
    assert time.monotonic() - start < 120
    assert outcomes["endless loop"].status == "timeout"
    # The pipeline goes on: a correct sample still passes afterwards.
    ok = run_many([("def f():\n    return 1\n", ["assert f() == 1"])], 5.0, "after")
    assert ok[0].passed


def test_without_a_sandbox_execution_is_refused_unless_opted_in(monkeypatch):
    import stages.sandbox.execute as execute

    monkeypatch.setattr(execute, "sandbox_problem", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        require_sandbox(unsafe=False)
    assert require_sandbox(unsafe=True) is False


# Pairs run one after the other in one warm sandbox: the second sample looks for what the
# first one left (the tests run outside the sandbox, so the looking is in the sample's code)
# and its test passes only if it found it.
LEFTOVERS = {
    "a process": ("import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n"
                  "    os.setsid(); os.write(w, b'x'); time.sleep(60)\nos.read(r, 1)\n",
                  "import os\n"
                  "left = [p for p in os.listdir('/proc') if p.isdigit()\n"
                  "        and int(p) not in (1, os.getppid(), os.getpid())]\n"),
    "a file in /tmp": ("open('/tmp/left', 'w').write('x')\nopen('here', 'w').write('x')\n",
                       "import os\nleft = os.path.exists('/tmp/left') or os.path.exists('here')\n"),
    "module state": ("import json\njson.LEFT = 1\n",
                     "import json\nleft = getattr(json, 'LEFT', None) == 1\n"),
}


@pytest.mark.parametrize("left", sorted(LEFTOVERS))
def test_nothing_a_sample_leaves_reaches_the_next_one(left):
    from stages.sandbox.execute import SandboxPool, run_tests

    first, second = LEFTOVERS[left]
    with SandboxPool(1, sandbox=True) as pool:
        assert run_tests(first, ["assert True"], 5.0, pool=pool).passed
        assert not run_tests(second, ["assert left"], 5.0, pool=pool).passed
        assert run_tests("x = 1\n", ["assert x == 1"], 5.0, pool=pool).passed


def test_a_sample_cannot_reach_the_warm_server():
    from stages.sandbox.execute import SandboxPool, run_tests

    attacks = {  # each passes only if it got at the server (its parent) or the host's pipes
        "signal it": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "read its memory": "import os\nopen(f'/proc/{os.getppid()}/mem', 'rb')\n",
        "take its pipes": "import os\nos.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n",
        # It keeps two pipes of its own to the server (3 and 4), and nothing else.
        "the host's pipe": "import os\nos.fstat(5)\n",
        "its stdout": "import os\nassert not os.path.samefile('/proc/self/fd/1', os.devnull)\n",
    }
    with SandboxPool(1, sandbox=True) as pool:
        outcomes = {name: run_tests(code, ["assert True"], 5.0, pool=pool)
                    for name, code in attacks.items()}
        assert {n: o.status for n, o in outcomes.items() if o.passed} == {}
        server = pool.boxes[0].proc
        assert run_tests("x = 1\n", ["assert x == 1"], 5.0, pool=pool).passed
        assert pool.boxes[0].proc is server  # the same server answered throughout
