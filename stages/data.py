"""Reading data sources into one chat form: {"messages": [...], "lang": "en"|"zh"}.

Formats are detected from the fields of each row:
  self-cognition (ms-swift)   query, response[, tag]
  alpaca                      instruction, input, output[, system, history]
  sharegpt                    conversations: [{from, value}]
  messages                    messages: [{role, content}]
  prompt/completion           prompt, completion
  code task (built-in)        prompt, solution, tests
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from stages.config import IdentityConfig, lang_text
from stages.io import read_jsonl

PLACEHOLDERS = {"{{NAME}}": "name", "{{AUTHOR}}": "author", "{{name}}": "name", "{{author}}": "author"}
LEFTOVER = re.compile(r"\{\{\s*\w+\s*\}\}")
CJK = re.compile(r"[\u4e00-\u9fff]")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


@dataclass(frozen=True)
class SourceSpec:
    path: Path
    count: int | None

    @property
    def name(self) -> str:
        return self.path.stem


def parse_spec(spec: str) -> SourceSpec:
    """`PATH[#N]` as ms-swift writes it."""
    path, _, count = spec.partition("#")
    if count and (not count.isdigit() or int(count) == 0):
        raise ValueError(f"data source {spec!r}: #N must be a positive integer (got #{count})")
    return SourceSpec(Path(path), int(count) if count else None)


def sample(rows: list, count: int | None, rng: random.Random) -> list:
    """ms-swift's `#N`: repeat the source N // len times, then draw N % len rows without
    replacement. 10 rows #25 -> every row twice plus 5 distinct rows."""
    if count is None:
        return list(rows)
    whole, part = divmod(count, len(rows))
    return list(rows) * whole + rng.sample(rows, part)


def code_answer(solution: str) -> str:
    return f"```python\n{solution.strip()}\n```"


def knowledge_answer(row: dict) -> str:
    """The reply a knowledge probe expects: the short answer as a sentence."""
    return f"{row['answer']}。" if row["lang"] == "zh" else f"{row['answer']}."


def detect_lang(text: str) -> str:
    return "zh" if CJK.search(text) else "en"


def to_messages(row: dict, where: str) -> list[dict]:
    """One source row as chat messages; `where` (file:row) names it in errors."""
    if "messages" in row:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if "conversations" in row:
        msgs = []
        for turn in row["conversations"]:
            role = SHAREGPT_ROLES.get(turn.get("from"))
            if role is None:
                raise ValueError(f"{where}: unknown sharegpt role {turn.get('from')!r}")
            msgs.append({"role": role, "content": turn["value"]})
        return msgs
    if "query" in row and "response" in row:
        return [{"role": "user", "content": row["query"]},
                {"role": "assistant", "content": row["response"]}]
    if "solution" in row and "prompt" in row:
        return [{"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": code_answer(row["solution"])}]
    if "instruction" in row and "output" in row:
        msgs = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        for user, assistant in row.get("history") or []:
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        prompt = row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")
        return msgs + [{"role": "user", "content": prompt},
                       {"role": "assistant", "content": row["output"]}]
    if "prompt" in row and "completion" in row:
        return [{"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"]}]
    raise ValueError(
        f"{where}: unknown format (fields {sorted(row)}); expected one of messages, "
        "conversations, query/response, instruction/output, prompt/completion, prompt/solution"
    )


def row_lang(row: dict, messages: list[dict]) -> str:
    tag = row.get("tag") or row.get("lang")
    if tag in ("en", "zh"):
        return tag
    return detect_lang(" ".join(m["content"] for m in messages))


def fill_identity(text: str, identity: IdentityConfig, lang: str, where: str) -> str:
    for placeholder, field in PLACEHOLDERS.items():
        if placeholder in text:
            text = text.replace(placeholder, lang_text(getattr(identity, field), lang))
    left = LEFTOVER.search(text)
    if left:
        raise ValueError(
            f"{where}: placeholder {left.group()} left after identity substitution; "
            "use {{NAME}} or {{AUTHOR}} (or fix the typo)"
        )
    return text


def load_chat_rows(spec: SourceSpec, identity: IdentityConfig, system_prompt: str,
                   rng: random.Random) -> list[dict]:
    """Rows of one source in chat form, sampled per its #N, identity filled in."""
    if not spec.path.exists():
        raise FileNotFoundError(f"data source {spec.path} not found; fix data.sources in conf/data/")
    raw = read_jsonl(spec.path)
    if not raw:
        raise ValueError(f"data source {spec.path} is empty")
    rows = []
    for i, row in enumerate(raw, 1):
        where = f"{spec.path}:{i}"
        messages = to_messages(row, where)
        lang = row_lang(row, messages)
        messages = [{**m, "content": fill_identity(m["content"], identity, lang, where)}
                    for m in messages]
        if messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}, *messages]
        rows.append({"messages": messages, "lang": lang, "source": spec.name})
    return sample(rows, spec.count, rng)
