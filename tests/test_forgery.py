"""Replies that solve nothing and only forge the verdict (tests/forgeries.py): each one fails
on every code suite, while the suites' reference solutions still pass."""

from __future__ import annotations

import json
import textwrap

import pytest
from forgeries import forged
from test_evalplus import TASKS as HUMANEVAL

from conftest import REPO, SHARED_DATASETS, stage_cfg, tiny_params
from stages.config import EvalStage
from stages.sandbox.execute import sandbox_problem

pytestmark = pytest.mark.skipif(sandbox_problem() is not None,
                                reason="needs the bubblewrap sandbox (README setup)")

def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def read_probes(name: str) -> list[dict]:
    path = REPO / "data" / "sources" / "probes" / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def cfg(tmp_path):
    params = tiny_params(tmp_path)
    params["eval"]["limit"] = None
    return stage_cfg(EvalStage, params)


def test_the_code_suite_passes_references_and_fails_every_forgery(cfg):
    from stages.suites import code

    probes = read_probes("code.jsonl")
    names = list(forged("f", at_import=True))
    replies = [[fenced(p["solution"])] + [fenced(c) for c in forged(p["entry_point"], True).values()]
               for p in probes]
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"samples": len(names) + 1})})
    rows = code.judge(cfg, probes, replies)
    assert all(r["statuses"][0] == "passed" for r in rows), [r["statuses"][0] for r in rows]
    passed = {(r["id"], names[i]) for r in rows for i, s in enumerate(r["statuses"][1:])
              if s == "passed"}
    assert passed == set()


def test_the_dimensions_suite_passes_references_and_fails_every_forgery(cfg):
    from stages.suites import dimensions

    items = [i for i in read_probes("dimensions.jsonl") if i["dimension"] in ("generation", "repair")]
    assert items
    probes, replies, names = [], [], []
    for item in items:
        probes.append(item)
        replies.append([fenced(item["solution"])])
        names.append((item["id"], "reference"))
        for name, code in forged(item["entry_point"], at_import=True).items():
            probes.append(item)
            replies.append([fenced(code)])
            names.append((item["id"], name))
    rows = dimensions.judge(cfg, probes, replies)
    verdicts = {n: r["passed"] for n, r in zip(names, rows, strict=True)}
    assert {n for n, ok in verdicts.items() if n[1] == "reference" and not ok} == set()
    assert {n for n, ok in verdicts.items() if n[1] != "reference" and ok} == set()


def evalplus_forgeries(bench, task_ids, pool) -> tuple[dict, dict]:
    from stages.suites.evalplus_harness import check

    references, forgeries = {}, {}
    for task_id in task_ids:
        problem = bench.problems[task_id]
        references[task_id] = check(bench, task_id, problem["prompt"] + problem["canonical_solution"],
                                    False, pool)
        for name, code in forged(problem["entry_point"]).items():
            forgeries[(task_id, name)] = check(bench, task_id, problem["prompt"] + code, False, pool)
    return references, forgeries


def test_humaneval_plus_fails_every_forgery_on_a_three_task_file(humaneval_file):
    from stages.suites.evalplus_harness import load_benchmark, sandbox_pool

    bench = load_benchmark("humaneval+", str(humaneval_file))
    with sandbox_pool(2, unsafe=False) as pool:
        references, forgeries = evalplus_forgeries(bench, list(bench.problems), pool)
    assert all(v["base"] == v["plus"] == "pass" for v in references.values()), references
    assert {k for k, v in forgeries.items() if v["base"] == "pass" or v["plus"] == "pass"} == set()


@pytest.mark.parametrize(("name", "file"), [
    ("humaneval+", "humanevalplus/HumanEvalPlus-v0.1.10.jsonl"),
    ("mbpp+", "mbppplus/MbppPlus-v0.2.0.jsonl")])
def test_the_real_evalplus_sets_fail_every_forgery(name, file):
    from stages.suites.evalplus_harness import load_benchmark, sandbox_pool

    path = SHARED_DATASETS / file
    if not path.is_file():
        pytest.skip(f"{path} not present")
    bench = load_benchmark(name, str(path), first=8)
    task_ids = list(bench.problems)
    assert len(task_ids) == 8
    with sandbox_pool(2, unsafe=False) as pool:
        references, forgeries = evalplus_forgeries(bench, task_ids, pool)
    assert all(v["base"] == v["plus"] == "pass" for v in references.values()), references
    assert {k for k, v in forgeries.items() if v["base"] == "pass" or v["plus"] == "pass"} == set()


BCB_TEST = textwrap.dedent("""\
    import unittest
    class TestCases(unittest.TestCase):
        def test_small(self):
            self.assertEqual(task_func(2), 4)
        def test_zero(self):
            self.assertEqual(task_func(0), 0)
        def test_negative(self):
            self.assertTrue(task_func(-3) == 9)
    """)


def test_bigcodebench_fails_every_forgery():
    from stages.suites import bigcodebench as bcb

    task = {"code_prompt": "def task_func(x):\n", "test": BCB_TEST}
    assert bcb.run_one(bcb.calibrate(task, "def task_func(x):\n    return x * x\n"), task,
                       20.0)["status"] == "pass"
    outcomes = {name: bcb.run_one(bcb.calibrate(task, code), task, 20.0)
                for name, code in forged("task_func").items()}
    assert {n: o for n, o in outcomes.items() if o["status"] == "pass"} == {}


def test_bigcodebench_screen_names_what_it_rejects_and_a_report_must_name_every_test():
    from stages.suites import bigcodebench as bcb

    marks = {name: bcb.forgery_marks(code) for name, code in forged("task_func").items()}
    assert marks["frames"] == ["_getframe", "f_back", "f_globals", "f_locals"]
    assert marks["__eq__"] == ["def __eq__", "def __ne__"]
    assert "assigns json.dumps" in marks["builtins"] and "import builtins" in marks["builtins"]
    assert "import gc" in marks["gc"]
    # A constant string exec'd is screened as code; a computed one is refused.
    assert bcb.forgery_marks("exec('import gc')") == ["import gc"]
    assert bcb.forgery_marks("exec(''.join(['im', 'port gc']))") == ["exec()"]
    assert bcb.forgery_marks("import numpy as np\nx = np.stack([1])\n") == []
    assert bcb.test_names(BCB_TEST) == ["test_negative", "test_small", "test_zero"]


@pytest.fixture(scope="module")
def humaneval_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("he") / "mini-humanevalplus.jsonl"
    path.write_text("".join(json.dumps({**t, "contract": "", "atol": 0}) + "\n" for t in HUMANEVAL))
    return path
