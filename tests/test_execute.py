"""Model-written code runs out of process: what passes, what fails, what cannot cheat."""

from __future__ import annotations

import os
import time

from stages.sandbox.execute import run_many, run_tests

ADD = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]


def test_correct_code_passes():
    assert run_tests(ADD, TESTS, 10).status == "passed"


def test_wrong_syntax_and_runtime_errors_are_told_apart():
    assert run_tests("def add(a, b):\n    return a - b\n", TESTS, 10).status == "wrong_answer"
    assert run_tests("def add(a, b) return", TESTS, 10).status == "syntax_error"
    assert run_tests("def add(a, b):\n    return a / 0\n", TESTS, 10).status == \
        "runtime_error:ZeroDivisionError"


def test_an_endless_loop_times_out_from_outside():
    start = time.monotonic()
    outcome = run_tests("def add(a, b):\n    while True:\n        pass\n", TESTS, 1.0)
    assert outcome.status == "timeout"
    assert time.monotonic() - start < 5


def test_exiting_early_with_status_zero_does_not_pass():
    code = "import os\nos._exit(0)\n"
    assert not run_tests(code, TESTS, 10).passed


def test_printing_the_pass_marker_does_not_pass():
    code = "print('PASSED 0')\nimport sys\nsys.exit(0)\n"
    assert not run_tests(code, TESTS, 10).passed


def test_code_runs_in_a_throwaway_directory(tmp_path):
    marker = tmp_path / "marker"
    code = f"import os\nopen('x.txt', 'w').write('x')\n{ADD}"
    assert run_tests(code, TESTS, 10).passed
    assert not marker.exists() and not os.path.exists("x.txt")


def test_a_sample_cannot_shadow_the_builtins_the_test_uses():
    tests = ["assert abs(half(1) - 0.5) < 1e-6", "assert sorted([half(2), 0]) == [0, 1.0]"]
    assert run_tests("def half(x):\n    return x / 2\n", tests, 10).passed
    forged = ("def abs(x):\n    return 0\ndef sorted(x):\n    return [0, 1.0]\n"
              "def half(x):\n    return float('nan')\n")
    assert run_tests(forged, tests, 10).status == "wrong_answer"


def test_run_many_keeps_input_order():
    jobs = [(ADD, TESTS), ("def add(a, b):\n    return 0\n", TESTS), (ADD, TESTS)]
    assert [o.passed for o in run_many(jobs, 10, "test")] == [True, False, True]


def test_plain_values_round_trip_exactly_and_nothing_else_crosses():
    """stages/sandbox/plain.py: what a sample's function returns, as the judge receives it."""
    import collections

    import numpy as np
    import pytest

    from stages.sandbox import plain

    values = [None, True, 0, -(1 << 63), 1 << 63, 10 ** 40, 2.0, -0.0, float("inf"), 1e300,
              "x\n", b"\x00\xff", 1 + 2j, [1, 2.0, "a"], (1,), [[], ()], {1, "a"},
              frozenset({2}), {(1, 2): [None], "k": {3.5}}, [i / 3 for i in range(100)],
              tuple([7] + [0.5] * 99), np.float32(1.5), np.arange(6).reshape(2, 3)]
    for value in values:
        back = plain.decode(plain.encode(value))
        assert type(back) is type(value) and repr(back) == repr(value), value
    nan = plain.decode(plain.encode(float("nan")))
    assert nan != nan
    # A subclass crosses as its base type's contents, not as itself.
    point = collections.namedtuple("Point", "x y")(1, 2)
    assert type(plain.decode(plain.encode(point))) is tuple

    class AnyInt(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    assert plain.decode(plain.encode(AnyInt(5))) == 5 and plain.decode(plain.encode(AnyInt(5))) != 6
    for bad in [object(), lambda: 1, np.array([object()]), iter([1])]:
        with pytest.raises(plain.NotPlain):
            plain.encode(bad)
    loop = []
    loop.append(loop)
    with pytest.raises(plain.NotPlain):
        plain.encode(loop)
    # The judge's decoder takes no untagged container, no unknown tag, no bare NaN, no
    # unhashable key, no object dtype, no malformed packed doubles.
    for text in ['[1]', '{"L": [1], "T": []}', '{"x": 1}', "NaN", '{"D": [[{"L": [1]}, 2]]}',
                 '{"n": ["|O", 1]}', '{"Ld": ["AAAA", []]}', '{"Ld": ["AAAAAAAAAAA=", [[3, 1]]]}',
                 '{"S": [{"L": []}]}', '{"f": 1.0}']:
        with pytest.raises(plain.NotPlain):
            plain.decode(text)
