"""sft: LoRA supervised fine-tuning of the base model on the curated mix.

Reads   params seed, model, sft, paths; models/base, data/curated/sft.jsonl
Writes  models/sft/ (LoRA adapter + provenance.json), metrics/sft.json,
        metrics/sft/plots/ (loss and learning rate per global step, DVC plots)
Run     dvc repro sft   (or: python -m stages.sft)

sft=lora | dora | qlora (4-bit NF4 base, CUDA only: on a machine without CUDA it stops before
loading anything). Loss is on the assistant's tokens only (TRL assistant_only_loss with the chat template's
generation markers): the system prompt and the question are context, not targets.
"""

from __future__ import annotations

import time
from pathlib import Path

from stages.config import LoraParams, SftConfig, SftStage, load, run_stage
from stages.io import atomic_dir, read_jsonl, write_json
from stages.modeling import (
    count_parameters,
    load_base_model,
    load_tokenizer,
    require_cuda_for_4bit,
)
from stages.training import (
    LiveStepCallback,
    adapter_provenance,
    last_logged,
    precision_flags,
    remove_trainer_dir,
)

LOGGED = {"loss": "train/loss", "learning_rate": "train/lr", "grad_norm": "train/grad_norm"}


def main(cfg: SftStage | None = None) -> dict:
    cfg = cfg or load(SftStage)
    from datasets import Dataset
    from dvclive import Live
    from transformers import set_seed
    from trl import SFTTrainer

    if cfg.sft.method == "qlora":
        require_cuda_for_4bit()  # before loading anything
    set_seed(cfg.seed)
    data_file = Path(cfg.paths.curated) / "sft.jsonl"
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in read_jsonl(data_file)])
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    model = load_base_model(cfg.paths.model_dir("base"), cfg.model.dtype,
                            four_bit=cfg.sft.method == "qlora")
    if cfg.sft.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

    live_dir = Path(cfg.paths.metrics) / "sft"
    with atomic_dir(cfg.paths.model_dir("sft")) as out, atomic_dir(live_dir) as live_tmp:
        live = Live(dir=str(live_tmp), dvcyaml=None, save_dvc_exp=False)
        trainer = SFTTrainer(
            model=model,
            args=training_args(cfg.sft, cfg.seed, cfg.model.dtype, out / "trainer"),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(cfg.sft.lora, dora=cfg.sft.method == "dora"),
            callbacks=[LiveStepCallback(live, LOGGED)],
        )
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        trainable, total = count_parameters(trainer.model)
        metrics = {
            "train_loss": round(result.training_loss, 4),
            "final_loss": round(last_logged(trainer, "loss"), 4),
            "steps": trainer.state.global_step,
            "rows": len(dataset),
            "trainable_params": trainable,
            "trainable_share": round(trainable / total, 5),
            "train_s": round(seconds, 1),
        }
        trainer.model.save_pretrained(out)
        write_json(out / "provenance.json", adapter_provenance(cfg, data_file, None, metrics))
        remove_trainer_dir(out / "trainer")
    write_json(Path(cfg.paths.metrics) / "sft.json", {"sft": metrics})
    print(f"sft adapter in {cfg.paths.model_dir('sft')}: {metrics}")
    return metrics


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


def training_args(sft: SftConfig, seed: int, dtype: str, output_dir: Path):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=sft.lr,
        num_train_epochs=sft.epochs,
        per_device_train_batch_size=sft.batch_size,
        max_length=sft.max_length,
        warmup_steps=sft.warmup_ratio,  # a float below 1 is a share of the total steps
        weight_decay=sft.weight_decay,
        lr_scheduler_type=sft.lr_scheduler,
        assistant_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=False,
        **precision_flags(dtype),
    )


if __name__ == "__main__":
    run_stage(main)
