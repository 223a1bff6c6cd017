"""eval: score one variant (base, sft, dpo, or grpo with -S rl=grpo) on one suite.

Reads   params seed, unsafe_execution, system_prompt, identity, model, eval (its EvalRun keys),
        benchmarks, paths;
        models/base, the variant's adapter, data/curated/probes/ (and a benchmark file where
        the suite has one)
Writes  metrics/eval/<variant>/<suite>.json (capability metrics, suite name inside the keys),
        metrics/cost/<variant>/<suite>.json (tokens/s, time to first token, wall time)
        and metrics/tasks/<variant>/<suite>.jsonl (one line per probe: id, prompt, reply,
        outcome and why; DVC-cached)
Run     dvc repro eval   (or: python -m stages.eval --variant sft --suite code)

Every variant gets the same probes, the same system prompt and the same decoding; only the
adapter differs. Each suite is a module of stages/suites/ (probes, prompt, judge, aggregate);
this stage runs any of them the same way: load the variant, read the probes, generate,
judge, write.
"""

from __future__ import annotations

import argparse
import time
from types import ModuleType

from stages import suites
from stages.config import VARIANTS, EvalStage, StageError, load, run_stage
from stages.core.io import write_json, write_jsonl
from stages.core.numerics import pin_torch
from stages.core.runinfo import run_info
from stages.generation.choose import load_backend
from stages.generation.common import Backend, Decoding, GenerationCost, decoding
from stages.models.modeling import load_tokenizer, load_variant


def main(variant: str, suite_name: str, cfg: EvalStage | None = None) -> dict:
    cfg = cfg or load(EvalStage)
    if variant not in VARIANTS:
        raise StageError(f"variant {variant!r} must be one of {VARIANTS}")
    suite = suites.get(suite_name)
    probes = suite.probes(cfg, suite_name)
    if not probes:
        raise StageError(f"suite {suite_name} has no probes to score; check its probe file")

    pin_torch()
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    model = load_model(cfg, variant, suite)
    start, cost = time.perf_counter(), GenerationCost()
    if hasattr(suite, "score"):
        rows = suite.score(cfg, model, tokenizer, probes)
        used = {}
    else:
        how = decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer,
                       sample=samples(cfg, suite) > 1)
        replies = ask(cfg, model, tokenizer, suite, probes, how, f"eval: {suite_name}", cost)
        rows = suites.judged_rows(cfg, suite, probes, replies)
        used = {"decoding": how.record()}
    metrics = {**suites.metrics(cfg, suite, rows), **used}
    seconds = time.perf_counter() - start

    write_jsonl(cfg.paths.tasks_file(variant, suite_name), rows)
    write_json(cfg.paths.eval_file(variant, suite_name), {suite_name: metrics})
    write_json(cfg.paths.cost_file(variant, suite_name),
               {suite_name: {**cost.metrics(), "wall_s": round(seconds, 2),
                             "probes": len(rows)}, "run": run_info()})
    print(f"eval {variant}/{suite_name} in {seconds:.1f}s: {metrics}")
    return metrics


def load_model(cfg: EvalStage, variant: str, suite: ModuleType):
    """Scoring suites (perplexity) need the transformers model's logits; every other suite
    gets the backend eval.backend names."""
    if hasattr(suite, "score"):
        return load_variant(cfg.paths, variant, cfg.model.dtype)
    return load_backend(cfg, variant)


def samples(cfg: EvalStage, suite: ModuleType) -> int:
    """Replies per probe: eval.samples for suites that sample (code tasks), else one."""
    return cfg.eval.samples if getattr(suite, "SAMPLED", False) else 1


def ask(cfg: EvalStage, backend: Backend, tokenizer, suite: ModuleType, probes: list[dict],
        how: Decoding, desc: str, cost: GenerationCost) -> list[list[str]]:
    """The replies to every probe under the shared system prompt, decoded as `how` says (the
    stage's explicit decoding: greedy, or sampled for suites that sample)."""
    n = samples(cfg, suite)
    conversations = [conversation(cfg, suite.prompt(cfg, p)) for p in probes for _ in range(n)]
    flat = backend.generate(tokenizer, conversations, how, desc, cost, cfg.seed)
    return [flat[i * n:(i + 1) * n] for i in range(len(probes))]


def conversation(cfg: EvalStage, question: str) -> list[dict]:
    return [{"role": "system", "content": cfg.system_prompt},
            {"role": "user", "content": question}]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Score one variant on one suite.")
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--suite", required=True)
    args = parser.parse_args()
    run_stage(main, args.variant, args.suite)
