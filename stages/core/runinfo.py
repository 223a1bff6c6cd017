"""What a stage ran on: library versions, CPU/GPU, pinned numerics, commit.

Written next to a stage's figures in its committed metrics file (key "run"), never into a
DVC-cached output: the commit and the machine change from run to run while the weights do
not, and a cached output whose hash changes reruns every stage below it (README
"Reproducing"). Which of these reruns a stage when it changes is stages.environment's
business (the library versions, and only those).
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from stages.core import numerics
from stages.core.io import git_sha

# The distributions whose code computes a stage's numbers: training, tokenizing, decoding,
# scoring. Their versions are also what stages.environment writes for DVC to compare.
LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "trl", "peft", "datasets",
             "lm_eval", "evalplus", "numpy", "safetensors")


def library_versions() -> dict[str, str | None]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux), else what the platform module says."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_info() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "versions": {"python": platform.python_version(), **library_versions()},
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "numerics": numerics.settings(),
        "git_sha": git_sha(),
    }
