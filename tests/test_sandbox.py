"""Hostile samples: each one's tests pass only if its attack worked, so a sandbox that let
it through would score it as passed. Every one must fail, and the host must be unharmed."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from stages.execute import SandboxUnavailable, require_sandbox, run_many, sandbox_problem

pytestmark = pytest.mark.skipif(
    sandbox_problem() is not None,
    reason=f"no bubblewrap sandbox here ({sandbox_problem()}); the README setup installs it",
)


@pytest.fixture
def canary():
    """A file in a host directory that the sandbox sees (read-only): attacks target it."""
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
                               "    blocks.append(bytearray(1 << 27))\n",
                               ["assert len(blocks) == 64"]),
        "delete a host file": (f"import os\nos.remove({canary!r})\n",
                               [f"import os\nassert not os.path.exists({canary!r})"]),
        "overwrite a host file": (f"open({canary!r}, 'w').write('pwned')\n",
                                  [f"assert open({canary!r}).read() == 'pwned'"]),
        "fill the disk": ("with open('big', 'wb') as f:\n    for _ in range(64):\n"
                          "        f.write(b'x' * (1 << 20))\n",
                          ["import os\nassert os.path.getsize('big') == 64 << 20"]),
        "open a socket": (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), 2)\n",
                          ["assert s is not None"]),
        "os.system": (f"import os\nrc = os.system('echo pwned > {canary}')\n",
                      [f"assert rc == 0 and open({canary!r}).read().startswith('pwned')"]),
        "posix.system": (f"import posix\nrc = posix.system('rm -f {canary}')\n",
                         [f"import os\nassert rc == 0 and not os.path.exists({canary!r})"]),
        "ctypes": ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                   f"rc = libc.system(b'rm -f {canary}')\n",
                   [f"import os\nassert rc == 0 and not os.path.exists({canary!r})"]),
        "kill the parent": (f"import os, signal\nos.kill({parent}, signal.SIGKILL)\n",
                            ["assert True"]),
        "kill everything": ("import os, signal\nos.kill(-1, signal.SIGKILL)\n", ["assert True"]),
        "exit early": ("import os\nos._exit(0)\n", ["assert True"]),
        "endless output": ("while True:\n    print('x' * 4096)\n", ["assert True"]),
    }


def test_every_hostile_sample_fails_and_the_host_is_unharmed(canary, listener):
    port, accepted = listener
    samples = hostile_samples(canary, port)
    start = time.monotonic()
    outcomes = dict(zip(samples, run_many(list(samples.values()), 5.0, "hostile"), strict=True))
    assert {name: o.status for name, o in outcomes.items() if o.passed} == {}
    assert open(canary).read() == "intact"
    assert accepted == []
    assert time.monotonic() - start < 120
    assert outcomes["endless loop"].status == "timeout"
    # The pipeline goes on: a correct sample still passes afterwards.
    ok = run_many([("def f():\n    return 1\n", ["assert f() == 1"])], 5.0, "after")
    assert ok[0].passed


def test_without_a_sandbox_execution_is_refused_unless_opted_in(monkeypatch):
    import stages.execute as execute

    monkeypatch.setattr(execute, "sandbox_problem", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        require_sandbox(unsafe=False)
    assert require_sandbox(unsafe=True) is False
