"""report: a markdown pull-request report from the files in git alone.

Reads   params.yaml, dvc.lock, metrics/summary.json, metrics/curate.json, the cost files
        (metrics/cost/*/*.json, training metrics), the per-probe files and every plot TSV
        (metrics/**/plots/metrics/**/*.tsv) at two revisions: --base through `git show`,
        --head the same way or, by default, from the working tree
Writes  report.md (--out) and one PNG per plot in report_images/ (--images; default
        `<out stem>_images/` next to --out)
Run     python -m stages.tools.report                  # origin/main (else HEAD~1) -> files on disk
        python -m stages.tools.report --base main --head HEAD --out pr.md

--base defaults to origin/main when that ref exists, else HEAD~1. --head defaults to the
working tree, committed or not, so a report made before `git commit` shows what the commit
will hold (a note lists uncommitted metrics). No DVC cache, remote or GPU is needed: every
file read is small and committed.

Sections, in order: capability (over-budget, inconclusive and regressed rows first), the
replies that flipped against the base model (from the DVC-cached per-probe files, where the
workspace or the local cache has them), cost (timings and memory, no verdicts), params diff,
stages rerun and reused (dvc.lock entries compared), data card (curate), loss and reward plots
(base and head curves in one axes), commands to reproduce.

    python -m stages.tools.report --flips knowledge    # every flipped knowledge probe, to stdout
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stages.config import OPTIONAL, TRAINED, VARIANTS, run_stage
from stages.core.io import DataError, atomic_write_text, parse_jsonl
from stages.stats.paired import verdict
from stages.tools.compose import flatten

# worst first; every other verdict sorts after them. inconclusive: the probes cannot tell
# whether the drop is within budget, which a reviewer must know before merging.
FLAGGED = ("over-budget", "inconclusive", "regressed")
# What running costs (machine-dependent): shown apart from capability, without verdicts.
COST_KEYS = ("wall_s", "train_s", "tokens_per_s", "ttft_s", "peak_memory_mib")
FLIPS_SHOWN = 3  # per suite, variant and direction in the report; --flips SUITE shows all
LEARNED_FORGOT = "learned_forgot"  # summary.json's entry that is not a suite (stages.summary)
REVIEW = "review"  # summary.json's blind A/B results (stages.stats.reviews), not a suite either
# How far apart the learning-forgetting plot draws variants, as a share of each axis's
# span: 3% moves an error bar and its caps off its neighbour and barely moves the point.
DODGE = 0.03
EVAL_COST = re.compile(r"cost/(?P<variant>[^/]+)/(?P<suite>[^/]+)\.json")
# dvclive's layout under the metrics dir: <stage>/plots/metrics/<name>.tsv, where the stage
# part may be nested (sft/<phase>) and the name has folders (train/loss).
PLOT_TSV = re.compile(r"(?P<stage>.+)/plots/metrics/(?P<name>.+)\.tsv")


def main(argv: list[str] | None = None, repo: Path = Path(".")) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="revision to compare against "
                        "(default: origin/main if it exists, else HEAD~1)")
    parser.add_argument("--head", help="revision to report on (default: the working tree)")
    parser.add_argument("--out", type=Path, default=Path("report.md"))
    parser.add_argument("--images", type=Path, help="PNG folder (default: <out stem>_images/)")
    parser.add_argument("--flips", metavar="SUITE",
                        help="print every probe of SUITE whose outcome flipped against the base "
                        "model at --head (prompt and both replies), and nothing else")
    args = parser.parse_args(argv)

    repo = repo_root(repo)
    head = resolve(repo, args.head)
    if args.flips:
        text = flips_text(head, snapshot(head), args.flips, cap=None)
        print(text)
        return text
    base = resolve(repo, args.base or default_base(repo))
    old, new = snapshot(base), snapshot(head)
    images = args.images or args.out.with_name(f"{args.out.stem}_images")
    plots = draw_plots(old["plots"], new["plots"], images, (f"base: {base.name}",
                                                            f"head: {head.name}"))
    trade_off = draw_learned_forgot(new["summary"], new["params"], images)

    text = "\n\n".join([
        header(base, head, uncommitted(head, new["metrics"])),
        capability_section(old["summary"], new["summary"], base,
                           since_base_cells(base, head, old, new)),
        review_section(new["summary"]),
        learned_forgot_section(new["summary"].get(LEARNED_FORGOT, {}), trade_off, args.out.parent),
        replies_section(head, new),
        cost_section(old["cost"], new["cost"]),
        params_section(old["params"], new["params"]),
        stages_section(old["lock"], new["lock"]),
        data_card_section(old["curate"], new["curate"]),
        plots_section(plots, args.out.parent),
        commands_section(base, head),
    ]) + "\n"
    atomic_write_text(args.out, text)
    print(f"wrote {args.out} and {len(plots)} plot(s) in {images}/")
    return text


@dataclass(frozen=True)
class Revision:
    repo: Path
    ref: str | None
    """What the user named (HEAD~1, origin/main); None: the files on disk."""
    sha: str
    """The commit: ref's, or HEAD's under the working tree."""

    @property
    def name(self) -> str:
        return self.ref or "working tree"

    @property
    def label(self) -> str:
        if self.ref is None:
            return f"the working tree (on {self.sha[:10]})"
        return f"`{self.ref}` ({self.sha[:10]})"


def repo_root(path: Path) -> Path:
    top = git(path, "rev-parse", "--show-toplevel")
    if top is None:
        raise DataError(f"{path.resolve()} is not in a git repository; run the report from "
                         "the experiment repository's checkout")
    return Path(top.strip())


def default_base(repo: Path) -> str:
    return "origin/main" if git(repo, "rev-parse", "--verify", "--quiet",
                                "origin/main^{commit}") else "HEAD~1"


def resolve(repo: Path, ref: str | None) -> Revision:
    sha = git(repo, "rev-parse", "--verify", "--quiet", f"{ref or 'HEAD'}^{{commit}}")
    if sha is None:
        raise DataError(f"unknown revision {ref or 'HEAD'!r} in {repo}: pass --base/--head a "
                         "commit, branch or tag that `git log --oneline` lists (`git fetch` "
                         "first for a remote branch; a repository with one commit needs --base)")
    return Revision(repo, ref, sha.strip())


def git(repo: Path, *args: str) -> str | None:
    """git's stdout, or None when it fails (unknown revision, file not in that commit)."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                          encoding="utf-8")
    return done.stdout if done.returncode == 0 else None


def read(rev: Revision, path: str) -> str | None:
    if rev.ref is None:
        file = rev.repo / path
        return file.read_text(encoding="utf-8") if file.is_file() else None
    return git(rev.repo, "show", f"{rev.sha}:{path}")


def list_files(rev: Revision, folder: str) -> list[str]:
    if rev.ref is None:
        root = rev.repo / folder
        return sorted(p.relative_to(rev.repo).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted((git(rev.repo, "ls-tree", "-r", "--name-only", rev.sha, "--", folder)
                   or "").splitlines())


def load(rev: Revision, path: str, required: bool = False) -> dict:
    text = read(rev, path)
    if text is None and required:
        fix = ("run `dvc repro` to write it" if rev.ref is None else
               f"pass a revision that has it (`git log --oneline -- {path}` lists them)")
        raise DataError(f"{path} is missing at {rev.label}; {fix}")
    if text is None:
        return {}
    # JSON through json: PyYAML reads 1e-05 as a string.
    return (json.loads(text) if path.endswith(".json") else yaml.safe_load(text)) or {}


def snapshot(rev: Revision) -> dict:
    """Everything the report needs from one revision; the metrics folder is that revision's
    paths.metrics."""
    params = load(rev, "params.yaml", required=True)
    metrics = params.get("paths", {}).get("metrics")
    if not metrics:
        raise DataError(f"params.yaml at {rev.label} has no paths.metrics; regenerate it "
                         "with `python -m stages.tools.compose`")
    return {"params": params, "metrics": metrics,
            "lock": load(rev, "dvc.lock").get("stages", {}),
            "summary": load(rev, f"{metrics}/summary.json", required=True),
            "curate": load(rev, f"{metrics}/curate.json").get("curate", {}),
            "cost": read_cost(rev, metrics),
            "plots": read_plots(rev, metrics)}


def read_plots(rev: Revision, metrics: str) -> dict[str, tuple[list[float], list[float]]]:
    """{stage/name: (steps, values)}; the value column is named after the file, as dvclive
    writes it (train/loss.tsv: step, loss)."""
    plots = {}
    for path in list_files(rev, metrics):
        match = PLOT_TSV.fullmatch(path.removeprefix(f"{metrics}/"))
        if not match:
            continue
        column = Path(path).stem
        rows = list(csv.DictReader(io.StringIO(read(rev, path)), delimiter="\t"))
        if rows and not {"step", column} <= rows[0].keys():
            raise DataError(f"{path} at {rev.label} lacks a `step` or `{column}` column; "
                             "plot TSVs are dvclive's (step and the metric, tab-separated)")
        plots[f"{match['stage']}/{match['name']}"] = ([float(r["step"]) for r in rows],
                                                      [float(r[column]) for r in rows])
    return plots


def uncommitted(rev: Revision, metrics: str) -> list[str]:
    if rev.ref is not None:
        return []
    status = git(rev.repo, "status", "--porcelain", "--", "params.yaml", "dvc.lock", metrics)
    return [line[3:] for line in (status or "").splitlines()]


def header(base: Revision, head: Revision, dirty: list[str]) -> str:
    text = (f"# Pull-request report\n\nBase {base.label} → head {head.label}. Made by "
            "`python -m stages.tools.report` from params.yaml, dvc.lock and the metrics files alone "
            "(no DVC cache, remote or GPU).")
    if dirty:
        text += ("\n\n> Uncommitted changes in " + ", ".join(f"`{p}`" for p in dirty)
                 + ": commit them so that the head sha below reproduces this report.")
    return text


def capability_section(old: dict, new: dict, base: Revision,
                       since: dict[tuple[str, str, str], str] | None = None) -> str:
    old, new = ({k: v for k, v in s.items() if k not in (LEARNED_FORGOT, REVIEW)}
                for s in (old, new))
    judged = judged_rows(old, new, since)
    # suite metric, variant: verdict, Δ [CI]
    flagged = [f"- {c[0]} {c[1]}, {c[2]}: {c[8]}, Δ {c[5]} on {c[6]} probes" for v, c in judged
               if v in FLAGGED]
    other = [(suite, metric, row) for suite, metrics in new.items()
             for metric, row in metrics.items() if not judged_variants(row)]
    return "\n\n".join([
        "## Capability",
        "### Flagged\n\n" + ("\n".join(flagged) or "None: no variant went over budget, was "
                                                   "inconclusive or regressed."),
        "Verdicts: `improved`/`regressed`: the CI is above/below 0; `within-noise`: it holds 0 "
        "and stays above −budget; `inconclusive`: it reaches past −budget (too few probes to "
        "tell); `over-budget`: all of it is below −budget.",
        chance_line(len(judged)),
        f"Δ: variant minus base model on the same n probes, with its 95% CI; p: McNemar score test "
        f"(pass/fail suites); inconclusive: the CI reaches past the budget, and the verdict "
        f"says how many probes would resolve it; since base: the variant now against itself "
        f"at {base.label}, probe by probe from the per-probe files (`paired`) or, without "
        f"them, from the two pass rates (`unpaired`); `no change beyond noise` when the 95% "
        f"CI of that change holds 0, `unchanged` when every probe scored the same; `not "
        f"tested`: no per-probe files and no pass/fail counts at both revisions.",
        table(["suite", "metric", "variant", "base model", "value", "Δ [95% CI]", "n", "p",
               "verdict", "since base"], [cells for _, cells in judged]),
        "### Other metrics (no verdict): value (Δ vs base model)",
        other_table(other)])


def review_section(summary: dict) -> str:
    """The blind A/B reviews beside the automatic verdict on the same suite (the judged
    metric's verdict of b against base, where a is base)."""
    rows = []
    for suite, pairs in summary.get(REVIEW, {}).items():
        judged = {m: r for m, r in summary.get(suite, {}).items() if judged_variants(r)}
        for pair, r in pairs.items():
            a, b = pair.split("_vs_")
            metric, auto = next(iter(judged.items()), (None, {}))
            verdict = (f"{metric}: {auto[f'{b}_verdict']}, Δ {signed(auto[f'{b}_delta'])}"
                       if a == "base" and f"{b}_verdict" in auto else "–")
            rate = ("–" if r.get("b_win_rate") is None else
                    f"{num(r['b_win_rate'])} [{num(r['b_win_rate_ci95_low'])}, "
                    f"{num(r['b_win_rate_ci95_high'])}]")
            kappa = ("undefined" if r["kappa"] is None else
                     f"{num(r['kappa'])} [{num(r['kappa_ci95_low'])}, {num(r['kappa_ci95_high'])}]")
            rows.append([f"`{suite}`", f"{b} vs {a}", str(r["n"]), str(r["ties"]), rate,
                         pvalue(r.get("sign_p")), f"{kappa} on {r['kappa_n']}", verdict])
    if not rows:
        return "## Blind review\n\nNo review files in data/reviews/ (python -m stages.tools.review)."
    return "\n\n".join([
        "## Blind review",
        "Win rate: b's wins over a among the items not tied, with its Clopper-Pearson 95% CI; "
        "p: two-sided sign test; κ: Cohen's kappa of the reviewers' a/b/tie with the automatic "
        "judge's on the same probes (paired BCa bootstrap 95% CI).",
        table(["suite", "pair", "n", "ties", "win rate of b [95% CI]", "p", "κ [95% CI]",
               "automatic verdict"], rows)])


def chance_line(verdicts: int) -> str:
    """How many of k unadjusted 95% verdicts chance alone would flag: each CI misses a true
    delta of 0 with probability at most 0.05, so about 0.05 k read improved or regressed
    with no real change anywhere (the expected count, by linearity, whatever the dependence)."""
    return (f"{verdicts} verdicts, each at 95% and not adjusted for multiplicity: with no real "
            f"change anywhere, about {0.05 * verdicts:.1f} of them would still read improved or "
            "regressed by chance alone.")


def learned_forgot_section(entry: dict, plot: Path | None, out_dir: Path) -> str:
    """One line per variant: what it learned (eval.target) and what it forgot (the mean
    paired change over the retention suites), each with its 95% CI; and the point of each
    variant on the learning-forgetting plane, base at the origin."""
    learned, forgot = entry.get("learned"), entry.get("forgot")
    if not learned and not forgot:
        return "## Learned and forgot\n\nNo target or retention suite ran."
    lines = []
    for v in [k for k in TRAINED if (learned and k in learned) or (forgot and k in forgot)]:
        parts = []
        if learned and v in learned:
            parts.append(f"learned {learned['suite']} {learned['metric']} "
                         f"{signed(learned[f'{v}_delta'])} [{num(learned[f'{v}_ci95_low'])}, "
                         f"{num(learned[f'{v}_ci95_high'])}]")
        if forgot and v in forgot:
            parts.append(f"retention ({', '.join(forgot['suites'])}) "
                         f"{signed(forgot[f'{v}_delta'])} [{num(forgot[f'{v}_ci95_low'])}, "
                         f"{num(forgot[f'{v}_ci95_high'])}]")
        lines.append(f"- **{v}**: " + "; ".join(parts))
    image = (f"\n\n![learned vs retention]({Path(os.path.relpath(plot, out_dir)).as_posix()})"
             if plot else "")
    return ("## Learned and forgot\n\nDelta against the base model with its 95% CI; "
            "retention is the forgetting score (below 0: forgot).\n\n" + "\n".join(lines)
            + image)


def draw_learned_forgot(summary: dict, params: dict, images: Path) -> Path | None:
    """learned_forgot_figure(...) as images/learned-vs-retention.png; None when summary has
    no target or no retention suite."""
    fig = learned_forgot_figure(summary, params)
    if fig is None:
        return None
    images.mkdir(parents=True, exist_ok=True)
    path = images / "learned-vs-retention.png"
    tmp = path.with_name(f".{path.name}.tmp")
    FigureCanvasAgg(fig).print_png(tmp)
    os.replace(tmp, path)
    return path


def learned_forgot_figure(summary: dict, params: dict) -> Figure | None:
    """Each variant as a point (learned delta, retention delta) with both 95% CIs as error
    bars, base at the origin; the retention budget as a shaded band from -budget to 0; the
    retention suites that ran on the y axis (those configured but not run under it); a
    legend with each variant's verdicts. Variants are drawn a little apart (a fixed share
    of each axis's span, said under the plot) so that no interval hides another: sft and
    dpo often land on the same point."""
    entry = summary.get(LEARNED_FORGOT, {})
    learned, forgot = entry.get("learned"), entry.get("forgot")
    if not learned or not forgot:
        return None
    variants = [v for v in TRAINED if v in learned and v in forgot]
    evals = params.get("eval", {})
    budget = retention_budget(evals.get("budget") or {}, forgot["suites"])
    target_row = summary.get(learned["suite"], {}).get(learned["metric"], {})

    xs = [0.0] + [learned[f"{v}_ci95_{e}"] for v in variants for e in ("low", "high")]
    ys = [0.0, -(budget or 0.0)] + [forgot[f"{v}_ci95_{e}"] for v in variants
                                    for e in ("low", "high")]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    dx, dy = DODGE * span_x, DODGE * span_y

    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    if budget is not None:
        ax.axhspan(-budget, 0, color="tab:green", alpha=0.15, lw=0,
                   label=f"retention budget: a drop of at most {num(budget)}")
    ax.plot([0], [0], "ks", label="base (the origin)")
    for i, v in enumerate(variants):
        shift = i - (len(variants) - 1) / 2
        x, y = learned[f"{v}_delta"], forgot[f"{v}_delta"]
        learned_word = target_row.get(f"{v}_verdict", "no verdict")
        retention_word = forgot.get(f"{v}_verdict") or (
            verdict(forgot[f"{v}_ci95_low"], forgot[f"{v}_ci95_high"], budget))
        # A percentile bootstrap CI may, rarely, miss its own point estimate by a rounding:
        # an error bar cannot be negative, so that side is drawn as 0.
        ax.errorbar([x + shift * dx], [y + shift * dy], fmt="o", capsize=3,
                    xerr=[[max(0.0, x - learned[f"{v}_ci95_low"])],
                          [max(0.0, learned[f"{v}_ci95_high"] - x)]],
                    yerr=[[max(0.0, y - forgot[f"{v}_ci95_low"])],
                          [max(0.0, forgot[f"{v}_ci95_high"] - y)]],
                    label=f"{v}: learned {learned_word}, retention {retention_word}")
    ax.set(xlabel=f"learned: {learned['suite']} {learned['metric']} delta (95% CI)",
           ylabel="retention delta (95% CI), mean of:\n" + ", ".join(forgot["suites"]))
    notes = []
    if len(variants) > 1:
        notes.append(f"variants drawn {num(round(dx, 4))} apart on x and {num(round(dy, 4))} "
                     "on y so that no interval hides another")
    not_run = [s for s in evals.get("retention") or [] if s not in forgot["suites"]]
    if not_run:
        notes.append("retention suites not run: " + ", ".join(not_run))
    if budget is None:
        notes.append("no band: eval.budget lacks a retention suite")
    if notes:
        ax.set_title("\n".join(notes), fontsize="x-small", loc="left")
    # Below the axes, so that the legend never covers a point or an interval.
    fig.legend(loc="outside lower center", fontsize="small")
    return fig


def retention_budget(budgets: dict, suites: list[str]) -> float | None:
    """The largest drop of the forgetting score that stays within budget: the mean of the
    retention suites' eval.budget. The score is the equal-weight mean of the suites' deltas,
    so suites each dropping by at most their budget drop it by at most the mean budget.
    None when a suite that ran has no budget (then no band is drawn)."""
    if not suites or any(budgets.get(s) is None for s in suites):
        return None
    return sum(budgets[s] for s in suites) / len(suites)


def judged_variants(row: dict) -> list[str]:
    return [k.removesuffix("_verdict") for k in row if k.endswith("_verdict")]


def judged_rows(old: dict, new: dict, since: dict[tuple[str, str, str], str] | None = None
                ) -> list[tuple[str, list[str]]]:
    """(verdict, table cells) per judged suite, metric and variant: over-budget first, then
    inconclusive, regressed, then the rest, each in summary.json's order (a stable sort).
    `since`: the since-base cell per (suite, metric, variant) (`since_base_cells`)."""
    since = since or {}
    rows = []
    for suite, metrics in new.items():
        for metric, row in metrics.items():
            for v in judged_variants(row):
                before = old.get(suite, {}).get(metric, {}).get(v)
                verdict = row[f"{v}_verdict"]
                shown = f"**{verdict}**" if verdict in FLAGGED else verdict
                if row.get(f"{v}_probes_needed"):
                    shown += f" (~{row[f'{v}_probes_needed']} probes would tell)"
                rows.append((verdict, [
                    f"`{suite}`", metric, v, num(row["base"]), num(row[v]),
                    f"{signed(row[f'{v}_delta'])} [{num(row[f'{v}_ci95_low'])}, "
                    f"{num(row[f'{v}_ci95_high'])}]", num(row.get(f"{v}_n")),
                    pvalue(row.get(f"{v}_p")), shown,
                    "new" if before is None else since.get(
                        (suite, metric, v), f"{signed(row[v] - before)} (not tested)")]))
    return sorted(rows, key=lambda r: FLAGGED.index(r[0]) if r[0] in FLAGGED else len(FLAGGED))


def since_base_cells(base: Revision, head: Revision, old: dict, new: dict
                     ) -> dict[tuple[str, str, str], str]:
    """The "since base" cell of each judged (suite, metric, variant) that has a value at both
    revisions: the variant at head against itself at base. A rerun on another machine (GPU
    kernels, another CPU) moves a few probes either way; that is noise, not news, so the
    change is tested as summary tests a variant against the base model, on the same probes:
    paired per probe from the per-probe files of both revisions where both can be read
    (workspace, DVC cache or remote), else unpaired from the two pass rates (Newcombe's
    interval, which assumes independent samples: wider than the paired one, so it calls
    less a change)."""
    cells = {}
    tasks: dict[tuple[str, str], list[dict] | None] = {}

    def rows_at(rev: Revision, snap: dict, variant: str, suite: str) -> list[dict] | None:
        if (rev.sha if rev.ref else None, f"{variant}/{suite}") not in tasks:
            tasks[(rev.sha if rev.ref else None, f"{variant}/{suite}")] = read_tasks(
                rev, f"{snap['metrics']}/tasks/{variant}/{suite}.jsonl")
        return tasks[(rev.sha if rev.ref else None, f"{variant}/{suite}")]

    for suite, metrics in new["summary"].items():
        if suite == LEARNED_FORGOT:
            continue
        for metric, row in metrics.items():
            for v in judged_variants(row):
                before = old["summary"].get(suite, {}).get(metric, {})
                if before.get(v) is None:
                    continue
                then, now = rows_at(base, old, v, suite), rows_at(head, new, v, suite)
                cell = None
                if then is not None and now is not None:
                    cell = paired_since(then, now, metric, new["params"])
                if cell is None:
                    cell = unpaired_since(before, row, v)
                if cell is not None:
                    cells[(suite, metric, v)] = cell
    return cells


def paired_since(then: list[dict], now: list[dict], metric: str, params: dict) -> str | None:
    """The change per probe, with the statistic summary uses for this kind of outcome
    (stages.summary.paired: pass/fail, graded or token-weighted loss); None when the two
    revisions share no probe of `metric`."""
    from types import SimpleNamespace

    from stages.summary import paired

    before = {r["id"]: r for r in then if r.get("metric") == metric}
    after = {r["id"]: r for r in now if r.get("metric") == metric}
    ids = [i for i in before if i in after]
    if not ids:
        return None
    a, b = [before[i] for i in ids], [after[i] for i in ids]
    outcome = ("nats", "tokens") if "nats" in a[0] else ("score",) if "score" in a[0] \
        else ("passed",)
    if all(x.get(k) == y.get(k) for x, y in zip(a, b, strict=True) for k in outcome):
        return f"unchanged ({len(ids)} probes, paired)"
    evals = params.get("eval", {})
    if "nats" in a[0] and ("bootstrap_resamples" not in evals or "seed" not in params):
        raise DataError("params.yaml at head lacks eval.bootstrap_resamples or seed, which "
                        "the paired loss interval needs; regenerate it with "
                        "`python -m stages.tools.compose`")
    cfg = SimpleNamespace(eval=SimpleNamespace(bootstrap_resamples=evals.get(
        "bootstrap_resamples")), seed=params.get("seed"))
    stat, _, _ = paired(a, b, cfg)
    return since_text(stat.delta, stat.low, stat.high, f"{stat.n} probes, paired")


def unpaired_since(before: dict, row: dict, v: str) -> str | None:
    """From summary rows alone, for pass/fail outcomes (those carry a McNemar p): each
    revision's pass rate over its n probes, Newcombe's hybrid score interval for the
    difference of two independent proportions (method 10, Newcombe 1998) from Wilson
    intervals. None for other outcomes: a mean alone says nothing of its spread."""
    if not all(f"{v}_p" in r and f"{v}_n" in r for r in (before, row)):
        return None
    from scipy.stats import binomtest

    def wilson(p: float, n: int) -> tuple[float, float]:
        ci = binomtest(round(p * n), n).proportion_ci(confidence_level=0.95, method="wilson")
        return ci.low, ci.high

    p1, n1, p2, n2 = before[v], before[f"{v}_n"], row[v], row[f"{v}_n"]
    (l1, u1), (l2, u2) = wilson(p1, n1), wilson(p2, n2)
    d = p2 - p1
    low = d - ((p2 - l2) ** 2 + (u1 - p1) ** 2) ** 0.5
    high = d + ((u2 - p2) ** 2 + (p1 - l1) ** 2) ** 0.5
    return since_text(d, low, high, f"{n1} and {n2} probes, unpaired")


def since_text(delta: float, low: float, high: float, how: str) -> str:
    if low <= 0 <= high:
        return f"no change beyond noise ({signed(delta)} [{num(low)}, {num(high)}], {how})"
    return f"**{signed(delta)}** [{num(low)}, {num(high)}] ({how})"


def other_table(rows: list[tuple[str, str, dict]]) -> str:
    variants = list(dict.fromkeys(k.removesuffix("_delta") for _, _, row in rows
                                  for k in row if k.endswith("_delta")))
    return table(["suite", "metric", "base", *variants], [
        [f"`{suite}`", metric, num(row["base"]), *(
            f"{num(row[v])} ({signed(row[f'{v}_delta'])})" if f"{v}_delta" in row else "–"
            for v in variants)] for suite, metric, row in rows])


def read_cost(rev: Revision, metrics: str) -> dict[str, dict[str, float]]:
    """{what: {cost key: value}}: each eval's cost/<variant>/<suite>.json ("eval sft/code")
    and the timings and memory in the training metrics (base, sft phases, dpo)."""
    cost = {}
    for path in list_files(rev, f"{metrics}/cost"):
        match = EVAL_COST.fullmatch(path.removeprefix(f"{metrics}/"))
        if match:
            data = load(rev, path).get(match["suite"], {})
            cost[f"eval {match['variant']}/{match['suite']}"] = data
    for stage, data in [("base", load(rev, f"{metrics}/base.json").get("base", {})),
                        ("dpo", load(rev, f"{metrics}/dpo.json").get("dpo", {}))]:
        cost[stage] = data
    for path in list_files(rev, f"{metrics}/sft"):
        if path.endswith(".json") and "/plots/" not in path:
            phase = Path(path).stem
            cost[f"sft {phase}"] = load(rev, path).get("sft", {}).get(phase, {})
    return {what: {k: v for k, v in data.items() if k in COST_KEYS and v is not None}
            for what, data in cost.items() if any(k in COST_KEYS for k in data)}


def cost_section(old: dict, new: dict) -> str:
    """Timings and memory: they change from machine to machine, so no verdicts, and never in
    the capability table."""
    keys = [k for k in COST_KEYS if any(k in data for data in new.values())]
    rows = [[what, *(cost_cell(old.get(what, {}).get(k), data.get(k)) for k in keys)]
            for what, data in new.items()]
    body = table(["", *keys], rows) if rows else "No cost figures."
    return ("## Cost (machine-dependent: head, and base in parentheses; no verdicts)\n\n"
            + body)


def cost_cell(before: float | None, after: float | None) -> str:
    if after is None:
        return "–"
    return num(after) + (f" ({num(before)})" if before is not None else "")


def replies_section(head: Revision, snap: dict) -> str:
    """The probes whose outcome flipped against the base model, with both replies."""
    parts = ["## Replies that flipped (base model → variant)",
             f"At most {FLIPS_SHOWN} per suite, variant and direction; "
             "`python -m stages.tools.report --flips SUITE` shows all of them."]
    for suite in snap["params"].get("eval", {}).get("suites", []):
        parts.append(flips_text(head, snap, suite, cap=FLIPS_SHOWN))
    return "\n\n".join(parts)


def flips_text(head: Revision, snap: dict, suite: str, cap: int | None) -> str:
    # the revision's own variants; one from before params.yaml listed them trained no OPTIONAL one
    variants = snap["params"].get("variants", [v for v in VARIANTS if v not in OPTIONAL])
    tasks, missing = {}, []
    for v in variants:
        path = f"{snap['metrics']}/tasks/{v}/{suite}.jsonl"
        rows = read_tasks(head, path)
        if rows is None:
            missing.append(path)
        else:
            tasks[v] = rows
    title = f"### `{suite}`"
    if missing:
        return (f"{title}\n\nPer-probe replies not available ({', '.join(missing)}: DVC-cached "
                "outputs, in neither the workspace nor the local DVC cache; `dvc pull` or "
                "`dvc repro` brings them).")
    base = {r["id"]: r for r in tasks["base"] if isinstance(r.get("passed"), bool)}
    if not base:
        return f"{title}\n\nNo pass/fail outcomes to flip (graded or loss-based suite)."
    lines = [title]
    for v in variants[1:]:
        other = {r["id"]: r for r in tasks[v]}
        lost = [i for i in base if base[i]["passed"] and i in other and not other[i]["passed"]]
        gained = [i for i in base if not base[i]["passed"] and i in other and other[i]["passed"]]
        lines.append(f"**{v}**: {len(lost)} lost (base passed, {v} failed), {len(gained)} "
                     "gained.")
        for label, ids in ((f"lost by {v}", lost), (f"gained by {v}", gained)):
            for i in ids[:cap]:
                lines.append(flip_block(i, label, base[i], other[i], v))
            if cap is not None and len(ids) > cap:
                lines.append(f"... and {len(ids) - cap} more {label}.")
    return "\n\n".join(lines)


def flip_block(pid: str, label: str, base: dict, other: dict, variant: str) -> str:
    def quote(text: str) -> str:
        return "\n".join("> " + line for line in (text or "(empty)").splitlines()) or "> "
    return "\n".join([
        f"<details><summary><code>{pid}</code> ({label})</summary>", "",
        "Prompt:", quote(base.get("prompt", "")), "",
        f"Base model ({base.get('detail', '')}):", quote(base.get("reply", "")), "",
        f"{variant} ({other.get('detail', '')}):", quote(other.get("reply", "")), "",
        "</details>"])


def read_tasks(rev: Revision, path: str) -> list[dict] | None:
    """A per-probe file where it is: the workspace (for the working tree), git, else the DVC
    cache or remote (the md5 dvc.lock records at that revision); None when none has it."""
    text = None
    if rev.ref is None and (rev.repo / path).is_file():
        text = (rev.repo / path).read_text(encoding="utf-8")
    elif rev.ref is not None and (committed := read(rev, path)) is not None:
        text = committed  # a per-probe file committed to git rather than cached
    else:
        try:
            import dvc.api

            text = dvc.api.read(path, repo=str(rev.repo), rev=rev.sha if rev.ref else None,
                                encoding="utf-8")
        except Exception:  # not in the cache or no remote: the report says so instead
            text = None
    if text is None:
        return None
    return [row for _, row in parse_jsonl(text, f"{path} at {rev.label}")]


def params_section(old: dict, new: dict) -> str:
    before, after = flatten(old), flatten(new)
    rows = []
    for key in sorted(before.keys() | after.keys()):
        a, b = show(before.get(key)), show(after.get(key))
        if key not in before:
            rows.append([f"`{key}`", "added", "–", b])
        elif key not in after:
            rows.append([f"`{key}`", "removed", a, "–"])
        elif a != b:
            rows.append([f"`{key}`", "changed", a, b])
    body = table(["key", "", "base", "head"], rows) if rows else "No params changed."
    return "## Params (params.yaml)\n\n" + body


def stages_section(old: dict, new: dict) -> str:
    """A stage whose dvc.lock entry (cmd, deps, params, outs with their md5s) is identical at
    both revisions was reused; one whose entry differs reran. Names as in dvc.lock:
    `eval@sft-code` for matrix stages."""
    reran = [s for s in new if s in old and new[s] != old[s]]
    reused = [s for s in new if s in old and new[s] == old[s]]
    added, removed = [s for s in new if s not in old], [s for s in old if s not in new]
    lines = [f"{what} ({len(names)}): " + (", ".join(f"`{s}`" for s in names) or "–")
             for what, names in [("Reran", reran), ("Reused", reused), ("New", added),
                                 ("Removed", removed)]]
    why = table(["stage", "what changed"], [[f"`{s}`", changes(old[s], new[s])] for s in reran])
    return "## Stages (dvc.lock)\n\n" + "  \n".join(lines) + ("\n\n" + why if reran else "")


def changes(old: dict, new: dict) -> str:
    """The inputs that differ: cmd, params (by top-level key; the params table has the exact
    keys) and deps; outs only when no input did."""
    parts = ["cmd"] if old.get("cmd") != new.get("cmd") else []
    a, b = (flatten(entry.get("params", {}).get("params.yaml", {})) for entry in (old, new))
    groups = dict.fromkeys(k.split(".")[0] for k in sorted(a.keys() | b.keys())
                           if a.get(k) != b.get(k))
    parts += ["params: " + ", ".join(groups)] if groups else []
    a, b = ({d["path"]: d for d in entry.get("deps", [])} for entry in (old, new))
    deps = [p for p in sorted(a.keys() | b.keys()) if a.get(p) != b.get(p)]
    parts += ["deps: " + ", ".join(deps)] if deps else []
    return "; ".join(parts) or "outs only (same inputs, different outputs)"


def data_card_section(old: dict, new: dict) -> str:
    before, after = flatten(old), flatten(new)
    rows = []
    for key in [*after, *(k for k in before if k not in after)]:
        a, b = before.get(key), after.get(key)
        delta = "new" if a is None else "removed" if b is None else signed(b - a)
        rows.append([key, "–" if a is None else num(a), "–" if b is None else num(b), delta])
    body = table(["curate", "base", "head", "Δ"], rows) if rows else "No curate.json."
    return "## Data card (curate.json)\n\n" + body


def draw_plots(old: dict, new: dict, images: Path, labels: tuple[str, str]) -> list[tuple]:
    """One PNG per plot in the same axes: the head curve solid, the base curve dashed on top of
    it, so that an unchanged curve shows as both."""
    images.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name in [*new, *(n for n in old if n not in new)]:
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for label, curves, style in ((labels[1], new, "-"), (labels[0], old, "--")):
            if name in curves:
                ax.plot(*curves[name], style, label=label)
        ax.set(title=name, xlabel="step")
        ax.legend()
        fig.tight_layout()
        path = images / (name.replace("/", "-") + ".png")
        tmp = path.with_name(f".{path.name}.tmp")
        FigureCanvasAgg(fig).print_png(tmp)
        os.replace(tmp, path)  # a killed run leaves no half-written image
        drawn.append((name, path))
    return drawn


def plots_section(plots: list[tuple[str, Path]], out_dir: Path) -> str:
    links = [f"![{name}]({Path(os.path.relpath(path, out_dir)).as_posix()})"
             for name, path in plots]
    return "## Plots (base dashed, head solid)\n\n" + ("\n".join(links) or "No plot TSVs.")


def commands_section(base: Revision, head: Revision) -> str:
    # dvc compares against the workspace when the second revision is left out.
    revs = f"{base.sha} {head.sha if head.ref else ''}".rstrip()
    return "\n".join([
        "## Reproduce", "", "```bash",
        f"git checkout {head.sha}",
        "bash setup.sh && dvc repro",
        f"dvc metrics diff {revs}",
        f"dvc params diff {revs}",
        f"dvc plots diff {revs}",
        f"python -m stages.tools.report --base {base.sha}" + (f" --head {head.sha}" if head.ref else ""),
        "```"])


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(cells) + " |"
                     for cells in [header, ["---"] * len(header), *rows])


def num(x: float | None) -> str:
    """As summary rounds (4 places), trailing zeros dropped: 0.9231, -0.08, 21027."""
    if x is None:
        return "–"
    return str(x) if isinstance(x, int) else f"{round(x, 4) + 0.0:.10g}"  # + 0.0: no "-0"


def pvalue(p: float | None) -> str:
    """A p-value as a reader wants it: 0.125, 0.0313, and 6e-08 rather than 0."""
    return "–" if p is None else f"{p:.1g}" if 0 < p < 1e-4 else num(p)


def signed(x: float) -> str:
    text = num(x)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def show(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


if __name__ == "__main__":
    run_stage(main)
