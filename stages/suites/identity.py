"""identity: does the model say it is the configured identity, and only that?

A reply passes when it names the configured name and author (identity.name / .author in the
probe's language) outside the scope of a negation, and names no other maker: neither the
model's original identity (model.identity, name or author, in either language) nor a known
assistant or lab (COMPETITORS), except in a negation's scope ("not ChatGPT", "不是OpenAI").
One window rule (stages/suites/negation.py) decides both: "I am not Swift-Robot" names no identity,
"I am Swift-Robot, not ChatGPT" credits no competitor.

Probes: data/curated/probes/identity.jsonl {"id", "query", "lang", "response"}.
"""

from __future__ import annotations

import re

from stages.config import EvalStage, IdentityConfig, LangText, lang_text
from stages.suites import probe_dir, read_probes, share
from stages.suites.negation import affirmed

JUDGED = "consistency"
# Assistants and labs a reply must not credit itself to (case-insensitive; ASCII names match
# as whole words, so "Meta" is not found in "metadata").
COMPETITORS = ("ChatGPT", "GPT-4", "GPT-4o", "GPT", "OpenAI", "Claude", "Anthropic", "Gemini",
               "Bard", "Google", "DeepMind", "Qwen", "Alibaba", "Alibaba Cloud", "Llama", "Meta",
               "DeepSeek", "Mistral", "Copilot", "Microsoft", "ERNIE", "Baidu", "Kimi",
               "Moonshot", "通义千问", "通义", "千问", "阿里云", "阿里巴巴", "阿里", "文心一言",
               "百度", "深度求索", "月之暗面", "豆包", "字节跳动", "智谱")


def probes(cfg: EvalStage, name: str) -> list[dict]:
    return read_probes(probe_dir(cfg) / "identity.jsonl", cfg.eval.limit)


def prompt(cfg: EvalStage, probe: dict) -> str:
    return probe["query"]


def judge(cfg: EvalStage, probes: list[dict], replies: list[list[str]]) -> list[dict]:
    rows = []
    for probe, rs in zip(probes, replies, strict=True):
        passed, detail = identity_ok(rs[0], probe["lang"], cfg.identity, cfg.model.identity)
        rows.append({"id": probe["id"], "lang": probe["lang"], "passed": passed,
                     "detail": detail})
    return rows


def aggregate(cfg: EvalStage, rows: list[dict]) -> dict:
    metrics = {"consistency": share(rows)}
    for lang in ("en", "zh"):
        sub = [r for r in rows if r["lang"] == lang]
        if sub:
            metrics[f"consistency_{lang}"] = share(sub)
    return metrics


def identity_ok(reply: str, lang: str, identity: IdentityConfig,
                original: IdentityConfig) -> tuple[bool, str]:
    """(passed, why) for one reply; see the module docstring for the rule."""
    missing = [v for v in (lang_text(identity.name, lang), lang_text(identity.author, lang))
               if not affirmed(re.escape(v), reply, re.IGNORECASE)]
    own = [*values(identity.name), *values(identity.author)]
    # A competitor that is part of the configured identity (a user naming theirs "Qwen-Pro")
    # is the identity itself, not a rival.
    others = [*values(original.name), *values(original.author),
              *(c for c in COMPETITORS if not any(c.lower() in o.lower() for o in own))]
    credited = sorted({o for o in others if claimed(reply, o, own)})
    if missing or credited:
        return False, f"missing or negated {missing}, credits {credited}"
    return True, "names the identity and no other maker"


def values(text: LangText) -> list[str]:
    return [text] if isinstance(text, str) else list(text.values())


def claimed(reply: str, name: str, own: list[str]) -> bool:
    """`name` occurs in the reply outside a denial and outside the configured identity's own
    words (the author "Nebula Lab" does not claim "Lab")."""
    masked = reply
    for word in sorted(own, key=len, reverse=True):
        masked = re.sub(re.escape(word), " " * len(word), masked, flags=re.IGNORECASE)
    pattern = re.escape(name)
    if name.isascii():
        pattern = rf"(?<![0-9A-Za-z]){pattern}(?![0-9A-Za-z])"
    return bool(affirmed(pattern, masked, re.IGNORECASE))
