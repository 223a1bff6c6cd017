"""curate: the training mix, the DPO pairs and the held-out eval probes.

Reads   params seed, system_prompt, identity, data, paths; data/sources/; models/base (tokenizer)
Writes  data/curated/{sft.jsonl, prefs.jsonl, card.json, probes/*.jsonl}, metrics/curate.json
Run     dvc repro curate   (or: python -m stages.curate)

Each `data.sources` entry is `PATH[#N]` with ms-swift's #N semantics; {{NAME}}/{{AUTHOR}} are
filled in per language from `identity`; every row gets the shared system prompt. DPO pairs
come from code tasks: chosen is the reference solution, run and seen to pass; rejected is the
same code with one injected defect, run and seen to fail. Probes never enter training.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

from stages.config import CurateStage, load
from stages.data import code_answer, fill_identity, load_chat_rows, parse_spec
from stages.defects import candidates
from stages.execute import run_many
from stages.io import atomic_dir, read_jsonl, write_json, write_jsonl
from stages.modeling import load_tokenizer

PROBES = ("code.jsonl", "identity.jsonl", "knowledge.jsonl")
PAIR_TIMEOUT_S = 10.0


def main(cfg: CurateStage | None = None) -> dict:
    cfg = cfg or load(CurateStage)
    rng = random.Random(cfg.seed)
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))

    rows, card = build_mix(cfg, tokenizer, rng)
    pairs = build_pairs(cfg, rng) if cfg.data.preference_source else []
    probes = build_probes(cfg)

    with atomic_dir(Path(cfg.paths.curated)) as tmp:
        write_jsonl(tmp / "sft.jsonl", rng.sample(rows, len(rows)))
        write_jsonl(tmp / "prefs.jsonl", pairs)
        for name, probe_rows in probes.items():
            write_jsonl(tmp / "probes" / name, probe_rows)
        write_json(tmp / "card.json", card)
    metrics = {
        "rows": len(rows),
        "tokens": sum(s["tokens"] for s in card["sources"].values()),
        "pairs": len(pairs),
        "sources": {name: {"rows": s["rows"], "tokens": s["tokens"]}
                    for name, s in card["sources"].items()},
    }
    write_json(Path(cfg.paths.metrics) / "curate.json", {"curate": metrics})
    print(f"curated {len(rows)} sft rows, {len(pairs)} preference pairs into {cfg.paths.curated}")
    return metrics


def build_mix(cfg: CurateStage, tokenizer, rng: random.Random) -> tuple[list[dict], dict]:
    rows, card = [], {"mix": cfg.data.name, "sources": {}}
    for spec_text in cfg.data.sources:
        spec = parse_spec(spec_text)
        kept, dropped, tokens = [], 0, 0
        for row in load_chat_rows(spec, cfg.identity, cfg.system_prompt, rng):
            n = len(tokenizer.apply_chat_template(row["messages"], tokenize=True,
                                                  return_dict=False))
            if n > cfg.data.max_length:
                dropped += 1
                continue
            kept.append(row)
            tokens += n
        if spec.name in card["sources"]:
            raise ValueError(f"data.sources names {spec.name} twice; list each source once")
        card["sources"][spec.name] = {
            "spec": spec_text, "rows": len(kept), "tokens": tokens, "dropped_too_long": dropped,
        }
        rows += kept
    if not rows:
        raise ValueError(
            f"no training rows left: every row is longer than data.max_length="
            f"{cfg.data.max_length} tokens; raise it with -S data.max_length=..."
        )
    return rows, card


def build_pairs(cfg: CurateStage, rng: random.Random) -> list[dict]:
    """One (chosen, rejected) pair per code task where some defect makes the tests fail."""
    tasks = read_jsonl(Path(cfg.data.preference_source))
    chosen = [ast.unparse(ast.parse(t["solution"])) for t in tasks]
    checks = run_many([(c, t["tests"]) for c, t in zip(chosen, tasks, strict=True)],
                      PAIR_TIMEOUT_S, "curate: checking reference solutions")
    broken = [t["task_id"] for t, o in zip(tasks, checks, strict=True) if not o.passed]
    if broken:
        raise ValueError(
            f"{cfg.data.preference_source}: reference solutions fail their own tests: {broken}; "
            "fix those rows"
        )
    options = [candidates(c, t["tests"], rng) for c, t in zip(chosen, tasks, strict=True)]
    flat = [(i, name, code) for i, opts in enumerate(options) for name, code in opts]
    outcomes = run_many([(code, tasks[i]["tests"]) for i, _, code in flat], PAIR_TIMEOUT_S,
                        "curate: verifying injected defects")
    pairs, done = [], set()
    for (i, defect, code), outcome in zip(flat, outcomes, strict=True):
        if i in done or outcome.passed:
            continue
        done.add(i)
        pairs.append({
            "task_id": tasks[i]["task_id"],
            "defect": defect,
            "prompt": [{"role": "system", "content": cfg.system_prompt},
                       {"role": "user", "content": tasks[i]["prompt"]}],
            "chosen": [{"role": "assistant", "content": code_answer(chosen[i])}],
            "rejected": [{"role": "assistant", "content": code_answer(code)}],
        })
    return pairs


def build_probes(cfg: CurateStage) -> dict[str, list[dict]]:
    """The held-out eval probes, with the configured identity in the identity answers."""
    src = Path(cfg.paths.sources) / "probes"
    out = {}
    for name in PROBES:
        rows = read_jsonl(src / name)
        if name == "identity.jsonl":
            rows = [{**r, "response": fill_identity(r["response"], cfg.identity, r["lang"],
                                                    f"{src / name}:{i}")}
                    for i, r in enumerate(rows, 1)]
        out[name] = rows
    return out


if __name__ == "__main__":
    main()
