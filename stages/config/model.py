"""The `model` and `identity` groups: the base model and who it says it is."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from stages.config.base import LangText, NonNegInt, PosFloat, PosInt, Strict


class IdentityConfig(Strict):
    """Who the model says it is."""

    name: LangText
    """Name, e.g. Swift-Robot, or {en: Swift-Robot, zh: 雨燕机器人}."""
    author: LangText
    """Who made it, one value or one per language."""
    system_prompt: LangText | None = None
    """A system prompt that states the identity ({{NAME}}/{{AUTHOR}} filled in), for
    training phases that use it (sft.phases.<name>.system_prompt: identity)."""


class ArchConfig(Strict):
    """Qwen2 architecture numbers: tiny builds them from scratch, `init: random` builds a
    real-sized model without weights."""

    vocab_size: PosInt
    hidden_size: PosInt
    num_layers: PosInt
    num_heads: PosInt
    num_kv_heads: PosInt
    intermediate_size: PosInt
    max_position_embeddings: PosInt
    tie_word_embeddings: bool
    model_type: Literal["qwen2", "qwen3"] = "qwen2"
    """qwen3: Qwen3's dense layout (q/k RMSNorm, head_dim set apart from hidden_size)."""
    head_dim: PosInt | None = None
    """Attention head size; null: hidden_size / num_heads (Qwen2). Qwen3 sets it (128)."""

    @model_validator(mode="after")
    def _heads_divide(self) -> ArchConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} must be divisible by num_kv_heads {self.num_kv_heads}"
            )
        return self


class TinyTrainConfig(Strict):
    """How the base stage trains the tiny model from scratch on the built-in corpus."""

    steps: PosInt
    """Optimizer steps; 1 step = batch_size sequences."""
    batch_size: PosInt
    lr: PosFloat
    warmup_steps: NonNegInt
    max_length: PosInt
    """Longest training sequence in tokens; longer corpus rows are an error."""


class ModelConfig(Strict):
    """The base model: built here (`tiny`) or pretrained from the hub (`hub`)."""

    name: str
    source: Literal["tiny", "hub"]
    hub_id: str | None
    """Hub id, e.g. Qwen/Qwen2.5-Coder-1.5B-Instruct (source: hub)."""
    revision: str | None
    """Pinned hub commit sha (source: hub): the same id can change under a branch name."""
    local_dir: str | None
    """A local copy of the hub model; used instead of the hub when set."""
    init: Literal["pretrained", "random"]
    """random: the architecture below with random weights, to measure memory and speed."""
    dtype: Literal["float32", "bfloat16", "float16"]
    identity: IdentityConfig
    """The identity the model was released with (what a fine-tune should replace)."""
    arch: ArchConfig | None
    train: TinyTrainConfig | None
    chat_template: str | None = None
    """A .jinja file that replaces the checkpoint's chat template in models/base (so training,
    perplexity and generation all use it), e.g. one with {% generation %} markers for a
    template TRL cannot patch for assistant-only loss; null: the checkpoint's own."""

    @model_validator(mode="after")
    def _source_fields(self) -> ModelConfig:
        problems = []
        if self.source == "tiny":
            if self.arch is None or self.train is None:
                problems.append("source: tiny needs `arch` and `train`")
            if self.init != "random":
                problems.append("source: tiny is trained from scratch; set init: random")
        else:
            if not self.hub_id or not self.revision:
                problems.append("source: hub needs `hub_id` and a pinned `revision` (commit sha)")
            if self.init == "random" and self.arch is None:
                problems.append("init: random needs `arch` (the architecture's numbers)")
            if self.train is not None:
                problems.append("`train` is only for source: tiny; set it to null")
        if problems:
            raise ValueError("; ".join(problems))
        return self
