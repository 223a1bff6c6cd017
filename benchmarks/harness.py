"""What every benchmark script repeats: its command line's common flags, pinning torch's
threads, and timing a call. The record it ends with is benchmarks/record.py's `write`.

    parser = harness.parser(__doc__)          # --json PATH, the description from the docstring
    harness.threads(parser)                   # --threads N
    args = parser.parse_args()
    harness.pin_threads(args.threads)
    result, seconds = harness.timed(work, rows)
    record.write("name", "Title", figures, notes, args.json)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
THREADS_HELP = "torch CPU threads (1 on a shared machine: see benchmarks/README.md)"


def parser(doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """The script's parser: its docstring's first line as the description, and --json, which
    every benchmark takes so that a trial run does not overwrite the committed record."""
    out = argparse.ArgumentParser(description=(doc or "").splitlines()[0], **kwargs)
    json_flag(out)
    return out


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path,
                        help="where to write the result record (default: benchmarks/results/)")


def threads(parser: argparse.ArgumentParser, help: str = THREADS_HELP,
            default: int | None = None) -> None:
    parser.add_argument("--threads", type=int, default=default, help=help)


def pin_threads(threads: int | None) -> None:
    """torch's CPU threads in this process; None keeps torch's default (one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def timed(fn: Callable[..., T], *args, **kwargs) -> tuple[T, float]:
    """fn's result and its wall-clock seconds."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
