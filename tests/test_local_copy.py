"""local_copy: a local copy of a hub model is an input DVC can see."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, read_json, repo_params, stage_cfg
from stages.config import LocalCopyStage


def run(tmp_path, local_dir):
    from stages import local_copy

    params = repo_params()
    params["model"]["local_dir"] = local_dir and str(local_dir)
    params["paths"]["metrics"] = str(tmp_path / "metrics")
    local_copy.main(stage_cfg(LocalCopyStage, params))
    return read_json(tmp_path / "metrics" / "local_copy.json")["local_copy"]


def test_the_hash_follows_the_content_of_the_copy(tmp_path):
    copy = tmp_path / "Qwen2.5-Coder-1.5B-Instruct"
    (copy / ".cache").mkdir(parents=True)
    (copy / "model.safetensors").write_bytes(b"\x00" * 64)
    (copy / "config.json").write_text("{}")
    (copy / ".cache" / "download.lock").write_text("hidden: not part of the model")
    first = run(tmp_path, copy)
    assert first["files"] == 2 and len(first["sha256"]) == 64
    (copy / ".cache" / "download.lock").write_text("changed")
    assert run(tmp_path, copy) == first                     # hidden files do not count
    (copy / "model.safetensors").write_bytes(b"\x00" * 63 + b"\x01")
    assert run(tmp_path, copy)["sha256"] != first["sha256"]  # one byte of the weights


def test_no_local_copy_writes_a_stable_record_and_a_missing_one_is_named(tmp_path):
    assert run(tmp_path, None) == {"local_dir": None, "sha256": None, "files": 0}
    with pytest.raises(FileNotFoundError, match="model.local_dir=.*nowhere is not a directory"):
        run(tmp_path, tmp_path / "nowhere")


def test_base_depends_on_the_record_which_is_rewritten_on_every_repro():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["local_copy"]["always_changed"] is True
    record = "${paths.metrics}/local_copy.json"
    assert [next(iter(o)) for o in stages["local_copy"]["outs"]] == [record]
    assert record in stages["base"]["deps"]
