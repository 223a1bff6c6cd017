"""Which backend generates eval's replies (eval.backend), chosen here and nowhere else."""

from __future__ import annotations

from stages.config import EvalStage
from stages.generation.common import Backend
from stages.generation.hf import HfBackend
from stages.generation.vllm import VllmBackend
from stages.models.modeling import load_variant


def load_backend(cfg: EvalStage, variant: str) -> Backend:
    """hf: the variant's transformers model, eval.batch_size rows at a time, batched as
    eval.batching says; vllm: vLLM serving the base weights and the variant's adapter."""
    if cfg.eval.backend == "vllm":
        return VllmBackend(cfg.paths, variant, cfg.model.dtype, cfg.seed)
    return HfBackend(load_variant(cfg.paths, variant, cfg.model.dtype), cfg.eval.batch_size,
                     cfg.eval.batching)
