"""Compose conf/ into params.yaml exactly as `dvc exp run` does (hydra enabled in .dvc/config).

`dvc repro` never composes, so after editing conf/ run this before `dvc repro`:

    python -m stages.tools.compose                      # conf/ defaults -> params.yaml
    python -m stages.tools.compose model=qwen2.5-coder-1.5b-instruct sft.lora.r=16
    python -m stages.tools.compose --check              # exit 1, naming what is stale (CI's gate)
    python -m stages.tools.compose --write-dvc          # dvc.yaml's params lists and code deps, in place

The composed config is validated (stages.config.Config) before anything is written: a key no
stage knows stops it, named with the nearest known key. `--check` fails, naming what is
wrong, when
- params.yaml is not the composition of conf/ (the keys that differ);
- dvc.yaml's params and deps disagree with what each stage reads (stages/config/'s stage
  models, the modules each stage imports, the folders of the input files it accepts), or its
  eval matrix does not take its variants from params.yaml's `variants` (which
  stages.config.Config checks against VARIANTS and rl.trained), or a trained variant has no
  stage;
- dvc.lock is stale against the code, data and params in the working tree (the stages
  `dvc repro` would run). Works in a clone without DVC cache, as CI has it: outputs a clone
  lacks count as missing data, not as changes (`dvc repro --allow-missing --dry`).

`--write-dvc` rewrites what of dvc.yaml is derived, leaving its comments, order and every
other line as they are: each stage's `params:` list (its model's `declared_params`), and in
its `deps:` the stages/ code (a module the stage imports that no dep covers is added after
the last stages/ entry; an entry whose file or folder no longer exists is dropped). Data deps
and folder deps (stages/suites) are the author's.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from stages.config import (
    PARAMS_FILE,
    TRAINED,
    BaseStage,
    Config,
    ConfigError,
    CurateStage,
    DpoStage,
    EnvironmentStage,
    EvalStage,
    GrpoStage,
    LocalCopyStage,
    PathsConfig,
    SftStage,
    Stage,
    SummaryStage,
    declared_params,
    flatten,
    stage_params,
    validate,
)
from stages.core.io import atomic_write_text

CONF_DIR = Path("conf")
CONFIG_NAME = "config"
DVC_YAML = Path("dvc.yaml")
# dvc.yaml stage -> the model its module loads; `params` (python -m stages.config) has none.
STAGE_MODELS: dict[str, type[Stage]] = {
    "local_copy": LocalCopyStage, "environment": EnvironmentStage, "base": BaseStage, "curate": CurateStage, "sft": SftStage,
    "dpo": DpoStage, "grpo": GrpoStage, "eval": EvalStage, "summary": SummaryStage}


def compose(overrides: list[str], conf_dir: Path = CONF_DIR) -> str:
    """params.yaml text for `overrides`, as dvc.utils.hydra.compose_and_dump writes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(conf_dir.resolve()), version_base=None):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=overrides)
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def differing_keys(expected: str, actual: str) -> list[str]:
    want, have = flatten(yaml.safe_load(expected)), flatten(yaml.safe_load(actual) or {})
    return sorted(k for k in want.keys() | have.keys() if want.get(k, ...) != have.get(k, ...))


def params_problem(text: str, out: Path) -> str | None:
    current = out.read_text(encoding="utf-8") if out.exists() else ""
    if current == text:
        return None
    keys = differing_keys(text, current) or ["(formatting only)"]
    return (f"{out} is stale; keys that differ from conf/: {', '.join(keys)}. "
            "Regenerate it with `python -m stages.tools.compose`.")


# ---- dvc.yaml against the stage models ------------------------------------------------------


# Where the programs run in the sandbox are named from ("programs/child.py": read as text by
# stages.sandbox.execute.program_text, never imported there).
PROGRAM_ROOT = Path("stages/sandbox")


# `python -m stages.eval ...`, or `python -m stages.warm eval ...` (the same stage run as a
# child of a server that has its libraries imported: stages/warm.py)
COMMAND = re.compile(r"python -m stages\.(?:(warm) )?(\w+)")


def command_modules(match: re.Match, root: Path) -> set[str]:
    """stages/ files a dvc.yaml command runs: its stage's, and the launcher's where it has one."""
    launcher, module = match.groups()
    return stage_modules(module, root) | (stage_modules(launcher, root) if launcher else set())


def stage_modules(module: str, root: Path = Path("."), seen: set[str] | None = None) -> set[str]:
    """stages/ files `module` (dotted, under stages/) imports, directly or through other stages
    modules, and the .py files they name as strings, next to them or under PROGRAM_ROOT
    (programs read as text and run in the sandbox); a package is its __init__.py
    (stages/suites/ imports its suites lazily)."""
    seen = set() if seen is None else seen
    parts = module.split(".")
    path = f"stages/{'/'.join(parts)}.py"
    if not (root / path).exists():
        path = f"stages/{'/'.join(parts)}/__init__.py"
    if path in seen:
        return seen
    seen.add(path)
    here = (root / path).parent
    for node in ast.walk(ast.parse((root / path).read_text(encoding="utf-8"))):
        names = []
        # A file named in a string ("programs/child.py") is read as text and run in the
        # sandbox (stages/sandbox/execute.py): code the stage runs without importing it.
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"(\w+/)*\w+\.py", node.value):
            for folder in (here, root / PROGRAM_ROOT):
                if (folder / node.value).is_file():
                    seen.add(str((folder / node.value).relative_to(root)))
        if isinstance(node, ast.ImportFrom) and node.module == "stages":
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages."):
            package = node.module.removeprefix("stages.")
            names = [package]
            names += [f"{package}.{a.name}" for a in node.names
                      if (root / "stages" / package.replace(".", "/") / f"{a.name}.py").exists()]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("stages.") for a in node.names
                     if a.name.startswith("stages.")]
        for name in names:
            # importing stages.a.b runs stages/a/__init__.py first
            for depth in range(1, name.count(".") + 1):
                stage_modules(".".join(name.split(".")[:depth]), root, seen)
            stage_modules(name, root, seen)
    return seen


def covered(path: str, deps: list[str]) -> bool:
    """A file is a dep itself or lies in a folder that is one (stages/suites)."""
    return any(path == d or path.startswith(f"{d}/") for d in deps)


def templated_paths() -> PathsConfig:
    """PathsConfig whose every path is its own dvc.yaml template (${paths.metrics} ...)."""
    return PathsConfig(**{f: f"${{paths.{f}}}" for f in PathsConfig.model_fields})


def resolve_paths(entry: str, params: dict[str, Any]) -> str:
    return re.sub(r"\$\{paths\.(\w+)\}", lambda m: params["paths"][m.group(1)], entry)


def dvc_yaml_problems(params: dict[str, Any], dvc_yaml: Path = DVC_YAML,
                      root: Path = Path(".")) -> list[str]:
    """Where dvc.yaml disagrees with what the stages read. `params` is a whole, valid
    params.yaml (to resolve ${paths.*} and build each stage's config)."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    problems = []
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # foreach / matrix stages
        match = COMMAND.match(stage["cmd"])
        if not match:
            problems.append(f"{name}: cmd {stage['cmd']!r} is not `python -m stages.<module>` "
                            "(or `python -m stages.warm <module>`)")
            continue
        deps = stage.get("deps", [])
        missing = sorted(m for m in command_modules(match, root) if not covered(m, deps))
        if missing:
            problems.append(f"{name}: deps lack {missing} (code the stage imports; "
                            "`python -m stages.tools.compose --write-dvc` adds them)")
        if name == "params":
            if str(PARAMS_FILE) not in deps:
                problems.append(f"params: deps lack {PARAMS_FILE} (the file it validates)")
            continue
        if name not in STAGE_MODELS:
            problems.append(f"{name}: no stage model for it in stages.tools.compose.STAGE_MODELS")
            continue
        model = STAGE_MODELS[name]
        want = declared_params(model)
        if stage.get("params", []) != want:
            problems.append(f"{name}: params are {stage.get('params', [])}; "
                            f"{model.__name__} reads {want} (`python -m stages.tools.compose "
                            "--write-dvc` rewrites the list)")
        cfg = validate(model, stage_params(model, params))
        resolved = {resolve_paths(d, params) for d in deps}
        lacking = [d for d in cfg.input_dirs() if d not in resolved]
        if lacking:
            problems.append(f"{name}: deps lack {lacking}, the folders of the input files it "
                            "accepts (Stage.input_dirs)")
    problems += output_path_problems(stages)
    problems += variant_problems(stages)
    return problems


def output_path_problems(stages: dict[str, Any]) -> list[str]:
    """The eval outputs dvc.yaml declares are where PathsConfig puts them, and summary
    depends on the folders that hold what it reads (not the cost files: it never reads them)."""
    paths = templated_paths()
    tasks = str(paths.tasks_file("${item.variant}", "${item.suite}"))
    metrics = str(paths.eval_file("${item.variant}", "${item.suite}"))
    cost = str(paths.cost_file("${item.variant}", "${item.suite}"))
    problems = []
    if stages["eval"].get("outs") != [tasks]:
        problems.append(f"eval: outs should be [{tasks}] (PathsConfig.tasks_file)")
    if [next(iter(m)) for m in stages["eval"].get("metrics", [])] != [metrics, cost]:
        problems.append(f"eval: metrics should be [{metrics}, {cost}] (PathsConfig.eval_file, "
                        "PathsConfig.cost_file)")
    folders = {str(Path(p).parent.parent) for p in (tasks, metrics)}
    if not folders <= set(stages["summary"]["deps"]):
        problems.append(f"summary: deps lack {sorted(folders - set(stages['summary']['deps']))}")
    return problems


# The eval matrix's variants: params.yaml's `variants`, so that `dvc exp run -S rl=grpo` (which
# composes params.yaml but never runs this module) scores grpo too.
MATRIX_VARIANTS = "${variants}"


def variant_problems(stages: dict[str, Any]) -> list[str]:
    problems = []
    if stages["eval"].get("matrix", {}).get("variant") != MATRIX_VARIANTS:
        problems.append(f"eval: matrix variants are {stages['eval'].get('matrix', {}).get('variant')}"
                        f"; write `variant: {MATRIX_VARIANTS}` (params.yaml's list, which "
                        "conf/rl/ sets and stages.config.Config checks against VARIANTS)")
    for variant in TRAINED:
        if variant not in stages:
            problems.append(f"{variant}: no stage of that name (every trained variant in "
                            "stages.config.VARIANTS is trained by the stage named for it)")
    return problems


# ---- dvc.yaml rewritten from the stage models ------------------------------------------------

STAGE_KEY = re.compile(r"^  (\S+):\s*$")  # a stage under `stages:`
LIST_KEY = re.compile(r"^(\s+)(params|deps):\s*$")
ITEM = re.compile(r"^(\s+)- (.*?)\s*$")


def written_dvc_yaml(text: str, root: Path = Path(".")) -> str:
    """`text` (dvc.yaml) with every stage's params list and code deps derived from the stage
    models and the modules each stage imports; every other line kept byte for byte."""
    stages = yaml.safe_load(text)["stages"]
    lines = text.splitlines(keepends=True)
    out, stage, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if (found := STAGE_KEY.match(line)) and found.group(1) in stages:
            stage = found.group(1)
            continue
        key = LIST_KEY.match(line)
        if stage is None or not key:
            continue
        items = []  # (line, entry) of the list's entries, with the comments between them
        while (end := list_entry(lines, i, len(key.group(1)))) > i:
            items += [(x, None) for x in lines[i:end - 1]]
            items.append((lines[end - 1], ITEM.match(lines[end - 1]).group(2)))
            i = end
        indent = next((ITEM.match(x).group(1) for x, e in items if e is not None),
                      key.group(1) + "  ")
        if key.group(2) == "params" and stage in STAGE_MODELS:
            # a comment between params entries would lose its place: dvc.yaml has none
            out += [f"{indent}- {e}\n" for e in declared_params(STAGE_MODELS[stage])]
        elif key.group(2) == "deps":
            out += code_deps(stages[stage], items, indent, root)
        else:
            out += [x for x, _ in items]
    return "".join(out)


def list_entry(lines: list[str], i: int, key_indent: int) -> int:
    """The end of the list entry at line i (after the comments before it), or i when the
    list has ended there (a comment after its last entry belongs to what follows)."""
    j = i
    while j < len(lines) and lines[j].lstrip().startswith("#"):
        j += 1
    entry = ITEM.match(lines[j]) if j < len(lines) else None
    return j + 1 if entry and len(entry.group(1)) > key_indent else i


def code_deps(stage: dict[str, Any], items: list[tuple[str, str | None]], indent: str,
              root: Path) -> list[str]:
    """A deps list's lines, its stages/ entries brought in step with the stage's imports."""
    stage = stage.get("do", stage)
    match = COMMAND.match(stage["cmd"])
    kept = [(x, e) for x, e in items
            if e is None or not e.startswith("stages/") or (root / e).exists()]
    if not match:
        return [x for x, _ in kept]
    deps = [e for _, e in kept if e is not None]
    missing = sorted(m for m in command_modules(match, root) if not covered(m, deps))
    last = max((n for n, (_, e) in enumerate(kept) if e and e.startswith("stages/")), default=-1)
    lines = [x for x, _ in kept]
    return lines[:last + 1] + [f"{indent}- {m}\n" for m in missing] + lines[last + 1:]


# ---- dvc.lock against the working tree --------------------------------------------------------


def stale_stages(repo: Path = Path(".")) -> list[str]:
    """Stages whose code, data, params or command differ from dvc.lock. `dvc repro --dry`
    exits 0 whether or not stages would run, so its output is read; --allow-missing skips
    outputs and deps that are only absent (a clone without DVC cache). A stale stage whose
    inputs are such absent outputs makes dvc stop there (it hashes the inputs to look up its
    run-cache): that stage is stale too, and the ones after it are not looked at."""
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--allow-missing", "--dry"],
                          cwd=repo, capture_output=True, text=True)
    # an always_changed stage (local_copy) "runs" on every repro by design: not staleness
    always = {name for name, stage in yaml.safe_load((repo / DVC_YAML).read_text(
        encoding="utf-8"))["stages"].items() if stage.get("always_changed")}
    stale = [s for s in re.findall(r"^Running stage '([^']+)'", done.stdout, flags=re.M)
             if s not in always]
    if done.returncode != 0:
        stopped = re.search(r"failed to reproduce '([^']+)': \[Errno 2\] No such file", done.stderr)
        if not stopped:
            raise ConfigError(f"`dvc repro --allow-missing --dry` failed in {repo}:\n"
                              f"{(done.stderr or done.stdout).strip()}")
        stale.append(f"{stopped.group(1)} (and the stages after it: dvc stops there, as this "
                     "checkout lacks its inputs)")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for `dvc exp run -S`")
    parser.add_argument("--check", action="store_true",
                        help="compare params.yaml, dvc.yaml and dvc.lock; write nothing")
    parser.add_argument("--write-dvc", action="store_true",
                        help=f"rewrite {DVC_YAML}'s params lists and code deps in place")
    parser.add_argument("--out", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)

    if args.write_dvc:
        before = DVC_YAML.read_text(encoding="utf-8")
        after = written_dvc_yaml(before)
        if after != before:
            atomic_write_text(DVC_YAML, after)
        print(f"{DVC_YAML}: {'rewritten' if after != before else 'already in step'}")
        return 0

    text = compose(args.overrides)
    try:
        validate(Config, yaml.safe_load(text))
    except ConfigError as err:
        print(f"conf/ composes to an invalid config:\n{err}", file=sys.stderr)
        return 2

    if not args.check:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
        return 0

    problems = [p for p in [params_problem(text, args.out)] if p]
    problems += dvc_yaml_problems(yaml.safe_load(text))
    try:
        stale = stale_stages()
    except ConfigError as err:
        problems.append(str(err))
    else:
        if stale:
            problems.append(f"dvc.lock is stale: `dvc repro` would run {', '.join(stale)}. "
                            "Run `dvc repro` and commit dvc.lock with the metrics.")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{args.out} is the composition of conf/, dvc.yaml declares what each stage reads, "
          "and dvc.lock is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
