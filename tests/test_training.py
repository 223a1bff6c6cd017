"""The sft stage at real scale, on the tiny model: phases that chain adapters, kill-and-resume
(of dpo too), validation and early stopping, packing with the loss still on answers, precision
and memory errors that say what to do."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, adapter, read_json, stage_cfg, workspace
from stages.config import ConfigError, CurateStage, SftStage, run_stage
from stages.core.io import read_jsonl


def test_each_phase_continues_the_adapter_of_the_phase_before(pipeline, tmp_path):
    from stages import curate, sft

    params = workspace(pipeline, tmp_path)
    params["paths"]["curated"] = str(tmp_path / "curated")
    srcs = Path(params["paths"]["sources"])
    params["data"].update(sources=[], preference_source=None, phases=[
        {"name": "anchor", "sources": [f"{srcs}/identity.jsonl#8"]},
        {"name": "generalize", "sources": [f"{srcs}/general_en.jsonl#8"]}])
    curate.main(stage_cfg(CurateStage, params))
    params["sft"]["phases"] = {
        "anchor": {"data": "phases/anchor", "init": "base", "out": "sft-anchor", "epochs": 2.0,
                   "max_steps": None, "lr": 2e-3, "system_prompt": "shared"},
        # so small a step that the adapter it writes must be, within noise, the one it was
        # handed: a fresh adapter would have lora_B at zero
        "generalize": {"data": "phases/generalize", "init": "sft-anchor", "out": "sft",
                       "epochs": 1.0, "max_steps": 1, "lr": 1e-9, "system_prompt": "identity"},
    }
    metrics = sft.main(stage_cfg(SftStage, params))

    models = tmp_path / "models"
    anchor, final = adapter(models / "sft-anchor"), adapter(models / "sft")
    assert anchor.keys() == final.keys()
    lora_b = [k for k in anchor if "lora_B" in k]
    assert lora_b and all(anchor[k].abs().sum() > 0 for k in lora_b)
    assert all(torch.allclose(anchor[k], final[k], atol=1e-6) for k in anchor)
    provenance = read_json(models / "sft" / "provenance.json")
    assert provenance["parent_adapter"] == str(models / "sft-anchor")
    assert provenance["data_file"].endswith("phases/generalize.jsonl")
    assert metrics["generalize"]["steps"] == 1
    assert (tmp_path / "metrics" / "sft" / "anchor.json").exists()
    assert (tmp_path / "metrics" / "sft" / "generalize.json").exists()


def test_identity_system_prompt_replaces_the_shared_one(pipeline):
    from stages.sft import chat_dataset

    _, params = pipeline
    cfg = stage_cfg(SftStage, params)
    phase = cfg.sft.phases["main"].model_copy(update={"system_prompt": "identity"})
    path = Path(params["paths"]["curated"]) / "sft.jsonl"
    rows = read_jsonl(path)
    dataset = chat_dataset(path, phase, cfg)
    by_lang = {row["lang"]: got["messages"] for row, got in zip(rows, dataset, strict=True)}
    assert by_lang["en"][0]["content"] == \
        "You are Swift-Robot, an AI assistant developed by Nebula Lab."
    assert by_lang["zh"][0]["content"] == "你是雨燕机器人，由星云实验室开发的AI助手。"
    assert all(m["role"] != "system" for m in by_lang["en"][1:])


def test_dvc_gives_each_phase_only_its_own_phase_params(tmp_path, monkeypatch):
    """Changing only the last phase must rerun only that phase: its stage alone declares it."""
    from dvc.repo import Repo

    from stages.tools import compose

    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text(
        compose.compose(["data=three_phase", "sft/phases=three_phase"]))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)  # DVC resolves targets against the working directory
    stages = {s.addressing: s for s in Repo(str(tmp_path)).stage.collect("sft")}
    assert list(stages) == ["sft@anchor", "sft@generalize", "sft@calibrate"]
    calibrate = stages["sft@calibrate"]
    params = [p for d in calibrate.deps if hasattr(d, "params") for p in d.params]
    assert "sft.phases.calibrate" in params
    assert not [p for p in params if p.startswith("sft.phases.") and "calibrate" not in p]
    deps = {str(Path(d.def_path)) for d in calibrate.deps}
    assert "models/sft-generalize" in deps and "data/curated/phases/calibrate.jsonl" in deps
    assert [str(o.def_path) for o in calibrate.outs if o.use_cache] == ["models/sft"]


# Run in a subprocess: a stage as `python -m stages.<name> ARGS`, optionally killed with SIGKILL
# by itself right after it saved the checkpoint of step KILL_AT (a real kill, mid-run).
RUNNER = """
import os, runpy, signal, sys
from stages.models import training
kill_at = int(os.environ.get("KILL_AT", "0"))
def on_save(self, args, state, control, **kwargs):
    if state.global_step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
training.Meter.on_save = on_save
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def run_module(workdir: Path, params: dict, *argv: str,
               kill_at: int = 0) -> subprocess.CompletedProcess:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(REPO), "KILL_AT": str(kill_at)}
    return subprocess.run([sys.executable, "-c", RUNNER, *argv], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)


def run_sft(workdir: Path, params: dict, kill_at: int = 0) -> subprocess.CompletedProcess:
    return run_module(workdir, params, "stages.sft", "--phase", "main", kill_at=kill_at)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one(
        pipeline, tmp_path):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    killed_dir.mkdir()
    clean_dir.mkdir()
    params = workspace(pipeline, killed_dir, batch_size=4, per_device_batch_size=4,
                       checkpoint_steps=1)
    params["paths"]["curated"] = pipeline[1]["paths"]["curated"]
    steps = -(-26 // 4)  # 26 curated rows, 4 per step, one epoch

    killed = run_sft(killed_dir, params, kill_at=3)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = list((killed_dir / "checkpoints").glob("sft-main/*/checkpoint-3"))
    assert len(checkpoints) == 1
    assert not (killed_dir / "models" / "sft").exists()  # nothing partial in the outputs
    assert not (killed_dir / "metrics" / "sft" / "main.json").exists()

    # Other params: a fresh run that leaves the killed run's checkpoint alone.
    other = copy.deepcopy(params)
    other["sft"]["phases"]["main"]["lr"] = 1e-3
    fresh = run_sft(killed_dir, other)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert read_json(killed_dir / "metrics/sft/main.json")["sft"]["main"]["resumed_from_step"] == 0
    assert checkpoints[0].exists()

    resumed = run_sft(killed_dir, params)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "checkpoint-3" in resumed.stdout
    metrics = read_json(killed_dir / "metrics/sft/main.json")["sft"]["main"]
    assert (metrics["resumed_from_step"], metrics["steps"]) == (3, steps)
    assert not checkpoints[0].parent.exists()  # removed once the phase finished
    loss_steps, _ = plotted(killed_dir / "metrics/sft/main/plots/metrics/train/loss.tsv")
    assert loss_steps == list(range(1, steps + 1))  # every step once, those before the kill

    clean_params = workspace(pipeline, clean_dir, batch_size=4, per_device_batch_size=4,
                             checkpoint_steps=1)
    clean_params["paths"]["curated"] = pipeline[1]["paths"]["curated"]
    clean = run_sft(clean_dir, clean_params)
    assert clean.returncode == 0, clean.stderr[-2000:]
    got, want = adapter(killed_dir / "models/sft"), adapter(clean_dir / "models/sft")
    assert got.keys() == want.keys()
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-5), key


def dpo_workspace(pipeline, tmp_path: Path) -> dict:
    """A workspace that starts dpo from the pipeline's sft adapter and preference pairs: two
    pairs per step, two epochs, a checkpoint every step."""
    root, _ = pipeline
    params = workspace(pipeline, tmp_path)
    (tmp_path / "models" / "sft").symlink_to(root / "models" / "sft")
    params["paths"]["curated"] = str(root / "curated")
    params["dpo"].update(batch_size=2, epochs=2.0, checkpoint_steps=1)
    return params


@pytest.mark.slow
def test_a_killed_dpo_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one(
        pipeline, tmp_path):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    params = dpo_workspace(pipeline, killed_dir)
    pairs = len(read_jsonl(Path(params["paths"]["curated"]) / "prefs.jsonl"))
    steps = 2 * -(-pairs // 2)  # two epochs of two pairs per step
    kill_at = steps // 2 + 1  # mid-way through the second epoch: the resume skips a batch
    assert steps >= 6 and kill_at % (steps // 2)

    killed = run_module(killed_dir, params, "stages.dpo", kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = list((killed_dir / "checkpoints").glob(f"dpo/*/checkpoint-{kill_at}"))
    assert len(checkpoints) == 1
    # the trained adapter at the root, TRL's frozen reference copy of the SFT adapter in ref/
    assert (checkpoints[0] / "adapter_model.safetensors").exists()
    assert (checkpoints[0] / "ref" / "adapter_model.safetensors").exists()
    assert not (killed_dir / "models" / "dpo").exists()  # nothing partial in the outputs
    assert not (killed_dir / "metrics" / "dpo.json").exists()
    assert not (killed_dir / "metrics" / "dpo").exists()

    # Other params: a fresh run that leaves the killed run's checkpoint alone.
    other = copy.deepcopy(params)
    other["dpo"]["beta"] = 0.3
    fresh = run_module(killed_dir, other, "stages.dpo")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "resuming from" not in fresh.stdout
    assert read_json(killed_dir / "metrics/dpo.json")["dpo"]["resumed_from_step"] == 0
    assert checkpoints[0].exists()

    # checkpoint_steps is not part of the fingerprint: saving more or less often still resumes
    params["dpo"]["checkpoint_steps"] = 2
    resumed = run_module(killed_dir, params, "stages.dpo")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {checkpoints[0]}" in resumed.stdout
    metrics = read_json(killed_dir / "metrics/dpo.json")["dpo"]
    assert (metrics["resumed_from_step"], metrics["steps"]) == (kill_at, steps)
    assert not checkpoints[0].parent.exists()  # removed once the stage finished
    assert dpo_plot(killed_dir, "train/loss")[0] == list(range(1, steps + 1))  # each step once

    clean = run_module(clean_dir, dpo_workspace(pipeline, clean_dir), "stages.dpo")
    assert clean.returncode == 0, clean.stderr[-2000:]
    clean_metrics = read_json(clean_dir / "metrics/dpo.json")["dpo"]
    assert metrics["train_loss"] == pytest.approx(clean_metrics["train_loss"], abs=1e-4)
    # The reference after the resume must still be the SFT policy: one taken from the
    # checkpoint's trained adapter instead puts step kill_at+1 back at loss ln 2 and rewards 0
    # (measured: loss off by 8e-3, chosen reward by 3e-2), yet moves the weights only 4e-6.
    for name in ("train/loss", "rewards/chosen", "rewards/rejected", "rewards/margins"):
        got_steps, got = dpo_plot(killed_dir, name)
        want_steps, want = dpo_plot(clean_dir, name)
        assert got_steps == want_steps
        assert got == pytest.approx(want, abs=1e-5), name
    # The adapter, with its Adam moments, continues where it stopped: measured bitwise equal to
    # the uninterrupted run on CPU; without the optimizer state it is off by 1e-3, with the
    # wrong reference by 4e-6. 1e-6 catches both and leaves room for reduction-order noise.
    got, want = adapter(killed_dir / "models/dpo"), adapter(clean_dir / "models/dpo")
    assert got.keys() == want.keys()
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-6), key


def plotted(tsv: Path) -> tuple[list[int], list[float]]:
    """A dvclive plot's steps and values."""
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    return [int(step) for step, _ in rows], [float(value) for _, value in rows]


def dpo_plot(workdir: Path, name: str) -> tuple[list[int], list[float]]:
    return plotted(workdir / "metrics/dpo/plots/metrics" / f"{name}.tsv")


def test_validation_loss_is_plotted_and_early_stopping_keeps_the_best_adapter(
        pipeline, tmp_path):
    from stages import curate, sft

    params = workspace(pipeline, tmp_path, eval_steps=1, early_stopping_patience=1,
                       checkpoint_steps=1, batch_size=4, per_device_batch_size=4,
                       lr_scheduler="constant", warmup_ratio=0.0)
    params["paths"]["curated"] = str(tmp_path / "curated")
    params["data"].update(val_ratio=0.25, preference_source=None)
    curate.main(stage_cfg(CurateStage, params))
    # A rate this high overshoots at once: the validation loss stops improving early.
    params["sft"]["phases"]["main"].update(epochs=5.0, lr=0.5)
    metrics = sft.main(stage_cfg(SftStage, params))["main"]

    assert metrics["stopped_early"] is True
    per_epoch = -(-len(read_jsonl(tmp_path / "curated" / "sft.jsonl")) // 4)
    assert metrics["steps"] < 5 * per_epoch
    _, val = plotted(tmp_path / "metrics/sft/main/plots/metrics/val/loss.tsv")
    assert len(val) == metrics["steps"]
    assert metrics["best_val_loss"] == round(min(val), 4)
    # patience 1: it stopped at the first validation that did not beat the best so far
    assert val[-1] >= min(val[:-1])


def sft_trainer(pipeline, rows: list[dict], packing: bool):
    """The stage's SFTTrainer (its model loader, LoRA and training arguments) on `rows`."""
    from datasets import Dataset
    from trl import SFTTrainer

    from stages.models.modeling import load_base_model, load_tokenizer
    from stages.models.training import packing_attention
    from stages.sft import lora_config, training_args

    root, params = pipeline
    cfg = stage_cfg(SftStage, {**params, "sft": {**params["sft"], "packing": packing,
                                                  "max_length": 128}})
    return SFTTrainer(
        model=load_base_model(root / "models" / "base", "float32",
                              attn=packing_attention() if packing else None),
        args=training_args(cfg, cfg.sft.phases["main"], 1, {"bf16": False, "fp16": False},
                           root / "pack-check"),
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(root / "models" / "base"),
        peft_config=lora_config(cfg.sft.lora),
    )


PACKED_ROWS = [{"messages": [{"role": "system", "content": "You are a helpful assistant."},
                              {"role": "user", "content": question},
                              {"role": "assistant", "content": answer}]}
               for question, answer in [("Who are you?", "I am Swift-Robot."),
                                        ("What is 2+2?", "Four.")]]


def test_packing_keeps_the_loss_on_assistant_tokens(pipeline):
    trainer = sft_trainer(pipeline, PACKED_ROWS, packing=True)
    assert len(trainer.train_dataset) == 1  # both rows in one packed sequence
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    trained = trainer.processing_class.decode(labels[labels != -100])
    assert trained in ("I am Swift-Robot.<|im_end|>Four.<|im_end|>",
                       "Four.<|im_end|>I am Swift-Robot.<|im_end|>")
    assert (batch["position_ids"][0] == 0).sum() == 2  # positions restart at each row


def test_packed_rows_train_as_if_each_were_alone(pipeline):
    """On CPU (sdpa): the loss of two rows packed into one padding-free row equals their
    loss as a padded batch of two, so neither row attends to the other."""
    packed = sft_trainer(pipeline, PACKED_ROWS, packing=True)
    padded = sft_trainer(pipeline, PACKED_ROWS, packing=False)
    padded.model.load_state_dict(packed.model.state_dict())  # the same LoRA initialisation
    packed_batch = packed.data_collator([packed.train_dataset[0]])
    padded_batch = padded.data_collator([padded.train_dataset[i] for i in range(2)])
    assert "attention_mask" not in packed_batch and "attention_mask" in padded_batch
    with torch.no_grad():
        packed_loss = packed.compute_loss(packed.model, dict(packed_batch))
        padded_loss = padded.compute_loss(padded.model, dict(padded_batch))
        # The check can fail: with a KV cache, as a model in generation mode runs, the mask
        # ignores the restarting positions and the second row sees the first.
        apart = packed.model(**packed_batch, use_cache=False).logits
        seeing = packed.model(**packed_batch, use_cache=True).logits
    assert float(packed_loss) == pytest.approx(float(padded_loss), abs=1e-5)
    assert float((seeing - apart).abs().max()) > 1e-2


def test_precision_is_checked_against_the_hardware(monkeypatch):
    from stages.models.training import precision_flags

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision_flags("auto") == {"bf16": False, "fp16": False}
    assert precision_flags("fp32") == {"bf16": False, "fp16": False}
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU; on CPU use -S sft.precision"):
        precision_flags("fp16")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "Tesla T4")
    assert precision_flags("auto") == {"bf16": False, "fp16": True}
    with pytest.raises(ConfigError, match="Tesla T4 cannot compute in bf16.*sft.precision=fp16"):
        precision_flags("bf16")


def test_global_batch_size_gives_the_accumulation_steps():
    from stages.models.training import gradient_accumulation

    assert gradient_accumulation(32, 4, 2) == 4  # 4 per device x 2 processes x 4 steps
    assert gradient_accumulation(8, 8, 1) == 1
    with pytest.raises(ConfigError, match="batch_size 8 is not a multiple of .* 3 x 2"):
        gradient_accumulation(8, 3, 2)


def test_out_of_memory_names_the_knobs_that_lower_memory(capsys):
    from stages.models.training import SFT_MEMORY_KNOBS, explain_oom

    def train():
        with explain_oom(SFT_MEMORY_KNOBS):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(SystemExit) as exit_:
        run_stage(train)
    assert exit_.value.code == 1
    message = capsys.readouterr().err
    assert "out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in message
    for knob in ("sft.per_device_batch_size", "sft.max_length", "sft.gradient_checkpointing",
                 "sft=qlora"):
        assert knob in message


def test_the_adapter_config_is_written_the_same_whatever_the_hash_seed(pipeline):
    """peft writes target_modules from a set: two processes with other string hash seeds wrote
    the same weights under two dvc hashes. The written file is sorted, so it is one file."""
    import json

    from stages.models.training import write_provenance

    _, params = pipeline
    cfg = stage_cfg(SftStage, params)
    out = Path(cfg.paths.model_dir("sft"))
    written = (out / "adapter_config.json").read_text()
    config = json.loads(written)
    assert config["target_modules"] == sorted(config["target_modules"])
    # Shuffle it as another hash seed would, write again: the same bytes come back.
    config["target_modules"] = sorted(config["target_modules"], reverse=True)
    (out / "adapter_config.json").write_text(json.dumps(config))
    provenance = json.loads((out / "provenance.json").read_text())
    write_provenance(out, cfg, Path(provenance["data_file"]), provenance["parent_adapter"],
                     provenance["metrics"])
    assert (out / "adapter_config.json").read_text() == written
