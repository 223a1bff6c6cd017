"""Builders from config to model and tokenizer objects, shared by every stage.

The tiny model and a hub model go through the same loaders: the base stage writes a model
directory whose `base.json` says where the weights are (in the directory for `tiny`, on the
hub at a pinned revision for `hub`), and every later stage loads the base from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from stages.config import ArchConfig, ConfigError, ModelConfig
from stages.core import numerics
from stages.core.io import MissingInput

BASE_JSON = "base.json"
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

# ChatML as Qwen2 uses it, with {% generation %} markers around what the assistant says so
# that TRL's assistant_only_loss can mask the system prompt and the question. Tools render as
# Qwen2.5 renders them: the schemas in the system turn, each call as <tool_call> JSON inside the
# assistant's (trained) span, tool responses as <tool_response> in a user turn (never trained).
# An assistant turn with loss_weight 0 is context: rendered, outside the generation markers.
# Without tools, tool calls or loss weights it renders exactly the plain ChatML it always did.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name "
    "and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and tools and loop.first %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- set reply %}"
    "{{- message['content'] or '' }}"
    "{%- for call in message['tool_calls'] or [] %}"
    "{%- set call = call['function'] if call['function'] is defined else call %}"
    "{%- if message['content'] or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call['name'] + '\", \"arguments\": ' "
    "+ (call['arguments'] | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}"
    "{%- endset %}"
    "{%- if message['loss_weight'] is defined and message['loss_weight'] == 0 %}{{- reply }}"
    "{%- else %}{% generation %}{{- reply }}{% endgeneration %}{%- endif %}"
    "{{- '\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def device() -> torch.device:
    """This process's device: under `accelerate launch` each process has its own GPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def torch_dtype(name: str, dev: torch.device) -> torch.dtype:
    if name == "float16" and dev.type == "cpu":
        raise ValueError(
            "model.dtype=float16 needs a GPU; on CPU use -S model.dtype=float32 (or bfloat16)"
        )
    if name == "bfloat16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU has no bfloat16; use -S model.dtype=float16")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, with ChatML special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Qwen2's own normalizer and pre-tokenizer: transformers reloads a qwen2 model's tokenizer
    # as Qwen2Tokenizer, which imposes them, so training with anything else would make the
    # reloaded tokenizer split text differently from the one the model was trained with.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",  # left padding: batched generation continues every row at its end
    )


def qwen2_config(arch: ArchConfig, tokenizer=None):
    """The transformers config of `arch`: Qwen2Config, or Qwen3Config for model_type qwen3."""
    from transformers import Qwen2Config, Qwen3Config

    special = {}
    if tokenizer is not None:
        special = {
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        }
    if arch.model_type == "qwen3":
        special["head_dim"] = arch.head_dim or arch.hidden_size // arch.num_heads
    elif arch.head_dim not in (None, arch.hidden_size // arch.num_heads):
        raise ConfigError(f"model.arch.head_dim={arch.head_dim}: Qwen2 heads are hidden_size / "
                          f"num_heads = {arch.hidden_size // arch.num_heads}; set head_dim: null")
    return (Qwen3Config if arch.model_type == "qwen3" else Qwen2Config)(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=arch.tie_word_embeddings,
        **special,
    )


def read_base_json(base_dir: Path) -> dict[str, Any]:
    path = Path(base_dir) / BASE_JSON
    if not path.exists():
        raise MissingInput(f"{path} not found; build the base model first: `dvc repro base`")
    return json.loads(path.read_text(encoding="utf-8"))


def weights_location(base_dir: Path) -> tuple[str, dict[str, Any]]:
    """Where from_pretrained finds the base weights, and the kwargs that pin them."""
    meta = read_base_json(base_dir)
    if meta["source"] == "tiny":
        return str(base_dir), {}
    if meta.get("local_dir"):
        return meta["local_dir"], {}
    return meta["hub_id"], {"revision": meta["revision"]}


def hub_error(model: ModelConfig, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"cannot load {model.hub_id} at revision {model.revision} ({type(err).__name__}: {err}). "
        "Without network access, download it elsewhere (`hf download "
        f"{model.hub_id} --revision {model.revision} --local-dir DIR`), copy DIR here and set "
        f"-S model.local_dir=DIR; or run with network access to the hub."
    )


def load_tokenizer(base_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def require_training_template(tokenizer, where: str) -> None:
    """Stop unless assistant-only loss can mask this tokenizer's chat template: it has
    {% generation %} markers, or TRL knows a training variant of it (TRL matches the template
    byte for byte against its copies of the official ones; one byte off and it cannot)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        raise ConfigError(
            f"the chat template of {where} (models/base/chat_template.jinja) has no "
            "{% generation %} markers and TRL has no training variant of it (it matches none of "
            "TRL's copies of official templates byte for byte), so sft cannot put the loss on "
            "the assistant's replies only. Write a copy of that template with {% generation %}"
            "...{% endgeneration %} around each assistant reply and its end token (TRL's "
            "trl/chat_templates/*_training.jinja show how) and set "
            "-S model.chat_template=PATH/TO/template.jinja: the base stage installs it, and "
            "training, perplexity and generation use it"
        ) from None


def install_chat_template(tokenizer, path: str) -> str:
    """Replace the tokenizer's chat template with the file at `path`; returns its sha256."""
    from stages.core.io import sha256_file

    file = Path(path)
    if not file.is_file():
        raise MissingInput(f"model.chat_template={path}: no such file; point it at a "
                                ".jinja chat template")
    tokenizer.chat_template = file.read_text(encoding="utf-8")
    return sha256_file(file)


def require_cuda_for_4bit() -> None:
    if not torch.cuda.is_available():
        raise ConfigError(
            "sft=qlora loads the base in 4-bit with bitsandbytes, which needs a CUDA GPU, and "
            "this machine has none; use -S sft=lora (or sft=dora) on CPU"
        )


def four_bit_config(compute_dtype: torch.dtype):
    """QLoRA's base: NF4 4-bit weights, double quantisation, matmuls in `compute_dtype`."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_base_model(base_dir: Path, dtype: str, dev: torch.device | None = None,
                    four_bit: bool = False, attn: str | None = None):
    """The base model described by `base_dir/base.json`, on `dev`, in `dtype` (its weights
    in 4-bit NF4 with `four_bit`, CUDA only), with attention implementation `attn` (default:
    transformers' choice)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dev = dev or device()
    meta = read_base_json(base_dir)
    dt = torch_dtype(dtype, dev)
    extra = {"attn_implementation": attn} if attn else {}
    if four_bit:
        require_cuda_for_4bit()
        if meta["source"] == "hub" and meta["init"] == "random":
            raise ConfigError("sft=qlora quantizes pretrained weights; model.init=random has "
                              "none (measure random-init shapes with sft=lora)")
        where, kwargs = weights_location(base_dir)
        return AutoModelForCausalLM.from_pretrained(
            where, quantization_config=four_bit_config(dt), device_map={"": dev.index or 0},
            dtype=dt, **kwargs, **extra)
    if meta["source"] == "hub" and meta["init"] == "random":
        config = AutoConfig.from_pretrained(str(base_dir))
        model = AutoModelForCausalLM.from_config(config, dtype=dt, **extra)
    else:
        where, kwargs = weights_location(base_dir)
        try:
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dt, **kwargs, **extra)
        except OSError as err:
            raise RuntimeError(
                f"cannot load base weights from {where} ({err}); for a hub model without "
                "network, set -S model.local_dir=DIR to a local copy"
            ) from err
    return model.to(dev)


def load_variant(paths, variant: str, dtype: str, dev: torch.device | None = None):
    """Base model with the variant's adapter applied (none for `base`), in eval mode."""
    model = load_base_model(paths.model_dir("base"), dtype, dev)
    if variant != "base":
        adapter = paths.model_dir(variant)
        if not (adapter / "adapter_config.json").exists():
            raise MissingInput(f"no adapter in {adapter}; run `dvc repro {variant}` first")
        with without_bitsandbytes():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model


def preload() -> None:
    """Import what loading a model and its tokenizer imports lazily, for a warm server
    (stages.warm) to import once: transformers' auto classes, the Qwen2 and Qwen3 modeling
    code (the replicas' and the real checkpoints' architectures), and peft as load_variant
    imports it."""
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401
    import transformers.models.qwen3.modeling_qwen3  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    with without_bitsandbytes():
        import peft  # noqa: F401
    numerics.preload()


@contextlib.contextmanager
def without_bitsandbytes():
    """peft imports bitsandbytes whenever it is installed (at import, and again as it wraps
    each layer), and bitsandbytes compiles its CPU kernels with torch.compile as it is
    imported, which loads torch's compiler: an sft/code eval process took 4.5 s without it
    against 5.4 s with it (timed twice each), for the one library here that only a 4-bit model uses, and 4-bit needs CUDA
    (require_cuda_for_4bit). Without CUDA, and while bitsandbytes is not loaded yet, the block
    sees it as not installed."""
    if torch.cuda.is_available() or "bitsandbytes" in sys.modules:
        yield
        return
    sys.modules["bitsandbytes"] = None  # `import bitsandbytes` fails; find_spec says absent
    try:
        yield
    finally:
        del sys.modules["bitsandbytes"]


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
