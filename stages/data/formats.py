"""Reading data sources into one chat form: {"messages": [...], "lang": "en"|"zh"}.

A source is a local .jsonl / .json (array) / .parquet / .csv file or a hub dataset
(`hf::OWNER/NAME` at a pinned revision). The format of each row is detected from its fields,
or given (`format:` in the mapping form of a source):

  self_cognition (ms-swift)   query, response[, tag]
  alpaca (LLaMA-Factory)      instruction, input, output[, system, history]
  sharegpt                    conversations: [{from, value}][, system, tools]; from: human, gpt,
                              system, function_call (a call as JSON), observation (its result)
  messages                    messages: [{role, content}][, tools]: OpenAI (tool_calls on the
                              assistant turn, role tool) and ms-swift (roles tool_call and
                              tool_response) tool conversations
  prompt_completion           prompt, completion (strings or message lists)
  code_task (built-in)        prompt, solution, tests
  preference                  chosen, rejected (+ conversations / messages / prompt), or
                              LLaMA-Factory v1's chosen_messages, rejected_messages

Any of the conversational formats may carry `label` (TRL / ms-swift KTO) or `kto_tag`
(LLaMA-Factory KTO): true marks a desirable reply, false an undesirable one.

Content is a string or a list of typed parts (OpenAI `{"type": "text", "text": ...}`,
LLaMA-Factory v1 `{"type": "text", "value": ...}` and its `tool_call` parts); any other part
(image, audio, reasoning, ...) is refused: this project trains text models. A turn's
`loss_weight` (LLaMA-Factory v1; ms-swift's `loss`, axolotl's `weight`) is 0 (context) or 1
(trained; assistant turns only).

Tool conversations become OpenAI/transformers messages: an assistant turn with
`tool_calls: [{"type": "function", "function": {"name", "arguments": {...}}}]`, a `tool` turn
with the result, and the row's `tools` as a list of `{"type": "function", "function": schema}`,
which the chat template renders.

A row field or turn field that no reader understands is an error naming the file, row and
field (it might change what the row means), unless it is one of HARMLESS_FIELDS /
HARMLESS_TURN_FIELDS (ids and provenance) or listed in the source's `ignore_fields`.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from stages.config import IdentityConfig, SourceConfig, lang_text
from stages.core.io import DataError, read_jsonl_lines

PLACEHOLDERS = {"{{NAME}}": "name", "{{AUTHOR}}": "author", "{{name}}": "name", "{{author}}": "author"}
LEFTOVER = re.compile(r"\{\{\s*\w+\s*\}\}")
CJK = re.compile(r"[\u4e00-\u9fff]")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "observation": "tool", "tool": "tool",
                  "function_call": "assistant"}
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# The fields each format reads; `tag`/`lang` (language) and `label`/`kto_tag` (KTO) are read
# for every format that has them.
FORMAT_FIELDS = {
    "messages": {"messages", "tools"},
    "sharegpt": {"conversations", "system", "tools"},
    "self_cognition": {"query", "response"},
    "code_task": {"prompt", "solution", "tests", "entry_point"},
    "alpaca": {"instruction", "input", "output", "system", "history"},
    "prompt_completion": {"prompt", "completion"},
    "preference": {"chosen", "rejected", "conversations", "messages", "prompt", "system",
                   "chosen_messages", "rejected_messages"},
}
COMMON_FIELDS = {"tag", "lang", "label", "kto_tag"}
# Known-harmless: identifiers and provenance that say nothing about what to train on.
HARMLESS_FIELDS = {"id", "idx", "uuid", "task_id", "source", "dataset", "_dataset_name",
                   "extra_info", "meta", "metadata", "category", "url", "license"}
TURN_FIELDS = {"role", "content", "tool_calls", "from", "value", "loss_weight", "loss", "weight"}
# tool_call_id pairs a result with its call and name says which tool answered: the Qwen
# templates render results in call order without either.
HARMLESS_TURN_FIELDS = {"id", "tool_call_id", "name"}
TEXT_PART_KEYS = ("text", "value")


@dataclass(frozen=True)
class SourceSpec:
    path: str
    count: int | None = None
    format: str = "auto"
    split: str = "train"
    revision: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    label: str | None = None
    ignore_fields: tuple[str, ...] = ()

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
                          dict(spec.columns), spec.name, tuple(spec.ignore_fields))
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
        # csv reads the newlines itself: a quoted cell may hold code with line breaks, which
        # splitting the text into lines first would cut out of the cell
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows, line = [], len(reader.fieldnames or ()) and reader.line_num + 1
        for row in reader:  # a row starts on the line after the previous one ended
            rows.append((f"{path}:line {line}", dict(row)))
            line = reader.line_num + 1
        return rows
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
    if ("chosen" in row and "rejected" in row) or ("chosen_messages" in row
                                                   and "rejected_messages" in row):
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


def row_format(row: dict, where: str, fmt: str = "auto", ignore: tuple[str, ...] = ()) -> str:
    """The row's format, after checking that every field of the row is one it reads (or
    known-harmless, or ignored on purpose)."""
    fmt = detect_format(row) if fmt == "auto" else fmt
    if fmt is None:
        raise DataError(
            f"{where}: unknown format (fields {sorted(row)}); expected one of messages, "
            "conversations, query/response, instruction/output, prompt/completion, "
            "prompt/solution/tests, chosen/rejected - or map your columns with `columns:`"
        )
    if fmt not in FORMAT_FIELDS:
        raise DataError(f"{where}: unknown format {fmt!r}")
    unknown = sorted(set(row) - FORMAT_FIELDS[fmt] - COMMON_FIELDS - HARMLESS_FIELDS - set(ignore))
    if unknown:
        raise DataError(
            f"{where}: field {unknown[0]!r} is not read by the {fmt} format"
            + (f" (nor {unknown[1:]})" if unknown[1:] else "")
            + "; it might change what the row means, so it is not ignored silently. Rename it "
            "with `columns:`, remove it, or, if it is only metadata, list it in the source's "
            f"`ignore_fields` (known-harmless: {sorted(HARMLESS_FIELDS)})"
        )
    return fmt


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _json(value, where: str, what: str):
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: {what} is not valid JSON ({err.msg}: {value[:80]!r})") from None


def tool_calls(value, where: str) -> list[dict]:
    """Calls as transformers' chat templates take them, from a call as JSON text, a call
    object or a list of them; a call is {name, arguments} or OpenAI's {type, function}."""
    value = _json(value, where, "a tool call")
    calls = [value] if isinstance(value, dict) else value
    if not isinstance(calls, list) or not calls:
        raise DataError(f"{where}: a tool call must be an object or a non-empty list of them")
    out = []
    for call in calls:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise DataError(f"{where}: tool call without a function name: {str(call)[:80]!r}")
        args = _json(fn.get("arguments", {}), where, f"the arguments of tool call {fn['name']!r}")
        if not isinstance(args, dict):
            raise DataError(f"{where}: the arguments of tool call {fn['name']!r} must be an "
                            f"object, got {type(args).__name__}")
        out.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out


def row_tools(row: dict, where: str) -> list[dict] | None:
    """The row's tool schemas as `{"type": "function", "function": schema}`, or None; from a
    JSON string (sharegpt, ms-swift) or a list (OpenAI)."""
    value = _json(row.get("tools"), where, "field 'tools'")
    if value in (None, "", []):
        return None
    value = [value] if isinstance(value, dict) else value
    if not isinstance(value, list):
        raise DataError(f"{where}: field 'tools' must be a list of tool schemas")
    out = []
    for tool in value:
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(
                tool.get("function"), dict) and tool["function"].get("name"):
            out.append(tool)
        elif isinstance(tool, dict) and isinstance(tool.get("name"), str) and tool["name"]:
            out.append({"type": "function", "function": tool})
        else:
            raise DataError(f"{where}: a tool schema needs a name: {str(tool)[:80]!r}")
    return out


def _parts(value, where: str, i: int) -> tuple[str, list[dict]]:
    """(text, tool calls) of a turn's content: a string, or a list of typed parts."""
    if value is None:
        return "", []
    if isinstance(value, str):
        return value, []
    if not isinstance(value, list):
        raise DataError(f"{where}: turn {i}: content must be a string or a list of parts, "
                        f"got {type(value).__name__}")
    texts, calls = [], []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = next((part[k] for k in TEXT_PART_KEYS if k in part), None)
            if not isinstance(text, str):
                raise DataError(f"{where}: turn {i}: a text part without a string 'text'")
            texts.append(text)
        elif kind in ("tool_call", "tool_calls"):  # LLaMA-Factory v1
            calls += tool_calls(part.get("value"), f"{where}: turn {i}")
        else:
            raise DataError(
                f"{where}: turn {i} has a content part of type {kind!r}; this project trains "
                "text models, so only text (and tool-call) parts are read: remove the part or "
                "the row")
    return "\n".join(texts), calls


def _weight(turn: dict, role: str, where: str, i: int) -> int:
    """1: trained (assistant turns), 0: context. LLaMA-Factory v1 writes loss_weight,
    ms-swift `loss`, axolotl `weight`; weights between 0 and 1 have no equivalent in TRL's loss."""
    keys = [k for k in ("loss_weight", "loss", "weight") if turn.get(k) is not None]
    if not keys:
        return 1
    value = turn[keys[0]]
    if isinstance(value, bool):
        value = int(value)
    if value not in (0, 1):
        raise DataError(f"{where}: turn {i}: {keys[0]}={value!r}; only 0 (context) and 1 "
                        "(trained) are supported: TRL's loss has no per-turn weight")
    if value and role != "assistant":  # LLaMA-Factory v1 writes 0 there
        raise DataError(f"{where}: turn {i}: {keys[0]}=1 on a {role} turn; only assistant "
                        "turns are trained, so set it to 0")
    return int(value)


def _turns(value, where: str, key: str) -> list[dict]:
    """A message list in messages, sharegpt or ms-swift form (or a single message) as
    transformers messages; consecutive assistant calls of the same weight become one turn."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, str):
        return [{"role": "assistant" if key != "prompt" else "user", "content": value}]
    if not isinstance(value, list):
        raise DataError(f"{where}: field {key!r} must be a list of turns, got {type(value).__name__}")
    out: list[dict] = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: every turn of {key!r} must be an object")
        unknown = sorted(set(turn) - TURN_FIELDS - HARMLESS_TURN_FIELDS)
        if unknown:
            raise DataError(f"{where}: turn {i} of {key!r}: field {unknown[0]!r} is not read; "
                            f"it might change what the turn means (known: {sorted(TURN_FIELDS)},"
                            f" harmless: {sorted(HARMLESS_TURN_FIELDS)})")
        if "from" in turn:
            tag, raw = turn["from"], turn.get("value")
            role = SHAREGPT_ROLES.get(tag, tag)
            text, calls = ("", tool_calls(raw, f"{where}: turn {i}")) if tag == "function_call" \
                else _parts(raw, where, i)
        else:
            role = turn.get("role")
            text, calls = _parts(turn.get("content"), where, i)
            if role == "tool_call":  # ms-swift: the call as JSON in the content
                role, text, calls = "assistant", "", tool_calls(text, f"{where}: turn {i}")
            elif role == "tool_response":
                role = "tool"
            if turn.get("tool_calls"):
                calls += tool_calls(turn["tool_calls"], f"{where}: turn {i}")
        message = {"role": role, "content": text}
        if calls:
            message["tool_calls"] = calls
        if role == "tool" and isinstance(turn.get("name"), str):
            message["name"] = turn["name"]
        if _weight(turn, role, where, i) == 0 and role == "assistant":
            message["loss_weight"] = 0
        last = out[-1] if out else None
        if (calls and last and last["role"] == "assistant" and not text
                and last.get("loss_weight") == message.get("loss_weight")):
            last["tool_calls"] = last.get("tool_calls", []) + calls
            continue
        out.append(message)
    return out


def to_messages(row: dict, where: str, fmt: str = "auto",
                ignore: tuple[str, ...] = ()) -> list[dict]:
    """One source row as chat messages; `where` (file:line) names it in errors; a field in
    `ignore` is one the user knows to be metadata."""
    fmt = row_format(row, where, fmt, ignore)
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
    pref = to_preference(row, where)
    return pref["prompt"] + pref["chosen"]


def kto_label(row: dict, where: str) -> bool | None:
    """A KTO row's desirability (`label`, or LLaMA-Factory's `kto_tag`), None without one."""
    keys = [k for k in ("label", "kto_tag") if k in row]
    if not keys:
        return None
    value = row[keys[0]]
    if not isinstance(value, bool):
        raise DataError(f"{where}: KTO field {keys[0]!r} must be true (desirable) or false "
                        f"(undesirable), got {value!r}")
    return value


def to_kto(row: dict, where: str, fmt: str = "auto", ignore: tuple[str, ...] = ()) -> dict:
    """{prompt, completion, label} of a KTO row: the completion is its last assistant turn."""
    label = kto_label(row, where)
    messages = to_messages(row, where, fmt, ignore)
    if label is None or not messages or messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: a KTO row needs `label` (or `kto_tag`) and a conversation "
                        "ending with the assistant reply it labels")
    if row_tools(row, where) or any(m.get("tool_calls") or m["role"] == "tool"
                                    for m in messages):
        raise DataError(f"{where}: tool calls in preference data are not supported; train "
                        "tool use with SFT rows")
    return {"prompt": messages[:-1], "completion": messages[-1:], "label": label}


def to_preference(row: dict, where: str) -> dict:
    """{prompt, chosen, rejected} as message lists, from the common preference layouts:
    LLaMA-Factory (conversations + chosen/rejected turns; v1: chosen_messages and
    rejected_messages), messages lists whose last turn differs, or TRL's prompt/chosen/rejected."""
    if "chosen_messages" in row and "rejected_messages" in row:
        chosen_key, rejected_key = "chosen_messages", "rejected_messages"
    elif "chosen" in row and "rejected" in row:
        chosen_key, rejected_key = "chosen", "rejected"
    else:
        raise DataError(f"{where}: a preference row needs 'chosen' and 'rejected' (or "
                        "'chosen_messages' and 'rejected_messages')")
    if "tools" in row:
        raise DataError(f"{where}: tool conversations in preference data are not supported; "
                        "train tool use with SFT rows")
    if "conversations" in row:
        prompt = _turns(row["conversations"], where, "conversations")
    elif "messages" in row:
        prompt = _turns(row["messages"], where, "messages")
    elif "prompt" in row:
        prompt = _turns(row["prompt"], where, "prompt")
    else:
        prompt = []
    if row.get("system") and not (prompt and prompt[0]["role"] == "system"):
        prompt = [{"role": "system", "content": row["system"]}, *prompt]
    chosen = _turns(row[chosen_key], where, chosen_key)
    rejected = _turns(row[rejected_key], where, rejected_key)
    if not any(m["role"] != "system" for m in prompt):
        # full conversations in chosen and rejected: split off the shared prefix
        shared = 0
        while (shared < min(len(chosen), len(rejected)) - 1
               and chosen[shared] == rejected[shared]):
            shared += 1
        prompt, chosen, rejected = prompt + chosen[:shared], chosen[shared:], rejected[shared:]
    if not prompt or not chosen or not rejected:
        raise DataError(f"{where}: preference row without a prompt, a chosen or a rejected turn")
    if any(m.get("tool_calls") or m["role"] == "tool" for m in prompt + chosen + rejected):
        raise DataError(f"{where}: tool calls in preference data are not supported; train "
                        "tool use with SFT rows")
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
        if row_tools(row, where) or kto_label(row, where) is not None:
            raise DataError(f"{where}: tool schemas and KTO labels are curate's to handle, not "
                            "part of the built-in corpus; list the file in data.sources")
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
    raise DataError(f"unknown dimension {kind!r} in probe {item.get('id')}")


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
