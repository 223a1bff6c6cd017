"""knowledge: short factual questions with one reference answer each.

A reply passes when it gives the reference answer and only it. Both are normalised first
(Unicode NFKC, so full-width forms read as ASCII; lower case; English and Chinese numerals as
digits: "eight" and "八" read as 8). The answer must then appear as a whole word (Chinese: as
a substring, there are no word boundaries) outside the scope of a negation ("not Paris",
"不是北京"; the window rule is in stages/negation.py), and the reply must not offer other
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
from stages.negation import affirmed
from stages.suites import leakage, probe_dir, read_probes, share

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


EN_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
EN_TENS = {w: 10 * i for i, w in enumerate(
    "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if w != "_"}
EN_NUMBER = re.compile(r"\b(?:(?:a|one|two|three|four|five|six|seven|eight|nine) hundred"
                       r"(?: and)?[ -]?)?(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|"
                       r"ninety)(?:[ -](?:one|two|three|four|five|six|seven|eight|nine))?|"
                       r"zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                       r"thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)?\b")


def en_numerals(text: str) -> str:
    """English number words below 1000 as digits: "one hundred and forty-four" -> 144."""
    def value(match: re.Match) -> str:
        words = match.group(0).replace("-", " ").split()
        if not words:
            return match.group(0)
        total, current = 0, 0
        for w in words:
            if w == "hundred":
                total += max(current, 1) * 100
                current = 0
            elif w in EN_TENS:
                current += EN_TENS[w]
            elif w in EN_UNITS:
                current += EN_UNITS[w]
            elif w == "a":
                current = 1
        return str(total + current)
    return EN_NUMBER.sub(lambda m: value(m) if m.group(0).strip() else m.group(0), text)


ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
             "七": 7, "八": 8, "九": 9}
ZH_UNITS = {"十": 10, "百": 100, "千": 1000}
ZH_NUMBER = re.compile("[零〇一二两三四五六七八九十百千]+")


def zh_numerals(text: str) -> str:
    """Chinese numerals below 10000 as digits: 八 -> 8, 十二 -> 12, 一百四十四 -> 144. A
    single 一 inside a word (一个, 唯一) is left alone: only runs that are numbers change."""
    def value(match: re.Match) -> str:
        run = match.group(0)
        if run == "一" or (len(run) == 1 and run in "两"):
            return run
        total, digit = 0, None
        for ch in run:
            if ch in ZH_DIGITS:
                if digit is not None:  # 二四: digits read one by one are not a number here
                    return run
                digit = ZH_DIGITS[ch]
            else:
                total += (digit if digit is not None else 1) * ZH_UNITS[ch]
                digit = None
        return str(total + (digit or 0))
    return ZH_NUMBER.sub(value, text)
