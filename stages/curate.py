"""curate: the training mix, the DPO pairs and the held-out eval probes, cleaned and counted.

Reads   params seed, system_prompt, identity, data, benchmarks, paths; data/sources/ and any
        other file named in data.sources; models/base (tokenizer, for token counts)
Writes  data/curated/  sft.jsonl + sft.val.jsonl, phases/<name>.jsonl + <name>.val.jsonl
                       (staged mixes), prefs.jsonl, probes/*.jsonl, decontamination.jsonl,
                       card.json, code_tasks.jsonl (the training rows that carry tests, with
                       them: GRPO's code tasks, never a probe)
        metrics/curate.json  rows in/out, tokens and drops per reason, per source and in total
Run     dvc repro curate   (or: python -m stages.curate)

Per source: read -> chat form (fields no format reads are an error) -> KTO label (a row
marked undesirable is not an SFT target) -> validate (invalid) -> the chat template can train
its tools / loss weights (else stop, naming the source) -> fill {{NAME}}/{{AUTHOR}} -> secrets
-> Python syntax / language -> decontamination against every eval suite -> token length ->
exact and near dedup across all sources. Then quality selection on the sources it names,
then each source's `#N` draw (ms-swift semantics, seeded). A source that loses most of its
rows is reported in the log with its top drop reasons and an example row of each.

Preference data: pairs from code tasks (chosen passes its tests, rejected is chosen with one
injected defect that fails them) and the users' preference files (pairs, or KTO rows with a
label), all through the same secret scan and decontamination as SFT rows, counted in the card.
"""

from __future__ import annotations

import ast
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stages.config import CurateStage, load, run_stage
from stages.core.io import atomic_dir, read_jsonl, write_json, write_jsonl
from stages.core.runinfo import run_info
from stages.data.cleaning import (
    Decontaminator,
    Deduplicator,
    SecretScanner,
    code_problem,
    invalid_reason,
    quality_score,
    template_problem,
    text_of,
)
from stages.data.defects import candidates, renamed_identifiers
from stages.data.formats import (
    DataError,
    code_answer,
    fill_identity,
    fill_messages,
    kto_label,
    parse_spec,
    read_rows,
    row_format,
    row_lang,
    row_tools,
    sample,
    to_kto,
    to_messages,
    to_preference,
    with_system,
)
from stages.models.modeling import load_tokenizer
from stages.sandbox.execute import run_many

PROBES = ("code.jsonl", "identity.jsonl", "knowledge.jsonl", "dimensions.jsonl")
REASONS = ("undesirable", "invalid", "secret", "syntax", "language", "decontaminated", "length",
           "duplicate", "quality")
PAIR_REASONS = ("secret", "decontaminated")
PAIR_TIMEOUT_S = 10.0
TOP_REASONS = 3  # reasons, each with an example row, when a source loses most of its rows


@dataclass(frozen=True)
class Drop:
    """A row left out: the reason it is counted under, and what exactly was wrong."""

    reason: str
    why: str


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
        # no card is written on failure, so the message carries what the card would say
        raise DataError("no training rows left after cleaning:\n" + curator.drop_summary())
    pairs = []
    if cfg.data.preference_source:
        pairs += curator.clean_pairs(Path(cfg.data.preference_source).stem,
                                     cfg.data.preference_source, build_pairs(cfg, rng))
    for spec in map(parse_spec, cfg.data.preferences):  # `#N` draws as for SFT sources
        pairs += sample(curator.clean_pairs(spec.name, spec.path, user_preferences(cfg, spec)),
                        spec.count, rng)
    probes = build_probes(cfg)

    card = curator.card(len(train), len(val), len(pairs))
    with atomic_dir(Path(cfg.paths.curated)) as tmp:
        write_jsonl(tmp / "sft.jsonl", map(public, train))
        write_jsonl(tmp / "sft.val.jsonl", map(public, val))
        for name, (phase_train, phase_val) in phases.items():
            write_jsonl(tmp / "phases" / f"{name}.jsonl", map(public, phase_train))
            write_jsonl(tmp / "phases" / f"{name}.val.jsonl", map(public, phase_val))
        write_jsonl(tmp / "prefs.jsonl", pairs)
        write_jsonl(tmp / "code_tasks.jsonl", code_tasks(train))
        for name, probe_rows in probes.items():
            write_jsonl(tmp / "probes" / name, probe_rows)
        write_jsonl(tmp / "decontamination.jsonl", curator.contaminated)
        write_json(tmp / "card.json", card)
    write_json(Path(cfg.paths.metrics) / "curate.json",
               {"curate": card["metrics"], "run": run_info()})
    print(f"curated {len(train)} train + {len(val)} validation rows, {len(pairs)} preference "
          f"pairs into {cfg.paths.curated}; drops: {card['metrics']['drops']}")
    return card["metrics"]


def split(rows: list[dict], val_ratio: float, rng: random.Random) -> tuple[list, list]:
    """Shuffled (train, validation) rows, validation being `val_ratio` of them."""
    rows = rng.sample(rows, len(rows))
    n_val = round(len(rows) * val_ratio)
    return rows[n_val:], rows[:n_val]


def code_tasks(train: list[dict]) -> list[dict]:
    """Each training row whose source gave it tests, once (a `#N` draw may repeat it): its
    prompt (the chat without the reply), entry point, reference solution and tests. Rows left
    out of training (validation, drops, decontaminated) are not here."""
    out, seen = [], set()
    for row in train:
        task = row.get("task")
        if task is None or task["task_id"] in seen:
            continue
        seen.add(task["task_id"])
        out.append({**task, "prompt": row["messages"][:-1]})
    return out


def public(row: dict) -> dict:
    tools = {"tools": row["tools"]} if row.get("tools") else {}
    return {"messages": row["messages"], **tools, "lang": row["lang"], "source": row["source"]}


class Curator:
    """Cleans sources one row at a time and keeps the counts for the data card."""

    def __init__(self, cfg: CurateStage, tokenizer, decontaminator: Decontaminator):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.decontaminator = decontaminator
        self.scanner = SecretScanner()
        self.sources: dict[str, dict] = {}
        self.pair_sources: dict[str, dict] = {}
        self.contaminated: list[dict] = []
        self.template_checked: set[str] = set()

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
                                     "tokens": 0, "drops": Counter(), "examples": {}}
        kept = []
        for where, raw in read_rows(spec):
            entry["rows_in"] += 1
            row = self.clean_row(spec, where, raw)
            if isinstance(row, Drop):
                entry["drops"][row.reason] += 1
                entry["examples"].setdefault(row.reason, {"row": where, "why": row.why})
            else:
                kept.append(row)
        if entry["drops"]["undesirable"]:
            print(f"curate: {key}: KTO labels: only the {len(kept)} kept rows marked desirable "
                  f"are SFT targets; {entry['drops']['undesirable']} rows marked undesirable "
                  "(label false) are not. To learn from both, list the file in "
                  "data.preferences and train with -S dpo=kto.")
        if len(kept) < entry["rows_in"] / 2:
            print(f"curate: {drop_report(key, entry, len(kept))}")
        return kept

    def clean_row(self, spec, where: str, raw: dict) -> dict | Drop:
        """The cleaned chat row, or why it is dropped."""
        clean = self.cfg.data.clean
        messages = to_messages(raw, where, spec.format, spec.ignore_fields)
        if kto_label(raw, where) is False:
            return Drop("undesirable", "KTO label false: marked as a reply not to learn")
        tools = row_tools(raw, where)
        problem = invalid_reason(messages)
        if problem:
            if clean.strict:
                raise DataError(f"{where}: {problem} (data.clean.strict is set)")
            return Drop("invalid", problem)
        self.check_template(spec, where, tools, messages)
        lang = row_lang(raw, messages)
        messages = fill_messages(messages, self.cfg.identity, lang, where)
        messages = with_system(messages, self.cfg.system_prompt)
        row = {"messages": messages, "lang": lang, "source": spec.name,
               "tested": "tests" in raw}
        if tools:
            row["tools"] = tools
        if isinstance(raw.get("tests"), list) and raw.get("entry_point"):
            row["task"] = {"task_id": str(raw.get("task_id", where)),
                           "entry_point": raw["entry_point"], "solution": raw.get("solution"),
                           "tests": raw["tests"]}
        text = text_of(row)
        secrets = self.scanner.find(text + "\n" + json.dumps(tools or [], ensure_ascii=False))
        if secrets:
            if clean.secrets == "drop":
                return Drop("secret", f"{len(secrets)} credential(s) found by detect-secrets")
            row["messages"] = [{**m, "content": SecretScanner.redact(m["content"], secrets)}
                               for m in messages]
            text = text_of(row)
            if self.scanner.find(text + "\n" + json.dumps(tools or [], ensure_ascii=False)):
                return Drop("secret", "a credential in a tool call or schema (only message "
                                      "text is redacted)")
        problem = code_problem(row, clean.code_language)
        if problem:
            return Drop(problem, "a Python block that does not parse" if problem == "syntax"
                        else f"code in another language than {clean.code_language}")
        hit = self.decontaminator.hit(text)
        if hit:
            self.contaminated.append({"source": spec.name, "row": where, "eval_item": hit})
            return Drop("decontaminated", f"shares a {self.decontaminator.n}-gram with eval "
                                          f"item {hit}")
        row["tokens"] = len(self.tokenizer.apply_chat_template(
            row["messages"], tools=tools, tokenize=True, return_dict=False))
        if not clean.min_tokens <= row["tokens"] <= clean.max_tokens:
            return Drop("length", f"{row['tokens']} tokens, outside [{clean.min_tokens}, "
                                  f"{clean.max_tokens}] (data.clean.min_tokens/max_tokens)")
        if self.dedup.is_duplicate(text):
            return Drop("duplicate", "the same text as a row kept before it" if not
                        self.dedup.near else "the same or nearly the same text as a row "
                                             "kept before it")
        return row

    def check_template(self, spec, where: str, tools, messages: list[dict]) -> None:
        """Stop, naming the source, when the chat template SFT trains with cannot train what
        this row needs: its tools and calls, or its loss weights (checked once per feature)."""
        needs = []
        if tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
            needs.append("tools")
        if any(m.get("loss_weight") == 0 for m in messages):
            needs.append("loss_weight")
        for feature in needs:
            if feature in self.template_checked:
                continue
            problem = template_problem(self.tokenizer, feature)
            if problem:
                what = ("tool calls and tool schemas" if feature == "tools"
                        else "per-turn loss weights (loss_weight 0)")
                raise DataError(
                    f"data source {spec.path} ({where}) has {what}, but the base model's "
                    f"tokenizer cannot train them: {problem}. Use a model whose chat template "
                    "renders them (Qwen2.5's does tools; the tiny model's does both), or "
                    "remove the source")
            self.template_checked.add(feature)

    def clean_pairs(self, name: str, path: str, pairs: list[dict]) -> list[dict]:
        """Preference rows (pairs, KTO rows) of one source through the secret scan and the
        decontamination that SFT rows get; counted per source in the card."""
        key = f"preferences/{name}"
        if key in self.pair_sources:
            raise DataError(f"preference source {name} is listed twice; list each once")
        entry = self.pair_sources[key] = {"source": path, "rows_in": len(pairs), "rows_out": 0,
                                          "drops": Counter(), "examples": {}}
        kept = []
        for pair in pairs:
            turns = [m for k in ("prompt", "chosen", "rejected", "completion") if k in pair
                     for m in pair[k]]
            text = text_of({"messages": turns})
            drop = None
            secrets = self.scanner.find(text)
            if secrets and self.cfg.data.clean.secrets == "drop":
                drop = Drop("secret", f"{len(secrets)} credential(s) found by detect-secrets")
            elif secrets:
                pair = {k: [{**m, "content": SecretScanner.redact(m["content"], secrets)}
                            for m in v] if isinstance(v, list) else v for k, v in pair.items()}
            hit = None if drop else self.decontaminator.hit(text)
            if hit:
                self.contaminated.append({"source": key, "row": pair["task_id"],
                                          "eval_item": hit})
                drop = Drop("decontaminated", f"shares a {self.decontaminator.n}-gram with "
                                              f"eval item {hit}")
            if drop:
                entry["drops"][drop.reason] += 1
                entry["examples"].setdefault(drop.reason, {"row": pair["task_id"],
                                                           "why": drop.why})
            else:
                kept.append(pair)
        entry["rows_out"] = len(kept)
        if entry["drops"]:
            print(f"curate: {drop_report(key, entry, len(kept))}")
        return kept

    def drop_summary(self) -> str:
        """Every source that lost rows, with its top reasons and an example of each."""
        return "\n".join(drop_report(name, e, e["rows_in"] - sum(e["drops"].values()))
                         for name, e in self.sources.items() if e["drops"]) or \
            "no source had rows (check data.sources)"

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
            name: {**{k: v for k, v in e.items() if k != "examples"},
                   "drops": {r: e["drops"][r] for r in REASONS if e["drops"][r]},
                   "drop_examples": e["examples"]}
            for name, e in self.sources.items()
        }
        preferences = {
            name: {**{k: v for k, v in e.items() if k != "examples"},
                   "drops": {r: e["drops"][r] for r in PAIR_REASONS if e["drops"][r]},
                   "drop_examples": e["examples"]}
            for name, e in self.pair_sources.items()
        }
        totals, pair_totals = Counter(), Counter()
        for e in self.sources.values():
            totals.update(e["drops"])
        for e in self.pair_sources.values():
            pair_totals.update(e["drops"])
        metrics = {
            "rows": train, "val_rows": val, "pairs": pairs,
            "tokens": sum(e["tokens"] for e in self.sources.values()),
            "drops": {r: totals[r] for r in REASONS},
            "pair_drops": {r: pair_totals[r] for r in PAIR_REASONS},
            "sources": {name: {"rows_in": e["rows_in"], "rows_out": e["rows_out"],
                               "tokens": e["tokens"], **{f"drop_{r}": n
                                                         for r, n in e["drops"].items()}}
                        for name, e in sources.items()},
        }
        return {"mix": self.cfg.data.name, "seed": self.cfg.seed, "sources": sources,
                "preferences": preferences, "metrics": metrics}


def drop_report(name: str, entry: dict, kept: int) -> str:
    """`name kept K of N rows; top reasons: ...` with one example row (file:line) per reason."""
    top = sorted(entry["drops"].items(), key=lambda kv: -kv[1])[:TOP_REASONS]
    reasons = "; ".join(f"{reason} {n} (e.g. {entry['examples'][reason]['row']}: "
                        f"{entry['examples'][reason]['why']})" for reason, n in top)
    return f"{name} kept {kept} of {entry['rows_in']} rows; top drop reasons: {reasons}"


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


def user_preferences(cfg: CurateStage, spec) -> list[dict]:
    """One preference file from users, converted, identity filled in: pairs, or KTO rows
    ({prompt, completion, label}) for rows with `label` / `kto_tag`."""
    rows = []
    for where, raw in read_rows(spec):
        fmt = row_format(raw, where, spec.format, spec.ignore_fields)
        if kto_label(raw, where) is not None:
            pref = to_kto(raw, where, fmt, spec.ignore_fields)
            sides = ("completion",)
        else:
            pref = to_preference(raw, where)
            sides = ("chosen", "rejected")
        lang = row_lang(raw, pref["prompt"] + pref[sides[0]])
        pref = {k: fill_messages(v, cfg.identity, lang, where) if k != "label" else v
                for k, v in pref.items()}
        for side in sides:
            problem = invalid_reason(pref["prompt"] + pref[side])
            if problem:
                raise DataError(f"{where}: prompt + {side}: {problem}")
        pref["prompt"] = with_system(pref["prompt"], cfg.system_prompt)
        rows.append({"task_id": where, "defect": "user", **pref})
    return rows


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
