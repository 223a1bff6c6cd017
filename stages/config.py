"""Typed, strict configuration for every stage.

`conf/` (Hydra) is the source, `params.yaml` is its composition (`python -m stages.compose`).
Before doing any work a stage validates the whole of `params.yaml` against `Config` (so a key
no stage knows, e.g. from `dvc exp run -S +sft.bogus=1`, stops it, named with the nearest
known key), then reads only the params it declares in `dvc.yaml` (`declared_params`, checked
against dvc.yaml by `python -m stages.compose --check`) into its own model below, and refuses
input files that no DVC dependency of the stage tracks (`Stage.input_files`).

    python -m stages.config        # the `params` stage: validate params.yaml, nothing else
"""

from __future__ import annotations

import difflib
import os
import types
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stages.io import UserError

PARAMS_FILE = Path("params.yaml")
# Folders for users' own files, declared as DVC deps of the stages that read them (dvc.yaml),
# so that editing a file there reruns those stages; a local file elsewhere is refused.
EXTERNAL_DIR = "data/external"
BENCHMARKS_DIR = "data/benchmarks"
# blind A/B judgments (stages/review.py writes them, summary reads them); git-tracked
REVIEWS_DIR = "data/reviews"

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Lang = Literal["en", "zh"]
# One value for every language, or one per language ({en: Swift-Robot, zh: 雨燕机器人}).
LangText = str | dict[Lang, str]


class ConfigError(UserError, ValueError):
    """Raised once per stage with every problem found in its params."""


class StageError(UserError, RuntimeError):
    """A stage cannot go on for a reason the user can fix (the message says how)."""


class Strict(BaseModel):
    # extra="forbid": a misspelt key is an error, never a silent no-op.
    # strict=True: "8" is not an int and 1 is not a bool.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def lang_text(value: LangText, lang: str) -> str:
    """The value of a `LangText` for one language."""
    if isinstance(value, str):
        return value
    if lang not in value:
        raise ConfigError(f"no {lang!r} value in {value!r}; add `{lang}: ...` next to the others")
    return value[lang]


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


class PathsConfig(Strict):
    """Fixed locations of every artifact; `dvc.yaml` reads the same values through `${paths.*}`."""

    sources: str
    """Built-in data written by the project (identity, general QA, code tasks, probes/)."""
    models: str
    """Model directories, one per variant: <models>/base, <models>/sft, <models>/dpo."""
    curated: str
    metrics: str
    checkpoints: str
    """Resumable training checkpoints, outside DVC's outputs (deleted when a run finishes)."""

    def model_dir(self, variant: str) -> Path:
        return Path(self.models) / variant

    def eval_file(self, variant: str, suite: str) -> Path:
        """One variant's metrics on one suite (committed; dvc.yaml: the eval stage's metrics)."""
        return Path(self.metrics) / "eval" / variant / f"{suite}.json"

    def tasks_file(self, variant: str, suite: str) -> Path:
        """Its per-probe replies and outcomes (DVC-cached). Kept out of metrics/eval/: a clone
        has the committed metrics but not the cached files, and a directory dep holding both
        would hash differently there, making summary look stale."""
        return Path(self.metrics) / "tasks" / variant / f"{suite}.jsonl"

    def cost_file(self, variant: str, suite: str) -> Path:
        """What scoring it cost (timings; committed), apart from the capability metrics and
        outside summary's deps: timings change on every machine and summary never reads them."""
        return Path(self.metrics) / "cost" / variant / f"{suite}.json"


Format = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion",
                 "self_cognition", "code_task", "preference"]


class SourceConfig(Strict):
    """A data source in mapping form; the string form `PATH_OR_ID[#N]` sets `path` and
    `count` only."""

    path: str
    """A local .jsonl/.json/.parquet/.csv file, or `hf::OWNER/NAME` for a hub dataset."""
    count: PosInt | None = None
    """Rows to draw, ms-swift `#N` semantics; null keeps the source as it is."""
    format: Format = "auto"
    """auto: detected from the fields of each row."""
    split: str = "train"
    """Hub datasets only."""
    revision: str | None = None
    """Pinned commit of a hub dataset (required for hf:: sources)."""
    columns: dict[str, str] = {}
    """Renames applied before format detection: {their_field: our_field}."""
    name: str | None = None
    """Name in the data card; default: the file stem or the dataset id."""
    ignore_fields: list[str] = []
    """Row fields you know are only metadata; any other field no format reads is an error
    (it might change what the row means). Ids and provenance are known-harmless already."""

    @model_validator(mode="after")
    def _hub_revision(self) -> SourceConfig:
        if self.path.startswith("hf::") and not self.revision:
            raise ValueError(f"hub dataset {self.path} needs a pinned `revision`")
        return self


Source = str | SourceConfig


class DedupConfig(Strict):
    near: bool
    """Also drop near-duplicates (MinHash LSH over word 5-grams), not only exact copies."""
    threshold: Annotated[float, Field(gt=0, le=1)]
    """Estimated Jaccard similarity above which two rows are near-duplicates."""
    num_perm: PosInt
    """MinHash permutations: more is more precise and slower."""


class DecontamConfig(Strict):
    ngram: PosInt
    """Word n-gram length; 10 as in the Qwen2.5-Coder report."""
    min_chars: NonNegInt
    """An n-gram counts only if its words add up to this many characters, so short common
    idioms (`for i in range(len(x))`) do not count as contamination."""


class QualityConfig(Strict):
    """Quality selection for code instruction data: score rows, keep the top `count`."""

    sources: Annotated[list[str], Field(min_length=1)]
    """Names (as in the data card) of the sources to select from."""
    count: PosInt


class PhaseConfig(Strict):
    """One phase of staged training, curated into its own file (phases/<name>.jsonl)."""

    name: str
    sources: Annotated[list[Source], Field(min_length=1)]


class CleanConfig(Strict):
    """How curate cleans every source (conf/data/clean/)."""

    strict: bool
    """true: an invalid row stops the stage; false: it is dropped and counted."""
    min_tokens: NonNegInt
    max_tokens: PosInt
    """Rows outside [min_tokens, max_tokens] tokens of the base tokenizer are dropped."""
    code_language: Literal["python"] | None
    """python: drop rows whose fenced code blocks are in another language."""
    secrets: Literal["drop", "redact"]
    """What to do with a row in which detect-secrets finds a credential."""
    dedup: DedupConfig
    decontaminate: DecontamConfig


class DataConfig(Strict):
    """The training mix the curate stage builds."""

    name: str
    sources: list[Source]
    """`PATH[#N]` strings (ms-swift habit) or mappings (SourceConfig)."""
    phases: list[PhaseConfig]
    """Staged training (anchor -> generalize -> calibrate), one curated file per phase;
    empty: a single mix from `sources`."""
    preference_source: str | None
    """Code tasks (prompt, solution, tests) from which DPO pairs are built; null: no pairs."""
    augment_pairs: bool
    """Also add each pair with the solution's identifiers renamed (verified to still pass)."""
    preferences: list[Source]
    """Preference files from users (chosen/rejected), taken as they are."""
    val_ratio: Fraction
    """Share of the SFT rows held out as validation, drawn with the seed."""
    quality: QualityConfig | None
    clean: CleanConfig

    @model_validator(mode="after")
    def _some_rows(self) -> DataConfig:
        if not self.sources and not self.phases:
            raise ValueError("give `sources` or `phases`")
        if self.sources and self.phases:
            raise ValueError("give either `sources` (one mix) or `phases` (staged), not both")
        return self


class BenchmarksConfig(Strict):
    """Local copies of the public benchmarks (evalplus .jsonl); null: not available. Curate
    decontaminates against each one given; eval scores on them."""

    humanevalplus: str | None
    mbppplus: str | None
    humanevalpack: str | None
    """HumanEvalPack Python (.jsonl with buggy_solution): repair and localisation probes at
    benchmark scale, added to the dimensions suite."""
    # lm-evaluation-harness tasks: a directory each, in the publisher's layout (the file
    # names are in stages/suites/lm_eval_tasks.py LAYOUTS); null: the suite cannot run.
    mmlu: str | None = None
    """test/<subject>_test.csv (and dev/<subject>_dev.csv for few-shot), hendrycks' CSVs."""
    cmmlu: str | None = None
    """test/<subject>.csv (and dev/<subject>.csv)."""
    ceval: str | None = None
    """The ceval-valid suite: val/<subject>_val.csv (and dev/<subject>_dev.csv)."""
    gsm8k: str | None = None
    """test.jsonl (and train.jsonl, which the harness draws its 5 examples from; without it
    they come from the test split, the scored question left out)."""
    arc_challenge: str | None = None
    """ARC-Challenge-Test.jsonl, AI2's file."""
    hellaswag: str | None = None
    """hellaswag_val.jsonl, rowanz/hellaswag's file."""
    winogrande: str | None = None
    """dev.jsonl of winogrande_1.1."""
    bigcodebench: str | None = None
    """BigCodeBench.jsonl (v0.1.0 or later, the full 1,140 tasks)."""
    bigcodebench_hard: str | None = None
    """The -Hard subset's .jsonl (same fields), for the bigcodebench-*-hard suites."""


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


LmEvalSuite = Literal["mmlu", "cmmlu", "ceval-valid", "gsm8k", "arc_challenge", "hellaswag",
                      "winogrande"]
Suite = Literal["code", "identity", "knowledge", "perplexity", "dimensions", "humaneval+",
                "mbpp+", "mmlu", "cmmlu", "ceval-valid", "gsm8k", "arc_challenge", "hellaswag",
                "winogrande", "bigcodebench-complete", "bigcodebench-instruct",
                "bigcodebench-complete-hard", "bigcodebench-instruct-hard"]


class LmEvalTaskConfig(Strict):
    """How one lm-evaluation-harness suite runs; null: the harness's own setting."""

    num_fewshot: NonNegInt | None
    """Examples before each question; null: the task's default (gsm8k 5, the others 0)."""
    limit: PosInt | None
    """The first N documents of the task, of each subject for mmlu, cmmlu and ceval-valid
    (lm_eval's --limit); null: eval.limit."""
    chat_template: bool
    """true: prompts through the chat template with the shared system prompt, few-shot
    examples as earlier turns; false: plain text, the harness's default."""
    max_gen_toks: PosInt | None
    """Generated tasks (gsm8k): longest reply in tokens; null: the harness's 256."""
# The model variants, in order: base first (every other one is compared with it), then each
# trained one, named as its dvc.yaml stage, its models/ folder and its metrics. The one list:
# params.yaml's `variants` (the eval matrix's and summary's; Config checks it against this
# list and rl.trained), eval's, the report's and chat's choices all come from it.
VARIANTS = ("base", "sft", "dpo", "grpo")
# eval.batching: who batches transformers generation (stages.generate.batching says how each
# is chosen and when one falls back).
BATCHINGS = ("ours", "continuous", "auto")
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
            if name in get_args(Suite) and name not in REWARDS:
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


class EvalRun(Strict):
    """The eval group's keys that change an eval stage's outputs (generation, execution, which
    probes); every eval stage declares exactly these in dvc.yaml."""

    max_new_tokens: PosInt
    batch_size: PosInt
    backend: Literal["hf", "vllm"]
    """Who generates: transformers (batch_size prompts at a time), or vLLM on a CUDA GPU with
    vllm installed (stages/vllm_backend.py); perplexity always scores with transformers."""
    batching: Literal[BATCHINGS]
    """How the hf backend batches generation: ours (a rolling batch over the KV cache: an
    ended row leaves at once and the next prompt takes its place), continuous (transformers'
    generate_batch, paged attention; falls back to ours, saying why, for repetition_penalty
    != 1, which it drops), or auto (continuous on a CUDA GPU, ours on CPU, where
    generate_batch measured slower: benchmarks/results/generation_bench.json). Greedy
    replies are the same either way."""
    timeout_s: PosFloat
    """Wall-clock limit per code task, enforced from outside the test process."""
    limit: PosInt | None
    """Score only the first N probes of each suite (quick runs); null: all."""
    samples: PosInt
    """Samples per code task: 1 is greedy; more are drawn at `temperature` and give pass@1
    and pass@samples by the unbiased estimator."""
    temperature: Annotated[float, Field(ge=0)]
    """Sampling temperature when samples > 1 (ignored for greedy)."""
    top_p: Annotated[float, Field(gt=0, le=1)]
    """Nucleus sampling when samples > 1 (1.0: off); greedy ignores it."""
    top_k: NonNegInt
    """Top-k sampling when samples > 1 (0: off); greedy ignores it."""
    repetition_penalty: PosFloat
    """Applied to greedy and sampled replies alike (1.0: off). Set here, never taken from the
    checkpoint's generation_config.json (Qwen2.5-Instruct ships 1.05-1.1)."""
    presence_penalty: float
    """Additive penalty on every token already in the reply (OpenAI/vLLM semantics; 0: off).
    vLLM only: transformers' generate has no such processor (its repetition_penalty divides
    the logit instead), so eval.backend=hf refuses a non-zero value."""
    frequency_penalty: float
    """Additive penalty per earlier occurrence of a token in the reply (vLLM; 0: off)."""
    lm_eval: dict[LmEvalSuite, LmEvalTaskConfig]
    """Settings of each lm-evaluation-harness suite (stages/suites/lm_eval_tasks.py)."""
    bigcodebench_timeout_s: PosFloat
    """Wall-clock limit for one BigCodeBench task's unittest run (its tests import pandas,
    matplotlib, sklearn...: seconds, not the milliseconds of a mini task)."""
    bigcodebench_missing_libs: Literal["error", "skip"]
    """BigCodeBench tasks whose libraries are not installed: error (stop, naming them) or
    skip (left out of every variant alike; the count is in the metrics)."""

    @model_validator(mode="after")
    def _sampling(self) -> EvalRun:
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError(f"samples={self.samples} needs temperature > 0; set e.g. "
                             "-S eval.temperature=0.8, or samples=1 for greedy")
        for key in ("presence_penalty", "frequency_penalty"):
            if self.backend == "hf" and getattr(self, key) != 0:
                raise ValueError(f"eval.{key}={getattr(self, key)} needs eval.backend=vllm: "
                                 "transformers' generate has no additive presence/frequency "
                                 "penalty (eval.repetition_penalty is its multiplicative "
                                 "kind); set it to 0 or use -S eval.backend=vllm")
        return self


class EvalReport(Strict):
    """The eval group's keys only summary reads: changing them reruns no eval stage."""

    suites: Annotated[list[Suite], Field(min_length=1)]
    """The eval matrix in dvc.yaml takes its `suite` list from here (${eval.suites}); an eval
    stage does not declare it, so adding a suite runs only that suite's stages (and summary)
    and removing one runs none."""
    budget: dict[Suite, Annotated[float, Field(ge=0)]]
    """Largest drop allowed per suite in its judged metric (0.02 = 2 points of pass@1; for
    perplexity, the rise in loss per token); a bigger drop is `over-budget`."""
    bootstrap_resamples: PosInt
    """Resamples for the paired bootstrap CI in summary."""
    retention: list[Suite]
    """The suites whose mean change is the forgetting score (Biderman et al. 2024: HellaSwag,
    ARC-Challenge, WinoGrande); each must also be in `suites` to count."""
    target: Suite
    """The skill the fine-tune is meant to teach (identity for an identity mix, code or
    humaneval+ for code SFT): the summary's "learned" next to the forgetting score."""


class EvalConfig(EvalRun, EvalReport):
    """The whole eval group (conf/eval/)."""


class Stage(Strict):
    """One DVC stage's params. Each field is a top-level key of params.yaml the stage reads;
    a field typed with a part of its group (EvalRun of `eval`) reads only that part's keys.
    `declared_params` turns this into the stage's `params:` list in dvc.yaml."""

    # Groups declared key by key in dvc.yaml (one entry per field of the group).
    split: ClassVar[tuple[str, ...]] = ()
    # Entries a foreach stage declares per item: sft@<phase> declares only its own phase.
    per_item: ClassVar[dict[str, str]] = {}

    def input_files(self) -> dict[str, str]:
        """{param: local path} of every data file the stage reads beyond its dvc.yaml deps'
        fixed paths; each must lie under one of `input_dirs()`."""
        return {}

    def input_dirs(self) -> list[str]:
        """Folders the stage declares as deps in dvc.yaml for the files of `input_files`."""
        return []


class LocalCopyModel(Strict):
    """The part of `model` the local_copy stage reads."""

    local_dir: str | None


class LocalCopyStage(Stage):
    model: LocalCopyModel
    paths: PathsConfig


class EnvironmentStage(Stage):
    paths: PathsConfig


class BaseStage(Stage):
    seed: int
    system_prompt: str
    model: ModelConfig
    paths: PathsConfig


class CurateStage(Stage):
    seed: int
    unsafe_execution: bool
    system_prompt: str
    identity: IdentityConfig
    data: DataConfig
    benchmarks: BenchmarksConfig
    paths: PathsConfig

    def input_files(self) -> dict[str, str]:
        files = {}
        for where, sources in [("data.sources", self.data.sources),
                               ("data.preferences", self.data.preferences),
                               *((f"data.phases.{i}.sources", phase.sources)
                                 for i, phase in enumerate(self.data.phases))]:
            for i, source in enumerate(sources):
                path = source.path if isinstance(source, SourceConfig) else source.partition("#")[0]
                if not path.startswith("hf::"):  # hub datasets: pinned by revision instead
                    files[f"{where}.{i}"] = path
        if self.data.preference_source:
            files["data.preference_source"] = self.data.preference_source
        return files | benchmark_files(self.benchmarks)

    def input_dirs(self) -> list[str]:
        return [self.paths.sources, EXTERNAL_DIR, BENCHMARKS_DIR]


class SftStage(Stage):
    seed: int
    identity: IdentityConfig
    model: ModelConfig
    sft: SftConfig
    paths: PathsConfig

    split = ("sft",)
    per_item = {"sft.phases": "sft.phases.${key}"}


class DpoStage(Stage):
    seed: int
    model: ModelConfig
    dpo: DpoConfig
    paths: PathsConfig


class GrpoStage(Stage):
    seed: int
    unsafe_execution: bool
    identity: IdentityConfig
    model: ModelConfig
    rl: RlConfig
    paths: PathsConfig


class EvalStage(Stage):
    seed: int
    unsafe_execution: bool
    system_prompt: str
    identity: IdentityConfig
    model: ModelConfig
    eval: EvalRun
    benchmarks: BenchmarksConfig
    paths: PathsConfig

    def input_files(self) -> dict[str, str]:
        return benchmark_files(self.benchmarks)

    def input_dirs(self) -> list[str]:
        return [BENCHMARKS_DIR]


class SummaryStage(Stage):
    seed: int
    variants: list[Variant]
    eval: EvalReport
    paths: PathsConfig

    def input_dirs(self) -> list[str]:
        return [REVIEWS_DIR]


def benchmark_files(benchmarks: BenchmarksConfig) -> dict[str, str]:
    """Every path under `benchmarks`, whatever its key (suites add their own keys)."""
    return {f"benchmarks.{key}": path for key, path in flatten(benchmarks.model_dump()).items()
            if isinstance(path, str)}


class Config(Strict):
    """The whole of params.yaml: validated by `stages.compose` before it writes the file."""

    seed: int
    unsafe_execution: bool
    system_prompt: str
    identity: IdentityConfig
    paths: PathsConfig
    benchmarks: BenchmarksConfig
    model: ModelConfig
    data: DataConfig
    sft: SftConfig
    dpo: DpoConfig
    rl: RlConfig
    variants: list[Variant]
    """The eval matrix's variants (dvc.yaml: variant: ${variants}), set by conf/rl/: every
    variant of VARIANTS but the OPTIONAL ones rl.trained leaves out."""
    eval: EvalConfig

    @field_validator("variants")
    @classmethod
    def _variants_of_the_rl_group(cls, variants: list[str], info: ValidationInfo) -> list[str]:
        if "rl" not in info.data:  # rl itself is invalid: that error is reported
            return variants
        trained = info.data["rl"].trained
        want = [v for v in VARIANTS if v not in OPTIONAL or v in trained]
        if variants != want:
            raise ValueError(f"with rl.trained {trained} the variants must be {want} "
                             "(conf/rl/ sets both; use -S rl=grpo or -S rl=none)")
        return variants


S = TypeVar("S", bound=Strict)


def validate(model: type[S], params: dict[str, Any]) -> S:
    """Validate `params` against `model`, raising one ConfigError that lists every problem."""
    try:
        return model.model_validate(params)
    except ValidationError as err:
        raise ConfigError(format_errors(err, known_keys(model, params))) from None


def format_errors(err: ValidationError, known: list[str] | None = None) -> str:
    lines = [f"{err.error_count()} invalid param(s):"]
    seen = set()
    for e in err.errors():
        # pydantic reports each branch of a union separately; drop the branch labels.
        loc = ".".join(str(p) for p in e["loc"] if not _is_branch_label(p))
        if e["type"] == "extra_forbidden":
            hint = f"did you mean {nearest_key(loc, known)}? " if known else ""
            msg = (f"unknown key; {hint}Remove it or fix its spelling (stages/config.py "
                   "documents every key)")
        elif e["type"] == "missing":
            msg = "missing; add it to the config group in conf/"
        else:
            msg = f"{e['msg']} (got {e.get('input')!r})"
        if (loc, msg) in seen:
            continue
        seen.add((loc, msg))
        lines.append(f"  {loc or '<root>'}: {msg}")
    lines.append(
        "Fix the value in conf/ and run `python -m stages.compose`, or override it for one "
        "experiment: `dvc exp run -S KEY=VALUE`."
    )
    return "\n".join(lines)


def _is_branch_label(part: Any) -> bool:
    return isinstance(part, str) and (
        part.startswith(("list[", "dict[", "literal[", "function-", "constrained-"))
        or part in {"str", "int", "float", "bool", "none"}
        or part in _MODEL_NAMES
    )


# ---- unknown keys: the nearest known one ------------------------------------------------

# Names users bring from transformers/TRL/PEFT arguments, and what this config calls them.
ALIASES = {"learning_rate": "lr", "num_train_epochs": "epochs", "max_seq_length": "max_length",
           "rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
           "per_device_train_batch_size": "per_device_batch_size"}


def known_keys(model: type[BaseModel], params: Any, prefix: str = "") -> list[str]:
    """Every dotted key `model` accepts, with the keys of its mappings and lists (sft.phases.
    main.lr) taken from `params`, in schema order."""
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        value = params.get(name) if isinstance(params, dict) else None
        for kind, sub in _nested_models(field.annotation):
            if kind == "model":
                keys += known_keys(sub, value, f"{key}.")
            elif kind == "dict" and isinstance(value, dict):
                for k, v in value.items():
                    keys += [f"{key}.{k}"] + known_keys(sub, v, f"{key}.{k}.")
            elif kind == "list" and isinstance(value, list):
                for i, v in enumerate(value):
                    keys += known_keys(sub, v, f"{key}.{i}.")
    return list(dict.fromkeys(keys))


def _nested_models(annotation: Any, kind: str = "model") -> list[tuple[str, type[BaseModel]]]:
    """(how it nests, model) for every pydantic model inside a field's type."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(kind, annotation)]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _nested_models(args[0], kind)
    if origin is dict:
        return _nested_models(args[1], "dict")
    if origin is list:
        return _nested_models(args[0], "list")
    if origin in (Union, types.UnionType):
        return [m for a in args for m in _nested_models(a, kind)]
    return []


def nearest_key(unknown: str, known: list[str]) -> str:
    """The known key `unknown` most likely meant: a sibling spelt alike (sft.lora.rank ->
    sft.lora.r), else the same name elsewhere in its group (sft.learning_rate ->
    sft.phases.main.lr), else the least unlike sibling."""
    parent, _, leaf = unknown.rpartition(".")
    leaf = ALIASES.get(leaf, leaf)
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.75)
    if close:
        return siblings[close[0]]
    group = unknown.split(".")[0]
    same = [k for k in known if k.rpartition(".")[2] == leaf and k.split(".")[0] == group]
    if same:
        return same[0]
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0)
    if close:
        return siblings[close[0]]
    return (difflib.get_close_matches(unknown, known, n=1, cutoff=0) or ["<none>"])[0]


# ---- reading params.yaml -------------------------------------------------------------------


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole of params.yaml."""
    if not path.exists():
        raise ConfigError(
            f"{path} not found; run stages from the repo root, or create it with "
            "`python -m stages.compose`"
        )
    with path.open(encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path} is not a mapping; regenerate it with `python -m stages.compose`")
    return params


def stage_params(model: type[Stage], params: dict[str, Any]) -> dict[str, Any]:
    """The part of the whole `params` that `model` declares: its top-level keys, and of a
    group it reads in part (EvalRun of `eval`) only that part's keys."""
    out = {}
    for name, field in model.model_fields.items():
        value = params.get(name)
        part = field.annotation
        if _is_part(model, name) and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k in part.model_fields}
        out[name] = value
    return out


def _is_part(model: type[Stage], name: str) -> bool:
    part, whole = model.model_fields[name].annotation, Config.model_fields[name].annotation
    return part is not whole and isinstance(part, type) and issubclass(part, BaseModel)


def declared_params(model: type[Stage]) -> list[str]:
    """The stage's `params:` entries in dvc.yaml, in field order."""
    entries = []
    for name, field in model.model_fields.items():
        if _is_part(model, name) or name in model.split:
            entries += [f"{name}.{k}" for k in field.annotation.model_fields]
        else:
            entries.append(name)
    return [model.per_item.get(e, e) for e in entries]


def refuse_untracked_inputs(cfg: Stage, root: Path) -> None:
    """Stop before any work when the stage would read a local file that none of its DVC deps
    tracks: editing such a file would leave its outputs stale without a word."""
    dirs = [os.path.normpath(root / d) for d in cfg.input_dirs()]
    outside = {where: path for where, path in cfg.input_files().items()
               if not any(os.path.commonpath([os.path.normpath(root / path), d]) == d
                          for d in dirs)}
    if outside:
        listed = "\n".join(f"  {where}: {path}" for where, path in outside.items())
        raise ConfigError(
            f"{len(outside)} input file(s) outside the folders dvc.yaml tracks for this stage "
            f"({', '.join(cfg.input_dirs())}):\n{listed}\n"
            f"Editing them would not rerun the stage. Copy your data files into {EXTERNAL_DIR}/ "
            f"and benchmark files into {BENCHMARKS_DIR}/ (commit them), then point the params "
            "at the new paths; hub datasets go in as `hf::OWNER/NAME` with a pinned revision."
        )


def load(model: type[S], path: Path = PARAMS_FILE) -> S:
    """Read params.yaml, validate all of it (a key no stage knows is an error), and return the
    part `model` declares, after refusing input files no DVC dep of the stage tracks."""
    params = read_params(path)
    validate(Config, params)
    cfg = validate(model, stage_params(model, params) if issubclass(model, Stage) else
                   {k: params.get(k) for k in model.model_fields})
    if isinstance(cfg, Stage):
        refuse_untracked_inputs(cfg, path.resolve().parent)
    return cfg


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} for every leaf of nested mappings."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def run_stage(main, *args) -> None:
    """Run a stage's main from the command line: a `UserError` (bad config, bad input, a missing
    file, no sandbox) ends it with the message alone and exit status 1; anything else (a plain
    ValueError from zip(strict=True), say) is a bug and keeps its traceback."""
    import sys

    try:
        main(*args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def main(path: Path = PARAMS_FILE) -> None:
    """The `params` stage: dvc.yaml gives it params.yaml itself as a dep, so any change to the
    file (also a key no stage declares, which would otherwise rerun nothing) validates it."""
    validate(Config, read_params(path))
    print(f"{path}: every key known, every value valid")


_MODEL_NAMES = {cls.__name__ for cls in list(globals().values())
                if isinstance(cls, type) and issubclass(cls, BaseModel)}

if __name__ == "__main__":
    run_stage(main)
