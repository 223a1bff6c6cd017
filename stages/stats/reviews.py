"""Blind A/B judgments (data/reviews/<suite>-<a>-vs-<b>.jsonl): reading, checking, statistics.

stages/tools/review.py writes the files, one line per choice; summary reads them through
`review_summary`. A line is {"id", "a", "b", "winner": "a"|"b"|"tie", "reviewer", "time"}.

Per item the verdict is its reviewers' majority (a tie when they split evenly), so an item
judged by two reviewers counts once. Of the items not tied, b's wins are binomial: the win
rate of b over a gets the Clopper-Pearson interval (at least nominal coverage for every n and
rate, by construction) and the two-sided sign test. Agreement with the suite's automatic judge
(a, b or tie from the paired outcomes of the same probe) is Cohen's kappa over the three
categories, with a paired BCa bootstrap interval (scipy.stats.bootstrap) over the items.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

from stages.config import REVIEWS_DIR
from stages.core.io import DataError, read_jsonl_lines

__all__ = ["REVIEWS_DIR", "review_summary", "read_judgments", "review_file"]
KEYS = ("id", "a", "b", "winner", "reviewer", "time")
WINNERS = ("a", "b", "tie")
# <suite>-<a>-vs-<b>.jsonl: suites may hold "-" (ceval-valid), variant names never do
FILE_NAME = re.compile(r"^(?P<suite>.+)-(?P<a>[^-]+)-vs-(?P<b>[^-]+)\.jsonl$")


def review_file(reviews: Path, suite: str, a: str, b: str) -> Path:
    return Path(reviews) / f"{suite}-{a}-vs-{b}.jsonl"


def parse_name(path: Path, suites: tuple[str, ...], variants: tuple[str, ...]) -> tuple[str, str, str]:
    match = FILE_NAME.match(path.name)
    if not match:
        raise DataError(f"{path}: not a review file name; name it <suite>-<a>-vs-<b>.jsonl "
                        "(python -m stages.tools.review writes them)")
    suite, a, b = match["suite"], match["a"], match["b"]
    if suite not in suites:
        raise DataError(f"{path}: unknown suite {suite!r}; known: {', '.join(suites)}")
    for v in (a, b):
        if v not in variants:
            raise DataError(f"{path}: unknown variant {v!r}; known: {', '.join(variants)}")
    if a == b:
        raise DataError(f"{path}: compares {a} with itself; a and b must differ")
    return suite, a, b


def read_judgments(path: Path, a: str, b: str, ids: set[str] | None) -> list[dict]:
    """Every row of one review file, checked: exactly KEYS, the file's own a and b, a known
    winner, a probe id of the suite (when `ids` is given), a reviewer, an ISO time, and no
    reviewer judging one probe twice. A row failing any of these was edited by hand or
    belongs to another file: the error names the line."""
    rows, seen = [], {}
    for lineno, row in read_jsonl_lines(path) if Path(path).exists() else []:
        where = f"{path}:{lineno}"
        if not isinstance(row, dict) or set(row) != set(KEYS):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{where}: a review row has exactly the keys {list(KEYS)} (got "
                            f"{got}); the row was edited: restore it or delete the line")
        if (row["a"], row["b"]) != (a, b):
            raise DataError(f"{where}: row compares {row['a']!r} vs {row['b']!r} but the file "
                            f"is {a} vs {b}; move the line to its own file or delete it")
        if row["winner"] not in WINNERS:
            raise DataError(f"{where}: winner {row['winner']!r} is not one of {list(WINNERS)}; "
                            "fix or delete the line")
        if ids is not None and row["id"] not in ids:
            raise DataError(f"{where}: unknown probe id {row['id']!r} (not among the suite's "
                            "replies of both variants); delete the line or rerun eval")
        if not isinstance(row["reviewer"], str) or not row["reviewer"].strip():
            raise DataError(f"{where}: reviewer must be a non-empty name (got "
                            f"{row['reviewer']!r})")
        try:
            datetime.fromisoformat(row["time"])
        except (TypeError, ValueError):
            raise DataError(f"{where}: time {row['time']!r} is not an ISO 8601 timestamp") from None
        key = (row["reviewer"], row["id"])
        if key in seen:
            raise DataError(f"{where}: {row['reviewer']} judged {row['id']!r} already on line "
                            f"{seen[key]}; delete one of the two lines")
        seen[key] = lineno
        rows.append(row)
    return rows


def item_verdicts(rows: list[dict]) -> dict[str, str]:
    """{probe id: a | b | tie}: the majority of its reviewers' choices, tie on an even split."""
    by_id: dict[str, Counter] = {}
    for row in rows:
        by_id.setdefault(row["id"], Counter())[row["winner"]] += 1
    out = {}
    for pid, votes in by_id.items():
        ranked = votes.most_common()
        out[pid] = ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else "tie"
    return out


def automatic_verdict(outcome_a: float, outcome_b: float) -> str:
    return "b" if outcome_b > outcome_a else "a" if outcome_a > outcome_b else "tie"


def kappa(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cohen's kappa of two raters' codes 0..2 along `axis` (vectorized, for the bootstrap):
    (p_o - p_e) / (1 - p_e), with p_o the share agreeing and p_e the agreement the margins give
    by chance; nan where p_e = 1 (one category only: agreement is undefined)."""
    x, y = np.moveaxis(np.asarray(x), axis, -1), np.moveaxis(np.asarray(y), axis, -1)
    n = x.shape[-1]
    hx = np.stack([(x == c) for c in range(len(WINNERS))], -1).astype(float)
    hy = np.stack([(y == c) for c in range(len(WINNERS))], -1).astype(float)
    p_o = (hx * hy).sum((-1, -2)) / n
    p_e = (hx.sum(-2) * hy.sum(-2)).sum(-1) / n ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p_e < 1, (p_o - p_e) / (1 - p_e), np.nan)


def kappa_ci(human: list[str], auto: list[str], resamples: int, seed: int,
             level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(kappa, low, high): sklearn's Cohen's kappa and a paired BCa bootstrap interval over
    the items. None where kappa is undefined (a single category among both raters)."""
    from scipy.stats import bootstrap
    from sklearn.metrics import cohen_kappa_score

    x = np.array([WINNERS.index(w) for w in human])
    y = np.array([WINNERS.index(w) for w in auto])
    if len(x) < 2 or len(set(x) | set(y)) < 2:
        return None, None, None
    point = float(cohen_kappa_score(x, y, labels=list(range(len(WINNERS)))))
    if not np.isfinite(point):
        return None, None, None
    res = bootstrap((x, y), kappa, paired=True, vectorized=True, n_resamples=resamples,
                    confidence_level=level, method="BCa", rng=np.random.default_rng(seed))
    low, high = res.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):  # degenerate resamples: percentile
        res = bootstrap((x, y), kappa, paired=True, vectorized=True, n_resamples=resamples,
                        confidence_level=level, method="percentile",
                        rng=np.random.default_rng(seed))
        low, high = res.confidence_interval
    return point, float(low), float(high)


def pair_statistics(verdicts: dict[str, str], auto: dict[str, str], resamples: int,
                    seed: int) -> dict:
    """The summary row of one a-vs-b review: counts, b's win rate among non-ties with its
    Clopper-Pearson 95% interval, the sign-test p, and kappa against the automatic judge on
    the items both judged."""
    from scipy.stats import binomtest

    counts = Counter(verdicts.values())
    wins_a, wins_b, ties = counts["a"], counts["b"], counts["tie"]
    row: dict = {"n": len(verdicts), "a_wins": wins_a, "b_wins": wins_b, "ties": ties}
    decided = wins_a + wins_b
    if decided:
        test = binomtest(wins_b, decided, 0.5)
        ci = test.proportion_ci(0.95, method="exact")
        row.update(b_win_rate=round(wins_b / decided, 4), b_win_rate_ci95_low=round(ci.low, 4),
                   b_win_rate_ci95_high=round(ci.high, 4), ci_method="clopper-pearson",
                   sign_p=float(f"{test.pvalue:.4g}"))
    both = [pid for pid in verdicts if pid in auto]
    human = [verdicts[p] for p in both]
    machine = [auto[p] for p in both]
    k, low, high = kappa_ci(human, machine, resamples, seed)
    row.update(kappa_n=len(both),
               agreement=round(sum(h == m for h, m in zip(human, machine, strict=True)) / len(both), 4)
               if both else None,
               kappa=None if k is None else round(k, 4),
               kappa_ci95_low=None if low is None else round(low, 4),
               kappa_ci95_high=None if high is None else round(high, 4),
               kappa_ci_method="paired-bca-bootstrap")
    return row


def judged_rows(rows: list[dict]) -> dict[str, dict]:
    """{probe id: row} of the suite's first judged metric (the one summary lists first), the
    rows a review shows and the automatic judge the review is compared with."""
    if not rows:
        return {}
    metric = rows[0]["metric"]
    return {r["id"]: r for r in rows if r["metric"] == metric}


def outcome(row: dict) -> float:
    return float(row["score"] if "score" in row else row["passed"])


def review_summary(reviews: Path, tasks: dict[str, dict[str, list[dict]]],
                   suites: tuple[str, ...], variants: tuple[str, ...], resamples: int,
                   seed: int) -> dict:
    """{suite: {"<a>_vs_<b>": pair_statistics}} for every review file in `reviews` (absent or
    empty: {}); `tasks` holds the per-probe rows of each suite summary ran, by variant."""
    out: dict = {}
    for path in sorted(Path(reviews).glob("*.jsonl")) if Path(reviews).is_dir() else []:
        suite, a, b = parse_name(path, suites, variants)
        if suite not in tasks:
            raise DataError(f"{path}: suite {suite} is not in eval.suites, so summary has no "
                            f"automatic judge to compare it with; add it (-S 'eval.suites=[...]')"
                            " or move the file out of " + str(reviews))
        by_a, by_b = judged_rows(tasks[suite][a]), judged_rows(tasks[suite][b])
        if any("nats" in r for r in by_a.values()):
            raise DataError(f"{path}: suite {suite} scores a loss, not replies: nothing to review")
        rows = read_judgments(path, a, b, set(by_a) & set(by_b))
        if not rows:
            continue
        auto = {pid: automatic_verdict(outcome(by_a[pid]), outcome(by_b[pid])) for pid in by_a
                if pid in by_b}
        out.setdefault(suite, {})[f"{a}_vs_{b}"] = pair_statistics(
            item_verdicts(rows), auto, resamples, seed)
    return out
