"""Every preference objective of conf/dpo/ trains the tiny SFT adapter through its TRL trainer;
KTO also takes unpaired labelled rows; knobs that belong to another objective are refused."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO, adapter, read_json, stage_cfg, write_prefs
from stages import dpo
from stages.config import ConfigError, DpoStage
from stages.models.training import precision_flags
from stages.tools.compose import compose

OPTIONS = sorted(p.stem for p in (REPO / "conf" / "dpo").glob("*.yaml"))


def option(name: str) -> dict:
    """The dpo group as `-S dpo=<name>` composes it, shrunk like the fixture's."""
    params = yaml.safe_load(compose([f"dpo={name}"]))["dpo"]
    return {**params, "epochs": 1, "batch_size": 6}


def dpo_workspace(pipeline, tmp_path, dpo_params: dict, prefs: list[dict] | None = None) -> dict:
    """The pipeline's params, outputs in tmp_path, its base and sft linked in, and (given)
    `prefs` as the curated preference file."""
    root, params = pipeline
    params = copy.deepcopy(params)
    models = tmp_path / "models"
    models.mkdir(parents=True)
    for variant in ("base", "sft"):
        (models / variant).symlink_to(root / "models" / variant)
    curated = root / "curated"
    if prefs is not None:
        curated = tmp_path / "curated"
        write_prefs(curated / "prefs.jsonl", prefs)
    params["paths"].update(models=str(models), metrics=str(tmp_path / "metrics"),
                           checkpoints=str(tmp_path / "checkpoints"), curated=str(curated))
    params["dpo"] = dpo_params
    return params


def test_every_objective_is_offered():
    assert OPTIONS == ["cpo", "hinge", "ipo", "kto", "orpo", "robust", "sigmoid", "sigmoid_sft",
                       "simpo"]


@pytest.mark.parametrize("name", OPTIONS)
def test_each_objective_trains_the_sft_adapter_with_its_trainer(pipeline, tmp_path, name):
    params = dpo_workspace(pipeline, tmp_path, option(name))
    cfg = stage_cfg(DpoStage, params)
    metrics = dpo.main(cfg)
    sft = adapter(pipeline[0] / "models" / "sft")
    trained = adapter(tmp_path / "models" / "dpo")
    assert sft.keys() == trained.keys()
    assert any(not (sft[k] == trained[k]).all() for k in sft), "the adapter did not move"
    written = read_json(tmp_path / "metrics" / "dpo.json")["dpo"]
    assert written == metrics and metrics["loss_type"] == name
    assert metrics["steps"] > 0 and metrics["final_loss"] == metrics["final_loss"]  # not NaN
    # CPO and ORPO batch their inputs under other names: the trainer counts no tokens then,
    # and the metric says so instead of claiming 0
    assert metrics["tokens"] is None or metrics["tokens"] > 0
    # the objective's own trainer and loss, not DPO's sigmoid under another name
    args = dpo.training_args(cfg.dpo, 0, precision_flags("auto"), tmp_path / "ck")
    expected = {"sigmoid": ("DPOConfig", ["sigmoid"]), "ipo": ("DPOConfig", ["ipo"]),
                "hinge": ("DPOConfig", ["hinge"]), "robust": ("DPOConfig", ["robust"]),
                "sigmoid_sft": ("DPOConfig", ["sigmoid", "sft"]),
                "cpo": ("CPOConfig", "sigmoid"), "simpo": ("CPOConfig", "simpo"),
                "orpo": ("ORPOConfig", None), "kto": ("KTOConfig", "kto")}[name]
    assert (type(args).__name__, getattr(args, "loss_type", None)) == expected
    if name == "robust":
        assert args.label_smoothing == 0.1
    if name == "simpo":
        assert (args.cpo_alpha, args.simpo_gamma, args.beta) == (0.0, 0.5, 2.0)
    if name == "kto":
        assert metrics["rows"] == 2 * read_json(pipeline[0] / "metrics" / "dpo.json")["dpo"]["pairs"]
        assert "reward_accuracies" not in metrics and "kl" in metrics


def test_sigmoid_sft_records_both_loss_terms_that_sum_to_the_loss(pipeline, tmp_path,
                                                                  monkeypatch):
    """The terms are measured one at a time on the trained adapter; evaluating with both, as
    trained, gives sigmoid + sft_weight x sft (a term that ignored the swap would give the
    whole loss twice and fail this). sft_weight 0.5 keeps the two weights apart."""
    seen = {}
    measure = dpo.loss_terms

    def and_the_whole(trainer, weight):
        terms = measure(trainer, weight)
        seen["types"], seen["weights"] = trainer.loss_types, trainer.loss_weights
        seen["whole"] = trainer.evaluate(trainer.train_dataset, metric_key_prefix="whole")["whole_loss"]
        return terms

    monkeypatch.setattr(dpo, "loss_terms", and_the_whole)
    params = dpo_workspace(pipeline, tmp_path, {**option("sigmoid_sft"), "sft_weight": 0.5})
    metrics = dpo.main(stage_cfg(DpoStage, params))
    assert seen["types"] == ["sigmoid", "sft"] and seen["weights"] == [1.0, 0.5]   # restored
    assert metrics["final_sft_loss"] > 0 and metrics["final_sigmoid_loss"] > 0
    assert metrics["final_weighted_loss"] == pytest.approx(seen["whole"], abs=2e-4)
    assert abs(metrics["final_sigmoid_loss"] - seen["whole"]) > 1e-3
    assert read_json(tmp_path / "metrics" / "dpo.json")["dpo"]["final_sft_loss"] == \
        metrics["final_sft_loss"]
    print({k: metrics[k] for k in ("final_loss", "final_sigmoid_loss", "final_sft_loss",
                                   "final_weighted_loss", "reward_accuracies")})


def kto_rows(n: int) -> list[dict]:
    """n unpaired rows, alternately desirable and undesirable."""
    return [{"prompt": [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": f"What is {i} plus {i}?"}],
             "completion": [{"role": "assistant",
                             "content": f"{2 * i}." if i % 2 == 0 else f"{2 * i + 1}."}],
             "label": i % 2 == 0, "task_id": f"kto.jsonl:{i + 1}", "defect": "user"}
            for i in range(n)]


def test_kto_trains_on_unpaired_labelled_rows(pipeline, tmp_path):
    params = dpo_workspace(pipeline, tmp_path, option("kto"), kto_rows(6))
    metrics = dpo.main(stage_cfg(DpoStage, params))
    assert metrics["rows"] == 6 and metrics["steps"] == 1


def test_paired_objectives_refuse_labelled_rows_and_name_the_fix(pipeline, tmp_path):
    params = dpo_workspace(pipeline, tmp_path, option("sigmoid"), kto_rows(4))
    with pytest.raises(ValueError, match=r"4 unpaired labelled rows .* use -S dpo=kto"):
        dpo.main(stage_cfg(DpoStage, params))
    assert not (tmp_path / "models" / "dpo").exists()


def test_kto_refuses_rows_of_one_label_only(pipeline, tmp_path):
    rows = [r for r in kto_rows(6) if r["label"]]
    params = dpo_workspace(pipeline, tmp_path, option("kto"), rows)
    with pytest.raises(ValueError, match=r"KTO needs desirable and undesirable rows \(got 3 of 3"):
        dpo.main(stage_cfg(DpoStage, params))


@pytest.mark.parametrize("name,change,message", [
    ("sigmoid", {"simpo_gamma": 0.5}, "simpo_gamma=0.5 applies only to loss_type simpo"),
    ("simpo", {"simpo_gamma": None}, "loss_type simpo needs simpo_gamma; use -S dpo=simpo"),
    ("robust", {"label_smoothing": 0.0}, "robust needs label_smoothing > 0"),
    ("robust", {"label_smoothing": 0.5}, "label_smoothing"),
    ("ipo", {"label_smoothing": 0.1}, "label_smoothing=0.1 applies only to loss_type sigmoid / robust"),
    ("kto", {"batch_size": 1}, "kto needs batch_size >= 2"),
    ("kto", {"desirable_weight": None}, "loss_type kto needs desirable_weight"),
    ("sigmoid", {"loss_type": "dpo"}, "loss_type"),
    ("sigmoid_sft", {"sft_weight": None}, "loss_type sigmoid_sft needs sft_weight"),
    ("sigmoid", {"sft_weight": 1.0}, "sft_weight=1.0 applies only to loss_type sigmoid_sft"),
])
def test_a_knob_of_another_objective_is_an_error(pipeline, name, change, message):
    params = copy.deepcopy(pipeline[1])
    params["dpo"] = {**option(name), **change}
    with pytest.raises(ConfigError, match=message):
        stage_cfg(DpoStage, params)
