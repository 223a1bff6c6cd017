"""HumanEval+-format scoring on a three-task file written here: `stages.tools.judge --samples` and
the humaneval+ eval suite, with evalplus's data layer and rules and our sandbox."""

from __future__ import annotations

import json

import pytest

from conftest import read_json, stage_cfg
from stages.sandbox.execute import sandbox_problem
from stages.suites.code import FAILURE_KINDS

pytestmark = pytest.mark.skipif(sandbox_problem() is not None,
                                reason="needs the bubblewrap sandbox (README setup)")

TASKS = [
    {"task_id": "HumanEval/0", "entry_point": "add",
     "prompt": 'def add(a, b):\n    """Return a + b."""\n', "canonical_solution": "    return a + b\n",
     "base_input": [[1, 2], [0, 0]], "plus_input": [[-5, 5], [10**9, 1]]},
    {"task_id": "HumanEval/1", "entry_point": "is_even",
     "prompt": 'def is_even(n):\n    """True if n is even."""\n',
     "canonical_solution": "    return n % 2 == 0\n",
     "base_input": [[2], [3]], "plus_input": [[0], [-7], [10**6]]},
    {"task_id": "HumanEval/2", "entry_point": "halve",
     "prompt": 'def halve(x):\n    """x / 2 as a float."""\n', "canonical_solution": "    return x / 2\n",
     "base_input": [[3]], "plus_input": [[1e-9], [7]]},
]


@pytest.fixture(scope="session")
def humaneval_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("he") / "mini-humanevalplus.jsonl"
    path.write_text("".join(json.dumps({**t, "contract": "", "atol": 0}) + "\n" for t in TASKS))
    return path


def write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_gives_base_and_plus_verdicts(humaneval_file, tmp_path):
    from stages.tools import judge

    samples = write_samples(tmp_path / "samples.jsonl", [
        {"task_id": "HumanEval/0", "solution": TASKS[0]["prompt"] + TASKS[0]["canonical_solution"]},
        {"task_id": "HumanEval/1", "completion": "    return n % 2 == 0 if n >= 0 else False\n"},
        {"task_id": "HumanEval/2", "completion": "    while True:\n        pass\n"},
    ])
    out = tmp_path / "result.json"
    judge.main(["--suite", "humaneval+", "--dataset-path", str(humaneval_file),
                "--samples", str(samples), "--out", str(out)])
    result = read_json(out)
    # The is_even completion differs from the reference only for negative even numbers,
    # which no input has: it passes. The endless loop hits evalplus's per-input time limit,
    # which evalplus reports as a fail, not a timeout.
    tasks = {t: rows[0] for t, rows in result["tasks"].items()}
    assert tasks["HumanEval/0"] == {"base_status": "pass", "plus_status": "pass", "failure": None}
    assert tasks["HumanEval/1"] == {"base_status": "pass", "plus_status": "pass", "failure": None}
    assert tasks["HumanEval/2"] == {"base_status": "fail", "plus_status": "fail",
                                    "failure": "timeout"}
    assert result["pass@1"] == {"base": round(2 / 3, 4), "plus": round(2 / 3, 4)}
    assert len(result["dataset_md5"]) == 32


def test_plus_tests_catch_what_base_tests_miss(humaneval_file, tmp_path):
    from stages.tools import judge

    # Right on every base input, wrong on the plus input -5 + 5.
    samples = write_samples(tmp_path / "s.jsonl", [
        {"task_id": "HumanEval/0", "completion": "    return abs(a) + b if a else b\n"}])
    out = tmp_path / "r.json"
    judge.main(["--suite", "humaneval+", "--dataset-path", str(humaneval_file),
                "--samples", str(samples), "--out", str(out)])
    result = read_json(out)
    assert result["tasks"]["HumanEval/0"] == [{"base_status": "pass", "plus_status": "fail",
                                                "failure": "wrong_answer"}]
    assert result["pass@1"] == {"base": 1.0, "plus": 0.0}


# Solutions of HumanEval/0 (add; base inputs (1, 2), (0, 0); plus (-5, 5), (10**9, 1)), each
# with the verdicts evalplus gives it and why it fails, at its first failing input.
ADD = TASKS[0]["prompt"]
FAILURES = [
    (ADD + "    return a + b\n", "pass", "pass", None),
    (ADD + "    return a - b\n", "fail", "fail", "wrong_answer"),  # 1 - 2 != 3
    (ADD + "    return (a + b) // (a - a)\n", "fail", "fail", "runtime_error:ZeroDivisionError"),
    # Right on every base input; -5 + 5 divides by zero.
    (ADD + "    return a + b if a >= 0 else 1 // 0\n", "pass", "fail",
     "runtime_error:ZeroDivisionError"),
    (ADD + "    return [a][b]\n", "fail", "fail", "runtime_error:IndexError"),  # [1][2]
    # evalplus's per-input limit (1 s) ends the loop and calls it a fail, not a timeout.
    (ADD + "    while True:\n        pass\n", "fail", "fail", "timeout"),
    ("def add(a, b) return a + b\n", "fail", "fail", "syntax_error"),
    ("def plus(a, b):\n    return a + b\n", "fail", "fail", "runtime_error:NameError"),
]


def test_a_failing_sample_says_why_and_keeps_evalplus_verdicts(humaneval_file, tmp_path,
                                                                monkeypatch):
    from evalplus.evaluate import check_correctness

    from stages.suites.evalplus_harness import load_benchmark
    from stages.tools import judge

    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "solution": code}
                                                   for code, *_ in FAILURES])
    out = tmp_path / "r.json"
    judge.main(["--suite", "humaneval+", "--dataset-path", str(humaneval_file),
                "--samples", str(samples), "--out", str(out)])
    rows = read_json(out)["tasks"]["HumanEval/0"]
    assert [(r["base_status"], r["plus_status"], r["failure"]) for r in rows] == [
        tuple(f[1:]) for f in FAILURES]

    # The same verdicts from evalplus itself, run here in its own forked child. Without a
    # memory cap: evalplus's 4 GiB cap counts this test process, whatever else it has loaded.
    monkeypatch.setenv("EVALPLUS_MAX_MEMORY_BYTES", "-1")
    bench = load_benchmark("humaneval+", str(humaneval_file))
    for code, base, plus, _ in FAILURES:
        theirs = check_correctness("humaneval", 0, bench.problems["HumanEval/0"], code,
                                   bench.expected["HumanEval/0"], fast_check=True)
        assert (theirs["base"][0], theirs["plus"][0]) == (base, plus), code


def test_bad_samples_name_the_line(humaneval_file, tmp_path):
    from stages.tools import judge

    samples = write_samples(tmp_path / "s.jsonl", [{"task_id": "HumanEval/99", "solution": "x"}])
    with pytest.raises(ValueError, match=r"s\.jsonl:1: task_id 'HumanEval/99' is not in"):
        judge.main(["--suite", "humaneval+", "--dataset-path", str(humaneval_file),
                    "--samples", str(samples), "--out", str(tmp_path / "r.json")])


def test_humaneval_suite_runs_on_the_tiny_model(pipeline, humaneval_file):
    from stages import eval as eval_stage
    from stages.config import EvalStage

    root, params = pipeline
    benchmarks = {**params["benchmarks"], "humanevalplus": str(humaneval_file)}
    params = {**params, "benchmarks": benchmarks,
              "eval": {**params["eval"], "suites": [*params["eval"]["suites"], "humaneval+"]}}
    metrics = eval_stage.main("sft", "humaneval+", stage_cfg(EvalStage, params))
    tasks = [json.loads(line) for line in
             (root / "metrics" / "tasks" / "sft" / "humaneval+.jsonl").read_text().splitlines()]
    assert len(tasks) == 3 and metrics["tasks"] == 3
    assert metrics["pass@1"] == sum(t["passed"] for t in tasks) / 3
    kinds = [t["failure"] for t in tasks]
    assert all(k is None or k.split(":")[0] in FAILURE_KINDS for k in kinds)
    assert sum(metrics[f"fail_{k}"] for k in FAILURE_KINDS) == pytest.approx(1 - metrics["pass@1"])
    by_type = [v for k, v in metrics.items() if k.startswith("fail_runtime_error:")]
    assert sum(by_type) == pytest.approx(metrics["fail_runtime_error"])


MBPP_TASKS = [
    {"task_id": "Mbpp/3", "entry_point": "double",
     "prompt": '"""\nWrite a function to double a number.\nassert double(2) == 4\n"""\n',
     "canonical_solution": "def double(x):\n    return 2 * x\n",
     "base_input": [[2], [0]], "plus_input": [[-3], [10**6]]},
]


def test_mbpp_suite_runs_on_the_tiny_model(pipeline, tmp_path_factory):
    from stages import eval as eval_stage
    from stages.config import EvalStage

    path = tmp_path_factory.mktemp("mbpp") / "mini-mbppplus.jsonl"
    path.write_text("".join(json.dumps({**t, "contract": "", "atol": 0}) + "\n"
                            for t in MBPP_TASKS))
    root, params = pipeline
    benchmarks = {**params["benchmarks"], "mbppplus": str(path)}
    params = {**params, "benchmarks": benchmarks,
              "eval": {**params["eval"], "suites": [*params["eval"]["suites"], "mbpp+"]}}
    metrics = eval_stage.main("base", "mbpp+", stage_cfg(EvalStage, params))
    assert metrics["tasks"] == 1 and metrics["dataset_md5"]
    assert metrics["evalplus_version"].startswith("0.")
    assert 0.0 <= metrics["pass@1"] <= metrics["pass@1_base"] <= 1.0


def test_the_first_tasks_get_expected_outputs_of_their_own(humaneval_file):
    # eval.limit computes expected outputs for its tasks only; evalplus caches them by key,
    # so the subset's cache must not stand in for the whole file's, before or after it.
    from stages.suites.evalplus_harness import load_benchmark

    first = load_benchmark("humaneval+", str(humaneval_file), first=1)
    whole = load_benchmark("humaneval+", str(humaneval_file))
    again = load_benchmark("humaneval+", str(humaneval_file), first=1)
    assert list(first.problems) == list(again.problems) == list(whole.problems)[:1]
    assert set(first.expected) == set(again.expected) == set(list(whole.problems)[:1])
    assert set(whole.expected) == set(whole.problems) and len(whole.problems) == len(TASKS)
    assert first.md5 == whole.md5  # the file's hash, as public runs report it
