"""Atomic writes and small file helpers shared by the stages.

A stage writes into a temporary sibling and renames it into place only when the whole
output is complete, so a failed or killed stage never leaves a partial artifact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class UserError(Exception):
    """A problem the user can fix, with the fix in the message: `run_stage` prints the message
    alone. Anything else that escapes a stage is a bug and keeps its traceback."""


class DataError(UserError, ValueError):
    """Bad input data: the message names the file, the row and the fix."""


class MissingInput(UserError, FileNotFoundError):
    """An input file or folder that is not there: the message says what makes it."""


def read_jsonl_lines(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed value) for every non-blank line of a UTF-8 JSON Lines file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte {err.start}); re-encode the file as UTF-8") from None
    return parse_jsonl(text, path)


def parse_jsonl(text: str, source: object) -> list[tuple[int, object]]:
    """(line number, parsed value) for every non-blank line of JSON Lines text; `source` names
    it in errors (a path, or a path at a git revision)."""
    rows = []
    # split on newlines only: str.splitlines also splits on U+2028, U+0085 and other
    # characters that JSON strings may hold unescaped (json.dumps(ensure_ascii=False) does)
    for lineno, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{source}:{lineno}: not valid JSON ({err.msg}); fix that line") from None
    return rows


def read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in read_jsonl_lines(path)]


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_dir(path: Path) -> str:
    """One hash over every file's relative path and content, independent of listing order."""
    h = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(file.relative_to(root).as_posix().encode())
        h.update(sha256_file(file).encode())
    return h.hexdigest()


def git_sha() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
