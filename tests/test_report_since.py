"""The report's "since base" column: the variant at head against itself at the base revision,
tested per probe, so a rerun on another machine that moves a probe or two reads as noise."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_report import git, write

from stages.tools import report

N = 26  # the identity suite's probes, as in issue 21's example


def summary_row(base: float, values: dict[str, tuple[float, float]]) -> dict:
    """A judged pass/fail row: each variant's value, and the p and n summary writes."""
    row = {"base": base}
    for v, (value, p) in values.items():
        row.update({v: value, f"{v}_delta": round(value - base, 4), f"{v}_n": N, f"{v}_p": p,
                    f"{v}_ci95_low": -0.1, f"{v}_ci95_high": 0.1, f"{v}_verdict": "within-noise"})
    return row


def loss_row(base: float, sft: float) -> dict:
    return {"base": base, "sft": sft, "sft_delta": round(sft - base, 4), "sft_n": 8,
            "sft_ci95_low": -0.1, "sft_ci95_high": 0.1, "sft_verdict": "within-noise"}


def tasks(passed: list[bool]) -> str:
    return "".join(json.dumps({"id": f"p{i}", "metric": "consistency", "passed": p}) + "\n"
                   for i, p in enumerate(passed))


def loss_tasks(nats: list[float]) -> str:
    return "".join(json.dumps({"id": f"l{i}", "metric": "code_loss", "nats": x, "tokens": 10})
                   + "\n" for i, x in enumerate(nats))


def files(sft: list[bool], dpo: list[bool], nats: list[float], with_tasks: bool = True) -> dict:
    out = {
        "params.yaml": {"seed": 0, "paths": {"metrics": "metrics"},
                        "eval": {"suites": ["identity", "perplexity"],
                                 "bootstrap_resamples": 999}},
        "dvc.lock": {"schema": "2.0", "stages": {}},
        "metrics/summary.json": {
            "identity": {"consistency": summary_row(0.0, {"sft": (sum(sft) / N, 0.5),
                                                          "dpo": (sum(dpo) / N, 0.5)})},
            "perplexity": {"code_loss": loss_row(1.0, sum(nats) / (10 * len(nats)))}},
    }
    if with_tasks:
        out["metrics/tasks/base/identity.jsonl"] = tasks([False] * N)
        out["metrics/tasks/sft/identity.jsonl"] = tasks(sft)
        out["metrics/tasks/dpo/identity.jsonl"] = tasks(dpo)
        out["metrics/tasks/sft/perplexity.jsonl"] = loss_tasks(nats)
    return out


def two_commits(root: Path, before: dict, after: dict) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q")
    for key, value in [("user.name", "Test"), ("user.email", "test@example.com"),
                       ("commit.gpgsign", "false")]:
        git(root, "config", key, value)
    for message, content in [("base", before), ("head", after)]:
        for stale in root.glob("metrics/tasks/*/*.jsonl"):
            stale.unlink()
        write(root, content)
        git(root, "add", "-A")
        git(root, "commit", "-q", "--allow-empty", "-m", message)
    return root


def since_cells(repo: Path, tmp_path: Path) -> dict[str, str]:
    """{variant suite: its since-base cell} from the capability table, against HEAD~1."""
    text = report.main(["--base", "HEAD~1", "--head", "HEAD", "--out",
                        str(tmp_path / "r.md")], repo=repo)
    cells = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) == 10 and parts[0].startswith("`") and parts[2] in ("sft", "dpo"):
            cells[f"{parts[2]} {parts[0].strip('`')}"] = parts[9]
    return cells


def flip(outcomes: list[bool], count: int, to: bool) -> list[bool]:
    """`outcomes` with the first `count` probes that are not `to` set to `to`."""
    out, left = list(outcomes), count
    for i, x in enumerate(out):
        if left and x != to:
            out[i], left = to, left - 1
    return out


def test_a_probe_moved_by_another_machine_is_noise_and_a_real_drop_is_not(tmp_path):
    """Issue 21: identity 0.9615 -> 0.9231 on an unchanged commit (one probe of 26) is
    noise; dpo losing 16 of its 26 passes is a change, in bold."""
    sft = [True] * 25 + [False]
    nats = [5.0, 6.0, 4.0, 7.0, 5.5, 6.5, 4.5, 5.0]
    before = files(sft, [True] * N, nats)
    moved = [x + d for x, d in zip(nats, [0.02, -0.01, 0.01, -0.02, 0.0, 0.01, -0.01, 0.0],
                                   strict=True)]
    after = files(flip(sft, 1, False), flip([True] * N, 16, False), moved)
    cells = since_cells(two_commits(tmp_path / "repo", before, after), tmp_path)
    assert re.fullmatch(r"no change beyond noise \(-0\.0385 \[-?[\d.]+, [\d.]+\], 26 probes, "
                        r"paired\)", cells["sft identity"]), cells
    assert cells["dpo identity"].startswith("**-0.6154** [")
    assert cells["dpo identity"].endswith("(26 probes, paired)")
    assert cells["sft perplexity"].startswith("no change beyond noise ("), cells
    assert cells["sft perplexity"].endswith("8 probes, paired)")


def test_a_rerun_with_the_same_outcomes_reads_unchanged(tmp_path):
    sft = [True] * 25 + [False]
    nats = [5.0, 6.0, 4.0, 7.0, 5.5, 6.5, 4.5, 5.0]
    same = files(sft, sft, nats)
    cells = since_cells(two_commits(tmp_path / "repo", same, same), tmp_path)
    assert cells["sft identity"] == "unchanged (26 probes, paired)"
    assert cells["sft perplexity"] == "unchanged (8 probes, paired)"


def test_without_per_probe_files_the_pass_rates_are_compared_unpaired(tmp_path):
    """Newcombe's interval from n and the two rates: 25/26 -> 24/26 holds 0 (worked by
    hand: Wilson 24/26 [0.7586, 0.9786], 25/26 [0.8111, 0.9932]; low -0.0385 -
    sqrt(0.1645^2 + 0.0316^2) = -0.206, high -0.0385 + sqrt(0.0556^2 + 0.1505^2) = 0.1219);
    26/26 -> 10/26 does not. A loss has no spread in summary.json: not tested."""
    sft = [True] * 25 + [False]
    before = files(sft, [True] * N, [5.0] * 8, with_tasks=False)
    after = files(flip(sft, 1, False), flip([True] * N, 16, False), [5.5] * 8,
                  with_tasks=False)
    cells = since_cells(two_commits(tmp_path / "repo", before, after), tmp_path)
    assert cells["sft identity"] == ("no change beyond noise (-0.0385 [-0.206, 0.1219], "
                                     "26 and 26 probes, unpaired)")
    assert cells["dpo identity"].startswith("**-0.6154** [")
    assert cells["sft perplexity"] == "+0.05 (not tested)"
