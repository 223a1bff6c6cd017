"""Each DVC stage's params (the part of params.yaml it reads), the whole `Config`, and the
`params:` list each stage declares in dvc.yaml."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ValidationInfo, field_validator

from stages.config import training
from stages.config.base import Strict
from stages.config.benchmarks import BenchmarksConfig, benchmark_files
from stages.config.data import DataConfig, SourceConfig
from stages.config.eval import EvalConfig, EvalReport, EvalRun
from stages.config.model import IdentityConfig, ModelConfig
from stages.config.paths import BENCHMARKS_DIR, EXTERNAL_DIR, REVIEWS_DIR, PathsConfig
from stages.config.training import DpoConfig, RlConfig, SftConfig, Variant


class Stage(Strict):
    """One DVC stage's params. Each field is a top-level key of params.yaml the stage reads;
    a field typed with a part of its group (EvalRun of `eval`) reads only that part's keys.
    `declared_params` turns this into the stage's `params:` list in dvc.yaml."""

    # Groups declared key by key in dvc.yaml (one entry per field of the group).
    split: ClassVar[tuple[str, ...]] = ()
    # Entries a foreach stage declares per item: sft@<phase> declares only its own phase.
    per_item: ClassVar[dict[str, str]] = {}

    def input_files(self) -> dict[str, str]:
        """{param: local path} of every data file the stage reads beyond its dvc.yaml deps'
        fixed paths; each must lie under one of `input_dirs()`."""
        return {}

    def input_dirs(self) -> list[str]:
        """Folders the stage declares as deps in dvc.yaml for the files of `input_files`."""
        return []


class LocalCopyModel(Strict):
    """The part of `model` the local_copy stage reads."""

    local_dir: str | None


class LocalCopyStage(Stage):
    model: LocalCopyModel
    paths: PathsConfig


class EnvironmentStage(Stage):
    paths: PathsConfig


class BaseStage(Stage):
    seed: int
    system_prompt: str
    model: ModelConfig
    paths: PathsConfig


class CurateStage(Stage):
    seed: int
    unsafe_execution: bool
    system_prompt: str
    identity: IdentityConfig
    data: DataConfig
    benchmarks: BenchmarksConfig
    paths: PathsConfig

    def input_files(self) -> dict[str, str]:
        files = {}
        for where, sources in [("data.sources", self.data.sources),
                               ("data.preferences", self.data.preferences),
                               *((f"data.phases.{i}.sources", phase.sources)
                                 for i, phase in enumerate(self.data.phases))]:
            for i, source in enumerate(sources):
                path = source.path if isinstance(source, SourceConfig) else source.partition("#")[0]
                if not path.startswith("hf::"):  # hub datasets: pinned by revision instead
                    files[f"{where}.{i}"] = path
        if self.data.preference_source:
            files["data.preference_source"] = self.data.preference_source
        return files | benchmark_files(self.benchmarks)

    def input_dirs(self) -> list[str]:
        return [self.paths.sources, EXTERNAL_DIR, BENCHMARKS_DIR]


class SftStage(Stage):
    seed: int
    identity: IdentityConfig
    model: ModelConfig
    sft: SftConfig
    paths: PathsConfig

    split = ("sft",)
    per_item = {"sft.phases": "sft.phases.${key}"}


class DpoStage(Stage):
    seed: int
    model: ModelConfig
    dpo: DpoConfig
    paths: PathsConfig


class GrpoStage(Stage):
    seed: int
    unsafe_execution: bool
    identity: IdentityConfig
    model: ModelConfig
    rl: RlConfig
    paths: PathsConfig


class EvalStage(Stage):
    seed: int
    unsafe_execution: bool
    system_prompt: str
    identity: IdentityConfig
    model: ModelConfig
    eval: EvalRun
    benchmarks: BenchmarksConfig
    paths: PathsConfig

    def input_files(self) -> dict[str, str]:
        return benchmark_files(self.benchmarks)

    def input_dirs(self) -> list[str]:
        return [BENCHMARKS_DIR]


class SummaryStage(Stage):
    seed: int
    variants: list[Variant]
    eval: EvalReport
    paths: PathsConfig

    def input_dirs(self) -> list[str]:
        return [REVIEWS_DIR]


class Config(Strict):
    """The whole of params.yaml: validated by `stages.tools.compose` before it writes the file."""

    seed: int
    unsafe_execution: bool
    system_prompt: str
    identity: IdentityConfig
    paths: PathsConfig
    benchmarks: BenchmarksConfig
    model: ModelConfig
    data: DataConfig
    sft: SftConfig
    dpo: DpoConfig
    rl: RlConfig
    variants: list[Variant]
    """The eval matrix's variants (dvc.yaml: variant: ${variants}), set by conf/rl/: every
    variant of VARIANTS but the OPTIONAL ones rl.trained leaves out."""
    eval: EvalConfig

    @field_validator("variants")
    @classmethod
    def _variants_of_the_rl_group(cls, variants: list[str], info: ValidationInfo) -> list[str]:
        if "rl" not in info.data:  # rl itself is invalid: that error is reported
            return variants
        trained = info.data["rl"].trained
        # read from the module at each call, so that a test can add a variant
        want = [v for v in training.VARIANTS if v not in training.OPTIONAL or v in trained]
        if variants != want:
            raise ValueError(f"with rl.trained {trained} the variants must be {want} "
                             "(conf/rl/ sets both; use -S rl=grpo or -S rl=none)")
        return variants


def stage_params(model: type[Stage], params: dict[str, Any]) -> dict[str, Any]:
    """The part of the whole `params` that `model` declares: its top-level keys, and of a
    group it reads in part (EvalRun of `eval`) only that part's keys."""
    out = {}
    for name, field in model.model_fields.items():
        value = params.get(name)
        part = field.annotation
        if _is_part(model, name) and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k in part.model_fields}
        out[name] = value
    return out


def _is_part(model: type[Stage], name: str) -> bool:
    part, whole = model.model_fields[name].annotation, Config.model_fields[name].annotation
    return part is not whole and isinstance(part, type) and issubclass(part, BaseModel)


def declared_params(model: type[Stage]) -> list[str]:
    """The stage's `params:` entries in dvc.yaml, in field order."""
    entries = []
    for name, field in model.model_fields.items():
        if _is_part(model, name) or name in model.split:
            entries += [f"{name}.{k}" for k in field.annotation.model_fields]
        else:
            entries.append(name)
    return [model.per_item.get(e, e) for e in entries]
