"""Pinned CPU numerics: the settings that make a stage compute the same floats on every x86-64
machine, in one place.

Two machines with the same library versions can still train different weights: each library
picks its kernels by the CPU's instruction set (AVX2, AVX-512, ...), and a parallel reduction
adds its parts in an order set by the thread count. Float addition is not associative, so
either one changes the last bits of a gradient, and a few hundred optimizer steps make that
a different model. The stages therefore run under

- ATEN_CPU_CAPABILITY=avx2: torch's own vectorised kernels take their AVX2 variant even where
  AVX-512 exists (almost every x86-64 CPU of the last ten years has AVX2; on one without it,
  or on another architecture, the three instruction-set pins are left unset, see has_avx2,
  and the run info shows it);
- ONEDNN_MAX_CPU_ISA=AVX2: oneDNN (torch's mkldnn backend) likewise;
- MKL_CBWR=AVX2,STRICT: MKL's conditional numerical reproducibility, the same code path and
  reduction order on every CPU that has AVX2 (STRICT: also within a code path);
- THREADS intra-op threads (OMP_NUM_THREADS, MKL_NUM_THREADS, torch.set_num_threads): the
  same split of every reduction on a 2-core laptop and on a 64-core server;
- torch.use_deterministic_algorithms(True): an op without a deterministic kernel stops the
  stage instead of computing something else each run (on CUDA it warns instead: GPU runs
  are not bitwise reproducible across GPUs anyway, see README "Reproducing").

A variable already set in the environment wins (that is how benchmarks/numerics.py measures
what each one does); every stage records the values it ran under (stages.core.runinfo).
`pin_environment` runs when the `stages` package is imported, before any stage imports torch;
torch reads these variables lazily, at its first kernel dispatch.
"""

from __future__ import annotations

import os

THREADS = 2
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
}
# cuBLAS needs a fixed workspace for deterministic GEMMs (its docs, "Results reproducibility")
CUDA_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def has_avx2(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has AVX2 and FMA (the AVX2 kernels use both). torch does not check:
    ATEN_CPU_CAPABILITY=avx512 on a CPU without AVX-512 runs its AVX-512 kernels and dies of
    SIGILL (measured: exit 132 on the first vectorised op), so the instruction set is pinned
    only where the CPU has it."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


def pin_environment() -> None:
    isa = {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR"}
    pins = {k: v for k, v in PINNED_ENV.items() if k not in isa or has_avx2()}
    for key, value in {**pins, **CUDA_ENV}.items():
        os.environ.setdefault(key, value)


def pin_torch() -> None:
    """What only torch itself can set: call at the start of a stage that computes with it."""
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", THREADS))
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())


def preload() -> None:
    """Import what pin_torch imports, for a warm server (stages.warm): torch's
    use_deterministic_algorithms imports the inductor's config module (0.8 s measured with
    -X importtime) to set its fallback_random."""
    import torch._inductor.config  # noqa: F401


def settings() -> dict:
    """What this process computes under, as recorded in every stage's run info."""
    import torch

    return {
        **{key: os.environ.get(key) for key in PINNED_ENV},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
