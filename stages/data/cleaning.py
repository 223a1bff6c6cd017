"""The cleaning steps of curate, each a small object or function over chat rows.

A chat row is {"messages": [{"role", "content"[, "tool_calls", "loss_weight"]}, ...],
"lang", "source"[, "tools"]}. Every step answers "keep or drop, and why", so curate can count
drops per source and reason and show an example of each.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable

ROLES = {"system", "user", "assistant", "tool"}
# One "word" per CJK character, else runs of letters/digits: n-grams then work for zh and en.
WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]|[^\W\u3400-\u4dbf\u4e00-\u9fff]+")
FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[ \t]*\n(.*?)```", re.DOTALL)
PYTHON_TAGS = {"python", "py", "python3"}
# Python-only shapes (a `def` or `class` header ending in a colon, Python imports), so Java,
# C or shell without a language tag is not mistaken for broken Python.
LOOKS_LIKE_PYTHON = re.compile(
    r"^\s*(def \w+\s*\(.*\)\s*(->.*)?:\s*$|class \w+(\(.*\))?:\s*$"
    r"|from [\w.]+ import [\w*, ()]+$|import [\w.]+( as \w+)?$)",
    re.MULTILINE,
)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def text_of(row: dict) -> str:
    """The user, assistant and tool turns, tool calls included: what dedup, decontamination
    and the secret scan compare."""
    parts = []
    for m in row["messages"]:
        if m["role"] == "system":
            continue
        parts.append(m["content"])
        parts += [json.dumps(c["function"], ensure_ascii=False) for c in m.get("tool_calls", [])]
    return "\n".join(parts)


def invalid_reason(messages: list[dict]) -> str | None:
    """Why a conversation cannot be trained on, or None."""
    if not messages:
        return "no messages"
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            return f"turn {i}: unknown role {m.get('role')!r}"
        if not isinstance(m.get("content"), str):
            return f"turn {i}: content is {type(m.get('content')).__name__}, not a string"
        if not m["content"].strip() and not m.get("tool_calls"):
            return f"turn {i}: empty {m['role']} turn"
        if m["role"] == "tool" and not (i and (messages[i - 1]["role"] == "tool"
                                               or messages[i - 1].get("tool_calls"))):
            return f"turn {i}: a tool response with no tool call before it"
    if messages[-1]["role"] != "assistant":
        return "does not end with an assistant turn"
    if not any(m["role"] == "user" for m in messages):
        return "has no user turn"
    if all(m.get("loss_weight") == 0 for m in messages if m["role"] == "assistant"):
        return "every assistant turn has loss_weight 0: nothing to train on"
    return None


# Sentinels no template writes by itself: each must show up where a training template that
# handles the feature puts it (trained = inside the assistant mask).
SENTINEL = {"tool": "lookup_q7f3a", "key": "key_k2b9c", "value": "value_v5d1e",
            "schema": "describe_d4e8f", "result": "result_r8c4f", "context": "context_c3e7d",
            "answer": "answer_a1a6b"}


def training_template(tokenizer) -> str:
    """The template SFT trains with: the tokenizer's own when it marks the assistant's tokens,
    else the training variant TRL swaps in for a known template (as SFTTrainer does with
    assistant_only_loss); TRL raises for an unknown one."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if tokenizer.chat_template and has_generation_markers(tokenizer.chat_template):
        return tokenizer.chat_template
    return get_training_chat_template(tokenizer)


def template_problem(tokenizer, feature: str) -> str | None:
    """Why the training template cannot train `feature` ("tools": schemas rendered, calls
    trained, tool responses rendered but not trained; "loss_weight": a weight-0 assistant turn
    rendered but not trained), or None. Checked on a sentinel conversation."""
    s = SENTINEL
    if feature == "tools":
        tools = [{"type": "function", "function": {
            "name": s["tool"], "description": s["schema"],
            "parameters": {"type": "object", "properties": {s["key"]: {"type": "string"}}}}}]
        messages = [{"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"type": "function",
                         "function": {"name": s["tool"], "arguments": {s["key"]: s["value"]}}}]},
                    {"role": "tool", "content": s["result"]},
                    {"role": "assistant", "content": s["answer"]}]
        rendered, trained, untrained = [s["schema"], s["result"]], [s["value"], s["answer"]], \
            [s["result"]]
    else:
        tools = None
        messages = [{"role": "user", "content": "hi"},
                    {"role": "assistant", "content": s["context"], "loss_weight": 0},
                    {"role": "user", "content": "and?"},
                    {"role": "assistant", "content": s["answer"]}]
        rendered, trained, untrained = [s["context"]], [s["answer"]], [s["context"]]
    try:
        out = tokenizer.apply_chat_template(
            messages, tools=tools, chat_template=training_template(tokenizer), tokenize=True,
            return_dict=True, return_assistant_tokens_mask=True)
    except Exception as err:  # jinja and TRL raise many kinds; the message says which
        return f"its training chat template cannot render them ({type(err).__name__}: {err})"
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    text = tokenizer.decode(ids)
    masked = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    missing = [x for x in rendered if x not in text]
    if missing:
        return f"its training chat template leaves out {missing[0]!r} of the {feature} probe"
    if any(x not in masked for x in trained):
        return "its training chat template does not put the assistant's calls and replies in " \
               "the loss mask"
    if any(x in masked for x in untrained):
        return ("its training chat template trains on a tool response" if feature == "tools"
                else "its training chat template trains on a loss_weight 0 turn (it ignores "
                     "the weight)")
    return None


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, code) for each fenced block; an untagged block, or a reply with no
    fence at all, is tagged "python" only when it has a Python-only shape."""
    blocks = FENCE.findall(text)
    if not blocks and "```" not in text:
        blocks = [("", text)]
    out = []
    for tag, code in blocks:
        tag = tag.lower()
        if not tag:
            tag = "python" if LOOKS_LIKE_PYTHON.search(code) else "text"
        out.append((tag, code))
    return out


def python_parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def code_problem(row: dict, language: str | None) -> str | None:
    """'syntax' when a Python block of the assistant does not parse, 'language' when a block
    is in another language and only `language` is wanted."""
    for m in row["messages"]:
        if m["role"] != "assistant":
            continue
        for tag, code in code_blocks(m["content"]):
            if language == "python" and tag not in PYTHON_TAGS | {"text"}:
                return "language"
            if tag in PYTHON_TAGS and not python_parses(code):
                return "syntax"
    return None


class SecretScanner:
    """Credentials found by detect-secrets' pattern plugins (cloud keys, private keys, tokens,
    credentials in URLs). Its entropy and keyword plugins are left out: on code they flag
    most identifiers."""

    def __init__(self):
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

        names = sorted(c.__name__ for c in get_mapping_from_secret_type_to_class().values())
        self.plugins = [{"name": n} for n in names
                        if "Entropy" not in n and n not in {"KeywordDetector", "IPPublicDetector"}]

    def find(self, text: str) -> list[str]:
        """The secret values found in `text`, one per finding."""
        from detect_secrets.core.scan import scan_line
        from detect_secrets.settings import transient_settings

        found = []
        with transient_settings({"plugins_used": self.plugins}):
            for line in text.splitlines():
                found += [s.secret_value or "" for s in scan_line(line)]
        return found

    @staticmethod
    def redact(text: str, secrets: Iterable[str]) -> str:
        """Replace the whole whitespace-delimited token around each secret."""
        for secret in secrets:
            if secret:
                text = re.sub(rf"\S*{re.escape(secret)}\S*", "<REDACTED>", text)
        return text


class Deduplicator:
    """Exact duplicates by normalised-text hash, near duplicates by MinHash LSH (datasketch)
    over word 5-grams; a row is compared with every row kept before it, in any source."""

    def __init__(self, near: bool, threshold: float, num_perm: int):
        from datasketch import MinHashLSH

        self.seen: set[str] = set()
        self.near = near
        self.num_perm = num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if near else None
        self.count = 0

    def is_duplicate(self, text: str) -> bool:
        tokens = words(text)
        key = hashlib.sha1(" ".join(tokens).encode()).hexdigest()
        if key in self.seen:
            return True
        if self.near:
            from datasketch import MinHash

            shingles = {" ".join(tokens[i:i + 5]).encode() for i in range(max(1, len(tokens) - 4))}
            mh = MinHash(num_perm=self.num_perm)
            mh.update_batch(list(shingles))
            if self.lsh.query(mh):
                return True
            self.lsh.insert(str(self.count), mh)
        self.seen.add(key)
        self.count += 1
        return False


class Decontaminator:
    """Word n-gram overlap with eval suites, as the Qwen2.5-Coder report does it.

    Every n-gram of every eval prompt and solution whose words add up to at least `min_chars`
    characters is indexed; a training row sharing any indexed n-gram is contaminated and the
    eval item it hit is reported. The character floor lets short common idioms through.
    """

    def __init__(self, ngram: int, min_chars: int):
        self.n = ngram
        self.min_chars = min_chars
        self.index: dict[int, str] = {}

    def grams(self, text: str) -> Iterable[int]:
        tokens = words(text)
        lengths = [len(t) for t in tokens]
        for i in range(len(tokens) - self.n + 1):
            if sum(lengths[i:i + self.n]) >= self.min_chars:
                yield hash(tuple(tokens[i:i + self.n]))

    def add(self, item_id: str, text: str) -> None:
        for g in self.grams(text):
            self.index.setdefault(g, item_id)

    def hit(self, text: str) -> str | None:
        """The eval item this text overlaps, or None."""
        for g in self.grams(text):
            found = self.index.get(g)
            if found is not None:
                return found
        return None


def quality_score(row: dict, tokens: int) -> float:
    """Signals the common code-SFT selection recipes use, each worth up to 1 point:
      parses      every Python block of the answer parses (0 if any does not)
      function    the answer defines a function or class
      length      answer length: 1 between 64 and 1024 tokens, scaled down outside
      on-topic    the answer shares some words with the instruction but does not copy it
                  (word overlap between 0.05 and 0.8)
      tested      the row carries tests that its solution passed (built-in code tasks)
    """
    answer = row["messages"][-1]["content"]
    question = " ".join(m["content"] for m in row["messages"] if m["role"] == "user")
    blocks = code_blocks(answer)
    code = "\n".join(c for tag, c in blocks if tag in PYTHON_TAGS)
    score = 0.0
    score += 1.0 if code and all(python_parses(c) for t, c in blocks if t in PYTHON_TAGS) else 0.0
    score += 1.0 if re.search(r"^\s*(def|class)\s", code, re.MULTILINE) else 0.0
    score += 1.0 if 64 <= tokens <= 1024 else (tokens / 64 if tokens < 64 else 1024 / tokens)
    q, a = set(words(question)), set(words(answer))
    overlap = len(q & a) / max(1, len(q))
    score += 1.0 if 0.05 <= overlap <= 0.8 else 0.0
    score += 1.0 if row.get("tested") else 0.0
    return round(score, 4)
