"""Every benchmark once: its module, the arguments its committed record was made with, the
record it writes, the files outside git it reads and what it measures. BENCHMARKS.md's
commands, `render.py --run` and the staleness checks of tests/test_benchmarks.py all derive
from ENTRIES, in the order of the page.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
HUMANEVALPLUS = "../shared/datasets/humanevalplus/HumanEvalPlus-v0.1.10.jsonl"
MBPPPLUS = "../shared/datasets/mbppplus/MbppPlus-v0.2.0.jsonl"
CODEALPACA = "../shared/datasets/codealpaca/code_alpaca_2k.json"
BIGCODEBENCH = "../shared/datasets/benchmarks/bigcodebench/BigCodeBench.jsonl"


@dataclass(frozen=True)
class Benchmark:
    name: str
    """The record's name: benchmarks/results/<name>.json."""
    module: str
    """benchmarks/<module>.py, run as `python -m benchmarks.<module>`."""
    args: str
    """The arguments the committed record was made with, as typed."""
    measures: str
    """What it measures, in a line (benchmarks/README.md says how)."""
    inputs: tuple[str, ...] = ()
    """Files outside git it reads (named in args); the record pins each by sha256."""
    stale: str = ""
    """Why the committed record no longer matches the code, until it is rerun: the page says
    so, and tests/test_benchmarks.py fails once the reason is gone or another one appears."""
    not_run: str = ""
    """Why there is no record yet (the page lists it under "Not run yet")."""

    @property
    def command(self) -> str:
        return " ".join(["python", "-m", f"benchmarks.{self.module}", *self.args.split()])

    @property
    def record(self) -> Path:
        return RESULTS / f"{self.name}.json"

    def ran(self, command: str) -> bool:
        """Whether a record's command is this entry's: records made before benchmarks/ was a
        package say `python benchmarks/<module>.py`, the same script."""
        return normalise(command) == normalise(self.command)


def normalise(command: str) -> str:
    """`python benchmarks/x.py ARGS` as `python -m benchmarks.x ARGS`."""
    return re.sub(r"^python benchmarks/(\w+)\.py\b", r"python -m benchmarks.\1", command)


ENTRIES: tuple[Benchmark, ...] = (
    # against 9cee6e5, main before generation batching and warm eval stages (issue #25)
    Benchmark("pipeline_bench", "pipeline_bench", "--before 9cee6e5",
              "a fresh clone's dvc repro, seconds per stage and in total, against 9cee6e5's"),
    Benchmark("base_schedule", "base_schedule", "--steps 500 --threads 1",
              "the tiny base's steps against its capability bars"),
    Benchmark("curate_bench", "curate_bench", "--rows 100000 --full-rows 5000",
              "curate throughput: dedup + decontamination, and the whole clean_row path"),
    Benchmark("generation_bench", "generation_bench",
              f"--dataset-path {HUMANEVALPLUS} --tasks 48 --threads 1 --no-evalplus",
              "generation throughput against plain and continuous-batching transformers",
              inputs=(HUMANEVALPLUS,)),
    # the same at the stages' own two threads (stages.core.numerics), on an idle machine: one
    # busy process elsewhere stalls two torch threads at every op of the tiny model
    Benchmark("generation_bench-2threads", "generation_bench",
              f"--dataset-path {HUMANEVALPLUS} --tasks 48 --threads 2 --no-evalplus",
              "generation throughput at the stages' two threads (idle machine)",
              inputs=(HUMANEVALPLUS,)),
    Benchmark("eval_bench", "eval_bench", "--before 3472e34 --variants base sft dpo "
              "--repeats 2 --threads 1", "eval stages' wall time before and after a commit"),
    Benchmark("score_vs_evalplus-humanevalplus", "score_vs_evalplus",
              f"--dataset humaneval+ --dataset-path {HUMANEVALPLUS} --repeats 3 "
              "--evalplus-parallel 2",
              "parity: stages.score's per-task verdicts and wall time against evalplus.evaluate",
              inputs=(HUMANEVALPLUS,)),
    Benchmark("score_vs_evalplus-mbppplus", "score_vs_evalplus",
              f"--dataset mbpp+ --dataset-path {MBPPPLUS} --repeats 1",
              "parity: stages.score's per-task verdicts and wall time against evalplus.evaluate",
              inputs=(MBPPPLUS,)),
    Benchmark("rerun_bench", "rerun_bench", "",
              "what dvc exp run reruns when one param changes, and restores when it goes back"),
    Benchmark("numerics_bench", "numerics_bench", "--steps 30",
              "which CPU settings change the tiny base's weights, and what pinning costs"),
    Benchmark("step_profile", "step_profile", "--steps 20",
              "where a pinned base pretraining step spends its time"),
    Benchmark("train_bench-ours-vs-plain", "train_bench",
              "ours-vs-plain --data repo --arch repo --repeats 3 --threads 1",
              "the sft stage's training throughput against plain TRL"),
    Benchmark("train_bench-packing", "train_bench",
              f"packing --data codealpaca --codealpaca {CODEALPACA} --rows 160 --arch repo "
              "--repeats 3 --threads 1", "packing against padded batches",
              inputs=(CODEALPACA,)),
    Benchmark("train_bench-shapes", "train_bench",
              "shapes --model tiny --max-length 256 --steps 5 --threads 1",
              "seconds per step and peak memory at real-sized shapes"),
    Benchmark("lm_eval_vs_cli", "lm_eval_vs_cli",
              "--variant sft --limit 50 --group-limit 5 --threads 1",
              "parity: our lm-eval suites' per-document outcomes against lm_eval's CLI"),
    Benchmark("bigcodebench_canonical", "bigcodebench_canonical", f"--data {BIGCODEBENCH}",
              "parity: BigCodeBench's canonical solutions through our judge",
              inputs=(BIGCODEBENCH,)),
    Benchmark("paired_coverage", "paired_coverage", "",
              "coverage of the paired 95% CIs the summary reports"),
    # README.md's sweep table (benchmarks/figures.py renders it from this record).
    Benchmark("sweep", "sweep", "sft.lora.r=8,16,32",
              "a dvc exp run sweep's judged scores and verdicts"),
    Benchmark("sandbox_bench", "sandbox_bench", f"--humaneval {HUMANEVALPLUS}",
              "scoring in warm sandboxes before and after issue 22; forgeries passed",
              inputs=(HUMANEVALPLUS,)),
)
BY_NAME = {entry.name: entry for entry in ENTRIES}


def overrides(command: str, notes: str = "") -> list[str]:
    """The config keys a record's run set: `-S KEY=VALUE` in its command or notes (where a
    benchmark whose overrides are built in names them), and sweep's positional KEY=VALUES."""
    keys = re.findall(r"-S[ =]'?([\w.]+)=", f"{command} {notes}")
    words = shlex.split(normalise(command))
    if words[2:3] == ["benchmarks.sweep"]:
        keys += [w.split("=", 1)[0] for w in words[3:] if "=" in w and not w.startswith("-")]
    return list(dict.fromkeys(keys))


def rejected(keys: list[str]) -> list[str]:
    """The keys the current schema does not know: neither a dotted key of stages.config's
    Config over params.yaml nor a config group of conf/ (`-S rl=grpo`)."""
    from stages.config import Config, known_keys, read_params

    known = set(known_keys(Config, read_params(REPO / "params.yaml")))
    return [k for k in keys if k not in known and not (REPO / "conf" / k).is_dir()]
