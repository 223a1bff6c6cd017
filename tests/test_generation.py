"""Generation batching: our rolling batch, transformers' continuous batching and plain
batched generate give the same greedy replies; sampled replies do not depend on the batch;
perplexity's batched scoring equals scoring one conversation at a time; the modules of
stages.generation import each other without a cycle."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import stage_cfg

QUESTIONS = ["Who are you?", "What is the capital of France? Answer in one word.",
             "Write a Python function `add(a, b)` that returns a + b.", "Hi",
             "What is 2 + 3?", "Name a prime number.", "Who made you?"]


@pytest.fixture(scope="module")
def tiny(pipeline):
    """The eval config, tokenizer and prompts of the test pipeline, and a model of its
    architecture with random weights drawn wide (std 0.5): the six-step test model answers
    every prompt alike, these weights answer each prompt differently."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from stages.config import EvalStage
    from stages.generation.common import chat_prompts
    from stages.models.modeling import load_tokenizer

    root, params = pipeline
    cfg = stage_cfg(EvalStage, params)
    tokenizer = load_tokenizer(root / "models" / "base")
    conversations = [[{"role": "system", "content": params["system_prompt"]},
                      {"role": "user", "content": q}] for q in QUESTIONS]
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"]
               for p in chat_prompts(tokenizer, conversations)]
    config = AutoConfig.from_pretrained(root / "models" / "base", initializer_range=0.5)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return cfg, tokenizer, model, prompts


def decode(cfg, tokenizer, **knobs):
    from stages.generation.common import decoding

    return dataclasses.replace(decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer),
                               max_new_tokens=40, **knobs)


def ending_apart(cfg, tokenizer, model, prompts, **knobs):
    """The decoding with one more end token: one the tiny test model generates at different
    steps of different replies (it never learned to end), so rows end apart and the next
    prompts take their places mid-batch."""
    from stages.generation.common import GenerationCost
    from stages.generation.hf import rolling

    plain = decode(cfg, tokenizer, **knobs)
    replies = rolling(model, prompts, plain, 1, GenerationCost(), 0, "test")
    firsts = {}
    for reply in replies:
        for step, token in enumerate(reply):
            firsts.setdefault(token, {}).setdefault(id(reply), step)
    token = max(firsts, key=lambda t: len(set(firsts[t].values())))
    return dataclasses.replace(plain, end_token_ids=(*plain.end_token_ids, token))


def test_every_batching_gives_the_same_greedy_tokens(tiny):
    """Rolling at 1, 3 (rows end and the next prompts take their places mid-batch) and 16,
    plain batched generate, and generate_batch: the same tokens, each up to its end token."""
    from stages.generation.common import GenerationCost
    from stages.generation.hf import batched, continuous, rolling

    cfg, tokenizer, model, prompts = tiny
    greedy = ending_apart(cfg, tokenizer, model, prompts)
    cost = GenerationCost()
    one = rolling(model, prompts, greedy, 1, cost, 0, "test")
    assert len({len(t) for t in one}) > 2, "rows must end apart"
    assert cost.tokens == sum(map(len, one)) and cost.ttft_s > 0
    assert rolling(model, prompts, greedy, 3, GenerationCost(), 0, "test") == one
    assert rolling(model, prompts, greedy, 16, GenerationCost(), 0, "test") == one
    assert batched(model, prompts, greedy, 3, GenerationCost(), 0, "test") == one
    cb = GenerationCost()
    assert continuous(model, prompts, greedy, 3, cb, 0) == one
    assert cb.tokens == cost.tokens and cb.ttft_s > 0


@pytest.mark.parametrize("prompts, shared", [
    ([[5, 6, 7, 8], [5, 6, 9]], 2),  # the common opening
    ([[5, 6], [5, 6, 7]], 1),  # a prompt keeps its last token, whose logits choose the reply
    ([[5, 6, 7], [8, 6, 7]], 0),  # nothing in common
    ([[5, 6, 7]], 0),  # one prompt: nothing to share
])
def test_the_shared_prefix_is_what_every_prompt_begins_with(tiny, prompts, shared):
    import torch

    from stages.generation.hf import shared_prefix

    model = tiny[2]
    n, layers = shared_prefix(model, prompts, torch.device("cpu"))
    assert n == shared
    assert len(layers) == (model.config.num_hidden_layers if shared else 0)
    assert all(k.shape[-2] == shared for k, _ in layers)


def test_the_prompts_of_the_tests_share_a_prefix(tiny):
    """The batching tests above exercise prefills that start from the shared keys and values:
    their prompts share the chat template's opening and the system prompt."""
    import torch

    from stages.generation.hf import shared_prefix

    _, _, model, prompts = tiny
    assert shared_prefix(model, prompts, torch.device("cpu"))[0] > 10


def test_the_repetition_penalty_is_applied_as_generate_applies_it(tiny):
    """One unpadded prompt at a time, plain generate sees exactly the row's own tokens, so
    its penalised replies are what ours must give at any batch size; the penalty changes
    them (else the check proves nothing)."""
    from stages.generation.common import GenerationCost
    from stages.generation.hf import batched, rolling

    cfg, tokenizer, model, prompts = tiny
    penalised = ending_apart(cfg, tokenizer, model, prompts, repetition_penalty=1.8)
    expected = batched(model, prompts, penalised, 1, GenerationCost(), 0, "test")
    assert expected != rolling(model, prompts, dataclasses.replace(penalised,
                                                                   repetition_penalty=1.0),
                               1, GenerationCost(), 0, "test")
    assert rolling(model, prompts, penalised, 4, GenerationCost(), 0, "test") == expected


def test_sampled_replies_do_not_depend_on_the_batch(tiny):
    from stages.generation.common import GenerationCost
    from stages.generation.hf import rolling

    cfg, tokenizer, model, prompts = tiny
    hot = dataclasses.replace(ending_apart(cfg, tokenizer, model, prompts), do_sample=True,
                              temperature=1.5, top_k=50, top_p=0.95)
    one = rolling(model, prompts, hot, 1, GenerationCost(), 7, "test")
    assert rolling(model, prompts, hot, 4, GenerationCost(), 7, "test") == one
    assert rolling(model, prompts, hot, 4, GenerationCost(), 8, "test") != one


def test_continuous_batching_falls_back_where_it_would_change_the_decoding(tiny, capsys):
    from stages.generation.hf import batching, generate

    cfg, tokenizer, model, _ = tiny
    assert batching("auto", model, decode(cfg, tokenizer)) == ("ours", "eval.batching=auto on CPU")
    assert batching("continuous", model, decode(cfg, tokenizer))[0] == "continuous"
    chosen, reason = batching("continuous", model, decode(cfg, tokenizer,
                                                          repetition_penalty=1.2))
    assert chosen == "ours" and "drops" in reason
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS[:2]]
    replies = generate(model, tokenizer, conversations, decode(cfg, tokenizer,
                                                               repetition_penalty=1.2),
                       2, "fallback", how="continuous")
    assert "fallback: batching ours (repetition_penalty 1.2" in capsys.readouterr().out
    assert len(replies) == 2
    with pytest.raises(ValueError, match="eval.batching='fast'"):
        batching("fast", model, decode(cfg, tokenizer))


def test_batched_perplexity_scores_what_one_at_a_time_scores(tiny, pipeline):
    from stages.generation.losses import assistant_losses

    cfg, tokenizer, model, _ = tiny
    _, params = pipeline
    conversations = [[{"role": "system", "content": params["system_prompt"]},
                      {"role": "user", "content": q},
                      {"role": "assistant", "content": a}]
                     for q, a in zip(QUESTIONS, ["I am a model.", "Paris.", "def add(a, b):\n"
                                                 "    return a + b", "Hello!", "5", "7",
                                                 "The project."], strict=True)]
    alone = [assistant_losses(model, tokenizer, [c], 1)[0] for c in conversations]
    together = assistant_losses(model, tokenizer, conversations, 4)
    assert [t for _, t in together] == [t for _, t in alone]
    assert len({t for _, t in alone}) > 1  # rows of different lengths: padding is exercised
    for (a, _), (b, _) in zip(alone, together, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-4)


GENERATION = Path(__file__).resolve().parents[1] / "stages" / "generation"
MODULES = sorted(p.stem for p in GENERATION.glob("*.py") if p.stem != "__init__")


def generation_imports(module: str) -> set[str]:
    """The stages.generation modules `module` imports anywhere in its file (inside functions
    too: a cycle closed by a deferred import is still a cycle)."""
    tree = ast.parse((GENERATION / f"{module}.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {n.removeprefix("stages.generation.") for n in names
            if n.startswith("stages.generation.")} & set(MODULES)


def test_no_module_of_stages_generation_imports_another_in_a_cycle():
    """common, which both backends import, imports neither; and following the imports from any
    module never comes back to it."""
    graph = {m: generation_imports(m) for m in MODULES}
    assert graph["common"] == set()
    assert {"hf", "vllm"} <= set(MODULES) and "common" in graph["hf"] & graph["vllm"]
    for start in MODULES:
        reached, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in reached:
                reached.add(module)
                todo += graph[module]
        assert start not in reached, f"stages.generation.{start} imports itself through {reached}"


@pytest.mark.parametrize("module", MODULES)
def test_each_module_of_stages_generation_imports_alone(module):
    """In a fresh interpreter, so no module another test imported first hides a cycle."""
    root = GENERATION.parents[1]
    run = subprocess.run([sys.executable, "-c", f"import stages.generation.{module}"],
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
