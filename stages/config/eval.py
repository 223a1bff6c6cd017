"""The `eval` group: how each eval stage generates and scores, and what summary reports."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from stages.config.base import NonNegInt, PosFloat, PosInt, Strict
from stages.config.suites import LM_EVAL, names

# The suite names the config accepts: the registry's (stages/config/suites.py).
LmEvalSuite = Literal[names(LM_EVAL)]
Suite = Literal[names()]


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


# How a suite eval.lm_eval does not list runs: every setting the harness's own, so that a new
# suite in the registry needs no entry in conf/eval/.
HARNESS_SETTINGS = LmEvalTaskConfig(num_fewshot=None, limit=None, chat_template=False,
                                    max_gen_toks=None)

# eval.batching: who batches transformers generation (stages.generation.hf.batching says how each
# is chosen and when one falls back).
BATCHINGS = ("ours", "continuous", "auto")


class EvalRun(Strict):
    """The eval group's keys that change an eval stage's outputs (generation, execution, which
    probes); every eval stage declares exactly these in dvc.yaml."""

    max_new_tokens: PosInt
    batch_size: PosInt
    backend: Literal["hf", "vllm"]
    """Who generates: transformers (batch_size prompts at a time), or vLLM on a CUDA GPU with
    vllm installed (stages/generation/vllm.py); perplexity always scores with transformers."""
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
    """Settings of each lm-evaluation-harness suite (stages/suites/lm_eval_tasks.py); a suite
    not listed runs with HARNESS_SETTINGS."""
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
