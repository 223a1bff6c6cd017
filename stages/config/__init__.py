"""Typed, strict configuration for every stage.

`conf/` (Hydra) is the source, `params.yaml` is its composition (`python -m stages.tools.compose`).
Before doing any work a stage validates the whole of `params.yaml` against `Config` (so a key
no stage knows, e.g. from `dvc exp run -S +sft.bogus=1`, stops it, named with the nearest
known key), then reads only the params it declares in `dvc.yaml` (`declared_params`, checked
against dvc.yaml by `python -m stages.tools.compose --check`) into its own model, and refuses
input files that no DVC dependency of the stage tracks (`Stage.input_files`).

    python -m stages.config        # the `params` stage: validate params.yaml, nothing else

One job per module; every name is importable from `stages.config` itself:

    errors        ConfigError, StageError, run_stage (a stage's main from the command line)
    base          Strict, the value types (PosInt, LangText ...), lang_text, flatten
    paths         PathsConfig, PARAMS_FILE and the folders tracked for users' files
    suites        the suite registry: every eval suite, its module and its data path
    model         the model and identity groups
    data          the data group (sources, cleaning, phases)
    benchmarks    the benchmarks group, one key per data path the registry names
    training      the sft, dpo and rl groups; VARIANTS
    eval          the eval group; the suite literals built from the registry
    stage_models  each stage's params, Config (the whole), declared_params, stage_params
    loading       read_params, validate (one error, nearest-key hints), load
"""

from stages.config.base import (
    Fraction,
    Lang,
    LangText,
    NonNegInt,
    PosFloat,
    PosInt,
    Strict,
    flatten,
    lang_text,
)
from stages.config.benchmarks import BenchmarksConfig, EvalplusBenchmarks, benchmark_files
from stages.config.data import (
    CleanConfig,
    DataConfig,
    DecontamConfig,
    DedupConfig,
    Format,
    PhaseConfig,
    QualityConfig,
    Source,
    SourceConfig,
)
from stages.config.errors import ConfigError, StageError, run_stage
from stages.config.eval import (
    BATCHINGS,
    HARNESS_SETTINGS,
    EvalConfig,
    EvalReport,
    EvalRun,
    LmEvalSuite,
    LmEvalTaskConfig,
    Suite,
)
from stages.config.loading import (
    ALIASES,
    format_errors,
    known_keys,
    load,
    main,
    nearest_key,
    read_params,
    refuse_untracked_inputs,
    validate,
)
from stages.config.model import ArchConfig, IdentityConfig, ModelConfig, TinyTrainConfig
from stages.config.paths import (
    BENCHMARKS_DIR,
    EXTERNAL_DIR,
    PARAMS_FILE,
    REVIEWS_DIR,
    PathsConfig,
)
from stages.config.stage_models import (
    BaseStage,
    Config,
    CurateStage,
    DpoStage,
    EnvironmentStage,
    EvalStage,
    GrpoStage,
    LocalCopyModel,
    LocalCopyStage,
    SftStage,
    Stage,
    SummaryStage,
    declared_params,
    stage_params,
)
from stages.config.suites import SUITES, Layout, SuiteEntry
from stages.config.training import (
    CPO_LOSSES,
    DPO_LOSSES,
    LOSS_KNOBS,
    OPTIONAL,
    REWARDS,
    SUITE_REWARDS,
    TRAINED,
    VARIANTS,
    DpoConfig,
    GrpoConfig,
    LoraParams,
    PreferenceLoss,
    RlConfig,
    SftConfig,
    SftPhase,
    Variant,
)

__all__ = [
    "ALIASES", "BATCHINGS", "BENCHMARKS_DIR", "CPO_LOSSES", "DPO_LOSSES", "EXTERNAL_DIR",
    "LOSS_KNOBS", "OPTIONAL", "PARAMS_FILE", "REVIEWS_DIR", "REWARDS", "SUITES",
    "SUITE_REWARDS", "TRAINED", "VARIANTS", "ArchConfig", "BaseStage", "BenchmarksConfig",
    "CleanConfig", "Config", "ConfigError", "CurateStage", "DataConfig", "DecontamConfig",
    "DedupConfig", "DpoConfig", "DpoStage", "EnvironmentStage", "EvalConfig", "EvalReport",
    "EvalRun", "EvalStage", "HARNESS_SETTINGS", "EvalplusBenchmarks", "Format", "Fraction", "GrpoConfig",
    "GrpoStage", "IdentityConfig", "Lang", "LangText", "Layout", "LmEvalSuite",
    "LmEvalTaskConfig", "LocalCopyModel", "LocalCopyStage", "LoraParams", "ModelConfig",
    "NonNegInt", "PathsConfig", "PhaseConfig", "PosFloat", "PosInt", "PreferenceLoss",
    "QualityConfig", "RlConfig", "SftConfig", "SftPhase", "SftStage", "Source", "SourceConfig",
    "Stage", "StageError", "Strict", "Suite", "SuiteEntry", "SummaryStage", "TinyTrainConfig",
    "Variant", "benchmark_files", "declared_params", "flatten", "format_errors", "known_keys",
    "lang_text", "load", "main", "nearest_key", "read_params", "refuse_untracked_inputs",
    "run_stage", "stage_params", "validate",
]
