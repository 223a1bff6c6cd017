"""dpo: preference optimisation continuing from the SFT adapter, with the objective of
dpo.loss_type, each through its TRL trainer.

Reads   params seed, model, dpo, paths; models/base, models/sft, data/curated/prefs.jsonl
Writes  models/dpo/ (LoRA adapter + provenance.json), metrics/dpo.json (final reward accuracy,
        margins, chosen and rejected rewards as the objective logs them, wall time, peak
        memory), metrics/dpo/plots/ (loss, rewards, margins and accuracy per global step)
Run     dvc repro dpo   (or: python -m stages.dpo);  dvc exp run -S dpo=simpo  (conf/dpo/)

Objectives: sigmoid (DPO), ipo, hinge, robust with TRL's DPOTrainer; sigmoid_sft, DPO plus
the SFT loss on the chosen replies, with DPOTrainer's multi-loss (loss_type [sigmoid, sft],
loss_weights [1, dpo.sft_weight]; TRL 1.x has no rpo_alpha), its two terms measured apart on
the final adapter (metrics final_sigmoid_loss, final_sft_loss); cpo and simpo with
CPOTrainer, orpo with ORPOTrainer (reference-free; trl.experimental in trl 1.x); kto with
KTOTrainer on unpaired rows: prefs.jsonl holds pairs (prompt, chosen, rejected) and labelled
rows (prompt, completion, label) from KTO files; for KTO a pair gives one desirable and one
undesirable row, and the DPO-family objectives refuse labelled rows.

The SFT adapter is loaded trainable and handed to TRL as a PeftModel, so DPOTrainer and
KTOTrainer keep a frozen copy of it as the reference: the reference is the SFT policy, not the
bare base.

A killed run started again with the same params resumes from its last checkpoint, kept under
paths.checkpoints (outside DVC's outputs) and removed when the stage finishes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stages.config import CPO_LOSSES, DPO_LOSSES, DpoConfig, DpoStage, load, run_stage
from stages.core.io import DataError, atomic_dir, read_jsonl, write_json
from stages.core.numerics import pin_torch
from stages.core.runinfo import run_info
from stages.models.modeling import load_base_model, load_tokenizer, read_base_json
from stages.models.training import (
    Meter,
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
    write_provenance,
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

    precision = precision_flags(cfg.dpo.precision)  # refused before anything is loaded
    # counted as sft counts them (cpu=True: CPU processes under `accelerate launch` form one
    # group); part of the checkpoint fingerprint
    processes = PartialState(cpu=not torch.cuda.is_available()).num_processes
    pin_torch()
    set_seed(cfg.seed)
    data_file = Path(cfg.paths.curated) / "prefs.jsonl"
    dataset = Dataset.from_list(preference_rows(read_jsonl(data_file), cfg.dpo.loss_type,
                                                data_file))
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    base = load_base_model(cfg.paths.model_dir("base"), cfg.model.dtype)
    model = PeftModel.from_pretrained(base, str(cfg.paths.model_dir("sft")), is_trainable=True)
    checkpoints = checkpoint_dir(cfg.paths.checkpoints, "dpo",
                                 fingerprint(cfg, data_file, processes))
    trainer = trainer_class(cfg.dpo)(
        model=model,
        args=training_args(cfg.dpo, cfg.seed, precision, checkpoints),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[meter := Meter()],
    )
    # A checkpoint holds the trained adapter at its root and (DPO, KTO) TRL's frozen "ref" copy
    # in ref/;
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
        "loss_type": cfg.dpo.loss_type,
        "pairs" if cfg.dpo.loss_type != "kto" else "rows": len(dataset),
        # what the objective logs (KTO has no reward accuracy, but its KL estimate)
        **{k.replace("rewards/", "reward_"): round(last_logged(history, k), 4)
           for k in ("rewards/accuracies", "rewards/margins", "rewards/chosen",
                     "rewards/rejected", "kl") if logged(history, k)},
        **throughput(meter.figures()),
        **peak_memory(),
    }
    if cfg.dpo.loss_type == "sigmoid_sft":
        metrics.update(loss_terms(trainer, cfg.dpo.sft_weight))
    with atomic_dir(cfg.paths.model_dir("dpo")) as out:
        # Only the trained adapter: TRL's frozen "ref" copy is the SFT adapter we started from.
        trainer.model.save_pretrained(out, selected_adapters=["default"])
        write_provenance(out, cfg, data_file, str(cfg.paths.model_dir("sft")), metrics)
    write_plots(history, PLOTTED, Path(cfg.paths.metrics) / "dpo")
    write_json(Path(cfg.paths.metrics) / "dpo.json", {"dpo": metrics, "run": run_info()})
    remove_checkpoints(checkpoints)
    print(f"dpo adapter in {cfg.paths.model_dir('dpo')}: {metrics}")
    return metrics


def loss_terms(trainer, sft_weight: float) -> dict:
    """sigmoid_sft's two terms on the trained adapter over the training pairs (eval mode: no
    dropout), and the weighted sum they make. TRL logs only that sum per step; DPOTrainer
    reads its loss_types and loss_weights on every batch, so evaluating with one term at a
    time measures each: 2 forward passes of the policy and the reference over the pairs."""
    saved = trainer.loss_types, trainer.loss_weights
    terms = {}
    try:
        for name in ("sigmoid", "sft"):
            trainer.loss_types, trainer.loss_weights = [name], [1.0]
            logs = trainer.evaluate(trainer.train_dataset, metric_key_prefix=f"term_{name}")
            terms[name] = logs[f"term_{name}_loss"]
    finally:
        trainer.loss_types, trainer.loss_weights = saved
    return {"final_sigmoid_loss": round(terms["sigmoid"], 4),
            "final_sft_loss": round(terms["sft"], 4),
            "final_weighted_loss": round(terms["sigmoid"] + sft_weight * terms["sft"], 4),
            "sft_weight": sft_weight}


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


def throughput(figures: dict) -> dict:
    """The meter's figures, with tokens null where the trainer counted none: CPOTrainer and
    ORPOTrainer batch their inputs under names the token counter does not look for."""
    if figures["tokens"] == 0:
        return {**figures, "tokens": None, "tokens_per_s": None}
    return figures


def preference_rows(rows: list[dict], loss_type: str, data_file: Path) -> list[dict]:
    """The trainer's rows: pairs for the paired objectives; for KTO, unpaired rows with a
    boolean label, each pair split into its chosen (desirable) and rejected (undesirable) reply."""
    pairs = [r for r in rows if "chosen" in r]
    labelled = [r for r in rows if "label" in r]
    if loss_type == "kto":
        out = [{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"]}
               for r in labelled]
        for p in pairs:
            out += [{"prompt": p["prompt"], "completion": p["chosen"], "label": True},
                    {"prompt": p["prompt"], "completion": p["rejected"], "label": False}]
        if not any(r["label"] for r in out) or all(r["label"] for r in out):
            raise DataError(f"{data_file}: KTO needs desirable and undesirable rows (got "
                             f"{sum(r['label'] for r in out)} of {len(out)} desirable); add "
                             "pairs or rows of the other label to data.preferences")
        return out
    if labelled:
        raise DataError(
            f"{data_file} holds {len(labelled)} unpaired labelled rows (a KTO file in "
            f"data.preferences) that loss_type {loss_type} cannot train on: use -S dpo=kto, "
            "or remove the KTO file from data.preferences")
    if not pairs:
        raise DataError(
            f"{data_file} has no preference pairs; set data.preference_source to a code-task "
            "file whose solutions have defects that fail their tests, or list preference "
            "files in data.preferences"
        )
    return [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
            for p in pairs]


def trainer_class(dpo: DpoConfig):
    if dpo.loss_type in DPO_LOSSES:
        from trl import DPOTrainer

        return DPOTrainer
    if dpo.loss_type in CPO_LOSSES:
        from trl.experimental.cpo import CPOTrainer

        return CPOTrainer
    if dpo.loss_type == "orpo":
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer
    from trl import KTOTrainer

    return KTOTrainer


def training_args(dpo: DpoConfig, seed: int, precision: dict[str, bool], output_dir: Path):
    """The TRL config of the objective's trainer; the settings shared by all come first."""
    common = dict(
        output_dir=str(output_dir),  # checkpoints only; the adapter is saved by the stage
        learning_rate=dpo.lr,
        num_train_epochs=dpo.epochs,
        per_device_train_batch_size=dpo.batch_size,
        max_length=dpo.max_length,
        warmup_steps=dpo.warmup_ratio,  # a float below 1 is a share of the total steps
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
    if dpo.loss_type in DPO_LOSSES:
        from trl import DPOConfig

        if dpo.loss_type == "sigmoid_sft":
            # TRL's multi-loss over rpo_alpha: rpo_alpha is gone from DPOConfig in trl 1.x, and
            # loss_weights puts the weight in the config as a plain number
            return DPOConfig(**common, loss_type=["sigmoid", "sft"],
                             loss_weights=[1.0, dpo.sft_weight])
        return DPOConfig(**common, loss_type=[dpo.loss_type],
                         label_smoothing=dpo.label_smoothing or 0.0)
    if dpo.loss_type in CPO_LOSSES:
        from trl.experimental.cpo import CPOConfig

        # CPO is CPOTrainer's sigmoid loss; SimPO its simpo loss
        return CPOConfig(**common, loss_type="sigmoid" if dpo.loss_type == "cpo" else "simpo",
                         cpo_alpha=dpo.cpo_alpha,
                         **({"simpo_gamma": dpo.simpo_gamma} if dpo.loss_type == "simpo" else {}))
    if dpo.loss_type == "orpo":
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**common)
    from trl import KTOConfig

    return KTOConfig(**common, loss_type="kto", desirable_weight=dpo.desirable_weight,
                     undesirable_weight=dpo.undesirable_weight)


if __name__ == "__main__":
    run_stage(main)
