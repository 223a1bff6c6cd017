"""Benchmark records and BENCHMARKS.md: every script writes a record that says what ran,
where and when; render.py lists every script once; the committed page is what render.py
makes of the committed records, and each record came from the command render.py lists."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime

import pytest

from benchmarks import entries, record, render
from conftest import REPO

BENCH = REPO / "benchmarks"
HELPERS = {"__init__.py", "entries.py", "harness.py", "record.py", "render.py", "figures.py"}


def fake_record(name: str, **extra) -> dict:
    rec = {"name": name, "title": f"{name} title", "command": f"python -m benchmarks.{name}",
           "machine": {"cpu": "CPU", "arch": "x86_64", "cores": 2, "ram_gib": 8.0, "gpu": None,
                       "python": "3.11.7", "torch": "2.13.0", "torch_threads": 2,
                       "load_1min": [0.5, 1.5]},
           "date": "2026-11-21T10:00:00+00:00",
           "figures": [{"label": "rows", "value": 4249, "unit": "rows/s"}], "notes": ""}
    return {**rec, **extra}


def write_records(directory, *records) -> None:
    directory.mkdir(exist_ok=True)
    for rec in records:
        (directory / f"{rec['name']}.json").write_text(json.dumps(rec))


def test_a_record_says_what_ran_where_and_when(tmp_path, monkeypatch):
    # python -m benchmarks.curate_bench: sys.argv[0] is the module's file
    monkeypatch.setattr(sys, "argv", [str(BENCH / "curate_bench.py"), "--rows", "100 000"])
    monkeypatch.setattr(record, "main_module", lambda: "benchmarks.curate_bench")
    out = record.write("curate_bench", "Curate", [record.figure("dedup", 23.5, "s")],
                       "a note", tmp_path / "r.json")
    rec = json.loads(out.read_text())
    assert list(rec) == ["name", "title", "command", "machine", "date", "commit", "dirty",
                         "inputs", "figures", "notes"]
    assert rec["inputs"] == {}  # the command names no file
    assert set(render.RECORD_KEYS) <= set(rec)
    # This checkout's HEAD and what differs from it, as git says.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True)
    assert rec["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert isinstance(rec["dirty"], list)
    # As typed from the repo root, quoted where the shell needs it.
    assert rec["command"] == "python -m benchmarks.curate_bench --rows '100 000'"
    assert rec["figures"] == [{"label": "dedup", "value": 23.5, "unit": "s"}]
    assert datetime.fromisoformat(rec["date"]).tzinfo is not None
    m = rec["machine"]
    assert m["cores"] >= 1 and m["ram_gib"] > 0 and m["cpu"] and m["torch"]
    assert len(m["load_1min"]) == 2


def test_a_record_pins_the_files_its_command_names(tmp_path, monkeypatch):
    data = tmp_path / "tasks.jsonl"
    data.write_text('{"task_id": "t/0"}\n')
    monkeypatch.setattr(sys, "argv", [str(BENCH / "score_vs_evalplus.py"), "--dataset-path",
                                      str(data), f"--other={data}", "--repeats", "3"])
    want = hashlib.sha256(data.read_bytes()).hexdigest()
    assert record.inputs() == {str(data): want}
    data.write_text('{"task_id": "t/1"}\n')  # another copy of the dataset: another hash
    assert record.inputs() != {str(data): want}


def test_the_page_lists_known_benchmarks_in_order_then_new_ones_by_name(tmp_path):
    write_records(tmp_path, fake_record("zz_new"), fake_record("rerun_bench"),
                  fake_record("aa_new"), fake_record("curate_bench"))
    names = [r["name"] for r in render.load(tmp_path)]
    assert names == ["curate_bench", "rerun_bench", "aa_new", "zz_new"]


def test_a_benchmark_table_shows_command_machine_date_and_figures(tmp_path):
    rec = fake_record("curate_bench", figures=[
        {"label": "dedup", "value": 4249, "unit": "rows/s"},
        {"label": "dedup", "value": 23.5, "unit": "s"},
        {"label": "pass@1", "value": 0.9939, "unit": ""},
        {"label": "ran", "value": "dpo, eval@{dpo-code, dpo-identity}", "unit": "3 stages"}])
    page = render.render([rec])
    assert "| command | `python -m benchmarks.curate_bench` |" in page
    assert ("| machine | CPU (x86_64), 2 cores, 8.0 GiB RAM, no GPU; Python 3.11.7, torch "
            "2.13.0 (threads: 2); load average 0.5 at the start, 1.5 at the end |") in page
    assert "| date | 2026-11-21T10:00:00+00:00 |" in page
    assert "| commit | not recorded" in page
    assert "| commit | 0123456789; uncommitted changes to stages/x.py |" in render.render(
        [{**rec, "commit": "0123456789abcdef", "dirty": ["stages/x.py"]}])
    for row in ("| dedup | 4,249 | rows/s |", "| dedup | 23.5 | s |", "| pass@1 | 0.9939 |  |",
                "| ran | dpo, eval@{dpo-code, dpo-identity} | 3 stages |"):
        assert row in page


def test_bad_records_are_named_all_at_once(tmp_path):
    bad = fake_record("curate_bench")
    del bad["machine"]
    worse = fake_record("rerun_bench", figures=[{"label": "x"}])
    write_records(tmp_path, bad, worse)
    (tmp_path / "renamed.json").write_text(json.dumps(fake_record("other")))
    with pytest.raises(ValueError) as err:
        render.load(tmp_path)
    message = str(err.value)
    assert "curate_bench.json: missing machine" in message
    assert "rerun_bench.json: missing figures[0].value, figures[0].unit" in message
    assert "renamed.json: name is 'other'" in message


def scripts() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("*.py") if p.name not in HELPERS)


def test_every_benchmark_script_has_an_entry():
    assert {entry.module for entry in entries.ENTRIES} == set(scripts())
    assert render.BENCHMARKS == {e.name: e.command for e in entries.ENTRIES}


def test_every_record_has_an_entry():
    orphans = sorted(p.name for p in entries.RESULTS.glob("*.json")
                     if p.stem not in entries.BY_NAME)
    assert not orphans, f"records without an entry in benchmarks/entries.py: {orphans}"


@pytest.mark.parametrize("script", scripts())
def test_every_script_can_write_its_record_elsewhere(script):
    entry = next(e for e in entries.ENTRIES if e.module == script)
    run = entry.command.split()[1:3]
    done = subprocess.run([sys.executable, *run, "--help"], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert "--json" in done.stdout


@pytest.mark.parametrize("entry", entries.ENTRIES, ids=lambda e: e.name)
def test_every_entry_has_a_record_from_its_command(entry):
    path = entry.record
    if entry.not_run:
        assert not path.exists(), f"{entry.name} has a record now: drop its not_run"
        pytest.skip(f"{entry.name} not run yet: {entry.not_run}")
    assert path.exists(), (f"no {path.relative_to(REPO)}: "
                           f"python -m benchmarks.render --run --only {entry.name}")
    rec = json.loads(path.read_text())
    assert entry.ran(rec["command"]), (f"{path.name} came from {rec['command']!r}, "
                                       f"its entry says {entry.command!r}")
    assert "commit" in rec, f"{path.name} has no commit (null where it is not known)"
    # The data it read outside git is the data here (where this checkout has it).
    changed = [f for f, sha in (rec.get("inputs") or {}).items()
               if (REPO / f).is_file() and hashlib.sha256((REPO / f).read_bytes()).hexdigest() != sha]
    assert not changed, f"{entry.name} measured other copies of {changed}: rerun it"
    assert set(rec.get("inputs") or {}) <= set(entry.inputs), "an input its entry does not name"


@pytest.mark.parametrize("entry", entries.ENTRIES, ids=lambda e: e.name)
def test_no_record_names_a_config_key_the_schema_rejects(entry):
    assert not entries.rejected(entries.overrides(entry.command)), entry.command
    if not entry.record.exists():
        pytest.skip("no record")
    rec = json.loads(entry.record.read_text())
    bad = entries.rejected(entries.overrides(rec["command"], rec["notes"]))
    if entry.stale:
        assert bad, f"{entry.name}'s record names no rejected key now: drop its stale"
        pytest.xfail(f"known stale: {entry.stale}")
    assert not bad, (f"{entry.record.name} ran with {bad}, which stages.config's Config "
                     "rejects: rerun it, or give its entry a stale reason")


def test_the_rejected_key_check_reads_commands_and_notes():
    assert entries.overrides("python -m benchmarks.pipeline_bench -S sft.lora.r=8 --threads 1",
                             "shrunk with -S sft.epochs=1") == ["sft.lora.r", "sft.epochs"]
    assert entries.overrides("python benchmarks/sweep.py sft.lora.r=8,16 -S rl=grpo") == [
        "rl", "sft.lora.r"]
    assert entries.rejected(["sft.lora.r", "sft.epochs", "rl", "sft.phases.main.epochs"]) == [
        "sft.epochs"]


def test_committed_page_is_rendered_from_the_committed_records():
    assert render.PAGE.read_text(encoding="utf-8") == render.render(render.load(render.RESULTS)), (
        "BENCHMARKS.md is stale: python -m benchmarks.render")


def test_a_real_benchmark_run_writes_a_record_the_page_renders(tmp_path):
    out = tmp_path / "results" / "curate_bench.json"
    subprocess.run([sys.executable, "-m", "benchmarks.curate_bench", "--rows", "300",
                    "--full-rows", "30", "--json", str(out)], cwd=REPO, check=True,
                   capture_output=True)
    rec = render.load(out.parent)[0]
    assert rec["command"] == ("python -m benchmarks.curate_bench --rows 300 --full-rows 30 "
                              f"--json {out}")
    labels = [f["label"] for f in rec["figures"]]
    assert labels[:2] == ["dedup (exact + MinHash LSH) + 10-gram decontamination, 300 rows"] * 2
    assert "## Curate throughput" in render.render([rec])


def test_step_profile_splits_self_time_by_kind_and_counts_the_optimizer_once():
    from types import SimpleNamespace

    from benchmarks.step_profile import shares

    def event(key, self_us, total_us=None, flops=0):
        return SimpleNamespace(key=key, self_cpu_time_total=self_us,
                               cpu_time_total=self_us if total_us is None else total_us,
                               flops=flops)

    events = [event("aten::mm", 40, flops=8_000), event("aten::addmm", 10, flops=2_000),
              event("aten::_scaled_dot_product_flash_attention_for_cpu", 15),
              event("aten::_scaled_dot_product_flash_attention_for_cpu_backward", 10),
              # AdamW.step's own time is 1 us, its lerp_ 4 us inside it: 5 us in all, once
              event("Optimizer.step#AdamW.step", 1, total_us=5), event("aten::lerp_", 4),
              event("aten::fill_", 20)]
    s = shares(events)
    assert s == {"total_us": 100, "matmul_us": 50, "attention_us": 25, "optimizer_us": 5,
                 "other_us": 20, "matmul_flops": 10_000}
