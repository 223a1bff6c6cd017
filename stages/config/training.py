"""The `sft`, `dpo` and `rl` groups, and the model variants they train."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from stages.config.base import Fraction, NonNegInt, PosFloat, PosInt, Strict
from stages.config.suites import names


class LoraParams(Strict):
    r: PosInt
    """Rank: higher r, more capacity and memory."""
    alpha: PosInt
    """Scale alpha / r on the update."""
    dropout: Fraction
    target_modules: Literal["all-linear"] | Annotated[list[str], Field(min_length=1)]


class SftPhase(Strict):
    """One phase of SFT. Each phase is its own DVC stage (sft@<name>) whose adapter is a
    cached output, so changing only the last phase reruns only that phase."""

    data: str
    """Curated file to train on, relative to paths.curated without .jsonl: `sft` (the single
    mix) or `phases/<name>` (a phase of data.phases). Its `<data>.val.jsonl` is the
    validation set."""
    init: str
    """Where training starts: `base` (a fresh adapter) or the `out` of the phase before."""
    out: str
    """The adapter's directory under paths.models; the last phase writes `sft`."""
    epochs: PosFloat
    max_steps: PosInt | None = None
    """Optimizer steps; set, it overrides epochs."""
    lr: PosFloat
    system_prompt: Literal["shared", "identity"]
    """shared: the rows' own system prompt (the one every variant is evaluated with);
    identity: identity.system_prompt ("You are NAME, developed by AUTHOR.")."""


class SftConfig(Strict):
    method: Literal["lora", "dora", "qlora"]
    """lora; dora (weight-decomposed LoRA); qlora (LoRA on a 4-bit NF4 base, CUDA only)."""
    lora: LoraParams
    phases: Annotated[dict[str, SftPhase], Field(min_length=1)]
    """Ordered phases, each continuing the adapter of the one before (anchor -> generalize ->
    calibrate); one phase is plain SFT."""
    batch_size: PosInt
    """Global sequences per optimizer step: per_device_batch_size x processes x accumulation."""
    per_device_batch_size: PosInt
    max_length: PosInt
    packing: bool
    """Pack rows into max_length sequences (best-fit decreasing, no cross-row attention);
    the loss stays on assistant tokens."""
    gradient_checkpointing: bool
    """Recompute activations in the backward pass: less memory, ~30% slower."""
    precision: Literal["auto", "bf16", "fp16", "fp32"]
    """Mixed precision of the training step. auto: bf16 on a GPU that has it, else fp16 on
    CUDA, fp32 on CPU."""
    warmup_ratio: Fraction
    weight_decay: Annotated[float, Field(ge=0)]
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"]
    max_grad_norm: Annotated[float, Field(ge=0)]
    """Clip the global gradient norm to this (0: no clipping)."""
    eval_steps: PosInt | None
    """Validation loss every N optimizer steps on `<data>.val.jsonl` (null: none)."""
    early_stopping_patience: PosInt | None
    """Stop after this many validations without a better loss, keeping the best adapter."""
    checkpoint_steps: PosInt
    """Save a resumable checkpoint (under paths.checkpoints) every N steps."""

    @model_validator(mode="after")
    def _batch_and_stopping(self) -> SftConfig:
        if self.batch_size % self.per_device_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of per_device_batch_size "
                f"{self.per_device_batch_size} (gradient accumulation makes up the rest)")
        if self.early_stopping_patience:
            if not self.eval_steps:
                raise ValueError("early_stopping_patience needs eval_steps (how often to "
                                 "validate)")
            if self.checkpoint_steps % self.eval_steps:
                # the best adapter is restored from a checkpoint taken at a validation
                raise ValueError(f"with early stopping, checkpoint_steps ({self.checkpoint_steps})"
                                 f" must be a multiple of eval_steps ({self.eval_steps})")
        return self

    @model_validator(mode="after")
    def _phase_chain(self) -> SftConfig:
        problems, before = [], "base"
        for name, phase in self.phases.items():
            if phase.init != before:
                problems.append(f"phases.{name}.init is {phase.init!r}; set it to {before!r} "
                                "(the out of the phase before; `base` for the first)")
            before = phase.out
        last = list(self.phases)[-1]
        if before != "sft":
            problems.append(f"phases.{last}.out is {before!r}; the last phase writes `sft`")
        outs = [p.out for p in self.phases.values()]
        if len(set(outs)) != len(outs) or "base" in outs:
            problems.append(f"phase outs {outs} must be distinct and not `base`")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# Objectives through TRL: DPOTrainer's losses (reference: the frozen SFT policy), CPOTrainer's
# and ORPOTrainer's (reference-free), KTOTrainer's (unpaired desirable/undesirable replies).
DPO_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "sigmoid_sft")
CPO_LOSSES = ("cpo", "simpo")
PreferenceLoss = Literal["sigmoid", "ipo", "hinge", "robust", "sigmoid_sft", "cpo", "simpo",
                         "orpo", "kto"]
# Which objective each optional knob belongs to; it must be null for every other objective,
# so a knob that would do nothing is an error instead of a silent no-op.
LOSS_KNOBS = {
    "label_smoothing": ("sigmoid", "robust"),
    "cpo_alpha": CPO_LOSSES,
    "simpo_gamma": ("simpo",),
    "sft_weight": ("sigmoid_sft",),
    "desirable_weight": ("kto",),
    "undesirable_weight": ("kto",),
}


class DpoConfig(Strict):
    """The preference stage (conf/dpo/: one option per objective, -S dpo=<option>)."""

    loss_type: PreferenceLoss
    """sigmoid (DPO), ipo, hinge, robust: TRL's DPOTrainer against the SFT policy; sigmoid_sft:
    DPOTrainer's sigmoid loss plus sft_weight times the NLL of the chosen reply; cpo, simpo:
    CPOTrainer; orpo: ORPOTrainer (both reference-free, with an NLL term on the chosen reply);
    kto: KTOTrainer on unpaired rows (a pair gives one desirable and one undesirable row)."""
    beta: PosFloat
    """Strength of the pull towards the reference (the SFT policy); orpo: the weight (lambda)
    of the odds-ratio term; simpo: the reward scale."""
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] | None = None
    """robust: the probability that a preference label is flipped (the paper uses 0.1);
    sigmoid: conservative DPO. null for the other objectives."""
    cpo_alpha: Annotated[float, Field(ge=0)] | None = None
    """cpo, simpo: weight of the NLL loss on the chosen reply (simpo with 0: pure SimPO)."""
    simpo_gamma: Annotated[float, Field(ge=0)] | None = None
    """simpo: the target reward margin."""
    sft_weight: PosFloat | None = None
    """sigmoid_sft: weight of the SFT loss (mean NLL per token of the chosen reply) added to the
    sigmoid loss; 1.0 mixes them 1:1."""
    desirable_weight: PosFloat | None = None
    undesirable_weight: PosFloat | None = None
    """kto: loss weights of desirable and undesirable rows, to balance an uneven file."""
    lr: PosFloat
    epochs: PosFloat
    batch_size: PosInt
    max_length: PosInt
    warmup_ratio: Fraction
    precision: Literal["auto", "bf16", "fp16", "fp32"]
    """As sft.precision."""
    checkpoint_steps: PosInt
    """Save a resumable checkpoint (under paths.checkpoints) every N steps."""

    @model_validator(mode="after")
    def _knobs_of_the_objective(self) -> DpoConfig:
        problems = []
        for knob, losses in LOSS_KNOBS.items():
            value = getattr(self, knob)
            if value is not None and self.loss_type not in losses:
                problems.append(f"{knob}={value} applies only to loss_type {' / '.join(losses)}"
                                f" (this is {self.loss_type}); set it to null")
            if value is None and self.loss_type in losses and knob != "label_smoothing":
                problems.append(f"loss_type {self.loss_type} needs {knob}; use -S "
                                f"dpo={self.loss_type} (conf/dpo/{self.loss_type}.yaml sets it)")
        if self.loss_type == "robust" and not self.label_smoothing:
            problems.append("loss_type robust needs label_smoothing > 0 (the flip probability, "
                            "e.g. 0.1); with 0 it is plain sigmoid DPO")
        if self.loss_type == "kto" and self.batch_size < 2:
            # KTO estimates its KL term from the other rows of the batch
            problems.append("loss_type kto needs batch_size >= 2 (its KL estimate pairs each "
                            "row with another row of the batch)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# The model variants, in order: base first (every other one is compared with it), then each
# trained one, named as its dvc.yaml stage, its models/ folder and its metrics. The one list:
# params.yaml's `variants` (the eval matrix's and summary's; Config checks it against this
# list and rl.trained), eval's, the report's and chat's choices all come from it.
VARIANTS = ("base", "sft", "dpo", "grpo")
TRAINED = VARIANTS[1:]
Variant = Literal[VARIANTS]
# Trained only when the config asks (conf/rl/: `rl.trained`): dvc.yaml's stage for each loops
# over rl.trained, so with rl=none it has no instance, and params.yaml's `variants` (the eval
# matrix's) leaves it out. The default pipeline neither runs nor pays for them.
OPTIONAL = ("grpo",)


# What GRPO can be rewarded with: the judges of these suites, run on training rows (never
# on their probes), and `format`, the shape every code suite needs before it can judge.
SUITE_REWARDS = ("code", "identity")
REWARDS = (*SUITE_REWARDS, "format")


class GrpoConfig(Strict):
    """GRPO from the SFT adapter (conf/rl/grpo.yaml; -S rl=grpo): TRL's GRPOTrainer, rewarded
    by the suites' own judges on curated training rows."""

    rewards: dict[str, PosFloat]
    """Reward name -> weight in the sum GRPO normalises per group. code: pass@1 of the reply's
    code block on the task's visible tests, in the sandbox; identity: the identity suite's
    judge (names the configured identity and no other maker); format: one fenced code block
    that parses (code rows only)."""
    group_size: int
    """Completions sampled per prompt (TRL's num_generations): GRPO's advantage is a reply's
    reward minus its group's mean, so a group of 1 has no signal."""
    prompts_per_step: PosInt
    """Prompts per optimizer step; the step trains on prompts_per_step x group_size replies."""
    steps: PosInt
    """Optimizer steps (each samples fresh groups)."""
    lr: PosFloat
    beta: PosFloat
    """Weight of the KL penalty to the reference (the frozen SFT adapter); > 0 so KL is
    measured and logged."""
    temperature: PosFloat
    """Sampling temperature of the groups: a group of identical greedy replies has no signal."""
    max_completion_length: PosInt
    """Longest reply in tokens."""
    identity_share: Fraction
    """Share of the training prompts that are identity questions (the rest are code tasks)."""
    hidden_edge_cases: NonNegInt
    """Edge-case inputs per task for the stricter hidden check (reward_hack_rate), derived
    from the test inputs and answered by the task's reference solution."""
    timeout_s: PosFloat
    """Wall-clock limit per reply's tests in the sandbox."""
    backend: Literal["hf", "vllm"]
    """Who samples the groups: transformers, or vLLM on a CUDA GPU (TRL's use_vllm)."""
    precision: Literal["auto", "bf16", "fp16", "fp32"]
    """As sft.precision."""

    @field_validator("group_size")
    @classmethod
    def _a_group(cls, size: int) -> int:
        if size < 2:
            raise ValueError("GRPO compares each reply with the others of its group, so a group "
                             "needs >= 2 replies; set e.g. -S rl.grpo.group_size=4")
        return size

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, rewards: dict[str, float]) -> dict[str, float]:
        if not rewards:
            raise ValueError("GRPO needs at least one reward, e.g. -S 'rl.grpo.rewards={code: "
                             "1.0}'")
        problems = []
        for name in rewards:
            if name in names() and name not in REWARDS:
                problems.append(f"rl.grpo.rewards.{name}: suite {name} has no training reward")
            elif name not in REWARDS:
                problems.append(f"rl.grpo.rewards.{name}: no suite or reward of that name")
        if problems:
            raise ValueError("; ".join(problems) + f" (rewards: {', '.join(REWARDS)})")
        return rewards


class RlConfig(Strict):
    """The rl group (conf/rl/): which optional variants are trained, and their settings."""

    trained: list[Literal[OPTIONAL]]
    """dvc.yaml's grpo stage loops over this list: [] (rl=none) gives it no instance."""
    grpo: GrpoConfig | None

    @field_validator("grpo")
    @classmethod
    def _settings_of_the_trained(cls, grpo: GrpoConfig | None, info: ValidationInfo):
        if "trained" in info.data and ("grpo" in info.data["trained"]) != (grpo is not None):
            raise ValueError("rl.trained lists grpo exactly when rl.grpo holds its settings; "
                             "use -S rl=grpo or -S rl=none (conf/rl/)")
        return grpo
