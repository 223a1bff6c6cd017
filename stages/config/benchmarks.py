"""The `benchmarks` group: local copies of the public benchmarks, one key per data path the
suite registry (stages/config/suites.py) names."""

from __future__ import annotations

from pydantic import Field, create_model

from stages.config.base import Strict, flatten
from stages.config.suites import SUITES


class EvalplusBenchmarks(Strict):
    """Local copies of the public benchmarks (evalplus .jsonl); null: not available. Curate
    decontaminates against each one given; eval scores on them."""

    humanevalplus: str | None
    mbppplus: str | None
    humanevalpack: str | None
    """HumanEvalPack Python (.jsonl with buggy_solution): repair and localisation probes at
    benchmark scale, added to the dimensions suite."""


# The keys of every other suite's data (lm-eval tasks, BigCodeBench), from the registry, in its
# order: null (the default) means the suite cannot run. A key several suites share
# (bigcodebench) is one field, described by the first of them.
_REGISTERED: dict[str, str] = {}
for _suite in SUITES:
    if _suite.benchmark and _suite.benchmark not in EvalplusBenchmarks.model_fields:
        _REGISTERED.setdefault(_suite.benchmark, _suite.data)

BenchmarksConfig = create_model(
    "BenchmarksConfig", __base__=EvalplusBenchmarks, __module__=__name__,
    __doc__=EvalplusBenchmarks.__doc__,
    **{key: (str | None, Field(None, description=data)) for key, data in _REGISTERED.items()})


def benchmark_files(benchmarks: BenchmarksConfig) -> dict[str, str]:
    """Every path under `benchmarks`, whatever its key (suites add their own keys)."""
    return {f"benchmarks.{key}": path for key, path in flatten(benchmarks.model_dump()).items()
            if isinstance(path, str)}
