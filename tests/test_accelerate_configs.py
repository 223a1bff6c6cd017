"""configs/accelerate/*.yaml: each file parses into accelerate's own config class, names only
options `accelerate launch` knows, and turns into the environment its comments promise (the
steps `accelerate launch --config_file FILE` takes, run here without starting any process)."""

from __future__ import annotations

import os
from unittest import mock

import pytest

from conftest import REPO

CONFIGS = REPO / "configs" / "accelerate"
# file -> (distributed_type, num_processes)
EXPECTED = {
    "ddp.yaml": ("MULTI_GPU", 8),
    "zero2.yaml": ("DEEPSPEED", 8),
    "zero3.yaml": ("DEEPSPEED", 8),
    "fsdp.yaml": ("FSDP", 8),
    # MULTI_GPU on purpose: the only type for which the launcher starts 2 processes on one machine
    "cpu2.yaml": ("MULTI_GPU", 2),
}


def load(name: str):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(CONFIGS / name))


def launch_env(name: str) -> tuple[object, dict[str, str]]:
    """The parsed launch arguments and the environment every process would start with."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(CONFIGS / name), "-m", "stages.sft"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, env


def test_every_shipped_file_is_checked():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parses_into_accelerates_config_class(name):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    cfg = load(name)
    distributed_type, processes = EXPECTED[name]
    assert isinstance(cfg, ClusterConfig)
    assert cfg.distributed_type == DistributedType[distributed_type]
    assert cfg.num_processes == processes
    assert cfg.num_machines == 1
    # Precision comes from model.dtype through the trainer's bf16/fp16 flags; a value here would
    # switch on autocast for a float32 model too.
    assert cfg.mixed_precision == "no"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nested_keys_are_launch_options(name):
    # load_config_from_file rejects unknown top-level keys, but `accelerate launch` copies the
    # keys of deepspeed_config / fsdp_config onto its arguments unchecked: a misspelt one would
    # be ignored without a word.
    from accelerate.commands.launch import launch_command_parser

    known = set(vars(launch_command_parser().parse_args(["train.py"])))
    cfg = load(name)
    nested = [*cfg.deepspeed_config, *cfg.fsdp_config]
    assert [key for key in nested if key not in known] == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launcher_starts_the_configured_number_of_processes(name):
    args, _ = launch_env(name)
    assert int(args.nproc_per_node) == EXPECTED[name][1]


def test_zero3_partitions_at_load_and_gathers_16bit_weights_on_save():
    _, env = launch_env("zero3.yaml")
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"


@pytest.mark.parametrize("name", ["zero2.yaml", "zero3.yaml"])
def test_deepspeed_takes_accumulation_and_clipping_from_the_trainer(name):
    # Unset here, DeepSpeed uses "auto": the trainer's values, which the sft stage derives from
    # the global batch size and the world size.
    _, env = launch_env(name)
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == name[4]
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env
    assert "ACCELERATE_GRADIENT_CLIPPING" not in env


def test_fsdp_wraps_qwen2_decoder_layers_with_peft_friendly_settings():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import StateDictType

    _, env = launch_env("fsdp.yaml")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    # Building the plugin with sync_module_states (which cpu_ram_efficient_loading forces) needs
    # a GPU; everything else is read as on a GPU node.
    env.update(FSDP_SYNC_MODULE_STATES="false", FSDP_CPU_RAM_EFFICIENT_LOADING="false")
    with mock.patch.dict(os.environ, env, clear=True):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 1
    assert plugin.transformer_cls_names_to_wrap == ["Qwen2DecoderLayer"]
    assert plugin.use_orig_params is False
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT


def test_fsdp_wrap_class_exists_in_a_qwen2_model():
    from accelerate.utils.dataclasses import get_module_class_from_name
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1,
                                         intermediate_size=64))
    name = load("fsdp.yaml").fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    assert get_module_class_from_name(model, name) is not None
