"""conf/ composes into the committed params.yaml, every option validates, bad values stop a
stage with one message naming the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import REPO, repo_params
from stages import compose
from stages.config import (
    BaseStage,
    Config,
    ConfigError,
    CurateStage,
    DpoStage,
    EvalStage,
    SftConfig,
    SftStage,
    SummaryStage,
    load,
    validate,
)

GROUPS = ["model", "data", "sft", "dpo", "eval"]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def test_committed_params_yaml_is_the_composition_of_conf():
    assert (REPO / "params.yaml").read_text(encoding="utf-8") == compose.compose([])
    assert compose.main(["--check"]) == 0


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_of_every_group_composes_and_validates(group, option):
    cfg = validate(Config, yaml.safe_load(compose.compose([f"{group}={option}"])))
    assert cfg is not None


# The public recipes' numbers, as each preset must reproduce them.
RECIPES = {
    "identity_lora": {"data.name": "identity_lora", "sft.lora.r": 8, "sft.lora.alpha": 32,
                      "sft.lora.target_modules": "all-linear", "sft.phases.main.epochs": 10,
                      "sft.phases.main.lr": 1e-4},
    "mix_identity_only": {"data.name": "identity_only", "sft.phases.main.epochs": 10},
    "mix_identity_general": {"sft.phases.main.epochs": 3},
    "three_phase": {"data.name": "three_phase", "sft.phases.anchor.epochs": 5,
                    "sft.phases.anchor.lr": 2e-4, "sft.phases.generalize.epochs": 3,
                    "sft.phases.generalize.lr": 1e-4,
                    "sft.phases.generalize.system_prompt": "identity",
                    "sft.phases.calibrate.epochs": 2, "sft.phases.calibrate.lr": 5e-5},
    "sft_dpo_code": {"data.name": "code_sft", "sft.phases.main.lr": 3e-5,
                     "sft.max_length": 512, "sft.warmup_ratio": 0.1, "dpo.beta": 0.1},
    "coder_8gb": {"data.name": "code_sft", "sft.gradient_checkpointing": True,
                  "sft.per_device_batch_size": 2, "sft.batch_size": 16},
}


def test_every_preset_has_its_recipe():
    assert sorted(RECIPES) == options("experiment")


@pytest.mark.parametrize("preset", sorted(RECIPES))
@pytest.mark.parametrize("model", ["tiny", "qwen2.5-coder-1.5b-instruct"])
def test_presets_compose_for_the_tiny_and_the_real_model(preset, model):
    params = yaml.safe_load(compose.compose([f"experiment={preset}", f"model={model}"]))
    validate(Config, params)
    flat = compose.flatten(params)
    for key, value in RECIPES[preset].items():
        assert flat[key] == value, (preset, key)
    assert params["model"]["name"] == model


def test_mix_arm_adds_500_general_rows_per_language():
    params = yaml.safe_load(compose.compose(["experiment=mix_identity_general"]))
    assert [s.rsplit("/", 1)[1] for s in params["data"]["sources"]] == [
        "identity.jsonl#232", "general_zh.jsonl#500", "general_en.jsonl#500"]


def test_check_names_the_keys_of_a_stale_params_file(tmp_path, capsys):
    stale = tmp_path / "params.yaml"
    stale.write_text(compose.compose(["sft.lora.r=16", "dpo.beta=0.3"]), encoding="utf-8")
    assert compose.main(["--check", "--out", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "dpo.beta" in err and "sft.lora.r" in err and "python -m stages.compose" in err


def test_compose_writes_overrides_like_dvc_exp_run(tmp_path):
    out = tmp_path / "params.yaml"
    assert compose.main(["sft.lora.r=16", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["sft"]["lora"]["r"] == 16


def test_dvc_yaml_declares_exactly_the_params_each_stage_reads():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    models = {"base": BaseStage, "curate": CurateStage, "sft": SftStage, "dpo": DpoStage,
              "eval": EvalStage, "summary": SummaryStage}
    for name, model in models.items():
        stage = stages[name].get("do", stages[name])  # sft is a foreach over its phases
        declared = [p.split(".")[0] for p in stage["params"]]
        assert list(dict.fromkeys(declared)) == list(model.model_fields), name
    # sft@<phase> declares every sft key, but of sft.phases only its own phase
    sft_keys = [p.removeprefix("sft.") for p in stages["sft"]["do"]["params"]
                if p.startswith("sft.")]
    assert sorted(sft_keys) == sorted(f if f != "phases" else "phases.${key}"
                                      for f in SftConfig.model_fields)


def test_eval_matrix_suites_come_from_the_config():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["eval"]["matrix"]["suite"] == "${eval.suites}"
    assert stages["eval"]["matrix"]["variant"] == ["base", "sft", "dpo"]


def bad(path: str, value) -> dict:
    params = copy.deepcopy(repo_params())
    node = params
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return params


@pytest.mark.parametrize("model,path,value,expected", [
    (SftStage, "sft.lora.r", 0, "sft.lora.r: Input should be greater than 0 (got 0)"),
    (SftStage, "sft.lora.r", "eight", "sft.lora.r: Input should be a valid integer"),
    (SftStage, "sft.lora.dropout", 1.5, "sft.lora.dropout: Input should be less than 1"),
    (SftStage, "sft.lora.target_modules", [], "sft.lora.target_modules"),
    (CurateStage, "data.clean.max_tokens", -5,
     "data.clean.max_tokens: Input should be greater than 0"),
    (CurateStage, "data.clean.dedup.threshold", 1.5,
     "data.clean.dedup.threshold: Input should be less than or equal to 1"),
    (CurateStage, "data.clean.secrets", "keep", "data.clean.secrets: Input should be 'drop'"),
    (CurateStage, "data.val_ratio", 1.0, "data.val_ratio: Input should be less than 1"),
    (EvalStage, "eval.limit", -3, "eval.limit: Input should be greater than 0"),
    (EvalStage, "eval.suites", ["code", "vibes"], "eval.suites.1: Input should be 'code'"),
    (BaseStage, "model.source", "ollama", "model.source: Input should be 'tiny' or 'hub'"),
    (EvalStage, "eval.samples", 5, "eval: Value error, samples=5 needs temperature > 0"),
    (DpoStage, "dpo.loss_type", "magic", "dpo.loss_type"),
    (DpoStage, "dpo.checkpoint_steps", 0,
     "dpo.checkpoint_steps: Input should be greater than 0 (got 0)"),
    (SftStage, "sft.per_device_batch_size", 3,
     "batch_size 8 must be a multiple of per_device_batch_size 3"),
    (SftStage, "sft.precision", "fp8", "sft.precision: Input should be 'auto', 'bf16', 'fp16'"),
    (SftStage, "sft.packing", "yes", "sft.packing: Input should be a valid boolean"),
    (SftStage, "sft.early_stopping_patience", 2, "early_stopping_patience needs eval_steps"),
    (SftStage, "sft.phases", {}, "sft.phases: Dictionary should have at least 1 item"),
    (SftStage, "sft.phases.main.out", "sft-main", "phases.main.out is 'sft-main'; the last "
     "phase writes `sft`"),
    (SftStage, "sft.phases.main.init", "sft-anchor",
     "phases.main.init is 'sft-anchor'; set it to 'base'"),
    (SftStage, "sft.phases.main.system_prompt", "pirate",
     "sft.phases.main.system_prompt: Input should be 'shared' or 'identity'"),
    (SftStage, "sft.phases.main.lr", 0.0, "sft.phases.main.lr: Input should be greater than 0"),
])
def test_bad_values_name_the_key_and_the_fix(tmp_path, model, path, value, expected):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(bad(path, value), allow_unicode=True))
    with pytest.raises(ConfigError) as err:
        load(model, params_file)
    assert expected in str(err.value)
    assert "dvc exp run -S KEY=VALUE" in str(err.value)


def test_unknown_key_is_an_error_not_a_silent_no_op(tmp_path):
    params = repo_params()
    params["sft"]["lora"]["rank"] = 16
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True))
    with pytest.raises(ConfigError, match=r"sft\.lora\.rank: unknown key"):
        load(SftStage, params_file)


def test_every_problem_is_reported_at_once(tmp_path):
    params = bad("sft.lora.r", 0)
    params["sft"]["phases"]["main"]["lr"] = -1.0
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True))
    with pytest.raises(ConfigError) as err:
        load(SftStage, params_file)
    assert "2 invalid param(s)" in str(err.value)


def test_hub_model_needs_a_pinned_revision():
    params = repo_params()
    params["model"] = yaml.safe_load(compose.compose(["model=qwen2.5-coder-1.5b-instruct"]))["model"]
    params["model"]["revision"] = None
    with pytest.raises(ConfigError, match="pinned `revision`"):
        validate(BaseStage, {k: params[k] for k in BaseStage.model_fields})


def test_unknown_model_option_is_rejected_by_compose(capsys):
    with pytest.raises(Exception, match="gpt-7"):
        compose.compose(["model=gpt-7"])


def test_hub_model_without_network_says_which_model_and_how_to_use_a_local_copy(tmp_path):
    from stages.base import record_hub_model

    params = yaml.safe_load(compose.compose(["model=qwen2.5-coder-1.5b-instruct"]))
    cfg = validate(BaseStage, {k: params[k] for k in BaseStage.model_fields})
    with pytest.raises(RuntimeError) as err:
        record_hub_model(cfg.model, tmp_path)
    message = str(err.value)
    assert "Qwen/Qwen2.5-Coder-1.5B-Instruct" in message and cfg.model.revision in message
    assert "model.local_dir" in message


def test_missing_params_file_says_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match="python -m stages.compose"):
        load(SftStage, Path(tmp_path / "nope.yaml"))


def stage_modules(module: str, seen: set[str] | None = None) -> set[str]:
    """stages/ files `module` (dotted, under stages) imports, directly or through other stages
    modules; a package is its __init__.py."""
    import ast

    seen = set() if seen is None else seen
    parts = module.split(".")
    path = f"stages/{'/'.join(parts)}.py"
    if not (REPO / path).exists():
        path = f"stages/{'/'.join(parts)}/__init__.py"
    if path in seen:
        return seen
    seen.add(path)
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module == "stages":
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages."):
            package = node.module.removeprefix("stages.")
            names = [package]
            names += [f"{package}.{a.name}" for a in node.names
                      if (REPO / "stages" / package.replace(".", "/") / f"{a.name}.py").exists()]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("stages.") for a in node.names
                     if a.name.startswith("stages.")]
        for name in names:
            stage_modules(name, seen)
    return seen


def test_every_stage_depends_on_all_the_code_it_runs():
    """A module a stage imports but does not list in dvc.yaml would change without a rerun."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        deps = stage.get("do", stage)["deps"]
        missing = {m for m in stage_modules(name)
                   if not any(m == d or m.startswith(f"{d}/") for d in deps)}
        assert not missing, f"dvc.yaml stage {name} lacks deps {sorted(missing)}"
