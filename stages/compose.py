"""Compose conf/ into params.yaml exactly as `dvc exp run` does (hydra enabled in .dvc/config).

`dvc repro` never composes, so after editing conf/ run this before `dvc repro`:

    python -m stages.compose                      # conf/ defaults -> params.yaml
    python -m stages.compose model=qwen2.5-coder-1.5b-instruct sft.lora.r=16
    python -m stages.compose --check              # exit 1, naming the keys, if params.yaml is stale

The composed config is validated (stages.config.Config) before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from stages.config import PARAMS_FILE, Config, ConfigError, validate
from stages.io import atomic_write_text

CONF_DIR = Path("conf")
CONFIG_NAME = "config"


def compose(overrides: list[str], conf_dir: Path = CONF_DIR) -> str:
    """params.yaml text for `overrides`, as dvc.utils.hydra.compose_and_dump writes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(conf_dir.resolve()), version_base=None):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=overrides)
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def differing_keys(expected: str, actual: str) -> list[str]:
    want, have = flatten(yaml.safe_load(expected)), flatten(yaml.safe_load(actual) or {})
    return sorted(k for k in want.keys() | have.keys() if want.get(k, ...) != have.get(k, ...))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for `dvc exp run -S`")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--out", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)

    text = compose(args.overrides)
    try:
        validate(Config, yaml.safe_load(text))
    except ConfigError as err:
        print(f"conf/ composes to an invalid config:\n{err}", file=sys.stderr)
        return 2

    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current == text:
            print(f"{args.out} is up to date with conf/")
            return 0
        keys = differing_keys(text, current) or ["(formatting only)"]
        print(
            f"{args.out} is stale; keys that differ from conf/: {', '.join(keys)}\n"
            f"Regenerate it with `python -m stages.compose`.",
            file=sys.stderr,
        )
        return 1

    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
