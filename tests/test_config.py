"""conf/ composes into the committed params.yaml, every option validates, bad values stop a
stage with one message naming the key and the fix."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, repo_params
from stages.config import (
    VARIANTS,
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
    stage_params,
    validate,
)
from stages.tools import compose

GROUPS = ["model", "data", "sft", "dpo", "eval"]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def test_committed_params_yaml_is_the_composition_of_conf():
    assert (REPO / "params.yaml").read_text(encoding="utf-8") == compose.compose([])
    assert compose.params_problem(compose.compose([]), REPO / "params.yaml") is None


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


def test_check_names_the_keys_of_a_stale_params_file(tmp_path):
    stale = tmp_path / "params.yaml"
    stale.write_text(compose.compose(["sft.lora.r=16", "dpo.beta=0.3"]), encoding="utf-8")
    err = compose.params_problem(compose.compose([]), stale)
    assert "dpo.beta" in err and "sft.lora.r" in err and "python -m stages.tools.compose" in err


def test_compose_writes_overrides_like_dvc_exp_run(tmp_path):
    out = tmp_path / "params.yaml"
    assert compose.main(["sft.lora.r=16", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["sft"]["lora"]["r"] == 16


def test_dvc_yaml_declares_exactly_the_params_each_stage_reads():
    assert compose.dvc_yaml_problems(repo_params()) == []
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    # sft@<phase> declares every sft key, but of sft.phases only its own phase
    sft_keys = [p.removeprefix("sft.") for p in stages["sft"]["do"]["params"]
                if p.startswith("sft.")]
    assert sorted(sft_keys) == sorted(f if f != "phases" else "phases.${key}"
                                      for f in SftConfig.model_fields)


def test_eval_stages_declare_no_key_only_summary_reads():
    """Budgets, resampling and the suite list are summary's: an eval stage that declared them
    would rerun (GPU hours on a real model) for a number only summary computes."""
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["eval"]["params"]
    assert {"eval", "eval.suites", "eval.budget", "eval.bootstrap_resamples"}.isdisjoint(declared)
    summary = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["summary"]["params"]
    assert {"eval.suites", "eval.budget", "eval.bootstrap_resamples"} <= set(summary)
    # what the eval stage validates is exactly what it declares: a budget is not even seen
    params = repo_params()
    params["eval"]["budget"]["code"] = -1.0
    params["eval"]["suites"] = ["identity"]
    assert set(stage_params(EvalStage, params)["eval"]) == {
        p.removeprefix("eval.") for p in declared if p.startswith("eval.")}


def broken_dvc_yaml(tmp_path, edit) -> Path:
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    edit(doc["stages"])
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("edit,expected", [
    (lambda s: s["eval"]["params"].append("eval"), "eval: params are"),
    (lambda s: s["summary"]["params"].remove("eval.budget"), "summary: params are"),
    (lambda s: s["sft"]["do"]["params"].remove("sft.packing"), "sft: params are"),
    (lambda s: s["curate"]["deps"].remove("data/external"), "curate: deps lack ['data/external']"),
    (lambda s: s["eval"]["deps"].remove("data/benchmarks"), "eval: deps lack ['data/benchmarks']"),
    (lambda s: s["dpo"]["deps"].remove("stages/core/io.py"), "dpo: deps lack ['stages/core/io.py']"),
    # read as text and run in the sandbox, never imported
    (lambda s: s["eval"]["deps"].remove("stages/sandbox/programs/wire.py"),
     "eval: deps lack ['stages/sandbox/programs/wire.py']"),
    # the launcher in eval's command (python -m stages.warm eval ...) is code it runs
    (lambda s: s["eval"]["deps"].remove("stages/warm.py"), "eval: deps lack ['stages/warm.py']"),
    (lambda s: s["params"]["deps"].remove("params.yaml"), "params: deps lack params.yaml"),
    (lambda s: s["summary"]["deps"].remove("${paths.metrics}/tasks"), "summary: deps lack"),
    (lambda s: s["eval"].update(outs=["${paths.metrics}/eval/${item.variant}/x.jsonl"]),
     "eval: outs should be"),
    (lambda s: s.update(extra={"cmd": "python -m stages.tools.export"}), "extra: no stage model"),
])
def test_check_catches_dvc_yaml_out_of_step_with_the_stages(tmp_path, edit, expected):
    problems = compose.dvc_yaml_problems(repo_params(), broken_dvc_yaml(tmp_path, edit), REPO)
    assert any(expected in p for p in problems), problems


def test_dvc_yaml_is_what_write_dvc_writes():
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert compose.written_dvc_yaml(text, REPO) == text


def test_a_hand_edited_params_list_fails_check_and_write_dvc_restores_it(tmp_path, monkeypatch):
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    edited = text.replace("      - eval.top_k\n", "").replace(
        "      - eval.bootstrap_resamples\n", "      - eval.bootstrap_resamples\n      - eval.x\n")
    assert edited.count("\n") == text.count("\n")
    path = tmp_path / "dvc.yaml"
    path.write_text(edited, encoding="utf-8")
    problems = compose.dvc_yaml_problems(repo_params(), path, REPO)
    assert [p.split(":")[0] for p in problems] == ["eval", "summary"], problems
    assert "--write-dvc" in problems[0]
    monkeypatch.setattr(compose, "DVC_YAML", path)
    assert compose.main(["--write-dvc"]) == 0
    assert path.read_text(encoding="utf-8") == text


def test_write_dvc_brings_the_code_deps_in_step_with_the_imports(tmp_path):
    """After a module moves: the path that no longer exists is dropped, the module a stage now
    imports is added; data deps, folders and comments stay."""
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    edited = text.replace("      - stages/local_copy.py\n      - stages/models/modeling.py\n",
                          "      - stages/models/modeling.py\n      - stages/moved_away.py\n", 1)
    assert edited != text, "the edit must find its lines in dvc.yaml"
    path = tmp_path / "dvc.yaml"
    path.write_text(compose.written_dvc_yaml(edited, REPO), encoding="utf-8")
    assert compose.dvc_yaml_problems(repo_params(), path, REPO) == []
    written = path.read_text(encoding="utf-8")
    assert "moved_away" not in written and written.count("# ") == text.count("# ")
    # the dropped import comes back (where compose puts it; the order of deps is not read)
    assert sorted(written.splitlines()) == sorted(text.splitlines())


def test_eval_matrix_suites_and_variants_come_from_the_config():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["eval"]["matrix"]["suite"] == "${eval.suites}"
    assert stages["eval"]["matrix"]["variant"] == "${variants}"


def test_the_variants_are_declared_once_and_the_config_follows_them(tmp_path, monkeypatch):
    """Adding a variant is one entry in stages.config.VARIANTS (and its stage): params.yaml's
    `variants` (the eval matrix's) must be VARIANTS less the OPTIONAL ones rl.trained leaves
    out, --check names a dvc.yaml whose matrix lists them by hand or that lacks a trained
    variant's stage, and every module reads the one list."""
    from stages import config
    from stages import eval as eval_stage

    assert eval_stage.VARIANTS is VARIANTS
    assert repo_params()["variants"] == [v for v in VARIANTS if v not in config.OPTIONAL]
    monkeypatch.setattr(config.training, "VARIANTS", (*VARIANTS, "orpo"))
    with pytest.raises(ConfigError, match=r"variants: .*must be \['base', 'sft', 'dpo', 'orpo'\]"):
        validate(config.Config, repo_params())
    text = (REPO / "dvc.yaml").read_text()
    path = tmp_path / "dvc.yaml"
    path.write_text(text.replace("variant: ${variants}", "variant: [base, sft, dpo]"))
    monkeypatch.setattr(compose, "TRAINED", (*VARIANTS[1:], "orpo"))
    problems = compose.dvc_yaml_problems(repo_params(), path, REPO)
    assert any("eval: matrix variants are ['base', 'sft', 'dpo']; write `variant: ${variants}`"
               in p for p in problems), problems
    assert any(p.startswith("orpo: no stage of that name") for p in problems)


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
    (EvalStage, "eval.batching", "fast",
     "eval.batching: Input should be 'ours', 'continuous' or 'auto'"),
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
    with pytest.raises(ConfigError, match="python -m stages.tools.compose"):
        load(SftStage, Path(tmp_path / "nope.yaml"))


# ---- a key no stage knows -------------------------------------------------------------------


def params_with(tmp_path: Path, edit) -> Path:
    params = copy.deepcopy(repo_params())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    return path


@pytest.mark.parametrize("edit,message", [
    # a typo of a key that lives per phase
    (lambda p: p["sft"].update(learning_rate=1e-4),
     "sft.learning_rate: unknown key; did you mean sft.phases.main.lr?"),
    (lambda p: p["sft"]["lora"].update(rank=16), "sft.lora.rank: unknown key; did you mean sft.lora.r?"),
    (lambda p: p["eval"].update(max_new_token=64),
     "eval.max_new_token: unknown key; did you mean eval.max_new_tokens?"),
    (lambda p: p["sft"]["phases"]["main"].update(epoch=2),
     "sft.phases.main.epoch: unknown key; did you mean sft.phases.main.epochs?"),
    (lambda p: p.update(sed=1), "sed: unknown key; did you mean seed?"),
])
def test_unknown_key_names_the_nearest_known_key(tmp_path, edit, message):
    with pytest.raises(ConfigError) as err:
        validate(Config, yaml.safe_load(params_with(tmp_path, edit).read_text()))
    assert message in str(err.value)


@pytest.mark.parametrize("model", [BaseStage, CurateStage, DpoStage, EvalStage, SummaryStage])
def test_every_stage_refuses_a_key_it_does_not_read(tmp_path, model):
    """sft.bogus is in no stage's slice, yet every stage stops on it: each validates the whole
    file first, so whichever stage reruns fails before any work."""
    path = params_with(tmp_path, lambda p: p["sft"].update(bogus=1))
    with pytest.raises(ConfigError, match=r"sft\.bogus: unknown key"):
        load(model, path)


def test_the_params_stage_fails_naming_the_key(tmp_path):
    """`python -m stages.config` is the dvc.yaml stage whose dep is params.yaml itself: the
    one stage `dvc exp run -S +sft.bogus=1` reruns."""
    params_with(tmp_path, lambda p: p["sft"].update(bogus=1))
    done = subprocess.run([sys.executable, "-m", "stages.config"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert done.returncode == 1 and "sft.bogus: unknown key; did you mean" in done.stderr
    ok = params_with(tmp_path, lambda p: None)
    assert subprocess.run([sys.executable, "-m", "stages.config"], cwd=ok.parent,
                          env={"PYTHONPATH": str(REPO)}).returncode == 0


def test_compose_refuses_a_typo_in_conf(tmp_path, capsys):
    conf = tmp_path / "conf"
    import shutil

    shutil.copytree(REPO / "conf", conf)
    lora = conf / "sft" / "lora.yaml"
    lora.write_text(lora.read_text() + "learning_rate: 0.0001\n")
    text = compose.compose([], conf_dir=conf)
    with pytest.raises(ConfigError, match=r"sft\.learning_rate: unknown key; did you mean "
                                          r"sft\.phases\.main\.lr\?"):
        validate(Config, yaml.safe_load(text))


# ---- input files a stage reads -----------------------------------------------------------------


def in_dir(tmp_path: Path, monkeypatch, edit) -> Path:
    """A params.yaml in tmp_path (the repo root stages run in) with the repo's data linked in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sources").symlink_to(REPO / "data" / "sources")
    for folder in ("external", "benchmarks"):
        (tmp_path / "data" / folder).mkdir()
    return params_with(tmp_path, edit)


def test_a_user_file_in_the_declared_folder_is_accepted(tmp_path, monkeypatch):
    def edit(p):
        p["data"]["sources"].append("data/external/my_rows.csv#10")
        p["data"]["preferences"] = [{"path": "data/external/prefs.jsonl"}]
        p["data"]["sources"].append({"path": "hf::org/set", "revision": "a" * 40})
        p["benchmarks"]["humanevalplus"] = "data/benchmarks/HumanEvalPlus.jsonl"

    path = in_dir(tmp_path, monkeypatch, edit)
    cfg = load(CurateStage, path)
    assert "data/external/my_rows.csv" in cfg.input_files().values()
    assert load(EvalStage, path).input_files() == {
        "benchmarks.humanevalplus": "data/benchmarks/HumanEvalPlus.jsonl"}


@pytest.mark.parametrize("model,edit,where,path", [
    (CurateStage, lambda p: p["data"]["sources"].append("/work/shared/datasets/alpaca.json#5"),
     "data.sources.4", "/work/shared/datasets/alpaca.json"),
    (CurateStage, lambda p: p["data"].update(preference_source="my_tasks.jsonl"),
     "data.preference_source", "my_tasks.jsonl"),
    (CurateStage, lambda p: p["data"].update(preferences=[{"path": "data/prefs.jsonl"}]),
     "data.preferences.0", "data/prefs.jsonl"),
    # `..` does not get out of a declared folder
    (CurateStage, lambda p: p["data"]["sources"].append("data/external/../rows.csv"),
     "data.sources.4", "data/external/../rows.csv"),
    (CurateStage, lambda p: p["benchmarks"].update(mbppplus="/data/MbppPlus.jsonl"),
     "benchmarks.mbppplus", "/data/MbppPlus.jsonl"),
    # eval tracks data/benchmarks only: a benchmark in data/external is refused there
    (EvalStage, lambda p: p["benchmarks"].update(humanevalpack="data/external/pack.jsonl"),
     "benchmarks.humanevalpack", "data/external/pack.jsonl"),
])
def test_a_file_no_dep_tracks_is_refused_naming_it(tmp_path, monkeypatch, model, edit, where,
                                                    path):
    with pytest.raises(ConfigError) as err:
        load(model, in_dir(tmp_path, monkeypatch, edit))
    message = str(err.value)
    assert f"{where}: {path}" in message
    assert "data/external/" in message and "data/benchmarks/" in message


def test_any_key_under_benchmarks_is_an_input_file():
    """Suites add their own benchmarks.<task> keys; every path among them is checked."""
    from stages.config import BenchmarksConfig, benchmark_files

    class WithTask(BenchmarksConfig):
        lm_eval_mmlu: str | None = None

    unset = dict.fromkeys(BenchmarksConfig.model_fields)
    files = benchmark_files(WithTask(**{**unset, "mbppplus": "m.jsonl", "gsm8k": "data/g",
                                        "lm_eval_mmlu": "x.jsonl"}))
    assert files == {"benchmarks.mbppplus": "m.jsonl", "benchmarks.gsm8k": "data/g",
                     "benchmarks.lm_eval_mmlu": "x.jsonl"}
