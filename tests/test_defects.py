"""Each injected defect changes one thing, and the change is one a test can catch."""

from __future__ import annotations

import ast
import random

from stages.data.defects import (
    candidates,
    dropped_exception_handling,
    first_expected_value,
    flipped_comparison,
    hard_coded_value,
    off_by_one,
)
from stages.sandbox.execute import run_tests


def rewrite(fn, source: str, *args) -> str:
    tree = ast.parse(source)
    assert fn(tree, *args)
    return ast.unparse(tree)


def test_flipped_comparison():
    assert rewrite(flipped_comparison, "def f(a, b):\n    return a < b") == \
        "def f(a, b):\n    return a >= b"


def test_off_by_one():
    assert rewrite(off_by_one, "def f(n):\n    return list(range(0, n))") == \
        "def f(n):\n    return list(range(1, n))"


def test_dropped_exception_handling():
    src = "def f(a, b):\n    try:\n        return a / b\n    except ZeroDivisionError:\n        return None"
    assert rewrite(dropped_exception_handling, src) == "def f(a, b):\n    return a / b"


def test_hard_coded_value_returns_what_the_first_test_expects():
    expected = first_expected_value(["assert f(2) == 4", "assert f(3) == 9"])
    assert rewrite(hard_coded_value, "def f(x):\n    return x * x", expected) == \
        "def f(x):\n    return 4"


def test_candidates_are_seeded_and_each_fails_the_tests():
    src = "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    return min(x, hi)"
    tests = ["assert clamp(-1, 0, 5) == 0", "assert clamp(3, 0, 5) == 3", "assert clamp(9, 0, 5) == 5"]
    first = candidates(src, tests, random.Random(1))
    assert first == candidates(src, tests, random.Random(1))
    names = {name for name, _ in first}
    assert {"flipped_comparison", "hard_coded_value"} <= names
    assert run_tests(src, tests, 10).passed
    for _, code in first:
        if _ != "off_by_one":  # clamp has no integer constant to shift
            assert not run_tests(code, tests, 10).passed
