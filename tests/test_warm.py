"""stages.warm: a stage run as a child of a warm server writes what a fresh process writes,
fails as it fails, and dies with its caller; the server is one per code, environment and
directory, and leaves when idle."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, workspace
from stages import warm


@pytest.fixture
def env(tmp_path):
    """The environment for a caller: its own socket folder, so that the test's servers are
    its own, all of them stopped afterwards."""
    run = Path(tempfile.mkdtemp(prefix="warm-"))  # short: a socket's path has 107 bytes
    env = {**os.environ, "STAGES_WARM_DIR": str(run)}
    env.pop("STAGES_WARM", None)
    yield env
    subprocess.run([sys.executable, "-m", "stages.warm", "--stop"], env=env, timeout=60)
    shutil.rmtree(run)


def stage(cwd: Path, env: dict, *argv: str, warm_: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.warm", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=600,
                          env={**env, "STAGES_WARM": "1" if warm_ else "0"})


def logs(env: dict) -> str:
    return "".join(p.read_text() for p in Path(env["STAGES_WARM_DIR"]).rglob("*.log"))


def eval_dir(pipeline, tmp_path: Path, name: str) -> Path:
    """A directory whose params.yaml is the tiny pipeline's, with metrics of its own."""
    where = tmp_path / name
    where.mkdir()
    params = workspace(pipeline, where)
    params["paths"]["models"] = str(pipeline[0] / "models")
    (where / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return where


@pytest.mark.parametrize("suite", ["code", "perplexity"])
def test_a_warm_child_writes_what_a_fresh_process_writes(pipeline, tmp_path, env, suite):
    """The same eval three ways: in its own process (STAGES_WARM=0), as the call that starts
    the server, and as a second call the same server forks: the tasks file and the metrics
    are the same bytes."""
    cold, hot = eval_dir(pipeline, tmp_path, "cold"), eval_dir(pipeline, tmp_path, "hot")
    argv = ("eval", "--variant", "sft", "--suite", suite)
    done = stage(cold, env, *argv, warm_=False)
    assert done.returncode == 0, done.stderr
    assert "STAGES_WARM=0; running `python -m stages.eval` in this process" in done.stderr
    want = {kind: (cold / "metrics" / kind / "sft" / f"{suite}.{ext}").read_bytes()
            for kind, ext in (("tasks", "jsonl"), ("eval", "json"))}
    for name in ("eval@sft-one", "eval@sft-two"):  # DVC names each stage's command
        done = stage(hot, {**env, "DVC_STAGE": name}, *argv)
        assert done.returncode == 0, done.stderr
        assert f"eval sft/{suite} in" in done.stdout  # the child's stdout is the caller's
        for kind, ext in (("tasks", "jsonl"), ("eval", "json")):
            assert (hot / "metrics" / kind / "sft" / f"{suite}.{ext}").read_bytes() == want[kind]
        (hot / "metrics" / "tasks" / "sft" / f"{suite}.jsonl").unlink()
    served = logs(env)
    assert served.count("serving stages.eval") == 1, served  # one server took both calls
    assert served.count("exited 0") == 2, served


def test_a_failing_stage_fails_the_call_with_its_own_message(pipeline, tmp_path, env):
    where = eval_dir(pipeline, tmp_path, "bad")
    fresh = stage(where, env, "eval", "--variant", "nope", "--suite", "code", warm_=False)
    for _ in range(2):
        done = stage(where, env, "eval", "--variant", "nope", "--suite", "code")
        assert done.returncode == fresh.returncode == 2  # argparse's, through SystemExit
        assert "argument --variant: invalid choice: 'nope'" in done.stderr
        assert done.stderr.strip().splitlines()[-1] == fresh.stderr.strip().splitlines()[-1]
    assert logs(env).count("exited 2") == 2


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the stages package with one more module, `nap`, that writes its pid and
    sleeps: a stage that runs until it is stopped."""
    root = tmp_path / "copy"
    shutil.copytree(REPO / "stages", root / "stages",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "stages" / "nap.py").write_text(
        "import os\nimport sys\nimport time\nfrom pathlib import Path\n\n"
        "if __name__ == '__main__':\n"
        "    Path(sys.argv[1]).write_text(f'{os.getpid()} {os.environ.get(\"DVC_STAGE\")}')\n"
        "    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 120)\n", encoding="utf-8")
    return root


def test_a_caller_killed_takes_its_child_with_it(package_copy, env, tmp_path):
    pid_file = tmp_path / "nap.pid"
    caller = subprocess.Popen([sys.executable, "-m", "stages.warm", "nap", str(pid_file)],
                              cwd=package_copy, env={**env, "DVC_STAGE": "nap@1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline:
        assert caller.poll() is None, caller.stderr.read()
        time.sleep(0.1)
    child, stage_name = pid_file.read_text().split()
    child = int(child)
    assert child != caller.pid  # it runs in the server's child, not in the caller
    assert stage_name == "nap@1"  # with the caller's environment
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    deadline = time.monotonic() + 30
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)
    assert "exited -15" in logs(env)  # SIGTERM from the server


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return status != "Z"


def test_an_idle_server_leaves_and_leaves_nothing(package_copy, env, tmp_path):
    env = {**env, "STAGES_WARM_IDLE_S": "3"}
    done = subprocess.run([sys.executable, "-m", "stages.warm", "nap", str(tmp_path / "p"),
                           "0"], cwd=package_copy, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "exited 0" in logs(env)
    left = lambda: list(Path(env["STAGES_WARM_DIR"]).rglob("*.*"))  # noqa: E731
    assert {p.suffix for p in left()} == {".sock", ".log", ".lock"}
    deadline = time.monotonic() + 30
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left()  # socket, log and lock gone


def test_the_socket_is_named_for_the_code_the_environment_and_the_directory(
        package_copy, monkeypatch):
    monkeypatch.setattr(warm, "PACKAGE", package_copy / "stages")
    monkeypatch.chdir(package_copy)
    first = warm.start_key("eval")
    monkeypatch.setenv("PWD", "/elsewhere")  # the shell's, read by nothing
    monkeypatch.setenv("DVC_STAGE", "eval@base-code")  # DVC's, another for each stage
    assert warm.start_key("eval") == first
    monkeypatch.setenv("HF_HOME", "/somewhere")
    assert warm.start_key("eval") != first
    monkeypatch.delenv("HF_HOME")
    assert warm.start_key("eval") == first
    with open(package_copy / "stages" / "suites" / "code.py", "a", encoding="utf-8") as f:
        f.write("# edited\n")
    assert warm.start_key("eval") != first
    monkeypatch.chdir(package_copy / "stages")
    assert warm.start_key("eval") != first


def test_where_it_cannot_serve_it_says_why_and_runs_the_stage_itself(package_copy, env,
                                                                      tmp_path):
    """A socket folder others can enter, and a server that dies importing: each call says
    why in one line and runs the stage in its own process, which fails or passes on its own."""
    open_dir = Path(env["STAGES_WARM_DIR"]) / f"stages-warm-{os.getuid()}"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    caller = subprocess.Popen([sys.executable, "-m", "stages.warm", "nap", str(tmp_path / "p"),
                               "0"], cwd=package_copy, env=env, stderr=subprocess.PIPE,
                              text=True)
    _, stderr = caller.communicate(timeout=300)
    assert caller.returncode == 0
    assert int((tmp_path / "p").read_text().split()[0]) == caller.pid  # in the caller (exec)
    assert "must be a folder only you can enter" in stderr
    shutil.rmtree(open_dir)

    broken = package_copy / "stages" / "broken.py"
    broken.write_text("import no_such_library_here\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "stages.warm", "broken"], cwd=package_copy,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "the server exited with 1 before it listened" in done.stderr
    assert "No module named 'no_such_library_here'" in done.stderr


def test_an_unknown_stage_is_named(capsys):
    with pytest.raises(SystemExit):
        warm.parse(["evaluate", "--variant", "sft"])
    assert "stages/evaluate.py does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a tool, not a stage module at the top of stages/
        warm.parse(["tools.judge"])
    assert "stages/tools.judge.py does not exist" in capsys.readouterr().err


def test_a_server_that_dies_mid_stage_fails_the_call_and_ends_the_child(package_copy, env,
                                                                         tmp_path):
    """The stage had started, so the caller must not run it again: it ends the child and
    exits 1 naming the log."""
    pid_file = tmp_path / "nap.pid"
    caller = subprocess.Popen([sys.executable, "-m", "stages.warm", "nap", str(pid_file)],
                              cwd=package_copy, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    server = int(logs(env).split("(pid ")[1].split(")")[0])
    child = int(pid_file.read_text().split()[0])
    os.kill(server, signal.SIGKILL)
    _, stderr = caller.communicate(timeout=60)
    assert caller.returncode == 1
    assert "died while stages.nap ran in its child" in stderr
    deadline = time.monotonic() + 30
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)


def test_under_dvc_one_server_serves_every_stage(package_copy, env):
    """DVC runs each stage's command with an environment of its own (DVC_STAGE names the
    stage): three stages of a real `dvc repro` are three children of one server, each seeing
    its own stage name."""
    repo = package_copy
    (repo / "dvc.yaml").write_text(
        "stages:\n  nap:\n    foreach: [a, b, c]\n    do:\n"
        "      cmd: python -m stages.warm nap ${item}.txt 0\n      outs: ['${item}.txt']\n",
        encoding="utf-8")
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    done = subprocess.run(["dvc", "repro", "-q"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for item in "abc":
        assert (repo / f"{item}.txt").read_text().split()[1] == f"nap@{item}"
    served = logs(env)
    assert served.count("serving stages.nap") == 1 and served.count("exited 0") == 3, served


def test_a_call_without_its_descriptors_runs_nothing_and_stop_ends_the_server(
        package_copy, env, tmp_path):
    """A process that sends a well-formed call but not the caller's stdin/stdout/stderr (a
    hand-made client) gets status 2 and no child; --stop removes the socket before it
    answers, so the next call cannot reach the stopping server."""
    import json
    import socket

    first = tmp_path / "first"
    done = subprocess.run([sys.executable, "-m", "stages.warm", "nap", str(first), "0"],
                          cwd=package_copy, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (sock,) = Path(env["STAGES_WARM_DIR"]).rglob("*.sock")
    forged = tmp_path / "forged"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(str(sock))
        conn.send(json.dumps({"argv": [str(forged), "0"], "cwd": str(package_copy),
                              "env": env}).encode())
        assert json.loads(conn.recv(4096)) == {"status": 2}
    time.sleep(0.5)
    assert not forged.exists() and logs(env).count("call:") == 1
    stopped = subprocess.run([sys.executable, "-m", "stages.warm", "--stop"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and f"stopped {sock.name}" in stopped.stdout
    assert not sock.exists()


def test_only_the_servers_own_user_is_served(monkeypatch):
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        assert warm.own_user(ours)
        real = os.getuid()
        monkeypatch.setattr(warm.os, "getuid", lambda: real + 1)  # the peer is someone else
        assert not warm.own_user(ours)
