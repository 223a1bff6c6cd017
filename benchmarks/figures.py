"""README.md's measured figures, rendered from the records that measured them.

    python -m benchmarks.figures            # rewrite README.md's regions
    python -m benchmarks.figures --check    # exit 1 naming each region that differs or is stale

Every figure in README.md that a run measured sits between `<!-- figures:NAME -->` and
`<!-- /figures:NAME -->` and is made here (REGIONS) from a record that carries its commit
and date, which the region quotes ("measured at <commit>, <date>"):

- a benchmark record, benchmarks/results/<name>.json: `commit` is HEAD when it ran, `dirty`
  the tracked files that differed from HEAD then (benchmarks/record.py);
- the committed metrics as dvc.lock pins them: the commit that last changed dvc.lock, its
  date, and the files read at that commit (`git show`), so that metrics not yet committed
  never borrow its name.

Staleness. A region also names the paths its figures measure. It is stale when a commit that
is not an ancestor of its record's commit changed one of them: with
last = `git log -1 --format=%H -- <paths>`, `git merge-base --is-ancestor last <commit>` must
hold (a side branch's change merged after the record is not its ancestor either) unless
those paths at `last` are as they were at the record's commit (a change reverted), and none
of them may be in the record's `dirty`. For the metrics regions the paths are every dependency
dvc.lock lists that git tracks (code, data, params.yaml), which is what
`python -m stages.tools.compose --check` verifies by hash. Both need git history: outside git or
in a shallow clone (`git clone --depth 1`) this script says so and stops, and
tests/test_figures.py skips with that reason.

`python -m benchmarks.render` runs this after rendering BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks import record, render  # record puts this checkout first on sys.path
from stages.tools.report import num, signed

REPO = record.REPO
README = REPO / "README.md"
REGION = re.compile(r"<!-- figures:(?P<name>[\w-]+) -->(?P<body>.*?)<!-- /figures:(?P=name) -->",
                    re.S)
# What a sweep measures: the whole pipeline, its config and the script.
SWEEP_MEASURES = ("stages", "conf", "data/sources", "dvc.yaml", "params.yaml",
                  "benchmarks/sweep.py")
METRICS_RERUN = ("`dvc repro`, commit dvc.lock and metrics/, then `python -m benchmarks.figures` "
                 "and commit README.md")


@dataclass(frozen=True)
class Figures:
    text: str
    """The region's body, "measured at ..." included."""
    commit: str | None
    """The commit the figures measured; None: nothing measured (the text says what to run)."""
    measures: tuple[str, ...] = ()
    """The paths whose change after `commit` makes the figures stale."""
    dirty: tuple[str, ...] = ()
    """Tracked files that differed from `commit` when it was measured."""
    rerun: str = ""
    """What refreshes the record."""


class History(Exception):
    """No git history to read: not a checkout, or a shallow clone."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming regions that differ or are stale")
    args = parser.parse_args(argv)
    try:
        text = README.read_text(encoding="utf-8")
        if args.check:
            problems = differences(REPO, text) + stale(REPO, text)
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1 if problems else 0
        new = fill(text, rendered(REPO, text))
    except History as err:
        print(f"README.md's figures not rendered: {err}", file=sys.stderr)
        return 1
    if new != text:
        README.write_text(new, encoding="utf-8")
    print(f"wrote {README.relative_to(REPO)} ({len(regions(text))} regions)")
    return 0


# ---- regions ---------------------------------------------------------------------------------

def regions(text: str) -> dict[str, str]:
    """{name: body} of every region, in order; one error naming every unknown, repeated or
    unclosed one."""
    found, problems = {}, []
    for match in REGION.finditer(text):
        name = match["name"]
        if name in found:
            problems.append(f"region {name} appears twice")
        elif name not in REGIONS:
            problems.append(f"region {name}: unknown (known: {', '.join(REGIONS)})")
        found[name] = match["body"]
    opened = re.findall(r"<!-- figures:([\w-]+) -->", text)
    problems += [f"region {name}: no closing <!-- /figures:{name} -->"
                 for name in opened if name not in found]
    if problems:
        raise ValueError("README.md: " + "; ".join(problems))
    return found


def rendered(repo: Path, text: str) -> dict[str, Figures]:
    return {name: REGIONS[name](repo) for name in regions(text)}


def expected(body: str, fig: Figures) -> str:
    """The body a region should have: a region that opens on its own line keeps its text on
    lines of its own; one inside a sentence stays inline."""
    return f"\n{fig.text.strip()}\n" if body.startswith("\n") else fig.text.strip()


def fill(text: str, figures: dict[str, Figures]) -> str:
    return REGION.sub(lambda m: f"<!-- figures:{m['name']} -->"
                      f"{expected(m['body'], figures[m['name']])}<!-- /figures:{m['name']} -->",
                      text)


def differences(repo: Path, text: str) -> list[str]:
    """A line per region whose text is not what its record makes, and per missing region."""
    found = regions(text)
    want = rendered(repo, text)
    problems = [f"README.md region {name} differs from what its record makes; "
                "run `python -m benchmarks.figures`"
                for name, body in found.items() if body != expected(body, want[name])]
    problems += [f"README.md has no region {name} (<!-- figures:{name} -->)"
                 for name in REGIONS if name not in found]
    return problems


def stale(repo: Path, text: str) -> list[str]:
    """A line per region whose record is older than the last change to what it measures."""
    problems = []
    for name, fig in rendered(repo, text).items():
        problem = staleness(repo, fig)
        if problem:
            problems.append(f"README.md region {name}: {problem}; rerun: {fig.rerun}")
    return problems


def staleness(repo: Path, fig: Figures) -> str | None:
    if fig.commit is None:
        return None
    history(repo)
    dirty = [p for p in fig.dirty if any(p == m or p.startswith(m.rstrip("/") + "/")
                                         for m in fig.measures)]
    if dirty:
        return f"measured with uncommitted changes to {', '.join(dirty)}"
    if git(repo, "cat-file", "-e", f"{fig.commit}^{{commit}}") is None:
        return f"its commit {fig.commit[:10]} is not in this history"
    last = git(repo, "log", "-1", "--format=%H", "--", *fig.measures)
    if not last or is_ancestor(repo, last, fig.commit):
        return None
    changed = git(repo, "diff", "--name-only", fig.commit, last, "--", *fig.measures) or ""
    if not changed:  # changed after it, then changed back: the code measured is the code here
        return None
    subject = git(repo, "log", "-1", "--format=%s", last) or ""
    return (f"measured at {fig.commit[:10]}, but {last[:10]} ({subject[:60]}) changed "
            f"{', '.join(changed.split()[:5]) or 'what it measures'} after it")


# ---- git ---------------------------------------------------------------------------------

def git(repo: Path, *args: str) -> str | None:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def history(repo: Path) -> None:
    """Raise History unless `repo` is a git checkout with its whole history."""
    if git(repo, "rev-parse", "--git-dir") is None:
        raise History(f"{repo} is not a git checkout")
    if git(repo, "rev-parse", "--is-shallow-repository") == "true":
        raise History(f"{repo} is a shallow clone: the commits that changed the measured code "
                      "are not all here (`git fetch --unshallow` fetches them)")


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", older, newer], cwd=repo,
                          capture_output=True).returncode == 0


def locked(repo: Path) -> tuple[str, str]:
    """(sha, date) of the last commit that changed dvc.lock: the committed run's commit."""
    history(repo)
    line = git(repo, "log", "-1", "--format=%H %cI", "--", "dvc.lock")
    if not line:
        raise ValueError("dvc.lock has never been committed: no committed run to quote")
    sha, date = line.split()
    return sha, date


def show(repo: Path, commit: str, path: str) -> str | None:
    return git(repo, "show", f"{commit}:{path}")


def show_json(repo: Path, commit: str, path: str) -> dict:
    text = show(repo, commit, path)
    if text is None:
        raise ValueError(f"{path} is not in commit {commit[:10]}")
    return json.loads(text)


def ls(repo: Path, commit: str, folder: str) -> list[str]:
    return (git(repo, "ls-tree", "-r", "--name-only", commit, "--", folder) or "").split()


def lock_deps(repo: Path, commit: str) -> tuple[str, ...]:
    """Every dependency dvc.lock lists at `commit` that git tracks there."""
    lock = yaml.safe_load(show(repo, commit, "dvc.lock") or "") or {}
    paths = {d["path"] for stage in lock.get("stages", {}).values()
             for d in stage.get("deps", [])}
    return tuple(sorted(p for p in paths if ls(repo, commit, p)))


def measured(commit: str, date: str) -> str:
    return f"measured at `{commit[:10]}`, {date[:10]}"


def load_record(name: str) -> dict | None:
    path = render.RESULTS / f"{name}.json"
    if not path.exists():
        return None
    rec = json.loads(path.read_text(encoding="utf-8"))
    if not rec.get("commit"):
        raise ValueError(f"{path.relative_to(REPO)} carries no commit (written before records "
                         f"did); rerun it before README.md quotes it: {render.BENCHMARKS[name]}")
    return rec


# ---- the regions --------------------------------------------------------------------------

def pipeline(repo: Path) -> Figures:
    """The committed run's stage times, as its stages recorded them."""
    commit, date = locked(repo)
    metrics = yaml.safe_load(show(repo, commit, "params.yaml"))["paths"]["metrics"]
    base = show_json(repo, commit, f"{metrics}/base.json")["base"]["train_s"]
    phases = {Path(p).stem: show_json(repo, commit, p)["sft"][Path(p).stem]["train_s"]
              for p in ls(repo, commit, f"{metrics}/sft") if re.fullmatch(
                  rf"{re.escape(metrics)}/sft/[^/]+\.json", p)}
    dpo = show_json(repo, commit, f"{metrics}/dpo.json")["dpo"]["train_s"]
    costs = [p for p in ls(repo, commit, f"{metrics}/cost") if p.endswith(".json")]
    evals = sum(v["wall_s"] for p in costs for k, v in show_json(repo, commit, p).items() if k != "run")
    sft = ", ".join(f"{render.number(s)} s ({phase})" for phase, s in sorted(phases.items()))
    text = (f"The committed run's stages recorded, as `dvc.lock` pins it "
            f"({measured(commit, date)}): base trained for {render.number(base)} s, sft for "
            f"{sft}, dpo for {render.number(dpo)} s, and the {len(costs)} evals took "
            f"{render.number(round(evals, 1))} s of generation and judging in all. The stages "
            "record neither the machine nor its load, and the times leave out loading, "
            "curate and DVC; `python -m benchmarks.pipeline_bench` times a fresh clone's "
            "`dvc repro` stage by stage, with the machine (`BENCHMARKS.md`).")
    return Figures(text, commit, lock_deps(repo, commit), rerun=METRICS_RERUN)


def learned_forgot(repo: Path) -> Figures:
    """The committed run's learned-and-forgot line per variant, as the PR report writes it."""
    commit, date = locked(repo)
    metrics = yaml.safe_load(show(repo, commit, "params.yaml"))["paths"]["metrics"]
    entry = show_json(repo, commit, f"{metrics}/summary.json").get("learned_forgot", {})
    learned, forgot = entry.get("learned") or {}, entry.get("forgot") or {}
    lines = []
    for v in ("sft", "dpo"):
        parts = []
        if v in learned:
            parts.append(f"learned {learned['suite']} {learned['metric']} "
                         f"{signed(learned[f'{v}_delta'])} [{num(learned[f'{v}_ci95_low'])}, "
                         f"{num(learned[f'{v}_ci95_high'])}]")
        if v in forgot:
            parts.append(f"retention ({', '.join(forgot['suites'])}) "
                         f"{signed(forgot[f'{v}_delta'])} [{num(forgot[f'{v}_ci95_low'])}, "
                         f"{num(forgot[f'{v}_ci95_high'])}]")
        if parts:
            lines.append(f'{v} "{"; ".join(parts)}"')
    text = (f"the committed run, {measured(commit, date)}: "
            + (", ".join(lines) or "no target or retention suite ran"))
    return Figures(text, commit, lock_deps(repo, commit), rerun=METRICS_RERUN)


def coverage(repo: Path) -> Figures:
    """The lowest simulated coverage of each CI family (labels "<family>, <cell>: <method>",
    the replaced method's with " (old)")."""
    rec = load_record("paired_coverage")
    if rec is None:
        raise ValueError(f"no paired_coverage record: {render.BENCHMARKS['paired_coverage']}")
    lowest: dict[tuple[str, str], float] = {}
    cells: dict[str, int] = {}
    for f in rec["figures"]:
        family, method = f["label"].split(",", 1)[0], f["label"].rsplit(": ", 1)[1]
        key = (family, method)
        lowest[key] = min(lowest.get(key, 1.0), f["value"])
        if not method.endswith("(old)"):
            cells[family] = cells.get(family, 0) + 1
    parts = []
    for family in cells:
        new = next(m for (fam, m) in lowest if fam == family and not m.endswith("(old)"))
        old = next(m for (fam, m) in lowest if fam == family and m.endswith("(old)"))
        parts.append(f"{family} ({new}) {render.number(lowest[family, new])} over "
                     f"{cells[family]} cells, where the {old.removesuffix(' (old)')} it "
                     f"replaced read {render.number(lowest[family, old])}")
    text = ("the lowest simulated coverage of a nominal 95% CI is: " + "; ".join(parts)
            + f" (`benchmarks/paired_coverage.py`, {measured(rec['commit'], rec['date'])})")
    return Figures(text, rec["commit"], ("stages/stats/paired.py", "stages/stats/forgetting.py",
                                         "tests/test_stats.py", "tests/test_forgetting.py",
                                         "benchmarks/paired_coverage.py"),
                   tuple(rec.get("dirty") or ()), render.BENCHMARKS["paired_coverage"])


def sweep(repo: Path) -> Figures:
    rec = load_record("sweep")
    if rec is None:
        return Figures(f"No sweep is recorded at this commit, so no table is shown: "
                       f"`{render.BENCHMARKS['sweep']}` runs one in a fresh clone (tens of "
                       "minutes on two cores) and writes `benchmarks/results/sweep.json`; "
                       "`python -m benchmarks.render` then puts its table here.", None)
    return Figures(sweep_text(rec), rec["commit"], SWEEP_MEASURES,
                   tuple(rec.get("dirty") or ()), render.BENCHMARKS["sweep"])


def sweep_text(rec: dict) -> str:
    """The record's table: one row per experiment, the swept value, then each metric's value
    and verdict for the variant."""
    table = rec["sweep"]
    head = ["experiment", table["key"]] + [f"{m.replace('.', ' ')} ({table['variant']})"
                                          for m in table["metrics"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        if row.get("error"):
            cells = [f"failed: {row['error']}"] + [""] * (len(table["metrics"]) - 1)
        else:
            cells = [" ".join(x for x in (num(c["value"]) if c["value"] is not None
                                          else "missing", c["verdict"] or "") if x)
                     for c in (row["cells"][m] for m in table["metrics"])]
        value = ("–" if row["value"] is None else row["value"] if isinstance(row["value"], str)
                 else json.dumps(row["value"]))
        lines.append("| " + " | ".join([row["experiment"], render.cell(value), *cells]) + " |")
    machine = rec["machine"]
    return ("\n".join(lines) + f"\n\n`{rec['command']}`, {measured(rec['commit'], rec['date'])} "
            f"on {machine['cpu']}, {machine['cores']} cores. {rec['notes']}")


REGIONS: dict[str, Callable[[Path], Figures]] = {
    "pipeline": pipeline,
    "coverage": coverage,
    "learned-forgot": learned_forgot,
    "sweep": sweep,
}


if __name__ == "__main__":
    sys.exit(main())
