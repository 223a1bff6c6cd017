"""BigCodeBench suites on a ten-row file in its format: canonical solutions pass, wrong ones
fail with their kind, hostile samples fail in the sandbox and leave the host alone."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from test_sandbox import canary, hostile_samples, listener  # noqa: F401 (fixtures)

from conftest import SHARED_DATASETS, stage_cfg, tiny_params
from stages.config import EvalStage
from stages.core.io import DataError
from stages.sandbox.execute import sandbox_problem
from stages.suites import bigcodebench as bcb

SHARED = SHARED_DATASETS / "benchmarks" / "bigcodebench" / "BigCodeBench.jsonl"
needs_sandbox = pytest.mark.skipif(sandbox_problem() is not None,
                                   reason=f"no bubblewrap sandbox here ({sandbox_problem()})")


def task(i: int, libs: list[str] | None = None) -> dict:
    """Task i: task_func(x) returns x * i joined by a separator, with the stdlib only."""
    code_prompt = "import itertools\nimport json\ndef task_func(x, sep='-'):\n"
    doc = f'    """Repeat x {i} times, joined by sep, as JSON.\n    """\n'
    test = textwrap.dedent(f"""\
        import unittest
        import json
        class TestCases(unittest.TestCase):
            def test_value(self):
                self.assertEqual(json.loads(task_func('a')), '-'.join(['a'] * {i}))
            def test_sep(self):
                self.assertEqual(json.loads(task_func('b', sep='+')), '+'.join(['b'] * {i}))
        """)
    return {"task_id": f"BigCodeBench/{i}", "complete_prompt": code_prompt + doc,
            "instruct_prompt": f"Repeat x {i} times joined by sep, as JSON.\n```\n"
                               f"{code_prompt}```",
            "canonical_solution": f"    return json.dumps(sep.join(itertools.repeat(x, {i})))\n",
            "code_prompt": code_prompt, "test": test, "entry_point": "task_func",
            "doc_struct": "{}", "libs": repr(libs or ["itertools", "json"])}


def write_tasks(path: Path, tasks: list[dict]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")
    return path


def make_cfg(tmp_path: Path, data: Path | None, **eval_) -> EvalStage:
    params = tiny_params(tmp_path)
    params["benchmarks"]["bigcodebench"] = str(data) if data else None
    params["eval"].update({"limit": None, "bigcodebench_timeout_s": 20.0, **eval_})
    return stage_cfg(EvalStage, params)


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```\n"


@pytest.fixture
def ten(tmp_path):
    return write_tasks(tmp_path / "BigCodeBench.jsonl", [task(i) for i in range(1, 11)])


def test_prompts_are_bigcodebench_s_complete_and_instruct_wording(tmp_path, ten):
    cfg = make_cfg(tmp_path, ten)
    complete = bcb.probes(cfg, "bigcodebench-complete")
    instruct = bcb.probes(cfg, "bigcodebench-instruct")
    assert [p["id"] for p in complete] == [f"BigCodeBench/{i}" for i in range(1, 11)]
    assert bcb.prompt(cfg, complete[0]) == (
        f"{bcb.INSTRUCTION}\n```\nimport itertools\nimport json\ndef task_func(x, sep='-'):\n"
        '    """Repeat x 1 times, joined by sep, as JSON.\n    """\n```\n')
    assert bcb.prompt(cfg, instruct[0]).startswith(f"{bcb.INSTRUCTION}\nRepeat x 1 times")


@needs_sandbox
def test_canonical_solutions_pass_and_wrong_ones_fail_with_their_kind(tmp_path, ten):
    cfg = make_cfg(tmp_path, ten)
    probes = bcb.probes(cfg, "bigcodebench-complete")
    canonical = [[fenced(bcb.canonical(p))] for p in probes]
    # The reply drops the imports: calibration (code_prompt first) still provides them.
    canonical[1] = [fenced("def task_func(x, sep='-'):\n"
                           "    return json.dumps(sep.join(itertools.repeat(x, 2)))")]
    wrong = [
        [fenced("def task_func(x, sep='-'):\n    return json.dumps(x + x)")],
        [fenced("def task_func(x, sep='-'):\n    return {}[x]")],
        [fenced("def task_func(x, sep='-':\n    return x")],
        [""],
        [fenced("def task_func(x, sep='-'):\n    while True:\n        pass")],
        [fenced("import sys\ndef task_func(x, sep='-'):\n    sys.exit(0)\n    return x")],
    ]
    rows = bcb.judge(cfg, probes, canonical)
    assert [r["status"] for r in rows] == ["pass"] * 10
    rows = bcb.judge(cfg, probes[:6], wrong)
    assert [r["failure"] for r in rows] == ["wrong_answer", "runtime_error:KeyError",
                                            "syntax_error", "no_code", "timeout",
                                            "runtime_error:SystemExit"]
    assert not any(r["passed"] for r in rows)
    assert "test_sep" in rows[0]["detail"] and "test_value" in rows[0]["detail"]
    metrics = bcb.aggregate(cfg, rows)
    assert metrics["pass@1"] == 0.0 and metrics["tasks"] == 6
    assert metrics["fail_wrong_answer"] == round(1 / 6, 4)
    assert metrics["dataset_md5"] == hashlib.md5(ten.read_bytes()).hexdigest()


@needs_sandbox
def test_hostile_samples_fail_in_the_sandbox_and_the_host_is_unharmed(tmp_path, ten, canary,  # noqa: F811
                                                                     listener):  # noqa: F811
    port, accepted = listener
    samples = hostile_samples(canary, port)
    probes, replies = [], []
    for name, (code, asserts) in samples.items():
        # sanitize keeps only definitions and imports, so the attack runs from task_func,
        # into the module's globals, where the test's asserts look for what it did.
        body = "        task_func('a')\n" + "".join(textwrap.indent(a, "        ") + "\n"
                                                for a in asserts)
        probes.append({**task(1), "libs": ["json"], "id": name, "suite": "bigcodebench-complete",
                       "test": "import unittest\nclass TestCases(unittest.TestCase):\n"
                               f"    def test_attack(self):\n{body}"})
        replies.append([fenced(f"def task_func(x, sep='-'):\n    exec({code!r}, globals())\n"
                               "    return x\n")])
    cfg = make_cfg(tmp_path, ten, bigcodebench_timeout_s=10.0)
    rows = bcb.judge(cfg, probes, replies)
    assert {r["id"]: r["status"] for r in rows if r["passed"]} == {}
    assert open(canary).read() == "intact"
    assert accepted == []


def test_missing_libraries_are_named_with_the_extra_or_left_out(tmp_path):
    data = write_tasks(tmp_path / "b.jsonl", [task(1), task(2, ["no_such_lib_xyz", "json"]),
                                              task(3)])
    cfg = make_cfg(tmp_path, data)
    probes = bcb.probes(cfg, "bigcodebench-instruct")
    with pytest.raises(RuntimeError, match=r"no_such_lib_xyz \(1 tasks\).*\.\[bigcodebench\]"):
        bcb.judge(cfg, probes, [["x"]] * 3)
    cfg = make_cfg(tmp_path, data, bigcodebench_missing_libs="skip")
    assert [p["id"] for p in bcb.probes(cfg, "bigcodebench-instruct")] == [
        "BigCodeBench/1", "BigCodeBench/3"]


def test_bad_rows_and_missing_data_are_named(tmp_path):
    bad = task(1)
    del bad["test"]
    cfg = make_cfg(tmp_path, write_tasks(tmp_path / "b.jsonl", [task(2), bad]))
    with pytest.raises(DataError, match=r"b.jsonl:2: missing \['test'\]"):
        bcb.probes(cfg, "bigcodebench-complete")
    cfg = make_cfg(tmp_path, write_tasks(tmp_path / "c.jsonl", [task(2), task(2)]))
    with pytest.raises(DataError, match="appears twice"):
        bcb.probes(cfg, "bigcodebench-complete")
    with pytest.raises(ValueError, match="-S benchmarks.bigcodebench_hard=FILE"):
        bcb.probes(make_cfg(tmp_path, None), "bigcodebench-complete-hard")


@needs_sandbox
@pytest.mark.skipif(not SHARED.is_file(), reason=f"{SHARED} (BigCodeBench v0.1.0) not present")
def test_the_shared_v0_1_0_file_loads_and_its_first_canonical_solutions_pass(tmp_path):
    cfg = make_cfg(tmp_path, SHARED, limit=6, bigcodebench_timeout_s=60.0)
    assert hashlib.md5(SHARED.read_bytes()).hexdigest() == "3522577434616e01948f44671882468e"
    assert len(bcb.load_tasks(SHARED)) == 1140
    # Task 0's canonical solution shuffles all 3.6 million permutations of ten numbers
    # (tens of seconds); the next five take well under a second each.
    probes = bcb.probes(cfg, "bigcodebench-complete")[1:]
    rows = bcb.judge(cfg, probes, [[fenced(bcb.canonical(p))] for p in probes])
    assert [r["status"] for r in rows] == ["pass"] * 5
