"""Eval suites: one small module per suite, all with the same few functions.

A suite is data (probes with ids), a way to ask (the prompt) and a way to judge (reply ->
outcome), then an aggregate; `stages/eval.py` runs any of them as one recipe and
`stages/summary.py` pairs any of them by probe id. Each module has:

  JUDGED                            the metric the summary pairs and gives a verdict
  probes(cfg, name) -> [probe]      each probe has a unique string "id" (eval.limit applied)
  prompt(cfg, probe) -> str         the user message; eval adds the shared system prompt
  judge(cfg, probes, replies)       replies: eval.samples strings per probe; one row per
        -> [row]                    probe: {"id", outcome, "detail", ...}
  aggregate(cfg, rows) -> dict      the suite's capability metrics (flat, numeric)

A code suite may also have `reference(cfg, probe) -> str | None`, the probe's reference
solution: its rows keep "codes" (the code run, one per sample) and then carry "similarity" (CodeBLEU and BLEU of the reply's code against it,
stages/stats/similarity.py), which eval averages and summary pairs.

A suite that does not generate-then-judge (perplexity) has `score(cfg, model, tokenizer,
probes) -> [row]` instead of prompt and judge. A row's outcome is `passed` (bool; or c/n
when sampling), `score` (a grade in [0, 1]) or `nats` + `tokens` (summed loss over the
probe's tokens; lower is better, token-weighted); `metric` names the judged metric the row
counts toward (default JUDGED; perplexity has one per domain). `JudgedSuite` and
`ScoredSuite` below say the same in types.

Which suites exist, and which module runs each, is the registry's (stages/config/suites.py
SUITES): the config's suite names and `get` both read it, so a new lm-eval task is one entry
there, and a new kind of suite is one module here, its entries and one branch of `get`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from stages.config import EvalStage, StageError
from stages.config.suites import names
from stages.core.io import MissingInput, read_jsonl_lines
from stages.stats import diversity, similarity


@runtime_checkable
class Suite(Protocol):
    """What every suite module has: its judged metric, its probes and its aggregate."""

    JUDGED: str

    def probes(self, cfg, name: str) -> list[dict]: ...

    def aggregate(self, cfg, rows: list[dict]) -> dict: ...


@runtime_checkable
class JudgedSuite(Suite, Protocol):
    """A suite that generates replies, then judges them."""

    def prompt(self, cfg, probe: dict) -> str: ...

    def judge(self, cfg, probes: list[dict], replies: list[list[str]]) -> list[dict]: ...


@runtime_checkable
class ScoredSuite(Suite, Protocol):
    """A suite that scores the model itself (perplexity, the lm-eval tasks)."""

    def score(self, cfg, model, tokenizer, probes: list[dict]) -> list[dict]: ...


def get(name: str) -> JudgedSuite | ScoredSuite:
    """The module that runs suite `name`, as the registry (stages/config/suites.py) names it.
    Imported here by name, not from a string, so that `compose --check` sees which modules
    an eval stage may run."""
    from stages.config.suites import entry

    found = entry(name)
    if found is None:
        raise StageError(f"unknown eval suite {name!r}; the suites are {', '.join(names())}")
    module = found.module
    if module == "code":
        from stages.suites import code as suite
    elif module == "identity":
        from stages.suites import identity as suite
    elif module == "knowledge":
        from stages.suites import knowledge as suite
    elif module == "perplexity":
        from stages.suites import perplexity as suite
    elif module == "dimensions":
        from stages.suites import dimensions as suite
    elif module == "evalplus":
        from stages.suites import evalplus as suite
    elif module == "lm_eval_tasks":
        from stages.suites import lm_eval_tasks as suite
    elif module == "bigcodebench":
        from stages.suites import bigcodebench as suite
    else:
        raise StageError(f"suite {name!r}: no module stages/suites/{module}.py; add it to "
                         "stages.suites.get")
    return suite


def probe_dir(cfg: EvalStage) -> Path:
    """The curated probes (identity placeholders filled in by curate)."""
    return Path(cfg.paths.curated) / "probes"


def read_probes(path: Path, limit: int | None = None) -> list[dict]:
    """A probe file's rows, each with a unique string id; a row without one, or an id seen
    before, is an error naming the file and line."""
    if not path.exists():
        raise MissingInput(f"{path} not found; run `dvc repro curate` first")
    rows, seen = [], {}
    for number, row in read_jsonl_lines(path):
        pid = row.get("id") if isinstance(row, dict) else None
        if not isinstance(pid, str) or not pid:
            raise StageError(f"{path}:{number}: probe without a string \"id\"; give every "
                             "probe a unique id")
        if pid in seen:
            raise StageError(f"{path}:{number}: probe id {pid!r} is already used on line "
                             f"{seen[pid]}; ids must be unique")
        seen[pid] = number
        rows.append(row)
    return rows[:limit] if limit else rows


def unique_ids(probes: list[dict], where: str) -> list[dict]:
    """Probes that come from elsewhere (a benchmark file) checked the same way."""
    seen = set()
    for p in probes:
        if not isinstance(p.get("id"), str) or not p["id"]:
            raise StageError(f"{where}: a probe without a string id")
        if p["id"] in seen:
            raise StageError(f"{where}: probe id {p['id']!r} appears twice")
        seen.add(p["id"])
    return probes


def judged_rows(cfg: EvalStage, suite: JudgedSuite, probes: list[dict],
                replies: list[list[str]]) -> list[dict]:
    """The suite's judgement of `replies`, each row carrying what a reader needs beside the
    outcome: the prompt, the reply (all of them when sampling) and the judged metric."""
    rows = suite.judge(cfg, probes, replies)
    for row, probe, rs in zip(rows, probes, replies, strict=True):
        row["prompt"] = suite.prompt(cfg, probe)
        row["reply"] = rs[0]
        if len(rs) > 1:
            row["replies"] = rs
            row["diversity"] = diversity.per_probe(rs)
        if (ref := getattr(suite, "reference", None)) and (solution := ref(cfg, probe)):
            # the code the suite ran, one per sample (evalplus's is sanitized), None for none
            row["similarity"] = similarity.per_probe(row["codes"], solution)
        row.setdefault("metric", suite.JUDGED)
    return rows


def metrics(cfg: EvalStage, suite: JudgedSuite, rows: list[dict]) -> dict:
    """The suite's aggregate plus the measures judged_rows attached (diversity, similarity)."""
    return {**suite.aggregate(cfg, rows), **diversity.aggregate(rows), **similarity.aggregate(rows)}


def all_replies(rows: list[dict]) -> list[str]:
    return [x for r in rows for x in r.get("replies", [r["reply"]])]


def share(rows: list[dict], field: str = "passed") -> float:
    """Mean of a per-probe outcome, 4 places (the metrics' rounding)."""
    return round(sum(float(r[field]) for r in rows) / len(rows), 4) if rows else 0.0


def leakage(cfg: EvalStage, replies: list[str]) -> float:
    """Share of replies to unrelated questions that mention the configured identity."""
    marks = [v for field in (cfg.identity.name, cfg.identity.author)
             for v in ([field] if isinstance(field, str) else field.values())]
    hits = sum(any(m.lower() in r.lower() for m in marks) for r in replies)
    return round(hits / len(replies), 4) if replies else 0.0
