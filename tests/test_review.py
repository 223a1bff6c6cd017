"""Blind A/B review: the statistics (coverage by exact sum and by simulation), the file checks,
the summary rows from a hand-written 40-item judgments file, and the real page in headless
Chromium (clicks, a server killed mid-review, resume)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.core.io import DataError
from stages.stats.reviews import WINNERS, kappa, kappa_ci, pair_statistics, read_judgments

REPO = Path(__file__).resolve().parents[1]


# ---- statistics ---------------------------------------------------------------------------


def test_clopper_pearson_covers_at_least_nominally_for_every_rate():
    """Exact coverage, summed over the binomial pmf (no sampling error): at n = 40 non-ties,
    for rates over (0, 1), the interval pair_statistics reports holds the true rate with
    probability >= 0.95 at every rate."""
    from scipy.stats import binom

    n = 40
    bounds = []
    for k in range(n + 1):
        row = pair_statistics({f"p{i}": "b" if i < k else "a" for i in range(n)}, {}, 99, 0)
        bounds.append((row["b_win_rate_ci95_low"], row["b_win_rate_ci95_high"]))
    coverage = [sum(binom.pmf(k, n, p) for k, (lo, hi) in enumerate(bounds) if lo <= p <= hi)
                for p in np.linspace(0.01, 0.99, 99)]
    # rounding to 4 places can shave 5e-5 off a bound: the tolerance is that, not more
    assert min(coverage) >= 0.95 - 1e-3, min(coverage)


def test_kappa_matches_sklearn_and_a_hand_count():
    from sklearn.metrics import cohen_kappa_score

    # 10 items: agree on 7 (a a a b b b tie), margins human a4 b4 t2, auto a4 b3 t3
    human = [0, 0, 0, 1, 1, 1, 2, 0, 1, 2]
    auto = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0]
    # p_o = 0.7, p_e = (4*4 + 4*3 + 2*3) / 100 = 0.34, kappa = 0.36 / 0.66
    assert float(kappa(np.array(human), np.array(auto))) == pytest.approx(0.36 / 0.66)
    assert cohen_kappa_score(human, auto) == pytest.approx(0.36 / 0.66)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 3, (5, 30)), rng.integers(0, 3, (5, 30))
    assert kappa(x, y) == pytest.approx([cohen_kappa_score(a, b) for a, b in zip(x, y, strict=True)])


def test_kappa_interval_covers_nominally_in_simulation():
    """150 samples of 40 items from a joint (human, automatic) distribution with kappa 0.50:
    the BCa interval holds it in about 95% of them (0.955 at 200 samples of 999 resamples)."""
    joint = np.array([[0.20, 0.03, 0.07], [0.04, 0.25, 0.08], [0.05, 0.06, 0.22]])
    p_o, p_e = np.trace(joint), (joint.sum(1) * joint.sum(0)).sum()
    true = (p_o - p_e) / (1 - p_e)
    rng = np.random.default_rng(1)
    hits, reps = 0, 150
    for rep in range(reps):
        cells = rng.choice(9, size=40, p=joint.ravel())
        _, low, high = kappa_ci([WINNERS[c // 3] for c in cells], [WINNERS[c % 3] for c in cells],
                                499, rep)
        hits += low <= true <= high
    # 150 reps: one standard error of a 0.95 coverage is 0.018; 0.91 is two below it
    assert hits / reps >= 0.91, hits / reps


def test_kappa_is_undefined_with_one_category():
    assert kappa_ci(["tie"] * 5, ["tie"] * 5, 99, 0) == (None, None, None)


# ---- review files -------------------------------------------------------------------------


def judgment(pid: str, winner: str, reviewer: str = "ann", a: str = "base", b: str = "sft"):
    return {"id": pid, "a": a, "b": b, "winner": winner, "reviewer": reviewer,
            "time": "2026-12-02T16:00:00+00:00"}


@pytest.mark.parametrize("row, message", [
    ({**judgment("p0", "b"), "extra": 1}, "exactly the keys"),
    (judgment("p0", "left"), "winner 'left'"),
    (judgment("p0", "a", a="dpo"), "compares 'dpo' vs 'sft'"),
    (judgment("nope", "a"), "unknown probe id 'nope'"),
    (judgment("p0", "a", reviewer=""), "reviewer must be"),
    ({**judgment("p0", "a"), "time": "yesterday"}, "not an ISO 8601"),
])
def test_a_tampered_row_is_an_error_naming_its_line(tmp_path, row, message):
    path = tmp_path / "code-base-vs-sft.jsonl"
    path.write_text(json.dumps(judgment("p1", "tie")) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"{path}:2: .*{message}"):
        read_judgments(path, "base", "sft", {"p0", "p1"})


def test_one_reviewer_judging_a_probe_twice_is_an_error(tmp_path):
    path = tmp_path / "code-base-vs-sft.jsonl"
    path.write_text("".join(json.dumps(judgment("p0", w)) + "\n" for w in ("a", "b")))
    with pytest.raises(DataError, match=r":2: ann judged 'p0' already on line 1"):
        read_judgments(path, "base", "sft", {"p0"})


def test_unknown_suite_or_variant_is_named(tmp_path):
    from stages.config import PathsConfig
    from stages.tools.review import open_review

    paths = PathsConfig(sources="s", models="m", curated="c", metrics=str(tmp_path), checkpoints="k")
    with pytest.raises(DataError, match="unknown suite 'kode'.*unknown variant --b 'sfd'"):
        open_review(paths, tmp_path, "kode", "base", "sfd", 10, 0, "ann")


def test_sides_are_drawn_per_item_and_the_same_on_reopen(tmp_path):
    from stages.config import PathsConfig
    from stages.tools.review import open_review

    write_code_suite(tmp_path, {v: [True] * 20 for v in ("base", "sft", "dpo")})
    paths = PathsConfig(sources="s", models="m", curated="c", metrics=str(tmp_path), checkpoints="k")
    first, again = (open_review(paths, tmp_path, "code", "base", "sft", 12, 5, "ann").items
                    for _ in range(2))
    assert first == again and len(first) == 12
    assert {it["a_left"] for it in first} == {True, False}
    other = open_review(paths, tmp_path, "code", "base", "sft", 12, 6, "ann").items
    assert [it["id"] for it in other] != [it["id"] for it in first]


# ---- summary from a hand-written 40-item judgments file -------------------------------------


def code_rows(passed: list[bool], tag: int) -> list[dict]:
    return [{"id": f"p{i}", "metric": "pass@1", "passed": p, "prompt": f"Write f{i}.",
             "reply": f"Here it is.\n```python\ndef f{i}():\n    return {tag}\n```"}
            for i, p in enumerate(passed)]


def write_code_suite(metrics: Path, outcomes: dict[str, list[bool]]) -> None:
    for v, passed in outcomes.items():
        (metrics / "eval" / v).mkdir(parents=True, exist_ok=True)
        (metrics / "eval" / v / "code.json").write_text(json.dumps(
            {"code": {"pass@1": sum(passed) / len(passed)}}))
        (metrics / "tasks" / v).mkdir(parents=True, exist_ok=True)
        (metrics / "tasks" / v / "code.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in code_rows(passed, len(v))))


def test_summary_reports_the_review_from_a_hand_written_file(tmp_path, monkeypatch, capsys):
    from scipy.stats import binomtest
    from sklearn.metrics import cohen_kappa_score

    from conftest import repo_params, stage_cfg
    from stages import summary
    from stages.config import SummaryStage

    # 40 probes; automatic judge: sft passes p0-p19 that base fails (b), base passes p20-p27
    # that sft fails (a), p28-p39 the same for both (tie)
    base = [False] * 20 + [True] * 8 + [True] * 6 + [False] * 6
    sft = [True] * 20 + [False] * 8 + [True] * 6 + [False] * 6
    write_code_suite(tmp_path / "metrics", {"base": base, "sft": sft, "dpo": base})
    # the reviewer: b on p0-p17 and p30-p33, a on p18-p19 and p20-p25, tie on the rest
    winners = (["b"] * 18 + ["a"] * 2 + ["a"] * 6 + ["tie"] * 2 + ["tie"] * 2 + ["b"] * 4
               + ["tie"] * 6)
    assert len(winners) == 40
    reviews = tmp_path / "data" / "reviews"
    reviews.mkdir(parents=True)
    (reviews / ".gitkeep").touch()
    (reviews / "code-base-vs-sft.jsonl").write_text(
        "".join(json.dumps(judgment(f"p{i}", w)) + "\n" for i, w in enumerate(winners)))
    params = repo_params()
    params["paths"]["metrics"] = str(tmp_path / "metrics")
    params["eval"].update(suites=["code"], budget={"code": 0.02}, retention=[], target="code")
    monkeypatch.chdir(tmp_path)
    row = summary.main(stage_cfg(SummaryStage, params))["review"]["code"]["base_vs_sft"]
    # 22 b, 8 a, 10 ties: the win rate 22/30 with its exact interval and sign test
    test = binomtest(22, 30)
    ci = test.proportion_ci(method="exact")
    assert (row["n"], row["b_wins"], row["a_wins"], row["ties"]) == (40, 22, 8, 10)
    assert row["b_win_rate"] == round(22 / 30, 4)
    assert (row["b_win_rate_ci95_low"], row["b_win_rate_ci95_high"]) == (round(ci.low, 4),
                                                                       round(ci.high, 4))
    assert row["sign_p"] == pytest.approx(test.pvalue, rel=1e-3) and row["sign_p"] < 0.05
    auto = ["b"] * 20 + ["a"] * 8 + ["tie"] * 12
    assert row["kappa"] == round(cohen_kappa_score(winners, auto), 4)
    assert row["kappa_ci95_low"] < row["kappa"] < row["kappa_ci95_high"]
    assert row["agreement"] == round(sum(w == x for w, x in zip(winners, auto, strict=True)) / 40, 4)
    assert "review code base_vs_sft n=40" in capsys.readouterr().out
    print(json.dumps(row))


def test_summary_without_reviews_has_no_review_entry(tmp_path, monkeypatch):
    from conftest import repo_params, stage_cfg
    from stages import summary
    from stages.config import SummaryStage

    write_code_suite(tmp_path / "metrics", {v: [True, False] * 3 for v in ("base", "sft", "dpo")})
    params = repo_params()
    params["paths"]["metrics"] = str(tmp_path / "metrics")
    params["eval"].update(suites=["code"], budget={"code": 0.02}, retention=[], target="code")
    monkeypatch.chdir(tmp_path)                      # no data/reviews here at all
    assert "review" not in summary.main(stage_cfg(SummaryStage, params))
    (tmp_path / "data" / "reviews").mkdir(parents=True)
    (tmp_path / "data" / "reviews" / "code-base-vs-sfd.jsonl").write_text("")
    with pytest.raises(DataError, match="unknown variant 'sfd'"):
        summary.main(stage_cfg(SummaryStage, params))


# ---- the page in headless Chromium ----------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def start_server(root: Path, reviewer: str = "ann") -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.tools.review", "--suite", "code", "--a", "base", "--b", "sft",
         "--n", "6", "--seed", "3", "--reviewer", reviewer, "--params", str(root / "params.yaml"),
         "--reviews", str(root / "reviews")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise AssertionError(f"server did not start: {first}{url}{proc.stderr.read()}")
    return proc, url


def submits(browser, action) -> None:
    """Do `action` (a click or a key that posts a form) and wait for the next page: the
    click returns before the browser has navigated, so reading at once finds the old page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(browser, 20).until(ec.staleness_of(old))
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "count")))


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_records_choices_survives_a_killed_server_and_resumes(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from conftest import repo_params

    params = repo_params()
    params["paths"]["metrics"] = str(tmp_path / "metrics")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_code_suite(tmp_path / "metrics", {"base": [False, True] * 5, "sft": [True] * 10,
                                            "dpo": [True] * 10})
    file = tmp_path / "reviews" / "code-base-vs-sft.jsonl"

    proc, url = start_server(tmp_path)
    try:
        browser.get(url)
        assert browser.find_element(By.ID, "count").text == "0 / 6 judged"
        # names are hidden: nothing on the page says base or sft (base returns 4, sft 3)
        assert "base" not in browser.page_source and "sft" not in browser.page_source
        assert browser.find_elements(By.CSS_SELECTOR, ".highlight .k")  # `def`, highlighted
        first = browser.find_element(By.ID, "probe").text
        left_is_sft = "return 3" in browser.find_element(By.ID, "left").text
        submits(browser, browser.find_element(By.ID, "btn-left").click)       # 1: a click
        second = browser.find_element(By.ID, "probe").text
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("d")                                                   # diff shown
        assert browser.find_element(By.ID, "diff").is_displayed()
        browser.save_screenshot(str(tmp_path / "review.png"))
        if os.environ.get("REVIEW_SCREENSHOT"):
            shutil.copy(tmp_path / "review.png", os.environ["REVIEW_SCREENSHOT"])
        submits(browser, lambda: body.send_keys("s"))                         # skip
        third = browser.find_element(By.ID, "probe").text
        assert third != second
        submits(browser, lambda: browser.find_element(By.TAG_NAME, "body").send_keys(
            Keys.ARROW_RIGHT))                                                # 2: a key
        submits(browser, lambda: browser.find_element(By.TAG_NAME, "body").send_keys("t"))
        assert browser.find_element(By.ID, "count").text == "3 / 6 judged"
    finally:
        proc.send_signal(signal.SIGKILL)                                      # mid-review
        proc.wait()
    rows = [json.loads(line) for line in file.read_text().splitlines()]
    assert len(rows) == 3 and file.read_text().endswith("\n")
    assert rows[0]["id"] == first and rows[0]["winner"] == ("b" if left_is_sft else "a")
    assert rows[1]["id"] == third and rows[2]["winner"] == "tie"
    assert all(r["a"] == "base" and r["b"] == "sft" and r["reviewer"] == "ann" for r in rows)

    proc, url = start_server(tmp_path)                                        # resume
    try:
        browser.get(url)
        assert browser.find_element(By.ID, "count").text == "3 / 6 judged"
        assert browser.find_element(By.ID, "probe").text not in {r["id"] for r in rows}
        for _ in range(3):
            submits(browser, browser.find_element(By.ID, "btn-tie").click)
        assert browser.find_element(By.ID, "finished").text.startswith("All 6 items judged")
        assert second in {json.loads(line)["id"] for line in file.read_text().splitlines()}
    finally:
        proc.kill()
        proc.wait()
    # a second reviewer shares the file and starts from zero
    proc, url = start_server(tmp_path, reviewer="bob")
    try:
        browser.get(url)
        assert browser.find_element(By.ID, "count").text == "0 / 6 judged"
    finally:
        proc.kill()
        proc.wait()
    assert len(read_judgments(file, "base", "sft", {f"p{i}" for i in range(10)})) == 6


def test_report_shows_the_review_next_to_the_automatic_verdict():
    from stages.tools.report import capability_section, review_section

    row = {"n": 40, "a_wins": 8, "b_wins": 22, "ties": 10, "b_win_rate": 0.7333,
           "b_win_rate_ci95_low": 0.5411, "b_win_rate_ci95_high": 0.8772, "sign_p": 0.01612,
           "kappa_n": 40, "kappa": 0.6721, "kappa_ci95_low": 0.4463, "kappa_ci95_high": 0.8399}
    summary = {"code": {"pass@1": {"base": 0.35, "sft": 0.65, "sft_delta": 0.3,
                                   "sft_verdict": "improved"}},
               "review": {"code": {"base_vs_sft": row}}}
    text = review_section(summary)
    assert ("| `code` | sft vs base | 40 | 10 | 0.7333 [0.5411, 0.8772] | 0.0161 | "
            "0.6721 [0.4463, 0.8399] on 40 | pass@1: improved, Δ +0.3 |") in text
    assert "No review files" in review_section({"code": {}})
    # not read as a suite by the capability table (it would fail on the missing "base")
    from types import SimpleNamespace
    only = capability_section({}, {"review": summary["review"]}, SimpleNamespace(label="x"))
    assert "`review`" not in only


@pytest.mark.parametrize("dep, expected", [
    ("data/reviews", "summary: deps lack ['data/reviews']"),
    ("stages/stats/reviews.py", "summary: deps lack ['stages/stats/reviews.py']"),
])
def test_summary_must_depend_on_the_reviews_and_their_reader(tmp_path, dep, expected):
    from conftest import repo_params
    from stages.tools import compose

    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert compose.dvc_yaml_problems(repo_params(), REPO / "dvc.yaml", REPO) == []
    doc["stages"]["summary"]["deps"].remove(dep)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    problems = compose.dvc_yaml_problems(repo_params(), tmp_path / "dvc.yaml", REPO)
    assert any(expected in p for p in problems), problems


def test_a_choice_is_recorded_once_and_an_unknown_probe_is_named(tmp_path):
    from stages.config import PathsConfig
    from stages.tools.review import open_review

    write_code_suite(tmp_path, {v: [True] * 4 for v in ("base", "sft", "dpo")})
    paths = PathsConfig(sources="s", models="m", curated="c", metrics=str(tmp_path), checkpoints="k")
    review = open_review(paths, tmp_path / "reviews", "code", "base", "sft", 4, 0, "ann")
    pid = review.current()["id"]
    review.choose(pid, "left")
    review.choose(pid, "right")                 # a double click: the first choice stands
    rows = read_judgments(review.path, "base", "sft", {f"p{i}" for i in range(4)})
    assert len(rows) == 1 and rows[0]["winner"] == ("a" if review.items[0]["a_left"] else "b")
    with pytest.raises(DataError, match="unknown probe id 'p9'"):
        review.choose("p9", "left")
    with pytest.raises(DataError, match="choice 'up' is not left, right or tie"):
        review.choose(review.current()["id"], "up")


def test_concurrent_appends_never_interleave(tmp_path):
    """Two processes append 300 long lines each to one file: every line parses whole."""
    path = tmp_path / "code-base-vs-sft.jsonl"
    code = ("import sys; from pathlib import Path; from stages.tools.review import append_line\n"
            "for i in range(300):\n"
            "    append_line(Path(sys.argv[1]), {'who': sys.argv[2], 'i': i, 'pad': 'x' * 3000})")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), who], cwd=REPO)
             for who in ("ann", "bob")]
    assert [p.wait() for p in procs] == [0, 0]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["who"], r["i"]) for r in rows) == sorted(
        (who, i) for who in ("ann", "bob") for i in range(300))
