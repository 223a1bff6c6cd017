"""sft: LoRA supervised fine-tuning, one DVC stage per phase (sft@<phase>).

Reads   params seed, identity, model, sft, paths; models/base, models/<init> (the adapter of the
        phase before, if any), data/curated/<data>.jsonl and <data>.val.jsonl
Writes  models/<out>/ (LoRA adapter + provenance.json; the last phase writes models/sft),
        metrics/sft/<phase>.json, metrics/sft/<phase>/plots/ (per global step: loss,
        validation loss, learning rate, gradient norm overall and per LoRA projection)
Run     dvc repro sft   (every phase; or: python -m stages.sft [--phase NAME])
Many    accelerate launch --config_file configs/accelerate/ddp.yaml -m stages.sft --phase NAME

sft=lora | dora | qlora (a 4-bit NF4 base, CUDA only: without CUDA it stops before loading
anything). The loss is on the assistant's tokens only (TRL's assistant_only_loss with the chat
template's generation markers, or TRL's training variant of a known official template), with
or without packing; a template with neither stops the stage before the model is loaded. A phase continues the adapter of the
phase before it (anchor -> generalize -> calibrate).

A killed run started again with the same params resumes from its last checkpoint, kept under
paths.checkpoints (outside DVC's outputs) and removed when the phase finishes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from stages.config import ConfigError, LoraParams, SftPhase, SftStage, load, run_stage
from stages.core.io import MissingInput, atomic_dir, read_jsonl, write_json
from stages.core.numerics import pin_torch
from stages.core.runinfo import run_info
from stages.data.formats import DataError, identity_system_prompt
from stages.models.modeling import (
    count_parameters,
    load_base_model,
    load_tokenizer,
    read_base_json,
    require_cuda_for_4bit,
    require_training_template,
)
from stages.models.training import (
    SFT_MEMORY_KNOBS,
    LoraGradNorms,
    Meter,
    adapter_megabytes,
    checkpoint_dir,
    explain_oom,
    file_fingerprint,
    gradient_accumulation,
    last_checkpoint,
    last_logged,
    logged,
    packing_attention,
    peak_memory,
    precision_flags,
    remove_checkpoints,
    write_plots,
    write_provenance,
)

PLOTTED = {"loss": "train/loss", "eval_loss": "val/loss", "learning_rate": "train/lr",
           "grad_norm": "train/grad_norm"}


def main(cfg: SftStage | None = None, phase: str | None = None) -> dict:
    """Train `phase`, or every phase in order when none is named."""
    cfg = cfg or load(SftStage)
    names = [phase] if phase else list(cfg.sft.phases)
    for name in names:
        if name not in cfg.sft.phases:
            raise ConfigError(f"no phase {name!r} in sft.phases; use one of "
                              f"{list(cfg.sft.phases)}")
    return {name: train_phase(cfg, name) for name in names}


def train_phase(cfg: SftStage, name: str) -> dict:
    from accelerate import PartialState
    from transformers import EarlyStoppingCallback, set_seed
    from trl import SFTTrainer

    phase = cfg.sft.phases[name]
    # Everything that can be refused is refused before a model is loaded.
    if cfg.sft.method == "qlora":
        require_cuda_for_4bit()
    precision = precision_flags(cfg.sft.precision)
    # cpu=True lets CPU processes under `accelerate launch` join one gloo group; without it
    # each would train alone on all the data as rank 0 (docs/multi-gpu.md).
    processes = PartialState(cpu=not torch.cuda.is_available()).num_processes
    accumulation = gradient_accumulation(cfg.sft.batch_size, cfg.sft.per_device_batch_size,
                                         processes)
    pin_torch()
    set_seed(cfg.seed)

    train_file, val_file = data_files(cfg, phase)
    train = chat_dataset(train_file, phase, cfg)
    val = chat_dataset(val_file, phase, cfg) if cfg.sft.eval_steps else None
    if val is not None and len(val) == 0:
        raise DataError(f"sft.eval_steps is set but {val_file} has no rows; set "
                        "-S data.val_ratio=0.1 (or -S sft.eval_steps=null)")

    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    base = read_base_json(cfg.paths.model_dir("base"))
    require_training_template(tokenizer, base["local_dir"] or base["hub_id"] or "the tiny model")
    model = policy(cfg, phase)
    checkpoints = checkpoint_dir(cfg.paths.checkpoints, f"sft-{name}",
                                 fingerprint(cfg, name, train_file, val_file, processes))
    callbacks = [LoraGradNorms(), meter := Meter()]
    if cfg.sft.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.sft.early_stopping_patience))
    trainer = SFTTrainer(
        model=model,
        args=training_args(cfg, phase, accumulation, precision, checkpoints),
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        # A fresh adapter on the base; a later phase trains the adapter it was handed.
        peft_config=lora_config(cfg.sft.lora, cfg.sft.method == "dora")
        if phase.init == "base" else None,
        callbacks=callbacks,
    )
    resume = last_checkpoint(checkpoints)
    if resume:
        print(f"sft@{name}: resuming from {resume}")
    with explain_oom(SFT_MEMORY_KNOBS):
        trainer.train(resume_from_checkpoint=resume)

    history = trainer.state.log_history
    trainable, total = count_parameters(trainer.model)
    losses = logged(history, "loss")  # every step once, those before a resume included
    metrics = {
        "train_loss": round(sum(losses) / len(losses), 4),
        "final_loss": round(last_logged(history, "loss"), 4),
        # null without validation: JSON has no NaN
        "val_loss": round(val[-1], 4) if (val := logged(history, "eval_loss")) else None,
        "best_val_loss": round(min(val), 4) if val else None,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "steps": trainer.state.global_step,
        "rows": len(train),
        "processes": processes,
        **meter.figures(),
        **peak_memory(),
        "trainable_params": trainable,
        "trainable_share": round(trainable / total, 5),
    }
    # Every process takes part in saving (ZeRO-3 and FSDP gather the sharded adapter here);
    # with early stopping the trainer has loaded the best checkpoint back.
    final = checkpoints / "final"
    trainer.save_model(str(final))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():  # one set of outputs, however many processes
        out_dir = cfg.paths.model_dir(phase.out)
        with atomic_dir(out_dir) as out:
            for file in final.glob("adapter_*"):
                shutil.copy2(file, out / file.name)
            metrics["adapter_mb"] = adapter_megabytes(out)
            parent = None if phase.init == "base" else str(cfg.paths.model_dir(phase.init))
            write_provenance(out, cfg, train_file, parent, metrics)
        write_plots(history, PLOTTED, Path(cfg.paths.metrics) / "sft" / name)
        write_json(Path(cfg.paths.metrics) / "sft" / f"{name}.json",
                   {"sft": {name: metrics}, "run": run_info()})
        remove_checkpoints(checkpoints)
        print(f"sft@{name}: adapter in {out_dir}: {metrics}")
    return metrics


def data_files(cfg: SftStage, phase: SftPhase) -> tuple[Path, Path]:
    stem = Path(cfg.paths.curated) / phase.data
    return stem.with_name(stem.name + ".jsonl"), stem.with_name(stem.name + ".val.jsonl")


def chat_dataset(path: Path, phase: SftPhase, cfg: SftStage):
    """The rows' messages and tool schemas (TRL hands `tools` to the chat template); with
    system_prompt: identity, the identity's system prompt in the row's language replaces the
    shared one."""
    from datasets import Dataset, Features, Json, List

    if not path.exists():
        raise MissingInput(f"{path} not found; the phase's `data` must name a curated file "
                                "(`sft`, or `phases/<name>` of data.phases): run `dvc repro curate`")
    rows = []
    for row in read_jsonl(path):
        messages = row["messages"]
        if phase.system_prompt == "identity":
            system = identity_system_prompt(cfg.identity, row["lang"])
            rest = messages[1:] if messages[0]["role"] == "system" else messages
            messages = [{"role": "system", "content": system}, *rest]
        rows.append({"messages": messages, "tools": row.get("tools")})
    # Json keeps every message and schema as written; Arrow's inferred struct would merge the
    # argument keys of all rows' tool calls and render the missing ones as null.
    return Dataset.from_list(rows, features=Features({"messages": List(Json()),
                                                      "tools": Json()}))


def policy(cfg: SftStage, phase: SftPhase):
    """The model to train: the base (4-bit for QLoRA), carrying the previous phase's adapter,
    trainable, when there is one."""
    base_dir = cfg.paths.model_dir("base")
    four_bit = cfg.sft.method == "qlora"
    model = load_base_model(base_dir, cfg.model.dtype, four_bit=four_bit,
                            attn=packing_attention(cfg.sft.per_device_batch_size)
                            if cfg.sft.packing else None)
    if four_bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.sft.gradient_checkpointing)
    if phase.init == "base":
        return model
    from peft import PeftModel

    adapter = cfg.paths.model_dir(phase.init)
    if not (adapter / "adapter_config.json").exists():
        raise MissingInput(f"no adapter in {adapter}: the phase before writes it; run "
                                "`dvc repro sft` to train the phases in order")
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)


def fingerprint(cfg: SftStage, name: str, train_file: Path, val_file: Path,
                processes: int) -> dict:
    """Everything that shapes this phase's run; a checkpoint is resumed only when all match."""
    phase = cfg.sft.phases[name]
    base_dir = cfg.paths.model_dir("base")
    shared = cfg.sft.model_dump(mode="json", exclude={"phases", "checkpoint_steps"})
    return {
        "seed": cfg.seed,
        "identity": cfg.identity.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json"),
        "sft": shared,
        "phase": phase.model_dump(mode="json"),
        "base": read_base_json(base_dir),
        "base_files": file_fingerprint(base_dir),
        "init": None if phase.init == "base" else file_fingerprint(cfg.paths.model_dir(phase.init)),
        "data": [file_fingerprint(train_file),
                 file_fingerprint(val_file) if val_file.exists() else None],
        "processes": processes,
    }


def lora_config(lora: LoraParams, dora: bool = False):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_dora=dora,  # DoRA: learn a magnitude per output and a LoRA-updated direction
        task_type="CAUSAL_LM",
    )


def training_args(cfg: SftStage, phase: SftPhase, accumulation: int,
                  precision: dict[str, bool], output_dir: Path):
    from trl import SFTConfig

    sft = cfg.sft
    validate = sft.eval_steps is not None
    return SFTConfig(
        output_dir=str(output_dir),  # checkpoints only; the adapter is saved by the stage
        learning_rate=phase.lr,
        num_train_epochs=phase.epochs,
        max_steps=phase.max_steps or -1,
        per_device_train_batch_size=sft.per_device_batch_size,
        per_device_eval_batch_size=sft.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        max_length=sft.max_length,
        packing=sft.packing,
        activation_checkpointing=sft.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        warmup_steps=sft.warmup_ratio,  # a float below 1 is a share of the total steps
        weight_decay=sft.weight_decay,
        lr_scheduler_type=sft.lr_scheduler,
        max_grad_norm=sft.max_grad_norm,
        assistant_only_loss=True,
        eval_strategy="steps" if validate else "no",
        eval_steps=sft.eval_steps,
        save_strategy="steps",
        save_steps=sft.checkpoint_steps,
        save_total_limit=2,
        load_best_model_at_end=sft.early_stopping_patience is not None,
        metric_for_best_model="eval_loss" if validate else None,
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=False,  # frozen base weights get no gradient by design
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=False,
        **precision,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="LoRA SFT, one phase or all in order")
    parser.add_argument("--phase", help="a key of sft.phases; default: every phase in order")
    run_stage(main, None, parser.parse_args().phase)
