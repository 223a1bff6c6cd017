"""The `data` group: the sources curate mixes, their cleaning and the phases."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from stages.config.base import Fraction, NonNegInt, PosInt, Strict

Format = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion",
                 "self_cognition", "code_task", "preference"]


class SourceConfig(Strict):
    """A data source in mapping form; the string form `PATH_OR_ID[#N]` sets `path` and
    `count` only."""

    path: str
    """A local .jsonl/.json/.parquet/.csv file, or `hf::OWNER/NAME` for a hub dataset."""
    count: PosInt | None = None
    """Rows to draw, ms-swift `#N` semantics; null keeps the source as it is."""
    format: Format = "auto"
    """auto: detected from the fields of each row."""
    split: str = "train"
    """Hub datasets only."""
    revision: str | None = None
    """Pinned commit of a hub dataset (required for hf:: sources)."""
    columns: dict[str, str] = {}
    """Renames applied before format detection: {their_field: our_field}."""
    name: str | None = None
    """Name in the data card; default: the file stem or the dataset id."""
    ignore_fields: list[str] = []
    """Row fields you know are only metadata; any other field no format reads is an error
    (it might change what the row means). Ids and provenance are known-harmless already."""

    @model_validator(mode="after")
    def _hub_revision(self) -> SourceConfig:
        if self.path.startswith("hf::") and not self.revision:
            raise ValueError(f"hub dataset {self.path} needs a pinned `revision`")
        return self


Source = str | SourceConfig


class DedupConfig(Strict):
    near: bool
    """Also drop near-duplicates (MinHash LSH over word 5-grams), not only exact copies."""
    threshold: Annotated[float, Field(gt=0, le=1)]
    """Estimated Jaccard similarity above which two rows are near-duplicates."""
    num_perm: PosInt
    """MinHash permutations: more is more precise and slower."""


class DecontamConfig(Strict):
    ngram: PosInt
    """Word n-gram length; 10 as in the Qwen2.5-Coder report."""
    min_chars: NonNegInt
    """An n-gram counts only if its words add up to this many characters, so short common
    idioms (`for i in range(len(x))`) do not count as contamination."""


class QualityConfig(Strict):
    """Quality selection for code instruction data: score rows, keep the top `count`."""

    sources: Annotated[list[str], Field(min_length=1)]
    """Names (as in the data card) of the sources to select from."""
    count: PosInt


class PhaseConfig(Strict):
    """One phase of staged training, curated into its own file (phases/<name>.jsonl)."""

    name: str
    sources: Annotated[list[Source], Field(min_length=1)]


class CleanConfig(Strict):
    """How curate cleans every source (conf/data/clean/)."""

    strict: bool
    """true: an invalid row stops the stage; false: it is dropped and counted."""
    min_tokens: NonNegInt
    max_tokens: PosInt
    """Rows outside [min_tokens, max_tokens] tokens of the base tokenizer are dropped."""
    code_language: Literal["python"] | None
    """python: drop rows whose fenced code blocks are in another language."""
    secrets: Literal["drop", "redact"]
    """What to do with a row in which detect-secrets finds a credential."""
    dedup: DedupConfig
    decontaminate: DecontamConfig


class DataConfig(Strict):
    """The training mix the curate stage builds."""

    name: str
    sources: list[Source]
    """`PATH[#N]` strings (ms-swift habit) or mappings (SourceConfig)."""
    phases: list[PhaseConfig]
    """Staged training (anchor -> generalize -> calibrate), one curated file per phase;
    empty: a single mix from `sources`."""
    preference_source: str | None
    """Code tasks (prompt, solution, tests) from which DPO pairs are built; null: no pairs."""
    augment_pairs: bool
    """Also add each pair with the solution's identifiers renamed (verified to still pass)."""
    preferences: list[Source]
    """Preference files from users (chosen/rejected), taken as they are."""
    val_ratio: Fraction
    """Share of the SFT rows held out as validation, drawn with the seed."""
    quality: QualityConfig | None
    clean: CleanConfig

    @model_validator(mode="after")
    def _some_rows(self) -> DataConfig:
        if not self.sources and not self.phases:
            raise ValueError("give `sources` or `phases`")
        if self.sources and self.phases:
            raise ValueError("give either `sources` (one mix) or `phases` (staged), not both")
        return self
