"""Reading data sources into one chat form: {"messages": [...], "lang": "en"|"zh"}.

A source is a local .jsonl / .json (array) / .parquet / .csv file or a hub dataset
(`hf::OWNER/NAME` at a pinned revision). The format of each row is detected from its fields,
or given (`format:` in the mapping form of a source):

  self_cognition (ms-swift)   query, response[, tag]
  alpaca (LLaMA-Factory)      instruction, input, output[, system, history]
  sharegpt                    conversations: [{from, value}][, system]
  messages                    messages: [{role, content}]
  prompt_completion           prompt, completion (strings or message lists)
  code_task (built-in)        prompt, solution, tests
  preference                  chosen, rejected (+ conversations / messages / prompt)
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from stages.config import IdentityConfig, SourceConfig, lang_text
from stages.io import DataError, read_jsonl_lines

PLACEHOLDERS = {"{{NAME}}": "name", "{{AUTHOR}}": "author", "{{name}}": "name", "{{author}}": "author"}
LEFTOVER = re.compile(r"\{\{\s*\w+\s*\}\}")
CJK = re.compile(r"[\u4e00-\u9fff]")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "observation": "tool", "function_call": "assistant"}
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class SourceSpec:
    path: str
    count: int | None = None
    format: str = "auto"
    split: str = "train"
    revision: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    label: str | None = None

    @property
    def hub(self) -> bool:
        return self.path.startswith("hf::")

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return self.path[4:] if self.hub else Path(self.path).stem


def parse_spec(spec: str | SourceConfig) -> SourceSpec:
    """`PATH_OR_ID[#N]` as ms-swift writes it, or the mapping form."""
    if isinstance(spec, SourceConfig):
        return SourceSpec(spec.path, spec.count, spec.format, spec.split, spec.revision,
                          dict(spec.columns), spec.name)
    path, _, count = spec.partition("#")
    if count and (not count.isdigit() or int(count) == 0):
        raise DataError(f"data source {spec!r}: #N must be a positive integer (got #{count})")
    if path.startswith("hf::"):
        raise DataError(
            f"hub dataset {path}: give it as a mapping with a pinned revision, e.g. "
            f"{{path: {path}, revision: <commit sha>, count: {count or 'null'}}}"
        )
    return SourceSpec(path, int(count) if count else None)


def sample(rows: list, count: int | None, rng: random.Random) -> list:
    """ms-swift's `#N`: repeat the source N // len times, then draw N % len rows without
    replacement. 10 rows #25 -> every row twice plus 5 distinct rows; #4 -> 4 distinct."""
    if count is None:
        return list(rows)
    if not rows:
        return []
    whole, part = divmod(count, len(rows))
    return list(rows) * whole + rng.sample(rows, part)


def code_answer(solution: str) -> str:
    return f"```python\n{solution.strip()}\n```"


def knowledge_answer(row: dict) -> str:
    """The reply a knowledge probe expects: the short answer as a sentence."""
    return f"{row['answer']}。" if row["lang"] == "zh" else f"{row['answer']}."


def detect_lang(text: str) -> str:
    return "zh" if CJK.search(text) else "en"


# ---- reading files ---------------------------------------------------------------------

def read_rows(spec: SourceSpec) -> list[tuple[str, dict]]:
    """(where, row) for every row of a source; `where` is `file:line` or `file:row N`."""
    rows = _read_hub(spec) if spec.hub else _read_file(Path(spec.path))
    if not rows:
        raise DataError(f"data source {spec.path} is empty; remove it from data.sources or fill it")
    if spec.columns:
        rows = [(w, {spec.columns.get(k, k): v for k, v in r.items()}) for w, r in rows]
    return rows


def _read_file(path: Path) -> list[tuple[str, dict]]:
    if not path.exists():
        raise DataError(f"data source {path} does not exist; fix the path in data.sources")
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {SUFFIXES}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return _objects(path, [(f"{path}:row {i}", r)
                               for i, r in enumerate(pq.read_table(path).to_pylist(), 1)])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte {err.start}); re-encode the file as UTF-8") from None
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        return [(f"{path}:line {i}", dict(r)) for i, r in enumerate(reader, 2)]
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of rows, got {type(data).__name__}")
        return _objects(path, [(f"{path}:row {i}", r) for i, r in enumerate(data, 1)])
    return _objects(path, [(f"{path}:{n}", r) for n, r in read_jsonl_lines(path)])


def _objects(path: Path, rows: list[tuple[str, object]]) -> list[tuple[str, dict]]:
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return rows  # type: ignore[return-value]


def _read_hub(spec: SourceSpec) -> list[tuple[str, dict]]:
    import datasets

    dataset_id = spec.path[4:]
    try:
        ds = datasets.load_dataset(dataset_id, split=spec.split, revision=spec.revision)
    except Exception as err:  # offline, missing, gated: the hub gives many exception types
        raise DataError(
            f"cannot load hub dataset {dataset_id} (revision {spec.revision}, split {spec.split}):"
            f" {type(err).__name__}: {err}. Without network, download it elsewhere, save it as "
            ".jsonl or .parquet, copy it here and name that file in data.sources instead."
        ) from None
    return [(f"{dataset_id}:row {i}", dict(r)) for i, r in enumerate(ds, 1)]


# ---- formats ---------------------------------------------------------------------------

def detect_format(row: dict) -> str | None:
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "query" in row and "response" in row:
        return "self_cognition"
    if "solution" in row and "prompt" in row:
        return "code_task"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    return None


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _turns(value, where: str, key: str) -> list[dict]:
    """A message list in messages or sharegpt form (or a single message) as messages."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, str):
        return [{"role": "assistant" if key != "prompt" else "user", "content": value}]
    if not isinstance(value, list):
        raise DataError(f"{where}: field {key!r} must be a list of turns, got {type(value).__name__}")
    out = []
    for turn in value:
        if not isinstance(turn, dict):
            raise DataError(f"{where}: every turn of {key!r} must be an object")
        if "from" in turn:
            out.append({"role": SHAREGPT_ROLES.get(turn["from"], turn["from"]),
                        "content": turn.get("value")})
        else:
            out.append({"role": turn.get("role"), "content": turn.get("content")})
    return out


def to_messages(row: dict, where: str, fmt: str = "auto") -> list[dict]:
    """One source row as chat messages; `where` (file:line) names it in errors."""
    fmt = detect_format(row) if fmt == "auto" else fmt
    if fmt is None:
        raise DataError(
            f"{where}: unknown format (fields {sorted(row)}); expected one of messages, "
            "conversations, query/response, instruction/output, prompt/completion, "
            "prompt/solution/tests, chosen/rejected - or map your columns with `columns:`"
        )
    if fmt == "messages":
        return _turns(row.get("messages"), where, "messages")
    if fmt == "sharegpt":
        system = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        return system + _turns(row.get("conversations"), where, "conversations")
    if fmt == "self_cognition":
        return [{"role": "user", "content": _text(row, "query", where)},
                {"role": "assistant", "content": _text(row, "response", where)}]
    if fmt == "code_task":
        return [{"role": "user", "content": _text(row, "prompt", where)},
                {"role": "assistant", "content": code_answer(_text(row, "solution", where))}]
    if fmt == "alpaca":
        msgs = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        for pair in row.get("history") or []:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise DataError(f"{where}: history must be a list of [user, assistant] pairs")
            msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        instruction, extra = _text(row, "instruction", where), row.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' must be a string")
        prompt = f"{instruction}\n{extra}" if extra else instruction
        return msgs + [{"role": "user", "content": prompt},
                       {"role": "assistant", "content": _text(row, "output", where)}]
    if fmt == "prompt_completion":
        return _turns(row.get("prompt"), where, "prompt") + _turns(row.get("completion"), where,
                                                                   "completion")
    if fmt == "preference":
        pref = to_preference(row, where)
        return pref["prompt"] + pref["chosen"]
    raise DataError(f"{where}: unknown format {fmt!r}")


def to_preference(row: dict, where: str) -> dict:
    """{prompt, chosen, rejected} as message lists, from the common preference layouts:
    LLaMA-Factory (conversations + chosen/rejected turns), messages lists whose last turn
    differs, or TRL's prompt/chosen/rejected."""
    if "chosen" not in row or "rejected" not in row:
        raise DataError(f"{where}: a preference row needs 'chosen' and 'rejected'")
    if "conversations" in row:
        prompt = _turns(row["conversations"], where, "conversations")
    elif "messages" in row:
        prompt = _turns(row["messages"], where, "messages")
    elif "prompt" in row:
        prompt = _turns(row["prompt"], where, "prompt")
    else:
        prompt = []
    chosen = _turns(row["chosen"], where, "chosen")
    rejected = _turns(row["rejected"], where, "rejected")
    if not prompt:  # full conversations in chosen and rejected: split off the shared prefix
        shared = 0
        while (shared < min(len(chosen), len(rejected)) - 1
               and chosen[shared] == rejected[shared]):
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    if not prompt or not chosen or not rejected:
        raise DataError(f"{where}: preference row without a prompt, a chosen or a rejected turn")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def row_lang(row: dict, messages: list[dict]) -> str:
    tag = row.get("tag") or row.get("lang")
    if tag in ("en", "zh"):
        return tag
    return detect_lang(" ".join(str(m.get("content")) for m in messages))


def fill_identity(text: str, identity: IdentityConfig, lang: str, where: str) -> str:
    for placeholder, key in PLACEHOLDERS.items():
        if placeholder in text:
            text = text.replace(placeholder, lang_text(getattr(identity, key), lang))
    left = LEFTOVER.search(text)
    if left:
        raise DataError(
            f"{where}: placeholder {left.group()} left after identity substitution; "
            "use {{NAME}} or {{AUTHOR}} (or fix the typo)"
        )
    return text


def fill_messages(messages: list[dict], identity: IdentityConfig, lang: str,
                  where: str) -> list[dict]:
    return [{**m, "content": fill_identity(m["content"], identity, lang, where)}
            if isinstance(m.get("content"), str) else m for m in messages]


def identity_system_prompt(identity: IdentityConfig, lang: str) -> str:
    """identity.system_prompt in `lang` with the name and author filled in."""
    if identity.system_prompt is None:
        raise DataError("a training phase asks for system_prompt: identity but "
                        "identity.system_prompt is not set; add it to conf/config.yaml")
    return fill_identity(lang_text(identity.system_prompt, lang), identity, lang,
                         "identity.system_prompt")


def with_system(messages: list[dict], system_prompt: str) -> list[dict]:
    if messages and messages[0].get("role") == "system":
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def load_chat_rows(spec: SourceSpec, identity: IdentityConfig, system_prompt: str,
                   rng: random.Random) -> list[dict]:
    """Rows of one source in chat form, sampled per its #N, identity filled in, no cleaning:
    for built-in data that is known to be clean (the tiny model's corpus)."""
    rows = []
    for where, row in read_rows(spec):
        messages = to_messages(row, where, spec.format)
        lang = row_lang(row, messages)
        messages = with_system(fill_messages(messages, identity, lang, where), system_prompt)
        rows.append({"messages": messages, "lang": lang, "source": spec.name})
    return sample(rows, spec.count, rng)


# ---- the four code dimensions ------------------------------------------------------------

def numbered(code: str) -> str:
    return "\n".join(f"{i}: {line}" for i, line in enumerate(code.splitlines(), 1))


def dimension_prompt(item: dict) -> str:
    """The question for a probe of the dimensions suite (the same for every variant)."""
    kind = item["dimension"]
    if kind == "generation":
        return item["prompt"]
    if kind == "explanation":
        return f"Explain what this Python function does.\n```python\n{item['code']}\n```"
    if kind == "localisation":
        return ("This Python function has a bug on exactly one line. Which line is it? "
                f"Answer as `Line N`.\n```python\n{numbered(item['code'])}\n```")
    if kind == "repair":
        return ("This Python function has a bug. Fix it and give the corrected function in a "
                f"python code block.\n```python\n{item['code']}\n```")
    raise ValueError(f"unknown dimension {kind!r} in probe {item.get('id')}")


def dimension_reference(item: dict) -> str:
    """The ideal reply to `dimension_prompt(item)`."""
    kind = item["dimension"]
    if kind in ("generation", "repair"):
        return code_answer(item["solution"])
    if kind == "explanation":
        return item["reference"]
    return f"Line {item['faulty_line']}."


def humanevalpack_items(path: Path, limit: int | None) -> list[dict]:
    """Repair and localisation probes from HumanEvalPack (`buggy_solution`): the buggy program
    is the declaration plus the buggy body; its faulty line is the first line that differs
    from the canonical program; its test is the pack's `check` function."""
    import difflib

    items = []
    for where, row in _read_file(Path(path))[:limit]:
        for key in ("task_id", "declaration", "buggy_solution", "canonical_solution", "test",
                    "entry_point"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}: HumanEvalPack row without a string {key!r}")
        buggy = row["declaration"] + row["buggy_solution"]
        good = row["declaration"] + row["canonical_solution"]
        ops = difflib.SequenceMatcher(a=buggy.splitlines(), b=good.splitlines(),
                                      autojunk=False).get_opcodes()
        first = next((i1 for tag, i1, _, _, _ in ops if tag != "equal"), None)
        if first is None:
            continue
        test = [f"{row['test']}\ncheck({row['entry_point']})"]
        common = {"level": "pack", "code": buggy.rstrip(), "tests": test,
                  "entry_point": row["entry_point"], "bug_type": row.get("bug_type")}
        items.append({**common, "id": f"{row['task_id']}/repair", "dimension": "repair",
                      "solution": good.rstrip()})
        items.append({**common, "id": f"{row['task_id']}/localisation",
                      "dimension": "localisation", "faulty_line": first + 1})
    return items
