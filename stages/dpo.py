"""dpo: preference optimisation continuing from the SFT adapter.

Reads   params seed, model, dpo, paths; models/base, models/sft, data/curated/prefs.jsonl
Writes  models/dpo/ (LoRA adapter + provenance.json), metrics/dpo.json (final reward accuracy,
        margins, chosen and rejected rewards, wall time, peak memory),
        metrics/dpo/plots/ (loss, rewards, margins and accuracy per global step)
Run     dvc repro dpo   (or: python -m stages.dpo)

The SFT adapter is loaded trainable and handed to TRL as a PeftModel, so TRL keeps a frozen
copy of it as the reference: the reference is the SFT policy, not the bare base.

A killed run started again with the same params resumes from its last checkpoint, kept under
paths.checkpoints (outside DVC's outputs) and removed when the stage finishes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stages.config import DpoConfig, DpoStage, load, run_stage
from stages.io import atomic_dir, read_jsonl, write_json
from stages.modeling import load_base_model, load_tokenizer, read_base_json
from stages.training import (
    Meter,
    adapter_provenance,
    checkpoint_dir,
    explain_oom,
    file_fingerprint,
    last_checkpoint,
    last_logged,
    logged,
    peak_memory,
    precision_flags,
    remove_checkpoints,
    write_plots,
)

DPO_MEMORY_KNOBS = ("-S dpo.batch_size=<smaller>, -S dpo.max_length=<shorter> (DPO holds a "
                    "chosen and a rejected sequence per pair, and the reference model's "
                    "log-probabilities)")
PLOTTED = {
    "loss": "train/loss",
    "rewards/chosen": "rewards/chosen",
    "rewards/rejected": "rewards/rejected",
    "rewards/margins": "rewards/margins",
    "rewards/accuracies": "rewards/accuracies",
}


def main(cfg: DpoStage | None = None) -> dict:
    cfg = cfg or load(DpoStage)
    from accelerate import PartialState
    from datasets import Dataset
    from peft import PeftModel
    from transformers import set_seed
    from trl import DPOTrainer

    precision = precision_flags(cfg.dpo.precision)  # refused before anything is loaded
    # counted as sft counts them (cpu=True: CPU processes under `accelerate launch` form one
    # group); part of the checkpoint fingerprint
    processes = PartialState(cpu=not torch.cuda.is_available()).num_processes
    set_seed(cfg.seed)
    data_file = Path(cfg.paths.curated) / "prefs.jsonl"
    pairs = read_jsonl(data_file)
    if not pairs:
        raise ValueError(
            f"{data_file} has no preference pairs; set data.preference_source to a code-task "
            "file whose solutions have defects that fail their tests"
        )
    dataset = Dataset.from_list(
        [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    )
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    base = load_base_model(cfg.paths.model_dir("base"), cfg.model.dtype)
    model = PeftModel.from_pretrained(base, str(cfg.paths.model_dir("sft")), is_trainable=True)
    checkpoints = checkpoint_dir(cfg.paths.checkpoints, "dpo",
                                 fingerprint(cfg, data_file, processes))
    trainer = DPOTrainer(
        model=model,
        args=training_args(cfg.dpo, cfg.seed, precision, checkpoints),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[meter := Meter()],
    )
    # A checkpoint holds the trained adapter at its root and TRL's frozen "ref" copy in ref/;
    # the trainer loads both back into their adapters, then the optimizer, scheduler and RNG.
    resume = last_checkpoint(checkpoints)
    if resume:
        print(f"dpo: resuming from {resume}")
    with explain_oom(DPO_MEMORY_KNOBS):
        trainer.train(resume_from_checkpoint=resume)

    history = trainer.state.log_history
    # every step once, those before a resume included; the trainer's own train_loss averages
    # only the steps this process ran
    losses = logged(history, "loss")
    metrics = {
        "train_loss": round(sum(losses) / len(losses), 4),
        "final_loss": round(last_logged(history, "loss"), 4),
        "steps": trainer.state.global_step,
        "pairs": len(dataset),
        **{k.replace("rewards/", "reward_"): round(last_logged(history, k), 4)
           for k in ("rewards/accuracies", "rewards/margins", "rewards/chosen",
                     "rewards/rejected")},
        **meter.figures(),
        **peak_memory(),
    }
    with atomic_dir(cfg.paths.model_dir("dpo")) as out:
        # Only the trained adapter: TRL's frozen "ref" copy is the SFT adapter we started from.
        trainer.model.save_pretrained(out, selected_adapters=["default"])
        write_json(out / "provenance.json",
                   adapter_provenance(cfg, data_file, str(cfg.paths.model_dir("sft")), metrics))
    write_plots(history, PLOTTED, Path(cfg.paths.metrics) / "dpo")
    write_json(Path(cfg.paths.metrics) / "dpo.json", {"dpo": metrics})
    remove_checkpoints(checkpoints)
    print(f"dpo adapter in {cfg.paths.model_dir('dpo')}: {metrics}")
    return metrics


def fingerprint(cfg: DpoStage, data_file: Path, processes: int) -> dict:
    """Everything that shapes this run; a checkpoint is resumed only when all match."""
    base_dir = cfg.paths.model_dir("base")
    return {
        "seed": cfg.seed,
        "model": cfg.model.model_dump(mode="json"),
        "dpo": cfg.dpo.model_dump(mode="json", exclude={"checkpoint_steps"}),
        "base": read_base_json(base_dir),
        "base_files": file_fingerprint(base_dir),
        "init": file_fingerprint(cfg.paths.model_dir("sft")),
        "data": file_fingerprint(data_file),
        "processes": processes,
    }


def training_args(dpo: DpoConfig, seed: int, precision: dict[str, bool], output_dir: Path):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(output_dir),  # checkpoints only; the adapter is saved by the stage
        learning_rate=dpo.lr,
        num_train_epochs=dpo.epochs,
        per_device_train_batch_size=dpo.batch_size,
        max_length=dpo.max_length,
        warmup_steps=dpo.warmup_ratio,  # a float below 1 is a share of the total steps
        loss_type=[dpo.loss_type],
        beta=dpo.beta,
        logging_steps=1,
        save_strategy="steps",
        save_steps=dpo.checkpoint_steps,
        save_total_limit=2,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        seed=seed,
        data_seed=seed,
        **precision,
    )


if __name__ == "__main__":
    run_stage(main)
