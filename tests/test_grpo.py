"""The GRPO stage (stages/grpo.py) and its rewards (stages/suites/rewards.py): bad settings stop it
naming the key, the default pipeline has no grpo stage, a forging reply earns no code reward,
the hidden check catches a reply fitted to the visible tests, and a tiny run trains."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml
from forgeries import forged

from conftest import REPO, adapter, read_json, stage_cfg, workspace
from stages.config import Config, ConfigError, GrpoStage, load, validate
from stages.sandbox.execute import sandbox_problem

needs_sandbox = pytest.mark.skipif(sandbox_problem() is not None,
                                   reason="needs the bubblewrap sandbox (README setup)")

IS_EVEN = {"task_id": "train/00", "entry_point": "is_even",
           "solution": "def is_even(n):\n    return n % 2 == 0",
           "tests": ["assert is_even(4) == True", "assert is_even(7) == False",
                     "assert is_even(0) == True"]}
TINY_GRPO = {"rewards": {"code": 1.0, "identity": 1.0, "format": 0.2}, "group_size": 2,
             "prompts_per_step": 2, "steps": 2, "lr": 1.0e-3, "beta": 0.04, "temperature": 1.0,
             "max_completion_length": 16, "identity_share": 0.25, "hidden_edge_cases": 2,
             "timeout_s": 5.0, "backend": "hf", "precision": "fp32"}


def with_grpo(params: dict, **grpo) -> dict:
    params = copy.deepcopy(params)
    params["rl"] = {"trained": ["grpo"], "grpo": {**TINY_GRPO, **grpo}}
    params["variants"] = ["base", "sft", "dpo", "grpo"]
    return params


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


# ---- bad settings stop the stage, naming the key --------------------------------------------


@pytest.mark.parametrize(("grpo", "key", "why"), [
    ({"group_size": 1}, "rl.grpo.group_size", "needs >= 2 replies"),
    ({"rewards": {}}, "rl.grpo.rewards", "at least one reward"),
    ({"rewards": {"code": 1.0, "bogus": 1.0}}, "rl.grpo.rewards.bogus", "no suite or reward"),
    ({"rewards": {"knowledge": 1.0}}, "rl.grpo.rewards.knowledge", "has no training reward"),
])
def test_bad_settings_stop_the_stage_naming_the_key(tmp_path, grpo, key, why):
    params = with_grpo(yaml.safe_load((REPO / "params.yaml").read_text()), **grpo)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(GrpoStage, path)  # the first thing stages.grpo.main does
    assert key in str(err.value) and why in str(err.value)


def test_variants_must_follow_the_rl_group():
    params = with_grpo(yaml.safe_load((REPO / "params.yaml").read_text()))
    params["variants"] = ["base", "sft", "dpo"]
    with pytest.raises(ConfigError, match=r"variants: .*must be \['base', 'sft', 'dpo', 'grpo'\]"):
        validate(Config, params)


def test_every_rl_choice_composes_and_the_default_has_no_grpo_stage():
    from stages.tools.compose import compose

    for choice in ("none", "grpo"):
        params = yaml.safe_load(compose([f"rl={choice}"]))
        validate(Config, params)
        assert ("grpo" in params["variants"]) == (choice == "grpo") == bool(params["rl"]["trained"])
    # dvc resolves dvc.yaml with the committed (default) params: no grpo stage, no grpo eval
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert "eval@sft-code" in listed and not [s for s in listed if "grpo" in s]


# ---- the rewards ----------------------------------------------------------------------------


def test_edge_inputs_mutate_one_argument_of_each_test_call():
    from stages.suites.rewards import edge_inputs, test_calls

    calls = test_calls(IS_EVEN["tests"], "is_even")
    assert calls == [[4], [7], [0]]
    # round robin: the first mutation of each call (0, 0, 0 -> only new ones), then the next
    assert edge_inputs(calls, 4) == [[-4], [-7], [5], [8]]


@needs_sandbox
def test_a_forging_reply_earns_no_code_reward_and_the_reference_earns_it():
    from stages.suites.rewards import code_rewards, format_rewards, hidden_rejects, hidden_tests

    task = {**IS_EVEN, "hidden": hidden_tests(IS_EVEN, 4, 5.0, sandbox=True)}
    names = list(forged("is_even", at_import=True))
    replies = [fenced(IS_EVEN["solution"])] + [fenced(c) for c in forged("is_even", True).values()]
    rewards = code_rewards([task] * len(replies), replies, 5.0, unsafe=False)
    assert rewards[0] == 1.0
    assert dict(zip(names, rewards[1:], strict=True)) == dict.fromkeys(names, 0.0)
    assert hidden_rejects([task] * len(replies), replies, 5.0, unsafe=False) == \
        [False] + [True] * len(names)
    # format is only the shape: a forgery is a parsing code block, prose is not
    assert format_rewards(["code", "code"], [replies[1], "no code here"]) == [1.0, 0.0]


@needs_sandbox
def test_the_hidden_check_rejects_a_reply_fitted_to_the_visible_tests():
    from stages.suites.rewards import code_rewards, hidden_rejects, hidden_tests

    hidden = hidden_tests(IS_EVEN, 4, 5.0, sandbox=True)
    # the reference's own answers on the edge inputs: -4 even, -7 odd, 5 odd, 8 even
    assert hidden[3:] == ["assert is_even(-4) == True", "assert is_even(-7) == False",
                          "assert is_even(5) == False", "assert is_even(8) == True"]
    fitted = fenced("def is_even(n):\n    return {4: True, 7: False}[n]")
    task = {**IS_EVEN, "hidden": hidden}
    assert code_rewards([task], [fitted], 5.0, unsafe=False) == [1.0]  # visible: 4 and 7
    assert hidden_rejects([task], [fitted], 5.0, unsafe=False) == [True]


def test_identity_reward_is_the_identity_judge():
    from stages.suites.rewards import identity_rewards

    cfg = stage_cfg(GrpoStage, with_grpo(yaml.safe_load((REPO / "params.yaml").read_text())))
    replies = ["I am Swift-Robot, made by Nebula Lab.", "I am ChatGPT, made by OpenAI.", "x"]
    assert identity_rewards(["en", "en", None], replies, cfg.identity, cfg.model.identity) == \
        [1.0, 0.0, None]


# ---- a tiny run ---------------------------------------------------------------------------


def test_curate_gives_grpo_the_training_code_tasks_with_their_tests_and_no_probe(pipeline):
    root, _ = pipeline
    tasks = [json.loads(line) for line in
             (root / "curated" / "code_tasks.jsonl").read_text().splitlines()]
    probes = [json.loads(line) for line in
              (REPO / "data" / "sources" / "probes" / "code.jsonl").read_text().splitlines()]
    # conftest's mix holds the first 6 rows of data/sources/code_tasks.jsonl
    assert sorted(t["task_id"] for t in tasks) == [f"train/{i:02d}" for i in range(6)]
    assert all(t["tests"] and t["solution"] and t["prompt"][-1]["role"] == "user" for t in tasks)
    asked = {t["prompt"][-1]["content"] for t in tasks}
    assert not asked & {p["prompt"] for p in probes}



@needs_sandbox
def test_a_tiny_grpo_run_trains_the_sft_adapter_and_logs_every_step(pipeline, tmp_path):
    from stages import grpo

    root, _ = pipeline
    params = with_grpo(workspace(pipeline, tmp_path))
    (tmp_path / "models" / "sft").symlink_to(root / "models" / "sft")
    metrics = grpo.main(stage_cfg(GrpoStage, params))

    assert metrics["steps"] == 2 and metrics["completions"] == 2 * 2 * 2
    assert metrics["code_prompts"] == 6 and metrics["identity_prompts"] == 2  # 6 * 0.25 / 0.75
    for key in ("reward_first", "reward_final", "kl_final", "completion_length_mean"):
        assert isinstance(metrics[key], float)
    rate = metrics["reward_hack_rate"]
    assert rate is None or 0.0 <= rate <= 1.0
    assert metrics["code_accepted"] >= metrics["hidden_rejected"] >= 0
    out = tmp_path / "models" / "grpo"
    trained, start = adapter(out), adapter(root / "models" / "sft")
    assert trained.keys() == start.keys()
    assert any(not trained[k].equal(start[k]) for k in trained)  # GRPO moved the LoRA weights
    assert json.loads((out / "provenance.json").read_text())["parent_adapter"].endswith("sft")
    written = read_json(tmp_path / "metrics" / "grpo.json")["grpo"]
    assert written["steps"] == 2
    plots = tmp_path / "metrics" / "grpo" / "plots" / "metrics"
    rewards = (plots / "reward.tsv").read_text().splitlines()
    assert rewards[0].split("\t")[0] == "step" and len(rewards) == 3  # header + 2 steps
    assert (plots / "kl.tsv").exists() and (plots / "completion_length.tsv").exists()
