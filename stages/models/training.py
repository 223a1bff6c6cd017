"""Pieces the sft and dpo stages share: precision and batch arithmetic, per-step plots from the
trainer's log history, the LoRA gradient norms per projection, resumable checkpoints outside
DVC's outputs, cost measurements and adapter provenance."""

from __future__ import annotations

import contextlib
import json
import math
import re
import resource
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from stages.config import ConfigError, StageError
from stages.core.io import atomic_dir, sha256_dir, sha256_file, write_json
from stages.models.modeling import read_base_json


class OutOfMemory(StageError):
    """The training step did not fit in GPU memory; the message says what to lower."""


def precision_flags(precision: str) -> dict[str, bool]:
    """Trainer's bf16/fp16 flags for `precision`, checked against this machine.

    Set both explicitly: TRL turns bf16 on by default, even on CPU."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs a CUDA GPU; on CPU use -S sft.precision=fp32 "
                          "(or auto)")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{torch.cuda.get_device_name()} cannot compute in bf16 (it needs "
                          "compute capability 8.0 or newer); use -S sft.precision=fp16")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def packing_attention(per_device_batch_size: int = 1) -> str | None:
    """The attention kernel for padding-free packing. Rows stay apart in every kernel: TRL
    trains without a KV cache, and without one transformers builds a block-diagonal mask from
    the restarting position ids for sdpa and eager (tests/test_training.py checks that two
    packed rows have the loss they have as a padded batch). FlashAttention's variable-length
    kernels skip that mask, whose cost grows with the square of the micro-batch flattened into
    one row, so it is taken where it can run; None keeps transformers' default (sdpa), and
    then more than one packed sequence per micro-batch gets a note."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        flash_attn = None
    if torch.cuda.is_available() and flash_attn is not None:
        return "flash_attention_2"
    if per_device_batch_size > 1:
        # Measured on CPU (benchmarks/README.md): 8 packed sequences per micro-batch trained
        # at 0.65x padded batches, 1 at 1.20x.
        print(f"sft: packing without FlashAttention joins the {per_device_batch_size} packed "
              "sequences of a micro-batch into one row under a mask that grows with its "
              "square; -S sft.per_device_batch_size=1 is faster (accumulation keeps the "
              "global batch)")
    return None


def gradient_accumulation(batch_size: int, per_device: int, processes: int) -> int:
    """Steps to accumulate so that per_device x processes x steps == the global batch_size."""
    per_step = per_device * processes
    if batch_size % per_step:
        raise ConfigError(
            f"batch_size {batch_size} is not a multiple of per_device_batch_size {per_device} x "
            f"{processes} process(es) = {per_step}; set batch_size to a multiple of {per_step}")
    return batch_size // per_step


@contextlib.contextmanager
def explain_oom(knobs: str):
    """Turn CUDA out-of-memory into one message naming the settings that lower memory."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        raise OutOfMemory(
            f"out of GPU memory ({str(err).splitlines()[0]}). Lower it with: {knobs}") from err


SFT_MEMORY_KNOBS = ("-S sft.per_device_batch_size=1 (batch_size stays, accumulation grows), "
                    "-S sft.max_length=<shorter>, -S sft.gradient_checkpointing=true, "
                    "or -S sft=qlora (a 4-bit base)")


def peak_memory() -> dict[str, float | str]:
    """Peak GPU memory allocated when training ran on CUDA, else the process's peak RSS."""
    if torch.cuda.is_available():
        return {"peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "peak_memory_kind": "cuda"}
    # ru_maxrss is in KiB on Linux
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_mib": round(rss_kib / 1024, 1), "peak_memory_kind": "rss"}


class Meter(TrainerCallback):
    """Wall time and tokens of this process's training, resumed runs included: both are taken
    from where train() starts (after a checkpoint is loaded) to where it ends."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen
        self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start
        self.tokens = state.num_input_tokens_seen - self.start_tokens

    def figures(self) -> dict:
        return {"train_s": round(self.seconds, 1), "tokens": int(self.tokens),
                "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else 0.0,
                "resumed_from_step": self.start_step}


PROJECTION = re.compile(r"\.(\w+)\.lora_(?:A|B|magnitude_vector)\b")


class LoraGradNorms(TrainerCallback):
    """The gradient norm of the LoRA weights per projection type (q/k/v/o/gate/up/down), added
    to the trainer's log history as `grad_norm/<proj>`: on tiny data, collapse shows here first.

    Measured just before the optimizer step, so after clipping to max_grad_norm."""

    def __init__(self):
        self.pending: dict[str, float] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        squares: dict[str, float] = {}
        for name, param in model.named_parameters():
            match = PROJECTION.search(name)
            if match and param.grad is not None:
                squares[match.group(1)] = (squares.get(match.group(1), 0.0)
                                           + param.grad.detach().float().pow(2).sum().item())
        self.pending = {f"grad_norm/{proj}": math.sqrt(v) for proj, v in sorted(squares.items())}

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Trainer.log has just appended this step's entry; adding to it puts the norms in the
        # checkpointed trainer_state.json, so a resumed run keeps them.
        if self.pending and logs and "loss" in logs:
            state.log_history[-1].update(self.pending)
            self.pending = {}


def write_plots(history: list[dict], names: dict[str, str], live_dir: Path) -> None:
    """Per-step dvclive plots (declared as DVC plots) from the trainer's log history.

    Written at the end from the history rather than live during training: after a resume the
    history holds every step exactly once, the steps before the kill included. dvclive's own
    HF callback counts log events rather than optimizer steps; here x is the global step."""
    from dvclive import Live

    with atomic_dir(live_dir) as tmp:
        live = Live(dir=str(tmp), dvcyaml=None, save_dvc_exp=False)
        for entry in history:
            live.step = entry["step"]
            for key, value in entry.items():
                name = names.get(key) or (f"lora_{key}" if key.startswith("grad_norm/") else None)
                if name and isinstance(value, (int, float)) and math.isfinite(value):
                    live.log_metric(name, float(value))


def logged(history: list[dict], key: str) -> list[float]:
    return [entry[key] for entry in history if key in entry]


def last_logged(history: list[dict], key: str) -> float:
    """The last value logged under `key` (NaN if it never was)."""
    values = logged(history, key)
    return values[-1] if values else float("nan")


def checkpoint_dir(root: str, run: str, fingerprint: dict) -> Path:
    """Where a run's resumable checkpoints live: outside DVC's outputs (DVC's `persist` would
    disable the run-cache), under a hash of everything that shapes the run, so a checkpoint
    from other params, data or starting weights is never resumed."""
    import hashlib

    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / run / digest


def last_checkpoint(directory: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(directory)) if directory.is_dir() else None


def remove_checkpoints(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def file_fingerprint(path: Path) -> str:
    path = Path(path)
    return sha256_dir(path) if path.is_dir() else sha256_file(path)


def adapter_megabytes(adapter_dir: Path) -> float:
    size = sum(f.stat().st_size for f in Path(adapter_dir).glob("adapter_model.*"))
    return round(size / 2**20, 3)


# Figures of a training run that differ between two runs writing the same weights (wall time,
# memory, a resume): they go to the committed metrics file only, never into the adapter's
# DVC-cached directory, whose hash must change exactly when the weights do.
RUN_TO_RUN = frozenset({"train_s", "tokens_per_s", "resumed_from_step", "peak_memory_mib",
                        "peak_memory_kind"})


def write_provenance(out: Path, cfg, data_file: Path, parent: str | None, metrics: dict) -> None:
    """provenance.json of the adapter in `out`: what it was trained from and on, and the
    figures of the run that the same weights always have (no RUN_TO_RUN figures, no commit).
    Also steadies peft's adapter_config.json, whose target_modules peft writes from a set, in
    an order that changes with the process's string hash seed: the same weights must hash the
    same for DVC."""
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    write_json(config_file, config)  # peft writes its keys sorted: read and kept in that order
    base = read_base_json(cfg.paths.model_dir("base"))
    write_json(out / "provenance.json", {
        "base": {k: base[k] for k in ("source", "hub_id", "revision", "local_dir", "init")},
        "parent_adapter": parent,
        "data_file": str(data_file),
        "data_sha256": sha256_file(data_file),
        "config": cfg.model_dump(),
        "metrics": {k: v for k, v in metrics.items() if k not in RUN_TO_RUN},
    })
