"""A rerun with identical inputs writes byte-identical DVC-cached outputs (so nothing below it
reruns), and the run-to-run values (timings, memory, commit, machine, versions) go to the
committed metrics files instead."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from conftest import read_json, stage_cfg, workspace
from stages import base, dpo, sft
from stages.config import BaseStage, DpoStage, SftStage
from stages.core.io import sha256_file
from stages.core.runinfo import LIBRARIES, cpu_name
from stages.models.training import RUN_TO_RUN

# what must never be in a cached output: it differs between two runs that write the same weights
VOLATILE = {*RUN_TO_RUN, "git_sha", "run", "versions", "cpu", "gpu"}


def hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def volatile_keys(folder: Path) -> set[str]:
    """Keys of VOLATILE anywhere in the JSON files of `folder`."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            found.update(VOLATILE & value.keys())
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in folder.rglob("*.json"):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return found


def twice(run, out: Path) -> tuple[dict, dict]:
    """The file hashes of `out` after `run()`, and after running it again in the same place
    (same paths, so paths written into the outputs match too)."""
    run()
    first = hashes(out)
    run()
    return first, hashes(out)


def assert_same(first: dict, again: dict, out: Path) -> None:
    assert first, f"{out} is empty"
    changed = sorted(k for k in first.keys() | again.keys() if first.get(k) != again.get(k))
    assert not changed, f"a rerun with identical inputs changed {changed} in {out}"
    assert not volatile_keys(out), f"{out} holds run-to-run values {volatile_keys(out)}"


def run_info_recorded(metrics_file: Path) -> None:
    run = read_json(metrics_file)["run"]
    assert set(LIBRARIES) <= run["versions"].keys()
    assert run["versions"]["torch"].startswith("2.") and run["versions"]["trl"]
    assert run["cpu"] == cpu_name() and run["cpu"]
    assert run["numerics"]["deterministic_algorithms"] is True
    assert run["numerics"]["ATEN_CPU_CAPABILITY"]


def test_base_rerun_writes_the_same_bytes(pipeline, tmp_path):
    _, params = pipeline
    params = copy.deepcopy(params)
    params["paths"].update(models=str(tmp_path / "models"), metrics=str(tmp_path / "metrics"))
    first, again = twice(lambda: base.main(stage_cfg(BaseStage, params)),
                         tmp_path / "models" / "base")
    assert_same(first, again, tmp_path / "models" / "base")
    metrics = read_json(tmp_path / "metrics" / "base.json")
    assert metrics["base"]["train_s"] > 0  # the timing is kept, in the committed metrics
    run_info_recorded(tmp_path / "metrics" / "base.json")


def test_sft_and_dpo_reruns_write_the_same_bytes(pipeline, tmp_path):
    root, _ = pipeline
    params = workspace(pipeline, tmp_path)
    params["paths"]["curated"] = str(root / "curated")
    first, again = twice(lambda: sft.main(stage_cfg(SftStage, params)),
                         tmp_path / "models" / "sft")
    assert_same(first, again, tmp_path / "models" / "sft")
    assert read_json(tmp_path / "metrics" / "sft" / "main.json")["sft"]["main"]["train_s"] > 0
    run_info_recorded(tmp_path / "metrics" / "sft" / "main.json")

    first, again = twice(lambda: dpo.main(stage_cfg(DpoStage, params)),
                         tmp_path / "models" / "dpo")
    assert_same(first, again, tmp_path / "models" / "dpo")
    run_info_recorded(tmp_path / "metrics" / "dpo.json")


def test_a_timing_in_a_cached_output_is_caught(tmp_path):
    """The check above can fail: a provenance file with a wall time in it is named."""
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "provenance.json").write_text(json.dumps({"metrics": {"train_s": 1.5}}))
    assert volatile_keys(out) == {"train_s"}


CHILD = """
import json, os, sys
os.environ.update(json.loads(sys.argv[1]))  # in-process, before torch: as pin_environment
import stages
import torch
from stages.core.numerics import pin_torch, settings
pin_torch()
torch.ones(4).sum()  # a first kernel dispatch
print(json.dumps(settings()))
"""


def child_settings(env: dict[str, str], inherited: dict[str, str]) -> dict:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(env)], env=inherited,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_every_stage_process_runs_under_the_pinned_numerics():
    """With none of the variables set outside, importing `stages` sets them before torch
    reads them: AVX2 kernels at most (an AVX-512 CPU included), MKL's AVX2 code path, two
    threads, deterministic algorithms. A variable set in-process before torch is imported
    reaches torch's dispatch (ATEN_CPU_CAPABILITY=default: the scalar kernels), which is how
    the pins reach it."""
    import os

    from stages.core.numerics import PINNED_ENV, has_avx2

    clean = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    pinned = child_settings({}, clean)
    if has_avx2():
        assert {k: pinned[k] for k in PINNED_ENV} == PINNED_ENV
        assert pinned["cpu_capability"] == "AVX2"  # never AVX512, where the CPU has it
    else:  # no AVX2: the instruction set is left to torch, the threads are still pinned
        assert pinned["ATEN_CPU_CAPABILITY"] is None and pinned["OMP_NUM_THREADS"] == "2"
    assert pinned["torch_threads"] == 2 and pinned["deterministic_algorithms"] is True
    scalar = child_settings({"ATEN_CPU_CAPABILITY": "default"}, clean)
    assert scalar["cpu_capability"] == "DEFAULT" and scalar["ATEN_CPU_CAPABILITY"] == "default"


def test_the_instruction_set_is_pinned_only_where_the_cpu_has_avx2(tmp_path):
    from stages.core.numerics import has_avx2

    with_it, without = tmp_path / "avx2", tmp_path / "old"
    with_it.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    assert has_avx2(str(with_it)) and not has_avx2(str(without))
    assert not has_avx2(str(tmp_path / "missing"))


STARTUP = """
import json, sys
import stages
from stages.core.numerics import pin_torch
from stages.models.modeling import load_variant
from stages.config.paths import PathsConfig
pin_torch()
import torch
model = load_variant(PathsConfig(**json.loads(sys.argv[1])), "sft", "float32")
loaded = {m: m in sys.modules for m in ("bitsandbytes", "torch._inductor.compile_fx")}
import bitsandbytes  # the block that hid it has ended: importable again
print(json.dumps({**loaded, "deterministic": torch.are_deterministic_algorithms_enabled(),
                  "lora": type(model.base_model.model.model.layers[0].self_attn.q_proj).__module__}))
"""


def test_an_eval_process_loads_an_adapter_without_bitsandbytes(pipeline):
    """Loading an adapter on CPU loads neither bitsandbytes nor the compiler it starts
    (torch.compile of its CPU kernels at import): about 1 s of every eval process. The LoRA
    layers are peft's plain ones, deterministic algorithms stay on, and bitsandbytes can be
    imported once the adapter is loaded."""
    import subprocess
    import sys

    _, params = pipeline
    paths = params["paths"]
    done = subprocess.run([sys.executable, "-c", STARTUP, json.dumps(paths)],
                          capture_output=True, text=True, check=True)
    got = json.loads(done.stdout.splitlines()[-1])
    assert got == {"bitsandbytes": False, "torch._inductor.compile_fx": False,
                   "deterministic": True,
                   "lora": "peft.tuners.lora.layer"}
