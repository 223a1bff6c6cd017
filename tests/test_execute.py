"""Model-written code runs out of process: what passes, what fails, what cannot cheat."""

from __future__ import annotations

import os
import time

from stages.execute import run_many, run_tests

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


def test_run_many_keeps_input_order():
    jobs = [(ADD, TESTS), ("def add(a, b):\n    return 0\n", TESTS), (ADD, TESTS)]
    assert [o.passed for o in run_many(jobs, 10, "test")] == [True, False, True]
