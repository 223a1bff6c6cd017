"""Coverage of the pass/fail paired 95% CI (stats.paired_pass_counts, Tango's score interval)
on the grid of tests/test_stats.py (issue 20), side by side with the exact conditional
(Clopper-Pearson on the discordant pairs) interval it replaced.

    python benchmarks/paired_coverage.py

Each cell: n probes, P(base only), P(variant only), 1,000 seeded multinomial draws; the figure
is the share of draws whose CI holds the true delta P(variant only) - P(base only). The draws
are the test's (same seed, same code), so the Tango column is what the test asserts >= 0.93.
"""

from __future__ import annotations

import argparse
import importlib.util

import record  # puts this checkout first on sys.path
from scipy import stats

# The test's own simulation, loaded by path: another installed package may own `tests`.
_spec = importlib.util.spec_from_file_location("test_stats",
                                               record.REPO / "tests" / "test_stats.py")
_test_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_test_stats)
coverage_table, tango = _test_stats.coverage_table, _test_stats.tango


def exact_conditional(b: int, c: int, n: int) -> tuple[float, float, float]:
    """The replaced method, for the comparison only: c ~ Binom(b + c, theta) given the
    discordant pairs, its Clopper-Pearson CI mapped onto delta = ((b + c) / n)(2 theta - 1),
    with the exact McNemar p."""
    m = b + c
    if m == 0:
        return 0.0, 0.0, 1.0
    ci = stats.binomtest(c, m, 0.5).proportion_ci(confidence_level=0.95, method="exact")
    return (m / n * (2 * ci.low - 1), m / n * (2 * ci.high - 1),
            float(stats.binomtest(b, m, 0.5).pvalue))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="record path (default results/...)")
    args = parser.parse_args()
    new, old = coverage_table(tango), coverage_table(exact_conditional)
    figures = []
    for (n, p10, p01), cov in new.items():
        label = f"n={n}, P(base only)={p10}, P(variant only)={p01}"
        print(f"{label}: tango {cov:.3f}, exact conditional {old[(n, p10, p01)]:.3f}")
        figures.append(record.figure(f"{label}: tango-score", cov, "coverage"))
        figures.append(record.figure(f"{label}: exact conditional (old)",
                                     old[(n, p10, p01)], "coverage"))
    notes = (f"Lowest Tango cell {min(new.values()):.3f}; lowest exact-conditional cell "
             f"{min(old.values()):.3f}. 1,000 draws a cell, seed 20; the test "
             "(tests/test_stats.py::test_pass_fail_ci_holds_its_coverage_on_every_cell) "
             "asserts every Tango cell >= 0.93 and, on every draw, p < 0.05 exactly when the "
             "CI excludes 0.")
    print(notes)
    record.write("paired_coverage", "Coverage of the pass/fail paired 95% CI", figures, notes,
                 args.json)


if __name__ == "__main__":
    main()
