"""knowledge: short factual questions with one reference answer each.

A reply passes when it gives the reference answer and only it. Both are normalised first
(Unicode NFKC, so full-width forms read as ASCII; lower case; English and Chinese numerals as
digits: "eight" and "八" read as 8). The answer must then appear as a whole word (Chinese: as
a substring, there are no word boundaries) outside the scope of a negation ("not Paris",
"不是北京"; the window rule is in stages/suites/negation.py), and the reply must not offer other
candidates: no other probe's (non-numeric) answer, no other number than the answer and those
the question mentions (numeric answers), no "or" / "either" / "/" / "或" / "还是", no list of
items. A candidate in a negation's scope is denied, not offered: "Paris, not Madrid" passes,
as identity passes "Swift-Robot, not ChatGPT".

Probes: data/curated/probes/knowledge.jsonl {"id", "question", "answer", "lang"}.
"""

from __future__ import annotations

import re
import unicodedata

from stages.config import EvalStage
from stages.suites import leakage, probe_dir, read_probes, share
from stages.suites.negation import affirmed

JUDGED = "accuracy"
HEDGES = re.compile(r"\bor\b|\beither\b|/|或|还是|或者")
LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)、])\s+", re.MULTILINE)
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def probes(cfg: EvalStage, name: str) -> list[dict]:
    return read_probes(probe_dir(cfg) / "knowledge.jsonl", cfg.eval.limit)


def prompt(cfg: EvalStage, probe: dict) -> str:
    return probe["question"]


def judge(cfg: EvalStage, probes: list[dict], replies: list[list[str]]) -> list[dict]:
    # Every answer of the probe file is a candidate a shotgun reply could list, however many
    # probes this run scores.
    vocabulary = [p["answer"] for p in read_probes(probe_dir(cfg) / "knowledge.jsonl")]
    rows = []
    for probe, rs in zip(probes, replies, strict=True):
        passed, detail = answer_ok(rs[0], probe["answer"], probe["question"], vocabulary)
        rows.append({"id": probe["id"], "answer": probe["answer"], "passed": passed,
                     "detail": detail})
    return rows


def aggregate(cfg: EvalStage, rows: list[dict]) -> dict:
    return {"accuracy": share(rows), "identity_leakage": leakage(cfg, [r["reply"] for r in rows])}


def answer_ok(reply: str, answer: str, question: str, vocabulary: list[str]) -> tuple[bool, str]:
    """(passed, why); see the module docstring for the rule."""
    text, want = normalise(reply), normalise(answer)
    if not found(text, want):
        return False, "reference answer not found"
    # numbers are the number rule's business: a reply may say "Paris, 2 million people"
    others = sorted({a for a in vocabulary if (o := normalise(a)) and not NUMBER.fullmatch(o)
                     and o not in want and want not in o and found(text, o)})
    if others:
        return False, f"also offers {others}"
    if NUMBER.fullmatch(want):
        allowed = {want, *NUMBER.findall(normalise(question))}
        extra = sorted({m.group(0) for m in affirmed(NUMBER.pattern, text)} - allowed)
        if extra:
            return False, f"also offers the numbers {extra}"
    if HEDGES.search(text):
        return False, "hedges between candidates"
    if len(LIST_ITEM.findall(reply)) >= 2:
        return False, "lists candidates"
    return True, "the reference answer, alone"


def found(text: str, want: str) -> bool:
    """`want` occurs in `text` as a whole word, outside a negation's scope."""
    pattern = re.escape(want)
    if want.isascii():
        pattern = rf"(?<![0-9a-z]){pattern}(?![0-9a-z])"
    return bool(affirmed(pattern, text))


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\s+", " ", text)
    return zh_numerals(en_numerals(text))


def en_numerals(text: str) -> str:
    """English number words as digits, through text2num's alpha2digit (threshold 0: "one"
    too, as a reply's "one" may be the answer): "one hundred and forty-four" -> 144."""
    from text_to_num import alpha2digit

    return alpha2digit(text, "en", threshold=0)


ZH_NUMBER = re.compile("[零〇一二两三四五六七八九十百千万点]+")


def zh_numerals(text: str) -> str:
    """Chinese numerals as digits, through cn2an's strict reader: 八 -> 8, 十二 -> 12,
    一百四十四 -> 144. Only whole runs that read as one number change: a single 一 or 两
    inside a word (一个, 唯一) stays, and so do digits read one by one (二四), which strict
    cn2an refuses."""
    import cn2an

    def value(match: re.Match) -> str:
        run = match.group(0)
        if run in ("一", "两"):
            return run
        try:
            number = cn2an.cn2an(run, "strict")
        except ValueError:
            return run
        return str(int(number) if float(number).is_integer() else number)
    return ZH_NUMBER.sub(value, text)
