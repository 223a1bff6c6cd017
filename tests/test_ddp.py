"""Data-parallel sft on CPU: two processes (gloo) under `accelerate launch`, one set of
outputs, the same adapter as one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, adapter, read_json, workspace


def launch(workdir: Path, params: dict, processes: int) -> subprocess.CompletedProcess:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if processes == 1:
        cmd = [sys.executable, "-m", "stages.sft", "--phase", "main"]
    else:
        # ACCELERATE_USE_CPU makes each process join the gloo group (configs/accelerate/cpu2.yaml
        # says why both it and the config's MULTI_GPU type are needed on CPU).
        env["ACCELERATE_USE_CPU"] = "1"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configs" / "accelerate" / "cpu2.yaml"),
               "--num_processes", str(processes), "--main_process_port", "29517",
               "-m", "stages.sft", "--phase", "main"]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo process groups on Linux")
def test_two_cpu_processes_train_one_adapter_with_one_set_of_metrics(pipeline, tmp_path):
    runs = {}
    for processes in (1, 2):
        workdir = tmp_path / f"p{processes}"
        workdir.mkdir()
        # global batch 8: one process x 8, or two x 4; no dropout, so that the two runs see
        # the same gradients and must end with the same weights
        params = workspace(pipeline, workdir, batch_size=8, per_device_batch_size=8 // processes)
        params["paths"]["curated"] = pipeline[1]["paths"]["curated"]
        params["sft"]["lora"]["dropout"] = 0.0
        # 3 x 8 of the 26 rows: a last, short batch would be evened out across the two
        # processes by repeating rows, which one process does not do
        params["sft"]["phases"]["main"]["max_steps"] = 3
        result = launch(workdir, params, processes)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = workdir, result

    workdir, result = runs[2]
    assert result.stdout.count("sft@main: adapter in") == 1  # rank 0 alone writes
    metrics = read_json(workdir / "metrics" / "sft" / "main.json")["sft"]["main"]
    single = read_json(runs[1][0] / "metrics" / "sft" / "main.json")["sft"]["main"]
    assert metrics["processes"] == 2 and single["processes"] == 1
    assert metrics["steps"] == single["steps"] == 3
    assert metrics["tokens"] == single["tokens"]  # the same rows, split over two processes
    assert sorted(p.name for p in (workdir / "metrics" / "sft").iterdir()) == ["main",
                                                                               "main.json"]
    assert not list((workdir / "checkpoints").rglob("checkpoint-*"))
    two, one = adapter(workdir / "models" / "sft"), adapter(runs[1][0] / "models" / "sft")
    assert two.keys() == one.keys()
    for key in one:
        assert torch.allclose(two[key], one[key], atol=1e-5), key
