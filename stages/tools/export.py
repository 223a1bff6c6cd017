"""export: merge a variant's LoRA adapter into its base and write a standalone model.

Reads   params model, paths; models/base and models/<variant>
Writes  --out DIR: weights, tokenizer with its chat template, export.json (provenance)
Run     python -m stages.tools.export --variant sft --out exports/sft [--dtype bfloat16]

The base is reloaded in full precision for merging (bfloat16 by default, float32 on
request), never in 4-bit: merging into quantized weights would bake the rounding in.
The result loads with plain `AutoModelForCausalLM.from_pretrained(DIR)`, no PEFT needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.config import TRAINED, ModelConfig, PathsConfig, Strict, load, run_stage
from stages.core.io import atomic_dir, git_sha, sha256_dir, write_json
from stages.models.modeling import load_tokenizer, load_variant, read_base_json


class ExportStage(Strict):
    model: ModelConfig
    paths: PathsConfig


def main(argv: list[str] | None = None, cfg: ExportStage | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, choices=TRAINED)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args(argv)
    cfg = cfg or load(ExportStage)

    import torch

    model = load_variant(cfg.paths, args.variant, args.dtype, torch.device("cpu"))
    merged = model.merge_and_unload()
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    with atomic_dir(args.out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "export.json", {
            "variant": args.variant,
            "dtype": args.dtype,
            "base": read_base_json(cfg.paths.model_dir("base")),
            "adapter_sha256": sha256_dir(cfg.paths.model_dir(args.variant)),
            "git_sha": git_sha(),
        })
    print(f"merged {args.variant} into its base ({args.dtype}): {args.out}")
    return args.out


if __name__ == "__main__":
    run_stage(main)
