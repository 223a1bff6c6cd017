"""dimensions: the four skills users test by hand, three levels each, plus HumanEvalPack's
repair and localisation probes when benchmarks.humanevalpack is set.

  generation, repair  the code in the reply passes the item's tests (in the sandbox)
  explanation         the reply explains in words: at most half of it may be the code itself
                      (fenced blocks, inline code, lines copied from the function); in what
                      is left every required concept group is named and no forbidden phrase
                      (one that would contradict what the code does) appears
  localisation        the reply names exactly one line ("Line N" / "第N行") and it is the
                      faulty one; a reply that names no line, or several, fails

Probes: data/curated/probes/dimensions.jsonl {"id", "dimension", "level", ...}.
"""

from __future__ import annotations

import re
from pathlib import Path

from stages.config import EvalStage
from stages.data.formats import dimension_prompt, humanevalpack_items
from stages.generation.common import extract_code
from stages.sandbox.execute import run_many
from stages.suites import probe_dir, read_probes, share, unique_ids

JUDGED = "score"
DIMENSIONS = ("generation", "explanation", "localisation", "repair")
NAMED_LINE = re.compile(r"\bline\s*(\d+)|第\s*(\d+)\s*行", re.IGNORECASE)
FENCED = re.compile(r"```.*?(?:```|$)", re.DOTALL)
INLINE = re.compile(r"`[^`\n]*`")


def probes(cfg: EvalStage, name: str) -> list[dict]:
    items = read_probes(probe_dir(cfg) / "dimensions.jsonl", cfg.eval.limit)
    if cfg.benchmarks.humanevalpack:
        items += humanevalpack_items(Path(cfg.benchmarks.humanevalpack), cfg.eval.limit)
    return unique_ids(items, "dimensions probes")


def prompt(cfg: EvalStage, probe: dict) -> str:
    return dimension_prompt(probe)


def judge(cfg: EvalStage, probes: list[dict], replies: list[list[str]]) -> list[dict]:
    first = [rs[0] for rs in replies]
    runs = [i for i, p in enumerate(probes) if p["dimension"] in ("generation", "repair")]
    codes = {i: extract_code(first[i]) for i in runs}
    jobs = [i for i in runs if codes[i] is not None]
    outcomes = dict(zip(jobs, run_many([(codes[i], probes[i]["tests"]) for i in jobs],
                                       cfg.eval.timeout_s, "eval: running tests",
                                       cfg.unsafe_execution), strict=True))
    rows = []
    for i, (item, reply) in enumerate(zip(probes, first, strict=True)):
        if item["dimension"] == "explanation":
            passed, detail = explanation_ok(reply, item["code"], item["required"],
                                            item["forbidden"])
        elif item["dimension"] == "localisation":
            passed, detail = localisation_ok(reply, item["faulty_line"])
        else:
            status = outcomes[i].status if i in outcomes else "no_code"
            passed, detail = status == "passed", status
        row = {"id": item["id"], "dimension": item["dimension"], "level": item["level"],
               "passed": passed, "detail": detail}
        if i in codes:
            row["codes"] = [codes[i]]
        rows.append(row)
    return rows


def reference(cfg: EvalStage, probe: dict) -> str | None:
    """The reference solution of generation and repair probes (the others write prose)."""
    return probe["solution"] if probe["dimension"] in ("generation", "repair") else None


def aggregate(cfg: EvalStage, rows: list[dict]) -> dict:
    metrics = {"score": share(rows)}
    for dim in DIMENSIONS:
        for level in (None, 1, 2, 3, "pack"):
            sub = [r for r in rows if r["dimension"] == dim and level in (None, r["level"])]
            if sub:
                key = dim if level is None else f"{dim}_l{level}" if level != "pack" else f"{dim}_pack"
                metrics[key] = share(sub)
    return metrics


def explanation_ok(reply: str, code: str, required: list[list[str]],
                   forbidden: list[str]) -> tuple[bool, str]:
    prose = prose_of(reply, code)
    words, total = len(prose.split()), len(reply.split())
    if total == 0 or words * 2 < total:
        return False, f"mostly the code itself ({words} of {total} words are prose)"
    low = prose.lower()
    missing = [group[0] for group in required if not any(w.lower() in low for w in group)]
    contradicts = [w for w in forbidden if w.lower() in low]
    if missing or contradicts:
        return False, f"missing {missing}, contradicts {contradicts}"
    return True, "all concepts, no contradiction"


def prose_of(reply: str, code: str) -> str:
    """The reply without its code: fenced blocks, inline code spans and every line that is a
    line of the function (stripped), so echoing the code back earns nothing."""
    text = INLINE.sub(" ", FENCED.sub(" ", reply))
    code_lines = {line.strip() for line in code.splitlines() if line.strip()}
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        for code_line in sorted(code_lines, key=len, reverse=True):
            stripped = stripped.replace(code_line, " ")
        kept.append(stripped)
    return "\n".join(kept)


def localisation_ok(reply: str, faulty: int) -> tuple[bool, str]:
    named = sorted({int(a or b) for a, b in NAMED_LINE.findall(reply)})
    if not named:
        return False, "names no line"
    if len(named) > 1:
        return False, f"names several lines {named}"
    return named[0] == faulty, f"named line {named[0]}"
