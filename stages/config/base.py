"""What every config model is built from: strict models, the value types, flatten."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stages.config.errors import ConfigError

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Lang = Literal["en", "zh"]
# One value for every language, or one per language ({en: Swift-Robot, zh: 雨燕机器人}).
LangText = str | dict[Lang, str]


class Strict(BaseModel):
    # extra="forbid": a misspelt key is an error, never a silent no-op.
    # strict=True: "8" is not an int and 1 is not a bool.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def lang_text(value: LangText, lang: str) -> str:
    """The value of a `LangText` for one language."""
    if isinstance(value, str):
        return value
    if lang not in value:
        raise ConfigError(f"no {lang!r} value in {value!r}; add `{lang}: ...` next to the others")
    return value[lang]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} for every leaf of nested mappings."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}
