"""README.md's measured figures (benchmarks/figures.py): each region is what its record
makes, no record is older than a change to the code it measures, and the sweep table is what
`dvc exp show --json` says. The staleness rule and the sweep table are also checked on
repositories and `dvc exp show` output built here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import figures
from conftest import REPO

# sweep.py still runs as a script that imports record beside it (benchmarks/entries.py says why)
sys.path.insert(0, str(REPO / "benchmarks"))
import sweep  # noqa: E402

README = REPO / "README.md"


def history_or_skip() -> None:
    try:
        figures.history(REPO)
    except figures.History as err:
        pytest.skip(f"README figures need git history: {err}")


def test_readme_figures_are_what_their_records_make():
    history_or_skip()
    assert figures.differences(REPO, README.read_text(encoding="utf-8")) == []


def test_no_readme_figure_is_older_than_the_code_it_measures():
    history_or_skip()
    assert figures.stale(REPO, README.read_text(encoding="utf-8")) == []


def test_a_hand_edited_figure_fails():
    history_or_skip()
    text = README.read_text(encoding="utf-8")
    body = figures.regions(text)["coverage"]
    edited = text.replace(body, body.replace("0.9", "0.8", 1))
    assert edited != text
    assert figures.differences(REPO, edited) == [
        "README.md region coverage differs from what its record makes; "
        "run `python -m benchmarks.figures`"]
    # and a region taken out is named too
    gone = figures.REGION.sub("", text, count=1)
    assert any("has no region" in p for p in figures.differences(REPO, gone))


def test_regions_unknown_repeated_or_unclosed_are_named():
    text = ("<!-- figures:nope -->x<!-- /figures:nope -->\n"
            "<!-- figures:sweep -->a<!-- /figures:sweep --><!-- figures:sweep -->b"
            "<!-- /figures:sweep -->\n<!-- figures:coverage -->never closed")
    with pytest.raises(ValueError) as err:
        figures.regions(text)
    message = str(err.value)
    assert "region nope: unknown" in message
    assert "region sweep appears twice" in message
    assert "region coverage: no closing <!-- /figures:coverage -->" in message


def test_fill_keeps_inline_regions_inline_and_block_regions_on_their_own_lines():
    fig = figures.Figures("is 0.95\n", None)
    text = ("a <!-- figures:coverage -->old<!-- /figures:coverage --> b\n"
            "<!-- figures:sweep -->\nold\n<!-- /figures:sweep -->\n")
    assert figures.fill(text, {"coverage": fig, "sweep": fig}) == (
        "a <!-- figures:coverage -->is 0.95<!-- /figures:coverage --> b\n"
        "<!-- figures:sweep -->\nis 0.95\n<!-- /figures:sweep -->\n")


# ---- the staleness rule, on a repository made here --------------------------------------------

def git(root, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(root, path: str, text: str, message: str) -> str:
    (root / path).write_text(text)
    git(root, "add", path)
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "t")
    git(root, "config", "user.email", "t@localhost")
    return root


def at(sha: str, dirty: tuple[str, ...] = ()) -> figures.Figures:
    return figures.Figures("x", sha, ("code",), dirty, "rerun it")


def test_a_record_goes_stale_when_what_it_measures_changes_after_it(repo):
    (repo / "code").mkdir()
    c1 = commit(repo, "code/a.py", "1", "a")
    c2 = commit(repo, "other.py", "1", "unrelated")
    assert figures.staleness(repo, at(c1)) is None  # other.py is not measured
    assert figures.staleness(repo, at(c2)) is None
    c3 = commit(repo, "code/a.py", "2", "change a")
    problem = figures.staleness(repo, at(c2))
    assert problem == f"measured at {c2[:10]}, but {c3[:10]} (change a) changed code/a.py after it"
    assert figures.staleness(repo, at(c3)) is None
    assert figures.staleness(repo, at(c3, dirty=("code/a.py",))) == (
        "measured with uncommitted changes to code/a.py")
    assert figures.staleness(repo, at(c3, dirty=("other.py",))) is None
    assert figures.staleness(repo, at("0" * 40)) == "its commit 0000000000 is not in this history"


def test_a_change_reverted_after_the_record_leaves_it_fresh(repo):
    (repo / "code").mkdir()
    c1 = commit(repo, "code/a.py", "1", "a")
    commit(repo, "code/a.py", "2", "change a")
    assert figures.staleness(repo, at(c1)) is not None
    commit(repo, "code/a.py", "1", "change a back")
    assert figures.staleness(repo, at(c1)) is None


def test_a_change_merged_from_a_side_branch_after_the_record_makes_it_stale(repo):
    (repo / "code").mkdir()
    c1 = commit(repo, "code/a.py", "1", "a")
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, "code/a.py", "2", "side change")
    git(repo, "checkout", "-q", "main")
    c2 = commit(repo, "notes.md", "1", "record taken here")
    assert figures.staleness(repo, at(c2)) is None  # side is not merged yet
    git(repo, "merge", "-q", "--no-edit", "side")
    assert figures.staleness(repo, at(c2)).startswith(f"measured at {c2[:10]}, but ")
    assert figures.staleness(repo, at(c1)) is not None


def test_without_history_the_check_says_why(repo, tmp_path):
    (repo / "code").mkdir()
    commit(repo, "code/a.py", "1", "a")
    c2 = commit(repo, "code/a.py", "2", "b")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    with pytest.raises(figures.History, match="shallow clone"):
        figures.staleness(shallow, at(c2))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(figures.History, match="not a git checkout"):
        figures.staleness(plain, at(c2))


# ---- the sweep table, from `dvc exp show --json` output built here ----------------------------

def state(rev: str, r: int, scores: dict | None, name: str | None = None) -> dict:
    data = None
    if scores is not None:
        summary = {suite: {metric: {"sft": value, "sft_verdict": verdict}}
                   for (suite, metric), (value, verdict) in scores.items()}
        data = {"rev": rev, "timestamp": "2026-12-02T10:00:00",
                "params": {"params.yaml": {"data": {"paths": {"metrics": "metrics"},
                                                    "sft": {"lora": {"r": r}}}}},
                "metrics": {"metrics/summary.json": {"data": summary}}}
    return {"rev": rev, "name": name, "data": data,
            "error": None if scores is not None else {"type": "ReproductionError",
                                                      "msg": "failed to reproduce 'sft@main'"},
            "experiments": None}


EXP_SHOW = [
    {**state("workspace", 32, {("code", "pass@1"): (1.0, "inconclusive")}), "rev": "workspace"},
    {**state("a" * 40, 8, {("code", "pass@1"): (1.0, "inconclusive"),
                           ("knowledge", "accuracy"): (0.9, "inconclusive")}, "main"),
     "experiments": [
         {"name": "exp-r16", "executor": None,
          "revs": [state("b" * 40, 16, {("code", "pass@1"): (0.96, "inconclusive"),
                                        ("knowledge", "accuracy"): (0.94, "within-noise")},
                         "exp-r16")]},
         {"name": "exp-r32", "executor": None, "revs": [state("c" * 40, 32, None, "exp-r32")]},
     ]},
]


def test_the_sweep_table_is_what_dvc_exp_show_says(tmp_path):
    shown = tmp_path / "exps.json"
    shown.write_text(json.dumps(EXP_SHOW))
    out = tmp_path / "sweep.json"
    subprocess.run([sys.executable, "-m", "benchmarks.sweep", "sft.lora.r=8,16,32", "--metrics",
                    "code.pass@1,knowledge.accuracy", "--from-json", str(shown),
                    "--json", str(out)], cwd=REPO, check=True, capture_output=True)
    rec = json.loads(out.read_text())
    assert rec["commit"] == "a" * 40 and rec["dirty"] == []  # the experiments' baseline
    assert {"label": "exp-r16 (sft.lora.r=16): knowledge.accuracy sft", "value": 0.94,
            "unit": "within-noise"} in rec["figures"]
    table = figures.sweep_text(rec).split("\n\n")[0]
    assert table.splitlines() == [
        "| experiment | sft.lora.r | code pass@1 (sft) | knowledge accuracy (sft) |",
        "|---|---|---|---|",
        "| baseline main (committed) | 8 | 1 inconclusive | 0.9 inconclusive |",
        "| exp-r16 | 16 | 0.96 inconclusive | 0.94 within-noise |",
        "| exp-r32 | – | failed: failed to reproduce 'sft@main' |  |"]
    assert f"measured at `{'a' * 10}`" in figures.sweep_text(rec)


def test_a_metric_the_summary_lacks_reads_missing_and_two_baselines_are_refused():
    table = sweep.sweep_table(EXP_SHOW, "sft.lora.r", ["identity.consistency"], "sft")
    assert table["rows"][0]["cells"] == {"identity.consistency": {"value": None,
                                                                  "verdict": None}}
    with pytest.raises(ValueError, match="found 2"):
        sweep.sweep_table(EXP_SHOW + [EXP_SHOW[1]], "sft.lora.r", ["code.pass@1"], "sft")


# ---- the metrics regions, on a committed run made here ----------------------------------------

def write_run(root, base_s: float) -> None:
    files = {
        "params.yaml": "paths:\n  metrics: m\n",
        "dvc.lock": ("schema: '2.0'\nstages:\n  base:\n    cmd: python -m stages.base\n"
                     "    deps:\n    - path: code/base.py\n      md5: a\n"
                     "    - path: models/base\n      md5: b\n"),
        "code/base.py": "x = 1\n",
        "m/base.json": json.dumps({"base": {"train_s": base_s}}),
        "m/sft/main.json": json.dumps({"sft": {"main": {"train_s": 20.5}}}),
        "m/dpo.json": json.dumps({"dpo": {"train_s": 3.0}}),
        "m/cost/base/code.json": json.dumps({"code": {"wall_s": 1.25}}),
        "m/cost/sft/code.json": json.dumps({"code": {"wall_s": 2.5}}),
        "m/summary.json": json.dumps({"learned_forgot": {
            "learned": {"suite": "identity", "metric": "consistency", "sft": 1.0,
                        "sft_delta": 0.5, "sft_ci95_low": 0.25, "sft_ci95_high": 0.75},
            "forgot": {"suites": ["knowledge"], "sft": 0.9, "sft_delta": -0.1,
                       "sft_ci95_low": -0.2, "sft_ci95_high": 0.0}}}),
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def test_metrics_regions_quote_the_run_dvc_lock_pins_at_its_commit(repo):
    write_run(repo, 100.0)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "run")
    sha, date = git(repo, "log", "-1", "--format=%H %cI").split()
    commit(repo, "notes.md", "later", "a later commit that leaves dvc.lock alone")
    write_run(repo, 999.0)  # metrics rewritten but not committed: not quoted
    fig = figures.pipeline(repo)
    assert fig.text.startswith(
        f"The committed run's stages recorded, as `dvc.lock` pins it (measured at "
        f"`{sha[:10]}`, {date[:10]}): base trained for 100.0 s, sft for 20.5 s (main), dpo "
        "for 3.0 s, and the 2 evals took 3.8 s of generation and judging in all.")
    # what it measures: dvc.lock's deps that git tracks (models/base is DVC's)
    assert fig.commit == sha and fig.measures == ("code/base.py",)
    assert figures.learned_forgot(repo).text == (
        f"the committed run, measured at `{sha[:10]}`, {date[:10]}: sft \"learned identity "
        "consistency +0.5 [0.25, 0.75]; retention (knowledge) -0.1 [-0.2, 0]\"")
    assert figures.staleness(repo, fig) is None
    commit(repo, "code/base.py", "x = 2\n", "change base")
    assert "changed code/base.py after it" in figures.staleness(repo, fig)
