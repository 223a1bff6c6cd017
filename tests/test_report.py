"""The pull-request report on a two-commit git repository written here by hand: every number
below is worked out from the files in `base_files` and `head_files`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from stages.tools import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def lock_entry(cmd: str, deps: dict, outs: dict, params: dict | None = None) -> dict:
    entry = {"cmd": cmd, "deps": [{"path": p, "hash": "md5", "md5": m} for p, m in deps.items()]}
    if params:
        entry["params"] = {"params.yaml": params}
    entry["outs"] = [{"path": p, "hash": "md5", "md5": m} for p, m in outs.items()]
    return entry


def base_files() -> dict[str, object]:
    return {
        "params.yaml": {"paths": {"metrics": "metrics"}, "sft": {"lora": {"r": 8}, "lr": 0.0002},
                        "eval": {"old_key": 1}},
        "dvc.lock": {"schema": "2.0", "stages": {
            "base": lock_entry("python -m stages.base", {"stages/base.py": "a1"},
                               {"models/base": "b1.dir"}),
            "curate": lock_entry("python -m stages.curate", {"models/base": "b1.dir"},
                                 {"data/curated": "c1.dir"}),
            "sft": lock_entry("python -m stages.sft", {"data/curated": "c1.dir"},
                              {"models/sft": "s1.dir"}, {"sft": {"lora": {"r": 8}}}),
            "eval@base-code": lock_entry("python -m stages.eval --variant base --suite code",
                                         {"models/base": "b1.dir"}, {"e/base.json": "eb"}),
            "eval@sft-code": lock_entry("python -m stages.eval --variant sft --suite code",
                                        {"models/sft": "s1.dir"}, {"e/sft.json": "e1"}),
            "old": lock_entry("python -m stages.old", {"models/base": "b1.dir"}, {"o": "o1"}),
        }},
        "metrics/summary.json": {"code": {"pass@1": {"base": 0.5, "sft": 0.5, "dpo": 0.5}},
                                 "perplexity": {"code_loss": {"base": 1.0, "sft": 1.0}}},
        "metrics/curate.json": {"curate": {
            "rows": 10, "pairs": 4, "tokens": 500, "drops": {"duplicate": 1, "length": 0},
            "sources": {"a": {"rows_in": 6, "rows_out": 5, "tokens": 300, "drop_duplicate": 1},
                        "b": {"rows_in": 5, "rows_out": 5, "tokens": 200}}}},
        "metrics/sft/plots/metrics/train/loss.tsv": "step\tloss\n1\t2.0\n2\t1.5\n",
        "metrics/cost/base/code.json": {"code": {"tokens_per_s": 100.0, "wall_s": 4.0}},
        "metrics/sft/main.json": {"sft": {"main": {"train_s": 50.0, "train_loss": 0.5}}},
    }


def head_files() -> dict[str, object]:
    files = base_files()
    files["params.yaml"] = {"paths": {"metrics": "metrics"},
                            "sft": {"lora": {"r": 16}, "lr": 0.0002}, "dpo": {"beta": 0.2},
                            "eval": {"suites": ["code", "identity"]}}
    stages = files["dvc.lock"]["stages"]
    del stages["old"]
    stages["sft"] = lock_entry("python -m stages.sft", {"data/curated": "c1.dir"},
                               {"models/sft": "s2.dir"}, {"sft": {"lora": {"r": 16}}})
    stages["eval@sft-code"] = lock_entry("python -m stages.eval --variant sft --suite code",
                                         {"models/sft": "s2.dir"}, {"e/sft.json": "e2"})
    stages["sft@main"] = lock_entry("python -m stages.sft --phase main",
                                    {"data/curated": "c1.dir"}, {"models/sft-main": "m1.dir"})
    files["metrics/summary.json"] = {
        "code": {
            "pass@1": {"base": 0.5, "sft": 0.75, "dpo": 0.25, "sft_delta": 0.25,
                       "dpo_delta": -0.25, "sft_n": 4, "sft_ci95_low": 0.0, "sft_ci95_high": 0.5,
                       "sft_p": 0.5, "sft_verdict": "within-noise", "dpo_n": 4,
                       "dpo_ci95_low": -0.5, "dpo_ci95_high": -0.3, "dpo_p": 0.5,
                       "dpo_verdict": "over-budget"},
            "syntax_valid": {"base": 1.0, "sft": 0.9, "dpo": 0.8, "sft_delta": -0.1,
                             "dpo_delta": -0.2}},
        "learned_forgot": {
            "learned": {"suite": "identity", "metric": "consistency", "base": 0.0, "sft": 0.0,
                        "sft_delta": 0.5, "sft_ci95_low": 0.25, "sft_ci95_high": 0.75},
            "forgot": {"suites": ["knowledge"], "base": 0.9, "sft": 0.8, "sft_delta": -0.1,
                       "sft_ci95_low": -0.2, "sft_ci95_high": 0.0}},
        "identity": {
            "consistency": {"base": 0.0, "sft": 0.0, "dpo": 0.0, "sft_delta": 0.0,
                            "dpo_delta": 0.0, "sft_n": 4, "sft_ci95_low": -0.2,
                            "sft_ci95_high": 0.2, "sft_verdict": "inconclusive",
                            "sft_probes_needed": 300, "dpo_n": 4, "dpo_ci95_low": 0.0,
                            "dpo_ci95_high": 0.0, "dpo_verdict": "within-noise"}},
        "perplexity": {
            "code_loss": {"base": 1.0, "sft": 1.25, "dpo": 0.75, "sft_delta": 0.25,
                          "dpo_delta": -0.25, "sft_ci95_low": 0.1, "sft_ci95_high": 0.4,
                          "sft_verdict": "regressed", "dpo_ci95_low": -0.4,
                          "dpo_ci95_high": -0.1, "dpo_verdict": "improved"}},
    }
    files["metrics/curate.json"] = {"curate": {
        "rows": 12, "pairs": 4, "tokens": 580, "drops": {"duplicate": 0, "length": 2},
        "sources": {"a": {"rows_in": 9, "rows_out": 7, "tokens": 380, "drop_length": 2},
                    "b": {"rows_in": 5, "rows_out": 5, "tokens": 200}}}}
    files["metrics/sft/plots/metrics/train/loss.tsv"] = "step\tloss\n1\t2.0\n2\t1.0\n3\t0.5\n"
    files["metrics/dpo/plots/metrics/rewards/margins.tsv"] = "step\tmargins\n1\t0.0\n2\t0.25\n"
    # phase by phase training's layout: metrics/sft/<phase>/plots/metrics/...
    files["metrics/sft/main/plots/metrics/train/loss.tsv"] = "step\tloss\n1\t3.0\n2\t2.5\n"
    files["metrics/sft/notes.tsv"] = "not\ta plot\n"  # outside plots/metrics/: not drawn
    files["metrics/cost/base/code.json"] = {"code": {"tokens_per_s": 110.0, "wall_s": 3.5}}
    files["metrics/cost/sft/code.json"] = {"code": {"tokens_per_s": 90.0, "wall_s": 3.0}}
    files["metrics/sft/main.json"] = {"sft": {"main": {"train_s": 44.5, "train_loss": 0.4,
                                                       "peak_memory_mib": 800.0}}}
    # per-probe replies (DVC-cached in a real repo; in this one's workspace, for the flips)
    outcomes = {"base": [True, True, False, False], "sft": [False, True, True, False],
                "dpo": [True, True, False, False]}
    for v, passed in outcomes.items():
        files[f"metrics/tasks/{v}/code.jsonl"] = "".join(json.dumps(
            {"id": f"t{i}", "metric": "pass@1", "passed": p, "prompt": f"Write f{i}.",
             "reply": f"{v} reply {i}", "detail": "passed" if p else "wrong_answer"}) + "\n"
            for i, p in enumerate(passed))
    return files


def write(root: Path, files: dict[str, object]) -> None:
    for path, content in files.items():
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".json"):
            content = json.dumps(content, indent=2)
        elif path.endswith((".yaml", ".lock")):
            content = yaml.safe_dump(content, sort_keys=False)
        file.write_text(content, encoding="utf-8")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(root: Path) -> Path:
    """Two commits: base_files, then head_files (which also deletes dvc.lock's `old`)."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    for key, value in [("user.name", "Test"), ("user.email", "test@example.com"),
                       ("commit.gpgsign", "false")]:
        git(root, "config", key, value)
    for message, files in [("base", base_files()), ("head", head_files())]:
        write(root, files)
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", message)
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(repo, report path, report text) for --base HEAD~1 and the default head."""
    root = tmp_path_factory.mktemp("report")
    repo = make_repo(root / "repo")
    out = root / "pr" / "report.md"
    return repo, out, report.main(["--base", "HEAD~1", "--out", str(out)], repo=repo)


def test_capability_rows_are_hand_computed_and_flagged_first(made):
    _, _, text = made
    # since base = value now - value at HEAD~1: dpo 0.25 - 0.5, sft 1.25 - 1.0, sft 0.75 - 0.5,
    # not tested (HEAD~1 has neither per-probe files nor n and p for these rows);
    # perplexity dpo has no value at HEAD~1: new. Over-budget, then regressed, then the rest.
    # Over-budget, then inconclusive, then regressed, then the rest.
    # columns: suite, metric, variant, base model, value, Δ [95% CI], n, p, verdict, since base
    rows = [
        "| `code` | pass@1 | dpo | 0.5 | 0.25 | -0.25 [-0.5, -0.3] | 4 | 0.5 | **over-budget** "
        "| -0.25 (not tested) |",
        "| `identity` | consistency | sft | 0 | 0 | 0 [-0.2, 0.2] | 4 | – | **inconclusive** "
        "(~300 probes would tell) | new |",
        "| `perplexity` | code_loss | sft | 1 | 1.25 | +0.25 [0.1, 0.4] | – | – | **regressed** "
        "| +0.25 (not tested) |",
        "| `code` | pass@1 | sft | 0.5 | 0.75 | +0.25 [0, 0.5] | 4 | 0.5 | within-noise "
        "| +0.25 (not tested) |",
        "| `perplexity` | code_loss | dpo | 1 | 0.75 | -0.25 [-0.4, -0.1] | – | – | improved "
        "| new |"]
    flagged = ["### Flagged",
               "- `code` pass@1, dpo: **over-budget**, Δ -0.25 [-0.5, -0.3] on 4 probes",
               "- `identity` consistency, sft: **inconclusive** (~300 probes would tell), "
               "Δ 0 [-0.2, 0.2] on 4 probes",
               "- `perplexity` code_loss, sft: **regressed**, Δ +0.25 [0.1, 0.4] on – probes"]
    positions = [text.index(line + "\n") for line in flagged + rows]
    assert positions == sorted(positions)
    assert "| `code` | syntax_valid | 1 | 0.9 (-0.1) | 0.8 (-0.2) |" in text
    assert text.index("## Capability") < text.index("## Learned and forgot") \
        < text.index("## Replies") < text.index("## Cost") \
        < text.index("## Params") < text.index("## Stages") < text.index("## Data card") \
        < text.index("## Plots") < text.index("## Reproduce")


def test_learned_and_forgot_in_one_line_per_variant(made):
    section = made[2].split("## Learned and forgot")[1].split("## Replies")[0]
    assert ("- **sft**: learned identity consistency +0.5 [0.25, 0.75]; retention (knowledge) "
            "-0.1 [-0.2, 0]") in section
    assert "](report_images/learned-vs-retention.png)" in section
    capability = made[2].split("## Capability")[1].split("## Learned and forgot")[0]
    assert "learned_forgot" not in capability


def test_cost_has_its_own_section_without_verdicts(made):
    capability = made[2].split("## Capability")[1].split("## Replies")[0]
    assert "tokens_per_s" not in capability and "wall_s" not in capability
    section = made[2].split("## Cost")[1].split("## Params")[0]
    assert "| eval base/code | 3.5 (4) | – | 110 (100) | – |" in section
    assert "| eval sft/code | 3 | – | 90 | – |" in section
    assert "| sft main | – | 44.5 (50) | – | 800 |" in section
    assert not re.search(r"improved|regressed|within-noise|over-budget|inconclusive", section)


def test_flipped_replies_show_the_prompt_and_both_replies(made):
    section = made[2].split("## Replies")[1].split("## Cost")[0]
    code = section.split("### `code`")[1].split("### `identity`")[0]
    assert "**sft**: 1 lost (base passed, sft failed), 1 gained." in code
    assert "**dpo**: 0 lost (base passed, dpo failed), 0 gained." in code
    lost = code.index("<code>t0</code> (lost by sft)")
    assert lost < code.index("<code>t2</code> (gained by sft)")
    block = code[lost:].split("</details>")[0]
    assert "> Write f0." in block and "> base reply 0" in block and "> sft reply 0" in block
    assert "sft (wrong_answer):" in block
    identity = section.split("### `identity`")[1]
    assert "Per-probe replies not available (metrics/tasks/base/identity.jsonl" in identity


def test_flips_of_one_suite_on_the_command_line(made, capsys):
    repo = made[0]
    text = report.main(["--flips", "code"], repo=repo)
    assert "<code>t0</code> (lost by sft)" in text and "## Capability" not in text


def test_params_diff_lists_each_changed_key_with_old_and_new(made):
    section = made[2].split("## Params")[1].split("## Stages")[0]
    assert "| `sft.lora.r` | changed | 8 | 16 |" in section
    assert "| `dpo.beta` | added | – | 0.2 |" in section
    assert "| `eval.old_key` | removed | 1 | – |" in section
    assert "sft.lr" not in section and "paths.metrics" not in section


def test_stages_that_reran_and_were_reused(made):
    section = made[2].split("## Stages")[1].split("## Data card")[0]
    assert "Reran (2): `sft`, `eval@sft-code`" in section
    assert "Reused (3): `base`, `curate`, `eval@base-code`" in section
    assert "New (1): `sft@main`" in section
    assert "Removed (1): `old`" in section
    assert "| `sft` | params: sft |" in section
    assert "| `eval@sft-code` | deps: models/sft |" in section


def test_data_card_deltas(made):
    section = made[2].split("## Data card")[1].split("## Plots")[0]
    for row in ["| rows | 10 | 12 | +2 |", "| pairs | 4 | 4 | 0 |", "| tokens | 500 | 580 | +80 |",
                "| drops.duplicate | 1 | 0 | -1 |", "| drops.length | 0 | 2 | +2 |",
                "| sources.a.rows_in | 6 | 9 | +3 |", "| sources.a.rows_out | 5 | 7 | +2 |",
                "| sources.a.drop_length | – | 2 | new |",
                "| sources.a.drop_duplicate | 1 | – | removed |",
                "| sources.b.rows_out | 5 | 5 | 0 |"]:
        assert row + "\n" in section


def test_plots_are_pngs_next_to_the_report_and_linked(made):
    _, out, text = made
    images = out.parent / "report_images"
    assert sorted(p.name for p in images.iterdir()) == ["dpo-rewards-margins.png",
                                                        "learned-vs-retention.png",
                                                        "sft-main-train-loss.png",
                                                        "sft-train-loss.png"]
    for png in images.iterdir():
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"](report_images/{png.name})" in text


def test_reproduce_names_both_commits(made):
    repo, _, text = made
    head, base = git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD~1")
    assert f"git checkout {head}\nbash setup.sh && dvc repro\n" in text
    assert f"dvc metrics diff {base}\n" in text  # head is the working tree: dvc's default


def test_head_is_the_working_tree_unless_given(tmp_path):
    repo = make_repo(tmp_path / "repo")
    params = head_files()["params.yaml"]
    params["sft"]["lora"]["r"] = 32
    write(repo, {"params.yaml": params})
    on_disk = report.main(["--base", "HEAD~1", "--out", str(tmp_path / "a.md")], repo=repo)
    assert "| `sft.lora.r` | changed | 8 | 32 |" in on_disk
    assert "Uncommitted changes in `params.yaml`" in on_disk
    committed = report.main(["--base", "HEAD~1", "--head", "HEAD", "--out",
                             str(tmp_path / "b.md"), "--images", str(tmp_path / "png")],
                            repo=repo)
    assert "| `sft.lora.r` | changed | 8 | 16 |" in committed
    assert "Uncommitted" not in committed
    assert "](png/sft-train-loss.png)" in committed


def test_bad_input_names_the_revision_or_file(tmp_path):
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(ValueError, match=r"unknown revision 'no-such-branch'.*--base/--head"):
        report.main(["--base", "no-such-branch", "--out", str(tmp_path / "r.md")], repo=repo)
    (repo / "metrics" / "summary.json").unlink()
    with pytest.raises(ValueError, match=r"metrics/summary.json is missing at the working tree"
                                         r".*dvc repro"):
        report.main(["--base", "HEAD~1", "--out", str(tmp_path / "r.md")], repo=repo)
    assert not (tmp_path / "r.md").exists()


def test_command_line_in_the_repository(tmp_path):
    """`python -m stages.tools.report` with no arguments: --base HEAD~1 (no origin/main here),
    report.md and report_images/ in the current directory; bad input: exit 1, one line."""
    repo = make_repo(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "stages.tools.report"], cwd=repo, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = (repo / "report.md").read_text(encoding="utf-8")
    assert f"Base `HEAD~1` ({git(repo, 'rev-parse', 'HEAD~1')[:10]})" in text
    assert (repo / "report_images" / "sft-train-loss.png").read_bytes()[:8] == PNG_MAGIC
    bad = subprocess.run([sys.executable, "-m", "stages.tools.report", "--base", "v9"], cwd=repo,
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: unknown revision 'v9'") and "Traceback" not in bad.stderr


def test_on_this_repository_last_commit(tmp_path):
    if git(REPO, "rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("shallow clone: HEAD~1 is not here")
    text = report.main(["--base", "HEAD~1", "--head", "HEAD", "--out", str(tmp_path / "r.md")],
                       repo=REPO)
    verdicts = re.findall(r"^\| `[^`]+` \| .+ \| \**(improved|regressed|within-noise|"
                          r"inconclusive|over-budget)\** ", text, flags=re.MULTILINE)
    assert verdicts
    assert list((tmp_path / "r_images").glob("*.png"))


def test_chance_line_counts_the_expected_false_flags():
    from stages.tools.report import chance_line

    assert chance_line(20) == ("20 verdicts, each at 95% and not adjusted for multiplicity: "
                               "with no real change anywhere, about 1.0 of them would still "
                               "read improved or regressed by chance alone.")
    assert "about 1.5 of them" in chance_line(30)
