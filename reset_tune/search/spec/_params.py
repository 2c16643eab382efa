"""The searched parameters of a spec (`params:`): fixed values, ranges and choices, and whether a
value lies in a parameter's domain."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)

Scalar = bool | int | float | str


def _scalar(value: Any) -> Scalar:
    """A fixed value or a categorical choice: a number, a string, true/false.

    A list of strings is accepted and joined with commas (``[layer3, layer4]`` is
    ``"layer3,layer4"``, the form `reset_layers` takes).
    """
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(v.strip() for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(
        f"must be a number, a string or true/false (or a mapping with `type:` for a searched "
        f"parameter), got {value!r}"
    )


FixedValue = Annotated[Any, AfterValidator(_scalar)]


def _train_value(value: Any) -> Scalar | None:
    """A `train` setting: a fixed value, or null for TrainConfig's optional settings."""
    if value is None:
        return None
    try:
        return _scalar(value)
    except ValueError:
        raise ValueError(f"must be a number, a string, true/false or null, got {value!r}") from None


TrainValue = Annotated[Any, AfterValidator(_train_value)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- searched parameters -------------------------------------------------------------------------
class LogUniform(StrictModel):
    """A float drawn log-uniformly from [low, high]; `off_arm` is for `reset_prob` only."""

    type: Literal["loguniform"]
    low: float
    high: float
    off_arm: bool | None = None  # reset_prob: None means true (an explicit r = 0 arm)

    @field_validator("low")
    @classmethod
    def _positive(cls, low: float) -> float:
        if not low > 0:
            raise ValueError(f"must be > 0 for a log-uniform range, got {low!r}")
        return low

    @field_validator("high")
    @classmethod
    def _non_empty(cls, high: float, info: ValidationInfo) -> float:
        return _check_high(high, info)


class Uniform(StrictModel):
    """A float drawn uniformly from [low, high]."""

    type: Literal["uniform"]
    low: float
    high: float

    @field_validator("high")
    @classmethod
    def _non_empty(cls, high: float, info: ValidationInfo) -> float:
        return _check_high(high, info)


class IntRange(StrictModel):
    """An integer from {low, low + step, …, high}, on a log scale when `log` is true."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @field_validator("high")
    @classmethod
    def _non_empty(cls, high: int, info: ValidationInfo) -> int:
        return _check_high(high, info)

    @field_validator("log")
    @classmethod
    def _log_scale(cls, log: bool, info: ValidationInfo) -> bool:
        if log and info.data.get("step", 1) != 1:
            raise ValueError("a log-scale integer range takes no step (step must be 1)")
        if log and info.data.get("low", 1) < 1:
            raise ValueError(f"a log-scale integer range needs low >= 1, got {info.data['low']}")
        return log

    @field_validator("step")
    @classmethod
    def _divides(cls, step: int, info: ValidationInfo) -> int:
        low, high = info.data.get("low"), info.data.get("high")
        if low is not None and high is not None and (high - low) % step:
            raise ValueError(f"high - low ({high} - {low}) must be a multiple of step, got {step}")
        return step


class Categorical(StrictModel):
    """One of the listed choices."""

    type: Literal["categorical"]
    choices: list[FixedValue] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Scalar]) -> list[Scalar]:
        seen: list[tuple[type, Scalar]] = []
        for choice in choices:
            key = (type(choice), choice)
            if key in seen:
                raise ValueError(f"lists {choice!r} twice; every choice must be distinct")
            seen.append(key)
        return choices


_Bound = TypeVar("_Bound", int, float)


def _check_high(high: _Bound, info: ValidationInfo) -> _Bound:
    """`high` when it is above the range's `low` (an int range's ends stay ints)."""
    low = info.data.get("low")
    if low is not None and not high > low:
        raise ValueError(f"empty range: high must be > low, got low={low!r}, high={high!r}")
    return high


Range = LogUniform | Uniform | IntRange


def _param_tag(value: Any) -> str | None:
    if isinstance(value, Mapping):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    return "fixed"


Param = Annotated[
    Annotated[FixedValue, Tag("fixed")]
    | Annotated[LogUniform, Tag("loguniform")]
    | Annotated[Uniform, Tag("uniform")]
    | Annotated[IntRange, Tag("int")]
    | Annotated[Categorical, Tag("categorical")],
    Discriminator(_param_tag),
]


def same_value(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def is_fixed(value: Any) -> bool:
    return not isinstance(value, BaseModel)


def outside_reason(spec: Range | Categorical, value: Any) -> str | None:
    """Why `value` is not in `spec`'s domain, or None when it is."""
    if isinstance(spec, Categorical):
        if any(same_value(value, c) for c in spec.choices):
            return None
        return f"{value!r} is not one of the choices {spec.choices}"
    if isinstance(spec, IntRange):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer in [{spec.low}, {spec.high}], got {value!r}"
        if not spec.low <= value <= spec.high or (value - spec.low) % spec.step:
            step = f" in steps of {spec.step}" if spec.step != 1 else ""
            return f"{value!r} is outside [{spec.low}, {spec.high}]{step}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number in [{spec.low}, {spec.high}], got {value!r}"
    if not spec.low <= value <= spec.high:
        return f"{value!r} is outside [{spec.low}, {spec.high}]"
    return None
