"""GRPO's rewards: the suites' own judges on curated training rows, and the stricter hidden
check that measures how often the training reward was fooled (`reward_hack_rate`).

- code: the `code` suite's judge. The first fenced code block of the reply (stages.generation.
  common.extract_code) runs in the sandbox (stages.sandbox.execute.run_many: the sample only answers calls
  with plain values; every assert is decided here) against the task's VISIBLE tests: all but
  its last one. 1.0 when every one passes, else 0.0.
- identity: the `identity` suite's judge (stages.suites.identity.identity_ok): the reply names
  the configured identity and no other maker. 1.0 or 0.0.
- format: the reply holds a fenced code block that parses: the shape the code judge needs.
- hidden check (never a reward): the task's held-out last test, the visible ones, and
  `edge_cases` inputs derived from the tests' own inputs (0, negated, +1, empty, reversed...),
  whose expected values the task's reference solution gives, computed in the sandbox before
  training. A reply the code reward accepts and this check rejects is a reward hack.

A reward that does not apply to a row (code on an identity question) is None, which TRL
leaves out of that row's sum.
"""

from __future__ import annotations

import ast
import math
import re

from stages.config import IdentityConfig
from stages.data.cleaning import python_parses
from stages.generation.common import FENCE, extract_code
from stages.sandbox.execute import MEMORY_BYTES, SampleFailed, remote_session, run_many
from stages.suites.identity import identity_ok

CODE, IDENTITY = "code", "identity"  # the kinds of training prompt


def visible_tests(tests: list[str]) -> list[str]:
    """The tests the reward sees: all but the last, which the hidden check keeps back (a task
    with one test shows it)."""
    return tests[:-1] if len(tests) > 1 else tests


def reply_text(completion) -> str:
    """A completion as TRL passes it: the assistant message list (conversational data) or text."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if m.get("role") == "assistant")
    return str(completion)


def code_rewards(tasks: list[dict | None], replies: list[str], timeout_s: float,
                 unsafe: bool) -> list[float | None]:
    """1.0 / 0.0 per reply on its task's visible tests; None where there is no task."""
    codes = [extract_code(r) if t is not None else None for t, r in zip(tasks, replies, strict=True)]
    jobs = [(c, visible_tests(t["tests"])) for t, c in zip(tasks, codes, strict=True)
            if t is not None and c is not None]
    outcomes = iter(run_many(jobs, timeout_s, "grpo: code reward", unsafe) if jobs else [])
    return [None if t is None else 0.0 if c is None else float(next(outcomes).passed)
            for t, c in zip(tasks, codes, strict=True)]


def hidden_rejects(tasks: list[dict], replies: list[str], timeout_s: float,
                   unsafe: bool) -> list[bool]:
    """Whether the stricter hidden check (task["hidden"]: every test plus the edge cases)
    rejects each reply."""
    jobs = [(extract_code(r) or "", t["hidden"]) for t, r in zip(tasks, replies, strict=True)]
    if not jobs:
        return []
    return [not o.passed for o in run_many(jobs, timeout_s, "grpo: hidden check", unsafe)]


def identity_rewards(langs: list[str | None], replies: list[str], identity: IdentityConfig,
                     original: IdentityConfig) -> list[float | None]:
    return [None if lang is None else float(identity_ok(r, lang, identity, original)[0])
            for lang, r in zip(langs, replies, strict=True)]


def format_rewards(kinds: list[str], replies: list[str]) -> list[float | None]:
    out = []
    for kind, reply in zip(kinds, replies, strict=True):
        if kind != CODE:
            out.append(None)
            continue
        match = FENCE.search(reply)
        out.append(float(match is not None and parses(match.group(1))))
    return out


def parses(code: str) -> bool:
    return bool(code.strip()) and python_parses(code)


# ---- the hidden check's edge cases --------------------------------------------------------


def test_calls(tests: list[str], entry_point: str) -> list[list]:
    """The literal argument lists of `entry_point(...)` calls in `tests` (`assert f(1, [2])
    == 3` gives [1, [2]]); calls with a non-literal argument are left out."""
    calls = []
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == entry_point and not node.keywords):
                try:
                    calls.append([ast.literal_eval(a) for a in node.args])
                except ValueError:
                    continue
    return calls


def mutations(value) -> list:
    """Nearby inputs of the same type: the edges a solution fitted to the tests misses."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [0, -value, value + 1, value * 10 + 7]
    if isinstance(value, float):
        return [0.0, -value, value + 0.5]
    if isinstance(value, str):
        return ["", value[::-1], value.upper(), value + value[:1]]
    if isinstance(value, (list, tuple)):
        kind = type(value)
        return [kind(), kind(value[::-1]), kind([*value, *value[:1]])]
    return []


def edge_inputs(calls: list[list], count: int) -> list[list]:
    """Up to `count` argument lists, each a test call with one argument mutated, taken round
    robin over the calls so every test contributes; none equal to a test's own call."""
    per_call = [[[*args[:i], m, *args[i + 1:]] for i, a in enumerate(args) for m in mutations(a)]
                for args in calls]
    out = []
    for depth in range(max((len(c) for c in per_call), default=0)):
        for options in per_call:
            if depth < len(options) and options[depth] not in calls and options[depth] not in out:
                out.append(options[depth])
    return out[:count]


def hidden_tests(task: dict, count: int, timeout_s: float, sandbox: bool) -> list[str]:
    """Every test of the task, then an assert per edge input whose value the reference
    solution returns (computed in the sandbox; inputs it raises on, or values that do not
    write back as literals, are left out)."""
    entry, solution = task["entry_point"], task.get("solution")
    inputs = edge_inputs(test_calls(task["tests"], entry), count) if solution and count else []
    asserts = []
    if inputs:
        with remote_session({"code": solution}, timeout_s, MEMORY_BYTES, sandbox, None) as remote:
            try:
                fn = remote.namespace()[entry]
            except (SampleFailed, KeyError):
                fn = None
            for args in inputs if fn else []:
                try:
                    value = fn(*args)
                except (SampleFailed, Exception):
                    continue
                if literal(value):
                    call = ", ".join(map(repr, args))
                    asserts.append(f"assert {entry}({call}) == {value!r}")
    return [*task["tests"], *asserts]


def literal(value) -> bool:
    """True when repr(value) reads back as the same value (no NaN, no objects)."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    try:
        return ast.literal_eval(repr(value)) == value and not re.search(r"\bnan\b|\binf\b",
                                                                         repr(value))
    except (ValueError, SyntaxError, RecursionError):
        return False
