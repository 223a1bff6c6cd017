"""Live defects of the code-health issue (#24), each pinned by a test that fails on 9cee6e5:
the wheel's contents, CSV cells with newlines, JSON Lines with U+2028 in every reader, and
which errors print as one-line messages."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from stages.config import StageError, run_stage
from stages.core.io import DataError, MissingInput, UserError
from stages.data.formats import _read_file
from stages.sandbox.execute import SandboxUnavailable
from stages.suites.evalplus_harness import Benchmark
from stages.tools.judge import read_samples
from stages.tools.report import Revision, read_tasks

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_every_module_of_the_source_tree(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)], check=True,
                   capture_output=True)
    (wheel,) = tmp_path.glob("stages-*.whl")
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("stages/")}
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "stages").rglob("*.py")}
    assert "stages/suites/knowledge.py" in packed
    assert source - packed == set()


def test_csv_cell_keeps_its_newlines(tmp_path):
    path = tmp_path / "rows.csv"
    code = "def f():\n    return 1"
    # a Windows file: CRLF rows, CRLF inside the quoted cell (read as "\n", like any text file)
    path.write_text('instruction,output\r\n"write f","def f():\r\n    return 1"\r\nnext,x\r\n',
                    encoding="utf-8", newline="")
    rows = _read_file(path)
    assert [r for _, r in rows] == [{"instruction": "write f", "output": code},
                                    {"instruction": "next", "output": "x"}]
    # errors name the line a row starts on: the second row starts on line 4, after the cell's
    # line break
    assert [w for w, _ in rows] == [f"{path}:line 2", f"{path}:line 4"]


REPLY = "line one\u2028line two\u0085three"


def test_report_reads_tasks_whose_replies_hold_line_separators(tmp_path):
    rows = [{"id": "t1", "reply": REPLY, "passed": True}, {"id": "t2", "reply": "x", "passed": False}]
    (tmp_path / "tasks.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert read_tasks(Revision(tmp_path, None, "0" * 40), "tasks.jsonl") == rows


def test_score_reads_samples_whose_solutions_hold_line_separators(tmp_path):
    bench = Benchmark(name="humaneval+", problems={"T/0": {"prompt": "def f():\n"}},
                      expected={}, md5="")
    path = tmp_path / "samples.jsonl"
    solution = f"def f():\n    return '{REPLY}'\n"
    path.write_text(json.dumps({"task_id": "T/0", "solution": solution}, ensure_ascii=False)
                    + "\n", encoding="utf-8")
    (sample,) = read_samples(path, bench, sanitize=False)
    assert sample["task_id"] == "T/0"
    assert REPLY in sample["code"]
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"samples.jsonl:1: a sample is a JSON object"):
        read_samples(path, bench, sanitize=False)


@pytest.mark.parametrize("error", [
    DataError("rows.csv:line 3: no `output`; add the column"),
    MissingInput("models/base not found; run `dvc repro base`"),
    StageError("eval.suites is empty; set -S eval.suites=[code]"),
    SandboxUnavailable("bubblewrap is not installed; apt-get install bubblewrap"),
])
def test_user_errors_print_one_line_and_exit_1(error, capsys):
    def main():
        raise error

    with pytest.raises(SystemExit) as exited:
        run_stage(main)
    assert exited.value.code == 1
    assert isinstance(error, UserError)
    assert capsys.readouterr().err == f"error: {error}\n"


@pytest.mark.parametrize("bug", [
    lambda: list(zip([1, 2], [1], strict=True)),
    lambda: {}["missing"],
    lambda: open("/nonexistent/file"),
])
def test_bugs_keep_their_traceback(bug, capsys):
    # a plain ValueError, KeyError or FileNotFoundError is not the user's to fix: it escapes
    # run_stage, so Python prints the traceback
    with pytest.raises((ValueError, KeyError, FileNotFoundError)) as raised:
        run_stage(bug)
    assert not isinstance(raised.value, UserError)
    assert capsys.readouterr().err == ""


def _bnb_record(cause: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "bitsandbytes.backends.cpu.ops", logging.WARNING, "ops.py", 252,
        "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
        "already `pip install kernels` and the kernels >= 0.11.1", (cause,), None)


def test_only_the_missing_kernels_package_warning_is_dropped():
    import stages  # noqa: F401  (installs the filter)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert logger.filters, "no filter on bitsandbytes' logger"
    absent = ModuleNotFoundError("No module named 'kernels'", name="kernels")
    assert not any(f.filter(_bnb_record(absent)) for f in logger.filters)
    broken = RuntimeError("kernels-community: version 1 has no gemm_4bit_forward")
    assert all(f.filter(_bnb_record(broken)) for f in logger.filters)
    other = logging.LogRecord(logger.name, logging.WARNING, "ops.py", 1, "something else", (), None)
    assert all(f.filter(other) for f in logger.filters)


def test_a_process_that_imports_stages_loads_bitsandbytes_quietly():
    """End to end: bitsandbytes, imported after stages (as trl and peft import it in every
    training stage), prints nothing about the missing `kernels` package."""
    done = subprocess.run([sys.executable, "-c", "import stages, bitsandbytes"],
                          capture_output=True, text=True, check=True)
    assert "kernels" not in done.stderr and "kernels" not in done.stdout
