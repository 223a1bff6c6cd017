"""eval: score one variant (base, sft or dpo) on one suite.

Reads   params system_prompt, identity, model, eval, paths; models/base, the variant's adapter,
        data/curated/probes/
Writes  metrics/eval/<variant>/<suite>.json (metrics, suite name inside the keys) and
        metrics/eval/<variant>/<suite>.tasks.jsonl (one line per probe: reply and outcome)
Run     dvc repro eval   (or: python -m stages.eval --variant sft --suite code)

Every variant gets the same probes, the same system prompt and greedy decoding; only the
adapter differs. Suites:
  code        generate, extract the code, run its asserts in a separate process (pass@1)
  identity    share of replies naming the configured name and author without claiming the
              model's original identity
  knowledge   share of replies containing the reference answer
  perplexity  mean loss per assistant token on held-out replies, per domain
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import get_args

from stages.config import EvalStage, IdentityConfig, Variant, lang_text, load, run_stage
from stages.data import code_answer, dimension_prompt, humanevalpack_items, knowledge_answer
from stages.evalplus_suite import check, load_benchmark
from stages.execute import require_sandbox, run_many
from stages.generate import (
    GenerationCost,
    assistant_loss,
    decoding,
    extract_code,
    generate,
    perplexity,
)
from stages.io import read_jsonl, write_json, write_jsonl
from stages.modeling import load_tokenizer, load_variant
from stages.stats import pass_at_k
from stages.vllm_backend import VllmModel

VARIANTS = get_args(Variant)  # ("base", "sft", "dpo")
PROBE_FILES = {"code": "code.jsonl", "identity": "identity.jsonl", "knowledge": "knowledge.jsonl",
               "dimensions": "dimensions.jsonl"}


def main(variant: str, suite: str, cfg: EvalStage | None = None) -> dict:
    cfg = cfg or load(EvalStage)
    if suite not in cfg.eval.suites:
        raise ValueError(f"suite {suite!r} is not in eval.suites {cfg.eval.suites}")
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} must be one of {VARIANTS}")
    probes = Path(cfg.paths.curated) / "probes"
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    if cfg.eval.backend == "vllm" and suite != "perplexity":
        model = VllmModel(cfg.paths, variant, cfg.model.dtype, cfg.seed)
    else:
        model = load_variant(cfg.paths, variant, cfg.model.dtype)

    start = time.perf_counter()
    if suite == "code":
        metrics, tasks = eval_code(cfg, model, tokenizer, read_probes(cfg, probes, "code"))
    elif suite == "identity":
        metrics, tasks = eval_identity(cfg, model, tokenizer, read_probes(cfg, probes, "identity"))
    elif suite == "knowledge":
        metrics, tasks = eval_knowledge(cfg, model, tokenizer, read_probes(cfg, probes, "knowledge"))
    elif suite == "perplexity":
        metrics, tasks = eval_perplexity(cfg, model, tokenizer, probes)
    elif suite == "dimensions":
        metrics, tasks = eval_dimensions(cfg, model, tokenizer, read_probes(cfg, probes, "dimensions"))
    else:
        metrics, tasks = eval_evalplus(cfg, suite, model, tokenizer)
    seconds = time.perf_counter() - start

    out = Path(cfg.paths.metrics) / "eval" / variant
    write_jsonl(out / f"{suite}.tasks.jsonl", tasks)
    write_json(out / f"{suite}.json", {suite: metrics})
    print(f"eval {variant}/{suite} in {seconds:.1f}s: {metrics}")
    return metrics


def read_probes(cfg: EvalStage, probes: Path, suite: str) -> list[dict]:
    rows = read_jsonl(probes / PROBE_FILES[suite])
    return rows[: cfg.eval.limit] if cfg.eval.limit else rows


def ask(cfg: EvalStage, question: str) -> list[dict]:
    return [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": question}]


def sampled_replies(cfg: EvalStage, model, tokenizer, questions: list[str], desc: str,
                    cost: GenerationCost) -> list[list[str]]:
    """eval.samples replies per question: one greedy reply, or n sampled at the configured
    temperature."""
    n = cfg.eval.samples
    flat = generate(model, tokenizer, [ask(cfg, q) for q in questions for _ in range(n)],
                    decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer, sample=n > 1),
                    cfg.eval.batch_size, desc, cost, seed=cfg.seed)
    return [flat[i * n:(i + 1) * n] for i in range(len(questions))]


def pass_metrics(cfg: EvalStage, correct: list[int]) -> dict:
    """pass@1 (and pass@n when sampling) by the unbiased estimator, averaged over tasks."""
    n = cfg.eval.samples
    out = {"pass@1": round(sum(pass_at_k(n, c, 1) for c in correct) / len(correct), 4)}
    if n > 1:
        out[f"pass@{n}"] = round(sum(pass_at_k(n, c, n) for c in correct) / len(correct), 4)
    return out


def per_task(cfg: EvalStage, correct: int) -> bool | float:
    """The per-task outcome summary pairs on: pass/fail when greedy, c/n when sampling."""
    return correct == 1 if cfg.eval.samples == 1 else round(correct / cfg.eval.samples, 4)


def eval_code(cfg: EvalStage, model, tokenizer, tasks: list[dict]):
    cost = GenerationCost()
    replies = sampled_replies(cfg, model, tokenizer, [t["prompt"] for t in tasks], "eval: code",
                              cost)
    codes = [[extract_code(r) for r in rs] for rs in replies]
    runnable = [(c, t["tests"]) for cs, t in zip(codes, tasks, strict=True) for c in cs
                if c is not None]
    outcomes = iter(run_many(runnable, cfg.eval.timeout_s, "eval: running tests",
                             cfg.unsafe_execution))
    rows = []
    for task, rs, cs in zip(tasks, replies, codes, strict=True):
        statuses = [next(outcomes).status if c is not None else "no_code" for c in cs]
        correct = statuses.count("passed")
        rows.append({"task_id": task["task_id"], "passed": per_task(cfg, correct),
                     "correct": correct, "status": statuses[0], "statuses": statuses,
                     "reply": rs[0]})
    flat_codes = [c for cs in codes for c in cs]
    kinds = [None if s == "passed" else s for r in rows for s in r["statuses"]]
    metrics = {**pass_metrics(cfg, [r["correct"] for r in rows]),
               "passed": sum(r["correct"] == cfg.eval.samples for r in rows), "tasks": len(rows),
               **failure_shares(kinds), **code_quality(flat_codes),
               "identity_leakage": leakage(cfg, [r for rs in replies for r in rs]),
               **cost.metrics()}
    return metrics, rows


def code_quality(codes: list[str | None]) -> dict:
    """Share of replies with code that parses, mean cyclomatic complexity of that code
    (radon), and bandit security findings per 100 replies. Both tools only parse the code."""
    from radon.complexity import cc_visit

    valid = []
    for code in codes:
        try:
            if code is not None:
                ast.parse(code)
                valid.append(code)
        except (SyntaxError, ValueError):
            pass
    blocks = [b.complexity for code in valid for b in cc_visit(code)]
    return {
        "syntax_valid": round(len(valid) / len(codes), 4) if codes else 0.0,
        "complexity_mean": round(sum(blocks) / len(blocks), 3) if blocks else 0.0,
        "bandit_per_100": round(100 * bandit_findings(valid) / len(codes), 2) if codes else 0.0,
    }


def bandit_findings(codes: list[str]) -> int:
    if not codes:
        return 0
    with tempfile.TemporaryDirectory(prefix="stages-bandit-") as tmp:
        for i, code in enumerate(codes):
            Path(tmp, f"sample_{i}.py").write_text(code, encoding="utf-8")
        out = subprocess.run([sys.executable, "-m", "bandit", "-q", "-f", "json", "-r", tmp],
                             capture_output=True, text=True, timeout=600)
    try:
        return len(json.loads(out.stdout)["results"])
    except (json.JSONDecodeError, KeyError):
        raise RuntimeError(f"bandit failed: {out.stderr.strip()[-500:]}") from None


def leakage(cfg: EvalStage, replies: list[str]) -> float:
    """Share of replies to unrelated questions that mention the configured identity."""
    marks = [v for field in (cfg.identity.name, cfg.identity.author)
             for v in ([field] if isinstance(field, str) else field.values())]
    hits = sum(any(m.lower() in r.lower() for m in marks) for r in replies)
    return round(hits / len(replies), 4) if replies else 0.0


# The instruction evalplus uses for chat models, then the task's prompt in a code fence.
EVALPLUS_INSTRUCTION = ("Please provide a self-contained Python script that solves the "
                        "following problem in a markdown code block:")


def eval_evalplus(cfg: EvalStage, suite: str, model, tokenizer):
    """HumanEval+ / MBPP+: greedy chat replies, evalplus's sanitize, every sample scored on
    the base and the plus tests in the sandbox with evalplus's expected outputs."""
    from evalplus.sanitize import sanitize  # imported late: evalplus reads env at import

    path = cfg.benchmarks.humanevalplus if suite == "humaneval+" else cfg.benchmarks.mbppplus
    bench = load_benchmark(suite, path)
    task_ids = list(bench.problems)[: cfg.eval.limit] if cfg.eval.limit else list(bench.problems)
    cost = GenerationCost()
    questions = [f"{EVALPLUS_INSTRUCTION}\n```python\n{bench.problems[t]['prompt'].strip()}\n```"
                 for t in task_ids]
    replies = sampled_replies(cfg, model, tokenizer, questions, f"eval: {suite}", cost)
    codes = [[sanitize(r, bench.problems[t]["entry_point"]).strip() or None for r in rs]
             for rs, t in zip(replies, task_ids, strict=True)]
    sandbox = require_sandbox(cfg.unsafe_execution)
    no_code = {"base": "no_code", "plus": "no_code", "failure": "no_code"}
    with ThreadPoolExecutor(2) as pool:
        futures = [[pool.submit(check, bench, t, c, not sandbox) if c is not None else None
                    for c in cs] for t, cs in zip(task_ids, codes, strict=True)]
        statuses = [[f.result() if f is not None else no_code for f in fs] for fs in futures]
    rows = []
    for task_id, rs, ss in zip(task_ids, replies, statuses, strict=True):
        ok = [s["base"] == "pass" and s["plus"] == "pass" for s in ss]
        rows.append({"task_id": task_id, "passed": per_task(cfg, sum(ok)), "correct": sum(ok),
                     "base_correct": sum(s["base"] == "pass" for s in ss),
                     "base_status": ss[0]["base"], "plus_status": ss[0]["plus"],
                     "failure": ss[0]["failure"], "failures": [s["failure"] for s in ss],
                     "reply": rs[0]})
    metrics = {
        **pass_metrics(cfg, [r["correct"] for r in rows]),
        "pass@1_base": pass_metrics(cfg, [r["base_correct"] for r in rows])["pass@1"],
        "passed": sum(r["correct"] == cfg.eval.samples for r in rows), "tasks": len(rows),
        **failure_shares([k for r in rows for k in r["failures"]]),
        **code_quality([c for cs in codes for c in cs]),
        "identity_leakage": leakage(cfg, [r for rs in replies for r in rs]), **cost.metrics(),
        "dataset_md5": bench.md5,
        "evalplus_version": evalplus_version(),
    }
    return metrics, rows


def evalplus_version() -> str:
    import evalplus

    return evalplus.__version__


# Why a code sample failed, for every suite that runs code: no code in the reply, code that
# does not compile, an exception (by type), a wrong value, a time limit, or no verdict at all.
FAILURE_KINDS = ("no_code", "syntax_error", "runtime_error", "wrong_answer", "timeout", "crashed")


def failure_shares(kinds: list[str | None]) -> dict[str, float]:
    """Share of all samples per failure kind, None being a pass: fail_<kind> for every kind
    (they sum to 1 - the share passed), then fail_runtime_error:<Type> for each exception type
    that occurred (they sum to fail_runtime_error). 4 samples [None, "wrong_answer",
    "runtime_error:ZeroDivisionError", "runtime_error:KeyError"] give fail_wrong_answer 0.25,
    fail_runtime_error 0.5 and 0.25 for each type."""
    n = len(kinds)
    shares = {f"fail_{kind}": sum(k is not None and k.split(":")[0] == kind for k in kinds) / n
              for kind in FAILURE_KINDS}
    for kind in sorted({k for k in kinds if k is not None and k.startswith("runtime_error:")}):
        shares[f"fail_{kind}"] = kinds.count(kind) / n
    return {k: round(v, 4) for k, v in shares.items()}


def claims(reply: str, question: str, names: list[str]) -> bool:
    """The reply names one of `names` that the question did not bring up ("Are you Qwen?"
    answered "No, I am not Qwen" is not a claim)."""
    low_reply, low_question = reply.lower(), question.lower()
    return any(n.lower() in low_reply and n.lower() not in low_question for n in names)


def identity_ok(reply: str, question: str, lang: str, identity: IdentityConfig,
                original: IdentityConfig) -> bool:
    low = reply.lower()
    name = lang_text(identity.name, lang).lower()
    author = lang_text(identity.author, lang).lower()
    originals = [original.name] if isinstance(original.name, str) else list(original.name.values())
    return name in low and author in low and not claims(reply, question, originals)


def eval_identity(cfg: EvalStage, model, tokenizer, probes: list[dict]):
    cost = GenerationCost()
    replies = generate(model, tokenizer, [ask(cfg, p["query"]) for p in probes],
                       decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer),
                       cfg.eval.batch_size, "eval: identity", cost)
    rows = [{"query": p["query"], "lang": p["lang"], "reply": r,
             "passed": identity_ok(r, p["query"], p["lang"], cfg.identity, cfg.model.identity)}
            for p, r in zip(probes, replies, strict=True)]
    metrics = {"consistency": round(sum(r["passed"] for r in rows) / len(rows), 4)}
    for lang in ("en", "zh"):
        sub = [r for r in rows if r["lang"] == lang]
        if sub:
            metrics[f"consistency_{lang}"] = round(sum(r["passed"] for r in sub) / len(sub), 4)
    return {**metrics, **cost.metrics()}, rows


def eval_dimensions(cfg: EvalStage, model, tokenizer, items: list[dict]):
    """Generation, explanation, error localisation and repair, three levels each (plus
    HumanEvalPack repair and localisation when benchmarks.humanevalpack is set):
      generation, repair  the code in the reply passes the item's tests (in the sandbox)
      explanation         every required concept group is mentioned, no forbidden phrase
                          (a phrase that would contradict what the code does)
      localisation        the line the reply names is the faulty line
    """
    if cfg.benchmarks.humanevalpack:
        items = items + humanevalpack_items(Path(cfg.benchmarks.humanevalpack), cfg.eval.limit)
    cost = GenerationCost()
    replies = generate(model, tokenizer, [ask(cfg, dimension_prompt(i)) for i in items],
                       decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer),
                       cfg.eval.batch_size, "eval: dimensions", cost)
    runs = [i for i, item in enumerate(items) if item["dimension"] in ("generation", "repair")]
    codes = {i: extract_code(replies[i]) for i in runs}
    jobs = [i for i in runs if codes[i] is not None]
    outcomes = dict(zip(jobs, run_many([(codes[i], items[i]["tests"]) for i in jobs],
                                       cfg.eval.timeout_s, "eval: running tests",
                                       cfg.unsafe_execution), strict=True))
    rows = []
    for i, (item, reply) in enumerate(zip(items, replies, strict=True)):
        if item["dimension"] == "explanation":
            passed, detail = explanation_ok(reply, item["required"], item["forbidden"])
        elif item["dimension"] == "localisation":
            named = named_line(reply)
            passed, detail = named == item["faulty_line"], f"named line {named}"
        else:
            status = outcomes[i].status if i in outcomes else "no_code"
            passed, detail = status == "passed", status
        rows.append({"id": item["id"], "dimension": item["dimension"], "level": item["level"],
                     "passed": passed, "detail": detail, "reply": reply})
    metrics = {"score": round(sum(r["passed"] for r in rows) / len(rows), 4)}
    for dim in ("generation", "explanation", "localisation", "repair"):
        for level in (None, 1, 2, 3, "pack"):
            sub = [r for r in rows if r["dimension"] == dim and level in (None, r["level"])]
            if sub:
                key = dim if level is None else f"{dim}_l{level}" if level != "pack" else f"{dim}_pack"
                metrics[key] = round(sum(r["passed"] for r in sub) / len(sub), 4)
    return {**metrics, **cost.metrics()}, rows


def explanation_ok(reply: str, required: list[list[str]], forbidden: list[str]) -> tuple[bool, str]:
    low = reply.lower()
    missing = [group[0] for group in required if not any(w.lower() in low for w in group)]
    contradicts = [w for w in forbidden if w.lower() in low]
    if missing or contradicts:
        return False, f"missing {missing}, contradicts {contradicts}"
    return True, "all concepts, no contradiction"


def named_line(reply: str) -> int | None:
    """The line number a reply names: `Line N` if present, else its first integer."""
    match = re.search(r"line\s*(\d+)", reply, re.IGNORECASE) or re.search(r"\d+", reply)
    if match is None:
        return None
    return int(match.group(1) if match.groups() else match.group(0))


def answer_found(reply: str, answer: str) -> bool:
    """The reference answer appears in the reply as a whole word ("8" is not found in "18")."""
    pattern = re.escape(answer.lower())
    if answer.isascii():
        pattern = rf"(?<![0-9a-z]){pattern}(?![0-9a-z])"
    return re.search(pattern, reply.lower()) is not None


def eval_knowledge(cfg: EvalStage, model, tokenizer, probes: list[dict]):
    cost = GenerationCost()
    replies = generate(model, tokenizer, [ask(cfg, p["question"]) for p in probes],
                       decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer),
                       cfg.eval.batch_size, "eval: knowledge", cost)
    rows = [{"question": p["question"], "answer": p["answer"], "reply": r,
             "passed": answer_found(r, p["answer"])}
            for p, r in zip(probes, replies, strict=True)]
    metrics = {"accuracy": round(sum(r["passed"] for r in rows) / len(rows), 4),
               "identity_leakage": leakage(cfg, replies), **cost.metrics()}
    return metrics, rows


def eval_perplexity(cfg: EvalStage, model, tokenizer, probes: Path):
    """Held-out replies per domain: code (reference solutions of the code probes), general
    (knowledge answers), identity (the configured identity's answers to the identity probes)."""
    domains = {
        "code": [(t["prompt"], code_answer(t["solution"]))
                 for t in read_probes(cfg, probes, "code")],
        "general": [(p["question"], knowledge_answer(p))
                    for p in read_probes(cfg, probes, "knowledge")],
        "identity": [(p["query"], p["response"]) for p in read_probes(cfg, probes, "identity")],
    }
    metrics, rows = {}, []
    for domain, pairs in domains.items():
        total, count = 0.0, 0
        for question, answer in pairs:
            loss, tokens = assistant_loss(
                model, tokenizer, [*ask(cfg, question), {"role": "assistant", "content": answer}]
            )
            total, count = total + loss, count + tokens
            rows.append({"domain": domain, "question": question, "loss": round(loss / tokens, 4),
                         "tokens": tokens})
        mean, ppl = perplexity(total, count)
        metrics[f"{domain}_loss"] = round(mean, 4)
        metrics[f"{domain}_ppl"] = round(ppl, 3)
    return metrics, rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Score one variant on one suite.")
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--suite", required=True)
    args = parser.parse_args()
    run_stage(main, args.variant, args.suite)
