"""A benchmark's result record: what ran, where, when, and the figures it measured.

Each benchmark script ends with

    record.write("curate_bench", "Curate throughput", figures, notes, args.json)

which writes benchmarks/results/curate_bench.json (or the path given):

    {"name", "title", "command", "machine", "date", "commit", "dirty",
     "figures": [{"label", "value", "unit"}], "notes"}

`commit` is HEAD when it ran and `dirty` the tracked files that differed from HEAD then:
a figure measured on uncommitted code cannot be traced to a commit, and
benchmarks/figures.py refuses to quote it in README.md.

`python -m benchmarks.render` turns every record into BENCHMARKS.md. Importing this module
puts the repo root first on sys.path, so that a benchmark measures this checkout's `stages`
even where an editable install points at another one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))
LOAD_AT_START = os.getloadavg()[0]


def figure(label: str, value: float | int | str, unit: str = "") -> dict:
    return {"label": label, "value": value, "unit": unit}


def command(argv: list[str] | None = None) -> str:
    """The command line that ran this process, as typed from the repo root: a benchmark as
    `python -m benchmarks.<name>` (sys.argv[0] is then the module's file)."""
    argv = list(sys.argv if argv is None else argv)
    module = main_module()
    if module:
        return shlex.join(["python", "-m", module, *argv[1:]])
    script = Path(argv[0]).resolve()
    if script.is_relative_to(REPO):
        argv[0] = str(script.relative_to(REPO))
    return shlex.join(["python", *argv])


def main_module() -> str | None:
    """The module this process runs as (`python -m benchmarks.x`), None for a script."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec and spec.name.startswith("benchmarks.") else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    """The machine as a reader needs it to compare figures: CPU, cores this process may use,
    RAM, GPU, versions, torch's CPU threads, and the 1-minute load average when the benchmark
    started and ended (above the core count, something else was running too)."""
    import torch

    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "ram_gib": ram_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_1min": [round(LOAD_AT_START, 2), round(os.getloadavg()[0], 2)],
    }


def git_state(repo: Path = REPO) -> tuple[str | None, list[str]]:
    """(HEAD's sha, the tracked files whose content differs from HEAD); (None, []) outside a
    git checkout."""
    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None:
        return None, []
    status = git("status", "--porcelain", "--untracked-files=no") or ""
    return head.strip(), sorted(line[3:].split(" -> ")[-1] for line in status.splitlines())


def scratch_clone(name: str) -> tuple[Path, Path]:
    """A git clone of this repo's HEAD in a fresh temporary folder, for benchmarks that run
    the pipeline: (folder, clone). The clone commits as `name`; ../shared is linked beside it
    where this checkout has one, so that overrides naming ../shared/datasets resolve."""
    work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    for key, value in (("user.name", name), ("user.email", f"{name}@localhost")):
        subprocess.run(["git", "config", key, value], cwd=clone, check=True)
    if (REPO.parent / "shared").exists():
        (work / "shared").symlink_to(REPO.parent / "shared")
    return work, clone


def inputs(argv: list[str] | None = None) -> dict[str, str]:
    """sha256 of each file the command line names (a dataset, a samples file), keyed as
    typed: the commit pins the code, this pins the data outside git (../shared/datasets),
    so a record measured on another copy of a dataset shows it."""
    out = {}
    for arg in (sys.argv if argv is None else argv)[1:]:
        name = arg.rpartition("=")[2]  # --dataset-path=FILE as well as --dataset-path FILE
        if Path(name).is_file():
            out[name] = hashlib.sha256(Path(name).read_bytes()).hexdigest()
    return out


def write(name: str, title: str, figures: list[dict], notes: str = "",
          path: Path | None = None, extra: dict | None = None,
          state: tuple[str | None, list[str]] | None = None) -> Path:
    """`extra`: more keys for a renderer that needs structure (the sweep's table); `state`:
    (commit, dirty) when the benchmark measured another checkout than this one (a clean
    clone of HEAD: (HEAD, []))."""
    commit, dirty = state or git_state()
    record = {"name": name, "title": title, "command": command(), "machine": machine(),
              "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "commit": commit, "dirty": dirty, "inputs": inputs(), "figures": figures,
              "notes": notes, **(extra or {})}
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")
    return path
