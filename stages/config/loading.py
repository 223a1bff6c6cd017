"""Reading params.yaml and validating it: one ConfigError listing every problem, an unknown
key named with the nearest known one, input files no DVC dep tracks refused."""

from __future__ import annotations

import difflib
import os
import types
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from stages.config.base import Strict
from stages.config.errors import ConfigError
from stages.config.paths import BENCHMARKS_DIR, EXTERNAL_DIR, PARAMS_FILE
from stages.config.stage_models import Config, Stage, stage_params

S = TypeVar("S", bound=Strict)


def validate(model: type[S], params: dict[str, Any]) -> S:
    """Validate `params` against `model`, raising one ConfigError that lists every problem."""
    try:
        return model.model_validate(params)
    except ValidationError as err:
        raise ConfigError(format_errors(err, known_keys(model, params))) from None


def format_errors(err: ValidationError, known: list[str] | None = None) -> str:
    lines = [f"{err.error_count()} invalid param(s):"]
    seen = set()
    for e in err.errors():
        # pydantic reports each branch of a union separately; drop the branch labels.
        loc = ".".join(str(p) for p in e["loc"] if not _is_branch_label(p))
        if e["type"] == "extra_forbidden":
            hint = f"did you mean {nearest_key(loc, known)}? " if known else ""
            msg = (f"unknown key; {hint}Remove it or fix its spelling (stages/config/ "
                   "documents every key)")
        elif e["type"] == "missing":
            msg = "missing; add it to the config group in conf/"
        else:
            msg = f"{e['msg']} (got {e.get('input')!r})"
        if (loc, msg) in seen:
            continue
        seen.add((loc, msg))
        lines.append(f"  {loc or '<root>'}: {msg}")
    lines.append(
        "Fix the value in conf/ and run `python -m stages.tools.compose`, or override it for one "
        "experiment: `dvc exp run -S KEY=VALUE`."
    )
    return "\n".join(lines)


def _is_branch_label(part: Any) -> bool:
    return isinstance(part, str) and (
        part.startswith(("list[", "dict[", "literal[", "function-", "constrained-"))
        or part in {"str", "int", "float", "bool", "none"}
        or part in _model_names()
    )


# ---- unknown keys: the nearest known one ------------------------------------------------

# Names users bring from transformers/TRL/PEFT arguments, and what this config calls them.
ALIASES = {"learning_rate": "lr", "num_train_epochs": "epochs", "max_seq_length": "max_length",
           "rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
           "per_device_train_batch_size": "per_device_batch_size"}


def known_keys(model: type[BaseModel], params: Any, prefix: str = "") -> list[str]:
    """Every dotted key `model` accepts, with the keys of its mappings and lists (sft.phases.
    main.lr) taken from `params`, in schema order."""
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        value = params.get(name) if isinstance(params, dict) else None
        for kind, sub in _nested_models(field.annotation):
            if kind == "model":
                keys += known_keys(sub, value, f"{key}.")
            elif kind == "dict" and isinstance(value, dict):
                for k, v in value.items():
                    keys += [f"{key}.{k}"] + known_keys(sub, v, f"{key}.{k}.")
            elif kind == "list" and isinstance(value, list):
                for i, v in enumerate(value):
                    keys += known_keys(sub, v, f"{key}.{i}.")
    return list(dict.fromkeys(keys))


def _nested_models(annotation: Any, kind: str = "model") -> list[tuple[str, type[BaseModel]]]:
    """(how it nests, model) for every pydantic model inside a field's type."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(kind, annotation)]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _nested_models(args[0], kind)
    if origin is dict:
        return _nested_models(args[1], "dict")
    if origin is list:
        return _nested_models(args[0], "list")
    if origin in (Union, types.UnionType):
        return [m for a in args for m in _nested_models(a, kind)]
    return []


def nearest_key(unknown: str, known: list[str]) -> str:
    """The known key `unknown` most likely meant: a sibling spelt alike (sft.lora.rank ->
    sft.lora.r), else the same name elsewhere in its group (sft.learning_rate ->
    sft.phases.main.lr), else the least unlike sibling."""
    parent, _, leaf = unknown.rpartition(".")
    leaf = ALIASES.get(leaf, leaf)
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.75)
    if close:
        return siblings[close[0]]
    group = unknown.split(".")[0]
    same = [k for k in known if k.rpartition(".")[2] == leaf and k.split(".")[0] == group]
    if same:
        return same[0]
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0)
    if close:
        return siblings[close[0]]
    return (difflib.get_close_matches(unknown, known, n=1, cutoff=0) or ["<none>"])[0]


# ---- reading params.yaml -------------------------------------------------------------------


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole of params.yaml."""
    if not path.exists():
        raise ConfigError(
            f"{path} not found; run stages from the repo root, or create it with "
            "`python -m stages.tools.compose`"
        )
    with path.open(encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path} is not a mapping; regenerate it with `python -m stages.tools.compose`")
    return params


def refuse_untracked_inputs(cfg: Stage, root: Path) -> None:
    """Stop before any work when the stage would read a local file that none of its DVC deps
    tracks: editing such a file would leave its outputs stale without a word."""
    dirs = [os.path.normpath(root / d) for d in cfg.input_dirs()]
    outside = {where: path for where, path in cfg.input_files().items()
               if not any(os.path.commonpath([os.path.normpath(root / path), d]) == d
                          for d in dirs)}
    if outside:
        listed = "\n".join(f"  {where}: {path}" for where, path in outside.items())
        raise ConfigError(
            f"{len(outside)} input file(s) outside the folders dvc.yaml tracks for this stage "
            f"({', '.join(cfg.input_dirs())}):\n{listed}\n"
            f"Editing them would not rerun the stage. Copy your data files into {EXTERNAL_DIR}/ "
            f"and benchmark files into {BENCHMARKS_DIR}/ (commit them), then point the params "
            "at the new paths; hub datasets go in as `hf::OWNER/NAME` with a pinned revision."
        )


def load(model: type[S], path: Path = PARAMS_FILE) -> S:
    """Read params.yaml, validate all of it (a key no stage knows is an error), and return the
    part `model` declares, after refusing input files no DVC dep of the stage tracks."""
    params = read_params(path)
    validate(Config, params)
    cfg = validate(model, stage_params(model, params) if issubclass(model, Stage) else
                   {k: params.get(k) for k in model.model_fields})
    if isinstance(cfg, Stage):
        refuse_untracked_inputs(cfg, path.resolve().parent)
    return cfg


def main(path: Path = PARAMS_FILE) -> None:
    """The `params` stage: dvc.yaml gives it params.yaml itself as a dep, so any change to the
    file (also a key no stage declares, which would otherwise rerun nothing) validates it."""
    validate(Config, read_params(path))
    print(f"{path}: every key known, every value valid")


def _model_names() -> set[str]:
    """The names of this package's models, which pydantic uses as the labels of union
    branches in an error's location."""
    found, todo = {BaseModel.__name__}, [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("stages.config"):
                found.add(sub.__name__)
            todo.append(sub)
    return found
