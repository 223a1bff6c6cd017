"""Exact outputs by pulling, not recomputing: `dvc push` to a team remote (here a local
folder, as `dvc remote add -d team /path` makes it), then a fresh clone's `dvc pull` gets the
very bytes, and `dvc repro` there reruns nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dvc")

PIPELINE = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    outs: [out]
"""
# what a training stage would be: an output no clone can have without running it or pulling
MAKE = ("import os, random\n"
        "os.makedirs('out', exist_ok=True)\n"
        "open('out/weights.bin', 'wb').write(random.randbytes(4096))\n")


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, check=check, capture_output=True, text=True)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


@pytest.fixture
def pushed(tmp_path):
    """(origin repo, remote folder): the pipeline run once, committed, pushed to the remote."""
    origin, remote = tmp_path / "origin", tmp_path / "team-remote"
    origin.mkdir()
    run(origin, "git", "init", "-q")
    for key, value in [("user.name", "Test"), ("user.email", "test@example.com"),
                       ("commit.gpgsign", "false")]:
        run(origin, "git", "config", key, value)
    dvc(origin, "init", "-q")
    (origin / "dvc.yaml").write_text(PIPELINE)
    (origin / "make.py").write_text(MAKE)
    dvc(origin, "repro", "-q")
    dvc(origin, "remote", "add", "-d", "team", str(remote))
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "pipeline, team remote")
    dvc(origin, "push", "-q")
    return origin, remote


def test_a_fresh_clone_pulls_the_exact_outputs_and_reruns_nothing(pushed, tmp_path):
    origin, _ = pushed
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "out").exists()
    dvc(clone, "pull", "-q")
    assert (clone / "out" / "weights.bin").read_bytes() == \
        (origin / "out" / "weights.bin").read_bytes()
    status = dvc(clone, "status", "--json")
    assert status.stdout.strip() == "{}", status.stdout  # nothing stale, nothing missing
    # the random bytes would differ had make.py run again
    repro = dvc(clone, "repro")
    assert "didn't change, skipping" in repro.stdout and "Running stage" not in repro.stdout
    assert (clone / "out" / "weights.bin").read_bytes() == \
        (origin / "out" / "weights.bin").read_bytes()


def test_a_remote_without_the_outputs_fails_the_pull(pushed, tmp_path):
    """The check can fail: with the remote emptied, the pull stops and says what it lacks."""
    origin, remote = pushed
    shutil.rmtree(remote)
    remote.mkdir()
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    pulled = dvc(clone, "pull", check=False)
    assert pulled.returncode != 0
    assert "out" in pulled.stderr + pulled.stdout
    assert not (clone / "out" / "weights.bin").exists()
