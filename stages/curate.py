"""curate: the training mix, the DPO pairs and the held-out eval probes, cleaned and counted.

Reads   params seed, system_prompt, identity, data, benchmarks, paths; data/sources/ and any
        other file named in data.sources; models/base (tokenizer, for token counts)
Writes  data/curated/  sft.jsonl + sft.val.jsonl, phases/<name>.jsonl + <name>.val.jsonl
                       (staged mixes), prefs.jsonl, probes/*.jsonl, decontamination.jsonl,
                       card.json
        metrics/curate.json  rows in/out, tokens and drops per reason, per source and in total
Run     dvc repro curate   (or: python -m stages.curate)

Per source: read -> chat form -> validate (invalid) -> fill {{NAME}}/{{AUTHOR}} -> secrets ->
Python syntax / language -> decontamination against every eval suite -> token length ->
exact and near dedup across all sources. Then quality selection on the sources it names,
then each source's `#N` draw (ms-swift semantics, seeded). DPO pairs come from code tasks:
chosen passes its tests, rejected is chosen with one injected defect that fails them.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from pathlib import Path

from stages.cleaning import (
    Decontaminator,
    Deduplicator,
    SecretScanner,
    code_problem,
    invalid_reason,
    quality_score,
    text_of,
)
from stages.config import CurateStage, load, run_stage
from stages.data import (
    DataError,
    code_answer,
    fill_identity,
    fill_messages,
    parse_spec,
    read_rows,
    row_lang,
    sample,
    to_messages,
    to_preference,
    with_system,
)
from stages.defects import candidates, renamed_identifiers
from stages.execute import run_many
from stages.io import atomic_dir, read_jsonl, write_json, write_jsonl
from stages.modeling import load_tokenizer

PROBES = ("code.jsonl", "identity.jsonl", "knowledge.jsonl", "dimensions.jsonl")
REASONS = ("invalid", "secret", "syntax", "language", "decontaminated", "length", "duplicate",
           "quality")
PAIR_TIMEOUT_S = 10.0


def main(cfg: CurateStage | None = None) -> dict:
    cfg = cfg or load(CurateStage)
    rng = random.Random(cfg.seed)
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    curator = Curator(cfg, tokenizer, eval_index(cfg))

    # Each mix (the single one, or each phase's) is split into train and validation rows
    # with the seed; sft.jsonl / sft.val.jsonl hold the union of the phases.
    if cfg.data.phases:
        phases = {p.name: split(curator.mix(p.sources, rng, p.name), cfg.data.val_ratio, rng)
                  for p in cfg.data.phases}
        train = [r for phase_train, _ in phases.values() for r in phase_train]
        val = [r for _, phase_val in phases.values() for r in phase_val]
    else:
        phases = {}
        train, val = split(curator.mix(cfg.data.sources, rng), cfg.data.val_ratio, rng)
    if not train:
        raise DataError("no training rows left after cleaning; see the drops in the data card")
    pairs = build_pairs(cfg, rng) if cfg.data.preference_source else []
    pairs += user_preferences(cfg)
    probes = build_probes(cfg)

    card = curator.card(len(train), len(val), len(pairs))
    with atomic_dir(Path(cfg.paths.curated)) as tmp:
        write_jsonl(tmp / "sft.jsonl", map(public, train))
        write_jsonl(tmp / "sft.val.jsonl", map(public, val))
        for name, (phase_train, phase_val) in phases.items():
            write_jsonl(tmp / "phases" / f"{name}.jsonl", map(public, phase_train))
            write_jsonl(tmp / "phases" / f"{name}.val.jsonl", map(public, phase_val))
        write_jsonl(tmp / "prefs.jsonl", pairs)
        for name, probe_rows in probes.items():
            write_jsonl(tmp / "probes" / name, probe_rows)
        write_jsonl(tmp / "decontamination.jsonl", curator.contaminated)
        write_json(tmp / "card.json", card)
    write_json(Path(cfg.paths.metrics) / "curate.json", {"curate": card["metrics"]})
    print(f"curated {len(train)} train + {len(val)} validation rows, {len(pairs)} preference "
          f"pairs into {cfg.paths.curated}; drops: {card['metrics']['drops']}")
    return card["metrics"]


def split(rows: list[dict], val_ratio: float, rng: random.Random) -> tuple[list, list]:
    """Shuffled (train, validation) rows, validation being `val_ratio` of them."""
    rows = rng.sample(rows, len(rows))
    n_val = round(len(rows) * val_ratio)
    return rows[n_val:], rows[:n_val]


def public(row: dict) -> dict:
    return {"messages": row["messages"], "lang": row["lang"], "source": row["source"]}


class Curator:
    """Cleans sources one row at a time and keeps the counts for the data card."""

    def __init__(self, cfg: CurateStage, tokenizer, decontaminator: Decontaminator):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.decontaminator = decontaminator
        self.scanner = SecretScanner()
        self.sources: dict[str, dict] = {}
        self.contaminated: list[dict] = []

    def mix(self, specs, rng: random.Random, phase: str | None = None) -> list[dict]:
        """Every source cleaned, quality-selected where configured, then drawn per its #N.
        Duplicates are looked for within the mix (a phase may revisit an earlier one's rows);
        in the data card a phase's sources are named `phase/source`."""
        dedup = self.cfg.data.clean.dedup
        self.dedup = Deduplicator(dedup.near, dedup.threshold, dedup.num_perm)
        self.prefix = f"{phase}/" if phase else ""
        cleaned = [(parse_spec(s), self.clean_source(parse_spec(s)))
                   for s in specs]
        quality = self.cfg.data.quality
        if quality:
            selected = [(spec, rows) for spec, rows in cleaned if spec.name in quality.sources]
            keep = self.select(selected, quality.count, rng)
            cleaned = [(spec, [r for r in rows if spec.name not in quality.sources
                               or id(r) in keep]) for spec, rows in cleaned]
        out = []
        for spec, rows in cleaned:
            drawn = sample(rows, spec.count, rng)
            entry = self.sources[self.prefix + spec.name]
            entry["rows_out"] += len(drawn)
            entry["tokens"] += sum(r["tokens"] for r in drawn)
            out += drawn
        return out

    def clean_source(self, spec) -> list[dict]:
        key = self.prefix + spec.name
        if key in self.sources:
            raise DataError(f"data source {key} is listed twice; list each source once")
        entry = self.sources[key] = {"source": spec.path, "rows_in": 0, "rows_out": 0,
                                           "tokens": 0, "drops": Counter()}
        kept = []
        for where, raw in read_rows(spec):
            entry["rows_in"] += 1
            row = self.clean_row(spec, where, raw)
            if isinstance(row, str):
                entry["drops"][row] += 1
            else:
                kept.append(row)
        return kept

    def clean_row(self, spec, where: str, raw: dict) -> dict | str:
        """The cleaned chat row, or the reason it is dropped."""
        clean = self.cfg.data.clean
        messages = to_messages(raw, where, spec.format)
        problem = invalid_reason(messages)
        if problem:
            if clean.strict:
                raise DataError(f"{where}: {problem} (data.clean.strict is set)")
            return "invalid"
        lang = row_lang(raw, messages)
        messages = fill_messages(messages, self.cfg.identity, lang, where)
        messages = with_system(messages, self.cfg.system_prompt)
        row = {"messages": messages, "lang": lang, "source": spec.name,
               "tested": "tests" in raw}
        text = text_of(row)
        secrets = self.scanner.find(text)
        if secrets:
            if clean.secrets == "drop":
                return "secret"
            row["messages"] = [{**m, "content": SecretScanner.redact(m["content"], secrets)}
                               for m in messages]
            text = text_of(row)
        problem = code_problem(row, clean.code_language)
        if problem:
            return problem
        hit = self.decontaminator.hit(text)
        if hit:
            self.contaminated.append({"source": spec.name, "row": where, "eval_item": hit})
            return "decontaminated"
        row["tokens"] = len(self.tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=False))
        if not clean.min_tokens <= row["tokens"] <= clean.max_tokens:
            return "length"
        if self.dedup.is_duplicate(text):
            return "duplicate"
        return row

    def select(self, selected, count: int, rng: random.Random) -> set[int]:
        """ids of the top `count` rows by quality score; ties broken by a seeded draw."""
        scored = [(quality_score(r, r["tokens"]), rng.random(), id(r), self.prefix + spec.name)
                  for spec, rows in selected for r in rows]
        scored.sort(key=lambda s: (-s[0], s[1]))
        keep = {s[2] for s in scored[:count]}
        for _, _, _, name in scored[count:]:
            self.sources[name]["drops"]["quality"] += 1
        return keep

    def card(self, train: int, val: int, pairs: int) -> dict:
        sources = {
            name: {**e, "drops": {r: e["drops"][r] for r in REASONS if e["drops"][r]}}
            for name, e in self.sources.items()
        }
        totals = Counter()
        for e in self.sources.values():
            totals.update(e["drops"])
        metrics = {
            "rows": train, "val_rows": val, "pairs": pairs,
            "tokens": sum(e["tokens"] for e in self.sources.values()),
            "drops": {r: totals[r] for r in REASONS},
            "sources": {name: {"rows_in": e["rows_in"], "rows_out": e["rows_out"],
                               "tokens": e["tokens"], **{f"drop_{r}": n
                                                         for r, n in e["drops"].items()}}
                        for name, e in sources.items()},
        }
        return {"mix": self.cfg.data.name, "seed": self.cfg.seed, "sources": sources,
                "metrics": metrics}


def eval_index(cfg: CurateStage) -> Decontaminator:
    """Every eval suite's prompts and reference solutions: the built-in probes and each
    benchmark file that is configured."""
    d = cfg.data.clean.decontaminate
    index = Decontaminator(d.ngram, d.min_chars)
    probes = Path(cfg.paths.sources) / "probes"
    for t in read_jsonl(probes / "code.jsonl"):
        index.add(f"probes/code:{t['task_id']}", f"{t['prompt']}\n{t['solution']}")
    for p in read_jsonl(probes / "knowledge.jsonl"):
        index.add("probes/knowledge", f"{p['question']} {p['answer']}")
    for p in read_jsonl(probes / "identity.jsonl"):
        index.add("probes/identity", p["query"])
    for item in read_jsonl(probes / "dimensions.jsonl"):
        index.add(f"probes/dimensions:{item['id']}",
                  "\n".join(str(item.get(k, "")) for k in ("prompt", "code", "solution", "fixed")))
    for path in (cfg.benchmarks.humanevalplus, cfg.benchmarks.mbppplus):
        if path:
            for task in read_jsonl(Path(path)):
                index.add(task["task_id"], f"{task['prompt']}\n{task['canonical_solution']}")
    return index


def build_pairs(cfg: CurateStage, rng: random.Random) -> list[dict]:
    """One (chosen, rejected) pair per code task where some defect makes the tests fail;
    with augment_pairs, also the pair with renamed identifiers when that still passes."""
    tasks = read_jsonl(Path(cfg.data.preference_source))
    chosen = [ast.unparse(ast.parse(t["solution"])) for t in tasks]
    checks = run_many([(c, t["tests"]) for c, t in zip(chosen, tasks, strict=True)],
                      PAIR_TIMEOUT_S, "curate: checking reference solutions",
                      cfg.unsafe_execution)
    broken = [t["task_id"] for t, o in zip(tasks, checks, strict=True) if not o.passed]
    if broken:
        raise DataError(f"{cfg.data.preference_source}: reference solutions fail their own "
                        f"tests: {broken}; fix those rows")
    if cfg.data.augment_pairs:
        renamed = [renamed_identifiers(c) for c in chosen]
        ok = run_many([(r or "", t["tests"]) for r, t in zip(renamed, tasks, strict=True)],
                      PAIR_TIMEOUT_S, "curate: verifying renamed solutions", cfg.unsafe_execution)
        extra = [(t, r) for t, r, o in zip(tasks, renamed, ok, strict=True) if r and o.passed]
        tasks, chosen = tasks + [t for t, _ in extra], chosen + [r for _, r in extra]
    options = [candidates(c, t["tests"], rng) for c, t in zip(chosen, tasks, strict=True)]
    flat = [(i, name, code) for i, opts in enumerate(options) for name, code in opts]
    outcomes = run_many([(code, tasks[i]["tests"]) for i, _, code in flat], PAIR_TIMEOUT_S,
                        "curate: verifying injected defects", cfg.unsafe_execution)
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


def user_preferences(cfg: CurateStage) -> list[dict]:
    """Preference files from users, taken as they are: converted, identity filled in."""
    pairs = []
    for spec in map(parse_spec, cfg.data.preferences):
        for where, raw in read_rows(spec):
            pref = to_preference(raw, where)
            lang = row_lang(raw, pref["prompt"] + pref["chosen"])
            pref = {k: fill_messages(v, cfg.identity, lang, where) for k, v in pref.items()}
            for side in ("chosen", "rejected"):
                problem = invalid_reason(pref["prompt"] + pref[side])
                if problem:
                    raise DataError(f"{where}: prompt + {side}: {problem}")
            pref["prompt"] = with_system(pref["prompt"], cfg.system_prompt)
            pairs.append({"task_id": where, "defect": "user", **pref})
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
    run_stage(main)
