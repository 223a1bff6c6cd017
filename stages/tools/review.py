"""review: a blind A/B review of two variants' replies in the browser, served on 127.0.0.1.

Reads   params.yaml (paths.metrics), metrics/tasks/<a>/<suite>.jsonl and <b>/<suite>.jsonl
        (the replies eval wrote), data/reviews/<suite>-<a>-vs-<b>.jsonl (earlier choices)
Writes  one line per choice to data/reviews/<suite>-<a>-vs-<b>.jsonl:
        {"id", "a", "b", "winner": "a"|"b"|"tie", "reviewer", "time"}
Run     python -m stages.tools.review --suite code --a base --b sft [--n 100] [--seed 0]
        [--reviewer NAME] [--port 0]     # prints the address; Ctrl-C stops it

One probe at a time: the prompt, then the two replies side by side, which variant is left
drawn per item from --seed (names never reach the page), code highlighted by Pygments
(its CSS served from here: nothing from the network) and a line diff of the two replies'
code (difflib). Keys: 1 or ← left, 2 or → right, t tie, s skip (the item comes back after
the others), d shows the diff. Each choice is one os.write of a whole line to the file
opened O_APPEND, then fsync: a killed page or server loses at most the choice being made,
never half a line, and two reviewers (servers) may append to one file. Reopening resumes at
this reviewer's first unjudged item of the same --n/--seed sample.
"""

from __future__ import annotations

import argparse
import difflib
import getpass
import html
import json
import os
import random
import re
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import get_args
from urllib.parse import parse_qs

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound

from stages.config import PARAMS_FILE, REVIEWS_DIR, PathsConfig, Suite, Variant, read_params
from stages.core.io import DataError, MissingInput, UserError, read_jsonl
from stages.stats.reviews import judged_rows, read_judgments, review_file

FENCE = re.compile(r"```([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
STYLE = HtmlFormatter(style="default").get_style_defs(".highlight")


@dataclass
class Review:
    """One review session: the sampled items, their sides, and the file choices go to."""

    suite: str
    a: str
    b: str
    reviewer: str
    path: Path
    items: list[dict]
    """[{"id", "prompt", "a", "b", "a_left"}] in the order the page shows them."""
    done: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> dict | None:
        pending = [it for it in self.items if it["id"] not in self.done]
        fresh = [it for it in pending if it["id"] not in self.skipped]
        if fresh:
            return fresh[0]
        # only skipped items are left: show them again, oldest skip first
        return next((it for pid in self.skipped for it in pending if it["id"] == pid), None)

    def choose(self, pid: str, side: str) -> None:
        item = next((it for it in self.items if it["id"] == pid), None)
        if item is None:
            raise DataError(f"unknown probe id {pid!r} for this review of {self.suite}")
        if side not in ("left", "right", "tie"):
            raise DataError(f"choice {side!r} is not left, right or tie")
        winner = "tie" if side == "tie" else "a" if (side == "left") == item["a_left"] else "b"
        with self.lock:
            if pid in self.done:  # a second click or a second tab: the first choice stands
                return
            append_line(self.path, {"id": pid, "a": self.a, "b": self.b, "winner": winner,
                                    "reviewer": self.reviewer,
                                    "time": datetime.now(UTC).isoformat(timespec="seconds")})
            self.done.add(pid)
            if pid in self.skipped:
                self.skipped.remove(pid)

    def skip(self, pid: str) -> None:
        with self.lock:
            if pid in self.skipped:
                self.skipped.remove(pid)
            self.skipped.append(pid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--a", required=True, help="the variant b is compared with (e.g. base)")
    parser.add_argument("--b", required=True)
    parser.add_argument("--n", type=int, default=100, help="probes to sample (all if fewer)")
    parser.add_argument("--seed", type=int, default=0, help="draws the sample and the sides")
    parser.add_argument("--reviewer", default=getpass.getuser())
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--reviews", type=Path, default=Path(REVIEWS_DIR))
    args = parser.parse_args(argv)

    paths = PathsConfig.model_validate(read_params(args.params)["paths"])
    review = open_review(paths, args.reviews, args.suite, args.a, args.b, args.n, args.seed,
                         args.reviewer)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(review))
    print(f"review of {args.suite}: {len(review.done)}/{len(review.items)} judged by "
          f"{args.reviewer}; choices go to {review.path}", flush=True)
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def open_review(paths: PathsConfig, reviews: Path, suite: str, a: str, b: str, n: int,
                seed: int, reviewer: str) -> Review:
    """The sample of `n` probes both variants replied to, with this reviewer's earlier
    choices marked done; every row already in the file is checked first."""
    problems = []
    if suite not in get_args(Suite):
        problems.append(f"unknown suite {suite!r}; known: {', '.join(get_args(Suite))}")
    for name, v in (("--a", a), ("--b", b)):
        if v not in get_args(Variant):
            problems.append(f"unknown variant {name} {v!r}; known: {', '.join(get_args(Variant))}")
    if a == b:
        problems.append(f"--a and --b are both {a!r}; compare two different variants")
    if n < 1:
        problems.append(f"--n must be >= 1 (got {n})")
    if not reviewer.strip():
        problems.append("--reviewer must be a non-empty name")
    if problems:
        raise DataError("; ".join(problems))
    rows = {}
    for v in (a, b):
        tasks = paths.tasks_file(v, suite)
        if not tasks.exists():
            raise MissingInput(f"{tasks} is missing: run `dvc repro eval@{v}-{suite}` (or "
                               "`dvc pull`) first")
        rows[v] = judged_rows(read_jsonl(tasks))
        lacking = [pid for pid, r in rows[v].items() if "reply" not in r or "prompt" not in r]
        if lacking:
            raise DataError(f"{tasks}: probe {lacking[0]!r} has no prompt or reply (suite "
                            f"{suite} scores something else): nothing to review")
    ids = [pid for pid in rows[a] if pid in rows[b]]
    if not ids:
        raise DataError(f"{suite}: {a} and {b} share no probe ids; rerun eval for both")
    rng = random.Random(seed)
    sample = rng.sample(ids, min(n, len(ids)))
    items = [{"id": pid, "prompt": rows[a][pid]["prompt"], "a": rows[a][pid]["reply"],
              "b": rows[b][pid]["reply"], "a_left": rng.random() < 0.5} for pid in sample]
    path = review_file(reviews, suite, a, b)
    earlier = read_judgments(path, a, b, set(ids))
    return Review(suite, a, b, reviewer, path, items,
                  done={r["id"] for r in earlier if r["reviewer"] == reviewer} & set(sample))


def append_line(path: Path, row: dict) -> None:
    """One whole line in one write to a file opened O_APPEND (the kernel places it at the end
    however many writers), then fsync: it is on disk before the page moves on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"{path}: short write; the last line may be partial, check it")
        os.fsync(fd)
    finally:
        os.close(fd)


def handler(review: Review) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/style.css":
                self.reply(200, "text/css", STYLE + PAGE_CSS)
            elif self.path == "/":
                self.reply(200, "text/html", page(review))
            else:
                self.reply(404, "text/plain", f"no page {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            size = int(self.headers.get("Content-Length", 0))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(size).decode()).items()}
            try:
                if self.path == "/choose":
                    review.choose(form.get("id", ""), form.get("choice", ""))
                elif self.path == "/skip":
                    review.skip(form.get("id", ""))
                else:
                    return self.reply(404, "text/plain", f"no page {self.path}")
            except UserError as err:
                return self.reply(400, "text/plain", str(err))
            self.send_response(303)
            self.send_header("Location", "/")
            self.end_headers()

        def reply(self, status: int, kind: str, text: str) -> None:
            body = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # quiet: the terminal shows the address only
            pass

    return Handler


def code_of(reply: str) -> str | None:
    """The fenced code blocks of a reply, joined; None when it has none."""
    blocks = [m.group(2) for m in FENCE.finditer(reply)]
    return "\n".join(blocks) if blocks else None


def render_reply(reply: str) -> str:
    """Prose escaped, fenced code highlighted by its fence's language (python when unnamed)."""
    out, at = [], 0
    for m in FENCE.finditer(reply):
        out.append(f'<div class="prose">{html.escape(reply[at:m.start()])}</div>')
        try:
            lexer = get_lexer_by_name(m.group(1) or "python")
        except ClassNotFound:
            lexer = TextLexer()
        out.append(highlight(m.group(2), lexer, HtmlFormatter()))
        at = m.end()
    out.append(f'<div class="prose">{html.escape(reply[at:])}</div>')
    return "".join(out)


def page(review: Review) -> str:
    item = review.current()
    total, done = len(review.items), len(review.done)
    bar = (f'<div class="progress"><div id="bar" style="width:{100 * done / total:.1f}%">'
           f'</div></div><p id="count">{done} / {total} judged</p>')
    if item is None:
        body = f'{bar}<h2 id="finished">All {total} items judged. Thank you.</h2>'
        return PAGE.format(body=body)
    left, right = (item["a"], item["b"]) if item["a_left"] else (item["b"], item["a"])
    codes = code_of(left), code_of(right)
    diff = ""
    if codes[0] is not None and codes[1] is not None:
        table = difflib.HtmlDiff(wrapcolumn=70).make_table(
            codes[0].splitlines(), codes[1].splitlines(), "left", "right", context=True)
        diff = f'<div id="diff" hidden><h3>Code diff (d hides it)</h3>{table}</div>'
    pid = html.escape(item["id"], quote=True)
    body = f"""{bar}
<p class="probe">probe <code id="probe">{html.escape(item["id"])}</code></p>
<h3>Prompt</h3><div class="prompt">{html.escape(item["prompt"])}</div>
<div class="sides">
  <div class="side" id="left"><h3>Left</h3>{render_reply(left)}</div>
  <div class="side" id="right"><h3>Right</h3>{render_reply(right)}</div>
</div>
{diff}
<form method="post" action="/choose" id="choose">
  <input type="hidden" name="id" value="{pid}">
  <button name="choice" value="left" id="btn-left">Left better (1 / ←)</button>
  <button name="choice" value="tie" id="btn-tie">Tie (t)</button>
  <button name="choice" value="right" id="btn-right">Right better (2 / →)</button>
</form>
<form method="post" action="/skip" id="skip">
  <input type="hidden" name="id" value="{pid}">
  <button id="btn-skip">Skip (s)</button>
  {'<button type="button" id="btn-diff">Diff (d)</button>' if diff else ''}
</form>"""
    return PAGE.format(body=body)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Blind review</title>
<link rel="stylesheet" href="/style.css"></head>
<body>{body}
<script>
const keys = {{"1": "btn-left", "ArrowLeft": "btn-left", "2": "btn-right",
              "ArrowRight": "btn-right", "t": "btn-tie", "s": "btn-skip"}};
function toggleDiff() {{
  const d = document.getElementById("diff");
  if (d) d.hidden = !d.hidden;
}}
const diffButton = document.getElementById("btn-diff");
if (diffButton) diffButton.addEventListener("click", toggleDiff);
document.addEventListener("keydown", (e) => {{
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "d") return toggleDiff();
  const button = document.getElementById(keys[e.key]);
  if (button) button.click();
}});
</script></body></html>
"""

PAGE_CSS = """
body { font-family: sans-serif; margin: 1.5em; }
.progress { background: #ddd; height: 10px; border-radius: 5px; }
#bar { background: #3a7; height: 10px; border-radius: 5px; }
.prompt, .prose { white-space: pre-wrap; }
.prompt { background: #f4f4f4; padding: .5em; }
.sides { display: flex; gap: 1em; }
.side { flex: 1; min-width: 0; border: 1px solid #ccc; padding: .5em; overflow-x: auto; }
.highlight pre { padding: .4em; overflow-x: auto; }
form { display: inline-block; margin: 1em .5em 0 0; }
button { font-size: 1em; padding: .4em 1em; }
table.diff { font-family: monospace; font-size: .85em; }
.diff_add { background: #cfc; } .diff_chg { background: #ff8; } .diff_sub { background: #fcc; }
"""


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
