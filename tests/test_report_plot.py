"""The learning-forgetting plot of the PR report, checked through its matplotlib artists (not
its pixels): the budget band, variants drawn apart, the retention suites named, the verdict
words in the legend."""

from __future__ import annotations

import pytest

from stages.tools import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def summary(forgot_ci=(-0.18, -0.02), suites=("knowledge",)) -> dict:
    """sft and dpo on the very same point with the very same CIs: the case where one
    variant's error bars used to hide the other's."""
    low, high = forgot_ci
    learned = {"suite": "identity", "metric": "consistency", "base": 0.0}
    forgot = {"suites": list(suites), "base": 1.0}
    for v in ("sft", "dpo"):
        learned.update({v: 1.0, f"{v}_delta": 1.0, f"{v}_ci95_low": 0.74, f"{v}_ci95_high": 1.0})
        forgot.update({v: 0.9, f"{v}_delta": round((low + high) / 2, 4), f"{v}_ci95_low": low,
                       f"{v}_ci95_high": high})
    return {"identity": {"consistency": {"sft_verdict": "improved", "dpo_verdict": "improved"}},
            "learned_forgot": {"learned": learned, "forgot": forgot}}


def params(budget: dict | None = None, retention=("hellaswag", "knowledge")) -> dict:
    return {"eval": {"budget": {"knowledge": 0.05} if budget is None else budget,
                     "retention": list(retention)}}


def variant_points(ax) -> list[tuple[float, float]]:
    return [(c.lines[0].get_xdata()[0], c.lines[0].get_ydata()[0]) for c in ax.containers]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_the_budget_band_spans_minus_the_budget_to_zero():
    ax = report.learned_forgot_figure(summary(), params()).axes[0]
    bands = [p for p in ax.patches if "budget" in p.get_label()]
    assert len(bands) == 1
    (y0, y1) = sorted(bands[0].get_path().transformed(bands[0].get_patch_transform())
                      .get_extents().intervaly)
    assert (y0, y1) == pytest.approx((-0.05, 0.0))


def test_variants_on_the_same_point_are_drawn_apart_on_both_axes():
    fig = report.learned_forgot_figure(summary(), params())
    (x1, y1), (x2, y2) = variant_points(fig.axes[0])
    assert x1 != x2 and y1 != y2
    # A shift of DODGE of each axis's span, no more: x spans 0..1, y spans -0.18..0.
    assert abs(x1 - x2) == pytest.approx(report.DODGE * 1.0)
    assert abs(y1 - y2) == pytest.approx(report.DODGE * 0.18)
    assert "drawn 0.03 apart on x" in fig.axes[0].get_title(loc="left")


def test_the_legend_gives_each_variants_verdicts():
    texts = legend_texts(report.learned_forgot_figure(summary(), params()))
    # CI [-0.18, -0.02] contains -0.05: inconclusive; the target's verdict from its row.
    assert "sft: learned improved, retention inconclusive" in texts
    assert "dpo: learned improved, retention inconclusive" in texts
    assert "retention budget: a drop of at most 0.05" in texts
    over = legend_texts(report.learned_forgot_figure(summary(forgot_ci=(-0.38, -0.22)),
                                                     params()))
    assert "sft: learned improved, retention over-budget" in over


def test_the_axes_name_the_retention_suites_and_those_not_run():
    fig = report.learned_forgot_figure(summary(suites=("hellaswag", "knowledge")),
                                       params({"knowledge": 0.05, "hellaswag": 0.03},
                                              ("hellaswag", "arc_challenge", "knowledge")))
    ax = fig.axes[0]
    assert ax.get_ylabel().endswith("mean of:\nhellaswag, knowledge")
    assert ax.get_xlabel() == "learned: identity consistency delta (95% CI)"
    assert "retention suites not run: arc_challenge" in ax.get_title(loc="left")
    # the band is the mean of the two suites' budgets
    assert "retention budget: a drop of at most 0.04" in legend_texts(fig)


def test_no_band_without_a_budget_for_every_retention_suite():
    fig = report.learned_forgot_figure(summary(suites=("hellaswag", "knowledge")), params())
    ax = fig.axes[0]
    assert not [p for p in ax.patches if "budget" in p.get_label()]
    assert "no band: eval.budget lacks a retention suite" in ax.get_title(loc="left")
    # without a budget the verdict is the plain CI reading (below 0: regressed)
    assert "sft: learned improved, retention regressed" in legend_texts(fig)


def test_retention_budget_is_the_mean_of_the_suites_budgets():
    assert report.retention_budget({"a": 0.05, "b": 0.03}, ["a", "b"]) == pytest.approx(0.04)
    assert report.retention_budget({"a": 0.05}, ["a", "b"]) is None
    assert report.retention_budget({"a": 0.05}, []) is None


def test_the_png_is_written_and_nothing_without_target_or_retention(tmp_path):
    path = report.draw_learned_forgot(summary(), params(), tmp_path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert report.draw_learned_forgot({"learned_forgot": {}}, params(), tmp_path / "x") is None
    assert not (tmp_path / "x").exists()
