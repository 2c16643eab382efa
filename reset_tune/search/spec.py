"""Search specifications: the schema of `search_spaces/*.yaml`, checked before anything starts.

A spec names the problem (dataset, noise, model, budget: the `train` settings every trial shares),
what the search ranks configurations by (`objective`), how many configurations to try and how
(`trials`, `concurrency`, `seeds`, `resources`, `scheduler`, `sampler`), and the searched
parameters (`params`). Parameter names are `TrainConfig` field names, so a trial's parameters
rebuild its config directly (`SearchSpec.config_for`). Every problem is reported as one line
``FILE: KEY.PATH: what is wrong and what is allowed``; pydantic checks shapes and types, then
`_semantic_problems` checks what depends on the engine (settings, models' layer groups).

Resetting is conditional: when `params.reset_prob` has an off arm, a trial either resets (r drawn
log-uniformly, and the reset sub-parameters `RESET_SUBPARAMETERS` drawn too) or is the r = 0
baseline, in which those sub-parameters do not exist (they keep `TrainConfig` defaults).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from reset_tune import names
from reset_tune.config import FIELD_KINDS, TrainConfig
from reset_tune.errors import ConfigError
from reset_tune.search.racing import split_race_params

# -- vocabulary shared with the space and the driver -------------------------------------------
RESET_PROB = "reset_prob"
# The on/off switch's name in Optuna trials (and hence in Ray Tune's trial config): "on" | "off".
RESETTING = "resetting"
RESETTING_ON = "on"
RESETTING_OFF = "off"
# Settings that only matter once resetting is on (with r = 0 they change nothing the run does).
# `checkpoint_metric` is deliberately not here: it picks θbest — and so the reported test accuracy
# and the objective — in every run, the r = 0 baseline included (DESIGN §1.2, §1.8).
RESET_SUBPARAMETERS = (
    "reset_layers",
    "patience",
    "warmup",
    "adaptive",
    "restore_optimizer",
    "lr_on_reset",
    "arm_on_memorisation",
)
# Settings that define the problem or the measurement rather than a training choice. Searching
# them would make trials incomparable (a different validation split, data or noise per trial), so
# they may only be fixed under `train:`.
NOT_SEARCHABLE = {
    "seed": "list the seeds every configuration is evaluated on under the top-level `seeds:`",
    "reset_seed": "reset decisions derive their own seed from each trial's seed",
    "dataset": "it defines the problem; fix it under `train:`",
    "data_root": "it defines the problem; fix it under `train:`",
    "download": "fix it under `train:`",
    "label_file": "it defines the problem; fix it under `train:`",
    "image_size": "it defines the problem; fix it under `train:`",
    "noise": "it defines the problem; fix it under `train:`",
    "val_fraction": "the objective is measured on the validation split, which must be the same "
    "for every trial; fix it under `train:`",
    "clean_val": "the objective is measured on the validation split, which must be the same "
    "for every trial; fix it under `train:`",
    "train_subset": "it defines the problem (and the validation split); fix it under `train:`",
    "eval_every": "it sets how the objective is measured; fix it under `train:`",
    "eval_batch_size": "it does not change training; fix it under `train:`",
    "memorisation_samples": "it does not change training; fix it under `train:`",
    "device": "trials get devices from `resources:`; fix it under `train:`",
    "deterministic": "comparisons between trials need the same kernels; fix it under `train:`",
}
OBJECTIVE_METRICS = ("val_acc", "val_loss")
# The result key each objective ranks trials by: the validation metric at the trial's θbest.
_OBJECTIVE_KEYS = {"val_acc": names.BEST_VAL_ACC, "val_loss": names.BEST_VAL_LOSS}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_DEFAULTS = TrainConfig().to_dict()
# (channels, side) per dataset, to build a model for checking `reset_layers` without loading
# data; parameter names do not depend on the number of classes. imagefolder: image_size or 32.
_IMAGE_SHAPES = {
    "digits": (1, 8),
    "mnist": (1, 28),
    "fashion-mnist": (1, 28),
    "cifar10": (3, 32),
    "cifar100": (3, 32),
    "cifar10n": (3, 32),
    "cifar100n": (3, 32),
    "imagefolder": (3, 32),
}
_CIFAR_N = ("cifar10n", "cifar100n")
# Human label sets per CIFAR-N dataset (as `reset_tune.data.label_files` names them).
_HUMAN_LABEL_SETS = {
    "cifar10n": ("aggre", "worst", "random1", "random2", "random3"),
    "cifar100n": ("noisy",),
}
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def _field_kind(name: str) -> str:
    """`int`, `float`, `bool` or `str`: the kind of a TrainConfig field (Optional stripped)."""
    return FIELD_KINDS[name].type.__name__


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    hint = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


# -- value normalisation -------------------------------------------------------------------------
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- searched parameters -------------------------------------------------------------------------
class LogUniform(_Strict):
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


class Uniform(_Strict):
    """A float drawn uniformly from [low, high]."""

    type: Literal["uniform"]
    low: float
    high: float

    @field_validator("high")
    @classmethod
    def _non_empty(cls, high: float, info: ValidationInfo) -> float:
        return _check_high(high, info)


class IntRange(_Strict):
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


class Categorical(_Strict):
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


def _check_high(high: float, info: ValidationInfo) -> float:
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


# -- the other sections --------------------------------------------------------------------------
class Objective(_Strict):
    """What the search ranks configurations by: a validation metric at each trial's θbest."""

    metric: Literal["val_acc", "val_loss"] = "val_acc"

    @field_validator("metric", mode="before")
    @classmethod
    def _never_test(cls, metric: Any) -> Any:
        if isinstance(metric, str) and metric.lower().startswith("test"):
            raise ValueError(
                f"{metric!r} is not allowed: the test split is only reported, never used for a "
                "decision (DESIGN §1.1); use val_acc (default) or val_loss"
            )
        return metric

    @property
    def mode(self) -> Literal["max", "min"]:
        """Ray Tune's `mode`: accuracy is maximised, loss minimised."""
        return "max" if self.metric == "val_acc" else "min"

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Optuna's study direction."""
        return "maximize" if self.metric == "val_acc" else "minimize"

    @property
    def result_key(self) -> str:
        """The engine's result key holding this metric at θbest (`best/val_acc`, …)."""
        return _OBJECTIVE_KEYS[self.metric]


class Resources(_Strict):
    """What one trial requests from Ray: CPUs and a GPU fraction (or whole GPUs)."""

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)

    @field_validator("gpus")
    @classmethod
    def _fraction_or_whole(cls, gpus: float) -> float:
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(
                f"must be a fraction of one GPU (0 < gpus <= 1) or a whole number, got {gpus!r}"
            )
        return gpus


class NoScheduler(_Strict):
    """Every trial runs its full budget."""

    type: Literal["none"]


class AshaScheduler(_Strict):
    """ASHA early stopping; times are training steps (the engine's `step`)."""

    type: Literal["asha"]
    grace_period: int = Field(ge=1)  # steps before a trial can be stopped
    reduction_factor: float = Field(default=4.0, gt=1)  # Ray Tune's default
    max_t: int | None = Field(default=None, ge=1)  # default: train.steps

    @field_validator("max_t")
    @classmethod
    def _after_grace(cls, max_t: int | None, info: ValidationInfo) -> int | None:
        grace = info.data.get("grace_period")
        if max_t is not None and grace is not None and max_t < grace:
            raise ValueError(f"must be >= grace_period ({grace}), got {max_t}")
        return max_t


Scheduler = Annotated[NoScheduler | AshaScheduler, Field(discriminator="type")]


class Sampler(_Strict):
    """Optuna's multivariate TPE (see `reset_tune.search.space.make_sampler`)."""

    type: Literal["tpe"] = "tpe"
    seed: int | None = 0  # None: a fresh random sequence every search
    startup_trials: int = Field(default=10, ge=0)  # random trials before TPE models the results


class Racing(_Strict):
    """Race configurations on seeds (`reset_tune.search.racing`): each starts on one seed, and
    those that might still beat their arm's incumbent run on more, up to `max_seeds`."""

    max_seeds: int = Field(default=4, ge=2)  # seeds an incumbent ends on (the verdict's n)
    z: float = Field(default=1.0, ge=0.0, le=5.0)  # standard errors a challenger may trail by


class SearchSpec(_Strict):
    """A validated search specification. Build it with `load_spec` or `SearchSpec.from_dict`."""

    name: str = Field(default="search", pattern=_NAME_PATTERN)
    description: str = ""
    train: dict[str, TrainValue] = Field(default_factory=dict)
    objective: Objective = Field(default_factory=Objective)
    trials: int = Field(default=20, ge=1)  # configurations tried (each on every seed)
    concurrency: int = Field(default=1, ge=1)  # trials running at once
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    resources: Resources = Field(default_factory=Resources)
    scheduler: Scheduler = Field(default_factory=lambda: NoScheduler(type="none"))
    sampler: Sampler = Field(default_factory=Sampler)
    racing: Racing | None = None  # None: every configuration runs on every seed of `seeds`
    params: dict[str, Param] = Field(min_length=1)
    # Configurations (TrainConfig names, partial ones completed by sampling) tried before any
    # other trial, e.g. a recommendation and its r = 0 arm (`reset-tune recommend --write-spec`).
    first_trials: list[dict[str, FixedValue]] = Field(default_factory=list)

    _source: str = PrivateAttr(default="search spec")

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_shorthand(cls, value: Any) -> Any:
        return {"metric": value} if isinstance(value, str) else value

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, value: Any) -> Any:
        if value is None:
            return {"type": "none"}
        return {"type": value} if isinstance(value, str) else value

    @field_validator("racing", mode="before")
    @classmethod
    def _racing_shorthand(cls, value: Any) -> Any:
        if value is False or value == "off":
            return None
        if value is True or value == "on":
            return {}
        return value

    @field_validator("sampler", mode="before")
    @classmethod
    def _sampler_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be integers >= 0, got {seeds}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"lists a seed twice: {seeds}")
        return seeds

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "search spec") -> SearchSpec:
        """Validate a parsed spec; raises `SpecError` listing every problem, each with its key.

        `source` names the spec in messages (the file path for `load_spec`); when it is a
        ``.yaml``/``.yml`` path, `name` defaults to the file's stem.
        """
        if not isinstance(data, Mapping):
            raise SpecError(
                source,
                [("", "the top level must be a mapping with keys such as train, params, trials")],
            )
        data = dict(data)
        stem, ext = os.path.splitext(os.path.basename(source))
        if "name" not in data and ext in (".yaml", ".yml") and re.match(_NAME_PATTERN, stem):
            data["name"] = stem
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(source, [_describe_error(e) for e in exc.errors()]) from None
        spec._source = source
        problems = _semantic_problems(spec)
        if problems:
            raise SpecError(source, problems)
        return spec

    # -- what the search and the driver need -----------------------------------------------------
    @property
    def source(self) -> str:
        """Where the spec came from (its file path), for messages."""
        return self._source

    @property
    def mode(self) -> Literal["max", "min"]:
        return self.objective.mode

    @property
    def reset_range(self) -> LogUniform | None:
        """`params.reset_prob` when r is searched, else None (r fixed by `train` or default)."""
        value = self.params.get(RESET_PROB)
        return value if isinstance(value, LogUniform) else None

    @property
    def has_off_arm(self) -> bool:
        """Whether trials choose between resetting and the r = 0 baseline."""
        reset = self.reset_range
        return reset is not None and reset.off_arm is not False

    def is_conditional(self, name: str) -> bool:
        """Whether parameter `name` exists only in trials that reset."""
        return self.has_off_arm and name in RESET_SUBPARAMETERS

    @property
    def searched(self) -> dict[str, Range | Categorical]:
        """The parameters drawn per trial (fixed values excluded), in spec order."""
        return {k: v for k, v in self.params.items() if not _is_fixed(v)}

    @property
    def fixed(self) -> dict[str, Scalar]:
        """Settings every trial shares: `train` plus the unconditional fixed values of `params`.

        ``TrainConfig.from_dict({**spec.fixed, **trial_params, "seed": s})`` rebuilds a trial's
        config from the parameters `space.suggest` returned.
        """
        fixed = dict(self.train)
        for name, value in self.params.items():
            if _is_fixed(value) and not self.is_conditional(name):
                fixed[name] = value
        return fixed

    @property
    def race_seeds(self) -> list[int]:
        """With racing: the seeds in race order (`seeds`, continued by consecutive integers
        after the last up to `racing.max_seeds`); without: `seeds`."""
        if self.racing is None:
            return list(self.seeds)
        seeds = list(self.seeds)
        while len(seeds) < self.racing.max_seeds:
            seeds.append(max(seeds) + 1)
        return seeds[: self.racing.max_seeds]

    @property
    def prunes(self) -> bool:
        """Whether a scheduler may stop trials early (their runs then end as pruned)."""
        return isinstance(self.scheduler, AshaScheduler)

    @property
    def max_t(self) -> int | None:
        """ASHA's horizon in steps (default: the training budget), or None without ASHA."""
        if not isinstance(self.scheduler, AshaScheduler):
            return None
        return self.scheduler.max_t or int(self.train.get("steps", _DEFAULTS["steps"]))

    def check_params(
        self, params: Mapping[str, Any], *, where: str, complete: bool = True
    ) -> dict[str, Any]:
        """Check one configuration against the space; returns its parameters, normalised.

        `params` maps parameter names to values (the switch `resetting` may be present); with
        ``complete=False`` searched parameters may be missing (Optuna draws them). A value
        outside its range, a reset sub-parameter in an r = 0 configuration, an unknown name or a
        value contradicting a fixed setting raises `ConfigError` naming `where` and the key.
        """
        values = dict(params)
        switch = values.pop(RESETTING, None)
        if switch is not None and (
            not self.has_off_arm or switch not in (RESETTING_ON, RESETTING_OFF)
        ):
            allowed = f"{RESETTING_ON!r} or {RESETTING_OFF!r}" if self.has_off_arm else "absent"
            raise ConfigError(
                f"{where}: {RESETTING}: must be {allowed} (params.reset_prob.off_arm), "
                f"got {switch!r}"
            )
        out: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                value = ",".join(value)
            out[key] = self._check_value(key, value, where)
        reset = self.reset_range
        off = switch == RESETTING_OFF
        if reset is not None and RESET_PROB in out:
            r_off = out[RESET_PROB] == 0
            if switch is not None and r_off != off:
                raise ConfigError(
                    f"{where}: {RESETTING}={switch!r} contradicts reset_prob={out[RESET_PROB]!r}"
                )
            off = r_off
        if off:
            stray = [k for k in out if self.is_conditional(k)]
            if stray:
                raise ConfigError(
                    f"{where}: {stray[0]}: exists only when resetting is on, but this "
                    "configuration has reset_prob = 0; remove it"
                )
            if reset is not None:
                out[RESET_PROB] = 0.0
        if complete:
            wanted = [
                k
                for k in self.searched
                if k not in out and not (off and (self.is_conditional(k) or k == RESET_PROB))
            ]
            if wanted:
                raise ConfigError(f"{where}: missing searched parameter(s): {', '.join(wanted)}")
        return out

    def config_for(self, params: Mapping[str, Any], *, seed: int | None = None) -> TrainConfig:
        """The `TrainConfig` of one trial: `train`, the fixed params and the trial's `params`.

        `params` is what `space.suggest` returned (or Ray Tune's trial config, which also holds
        the switch `resetting`, and a racing seed run's `race_config`/`race_seed`). In an r = 0
        trial, reset_prob is 0 and the reset sub-parameters keep their `TrainConfig` defaults.
        `seed` defaults to the seed run's race seed, else the spec's first seed.
        """
        params, _config_id, race_seed = split_race_params(params)
        seed = race_seed if seed is None else seed
        checked = self.check_params(params, where=f"{self._source}: trial parameters")
        off = self.has_off_arm and checked.get(RESET_PROB) == 0
        values: dict[str, Any] = dict(self.train)
        for name, value in self.params.items():
            if _is_fixed(value) and not (off and self.is_conditional(name)):
                values[name] = value
        values.update(checked)
        values["seed"] = self.seeds[0] if seed is None else seed
        return _build_config(values, f"{self._source}: trial parameters")

    def configs_for(self, params: Mapping[str, Any]) -> list[TrainConfig]:
        """What one Tune trial runs: the configuration on every seed in `seeds`, or, with
        racing, on the one seed of this seed run (a configuration's first run: the first)."""
        if self.racing is not None:
            _params, _config_id, race_seed = split_race_params(params)
            return [self.config_for(params, seed=self.race_seeds[0] if race_seed is None else None)]
        return [self.config_for(params, seed=s) for s in self.seeds]

    @property
    def seeds_per_trial(self) -> int:
        """Seeds one Tune trial runs: every seed, or one with racing."""
        return 1 if self.racing is not None else len(self.seeds)

    def _check_value(self, key: str, value: Any, where: str) -> Any:
        if key == "seed":
            raise ConfigError(
                f"{where}: seed: not a search parameter; a configuration runs on each of the "
                f"spec's seeds {self.seeds}"
            )
        if key not in self.params:
            fixed = self.fixed
            if key in fixed or key in _FIELDS:
                expected = fixed.get(key, _DEFAULTS.get(key))
                if _same(value, expected):
                    return value
                origin = "fixed by the spec" if key in fixed else "not searched (default)"
                raise ConfigError(
                    f"{where}: {key}: is {origin} at {expected!r}, got {value!r}; "
                    "only searched parameters may vary"
                )
            raise ConfigError(
                f"{where}: {key}: not a parameter of this search{_did_you_mean(key, _FIELDS)}; "
                f"searched: {', '.join(self.searched)}"
            )
        spec = self.params[key]
        if _is_fixed(spec):
            if not _same(value, spec):
                raise ConfigError(
                    f"{where}: {key}: is fixed at {spec!r} by params.{key}, got {value!r}"
                )
            return value
        if key == RESET_PROB and value == 0 and not isinstance(value, bool):
            if not self.has_off_arm:
                raise ConfigError(
                    f"{where}: reset_prob: 0 is not in this search (params.reset_prob.off_arm is "
                    "false); allowed: "
                    f"[{spec.low}, {spec.high}]"  # type: ignore[union-attr]
                )
            return 0.0
        problem = _outside(spec, value)
        if problem:
            raise ConfigError(f"{where}: {key}: {problem}")
        return float(value) if isinstance(spec, LogUniform | Uniform) else value


def _same(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def _is_fixed(value: Any) -> bool:
    return not isinstance(value, BaseModel)


def _outside(spec: Range | Categorical, value: Any) -> str | None:
    """Why `value` is not in `spec`'s domain, or None when it is."""
    if isinstance(spec, Categorical):
        if any(_same(value, c) for c in spec.choices):
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


# -- loading -------------------------------------------------------------------------------------
class SpecError(ConfigError):
    """A spec has problems; `problems` holds one ``FILE: KEY: message`` line per problem."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = [
            f"{source}: {path}: {msg}" if path else f"{source}: {msg}" for path, msg in problems
        ]
        super().__init__("\n".join(self.problems))


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats (``1e-3``) and an error on duplicate keys."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    # YAML 1.1 (PyYAML) reads 1e-3 as a *string*; YAML 1.2 and every user read it as a float.
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _SpecLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_spec(path: str | os.PathLike[str]) -> SearchSpec:
    """Read and validate a YAML search spec; every problem is a `ConfigError` naming `path`."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such search spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the search spec: {exc}") from None
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: invalid YAML: {where}{problem}") from None
    return SearchSpec.from_dict(data if data is not None else {}, source=source)


# -- pydantic errors -> one line each ------------------------------------------------------------
def _strip_annotated(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    metadata: tuple[Any, ...] = ()
    while typing.get_origin(tp) is Annotated:
        metadata += tp.__metadata__
        tp = typing.get_args(tp)[0]
    return tp, metadata


def _union_members(tp: Any) -> dict[str, Any]:
    """Tag -> member type for a tagged union (either `Tag(...)` or a `type: Literal[...]`)."""
    members: dict[str, Any] = {}
    for arg in typing.get_args(tp):
        inner, metadata = _strip_annotated(arg)
        tags = [m.tag for m in metadata if isinstance(m, Tag)]
        if not tags and isinstance(inner, type) and issubclass(inner, BaseModel):
            kind = inner.model_fields.get("type")
            tags = list(typing.get_args(kind.annotation)) if kind else []
        for tag in tags:
            members[tag] = inner
    return members


def _walk(loc: tuple[Any, ...]) -> tuple[str, Any]:
    """The dotted key path of a pydantic `loc` (union tags dropped) and the type it ends at."""
    path, tp = "", SearchSpec
    for part in loc:
        tp, _ = _strip_annotated(tp)
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            members = _union_members(tp)
            if part in members:
                tp = members[part]
                continue
            tp = None
        if isinstance(part, int):
            path += f"[{part}]"
            args = typing.get_args(tp)
            tp = args[0] if typing.get_origin(tp) is list and args else None
            continue
        path += f".{part}" if path else str(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            tp = None
    tp, _ = _strip_annotated(tp) if tp is not None else (None, ())
    return path, tp


def _describe_error(error: Mapping[str, Any]) -> tuple[str, str]:
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        path, _ = _walk(loc)
        _, parent = _walk(loc[:-1])
        allowed = list(parent.model_fields) if isinstance(parent, type) else []
        hint = _did_you_mean(str(loc[-1]), allowed)
        return path, f"unknown key{hint}; allowed: {', '.join(allowed)}"
    path, _ = _walk(loc)
    if kind == "missing":
        return path, "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        _, union = _walk(loc)
        tags = [t for t in _union_members(union) if t != "fixed"]
        params = path.startswith("params.")
        extra = " (or a plain value to fix the parameter)" if params else ""
        if kind == "union_tag_not_found" or not isinstance(ctx.get("tag"), str):
            return path, f"needs `type:` — one of {', '.join(tags)}{extra}"
        return path, f"unknown type {ctx['tag']!r}; allowed: {', '.join(tags)}{extra}"
    msg = str(error["msg"])
    if kind == "value_error":
        return path, msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        return path, f"must be a mapping of keys, got {value!r}"
    msg = re.sub(r"^(Input|List|Value|Dictionary|String) should ", "must ", msg)
    msg = re.sub(r"^must have at least (\d+) items?.*", r"must list at least \1 item(s)", msg)
    if not isinstance(value, dict):
        msg += f", got {value!r}"
    return path, msg


# -- checks that need the engine -----------------------------------------------------------------
Problems = list[tuple[str, str]]  # (key path, message)
_PROBLEM_SOURCE = "<spec>"


class _Problem(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def _build_config(values: Mapping[str, Any], source: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(values, source=source)
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(source) else f"{source}: {text}") from None


def _try_config(values: Mapping[str, Any], path_of: Callable[[str | None], str]) -> TrainConfig:
    """Build a TrainConfig, turning its error into a `_Problem` at the offending key's path."""
    try:
        return TrainConfig.from_dict(values, source=_PROBLEM_SOURCE)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{_PROBLEM_SOURCE}: ")
        first = re.match(r"[a-z_]+", message)  # TrainConfig's messages start with the key
        key = first.group(0) if first and first.group(0) in _FIELDS else None
        raise _Problem(path_of(key), message) from None


def _candidates(spec: SearchSpec, name: str) -> list[tuple[str, Any]]:
    """(path, value) for the values `name` can take: its fixed value, range ends or choices."""
    if name in spec.train:
        return [(f"train.{name}", spec.train[name])]
    value = spec.params.get(name)
    if value is None:
        return [("", _DEFAULTS[name])]
    if _is_fixed(value):
        return [(f"params.{name}", value)]
    if isinstance(value, Categorical):
        return [(f"params.{name}.choices[{i}]", c) for i, c in enumerate(value.choices)]
    return [(f"params.{name}.low", value.low), (f"params.{name}.high", value.high)]


def _semantic_problems(spec: SearchSpec) -> Problems:
    problems: Problems = []
    for check in (_check_train, _check_params, _check_values, _check_reset_layers, _check_run):
        problems += check(spec)
        if problems:  # later checks assume the earlier ones passed
            break
    return problems


def _check_train(spec: SearchSpec) -> Problems:
    problems: Problems = []
    for key in spec.train:
        if key not in _FIELDS:
            hint = _did_you_mean(key, _FIELDS)
            problems.append(
                (
                    f"train.{key}",
                    f"unknown setting{hint}; settings are TrainConfig "
                    "fields (see `reset-tune train --help`)",
                )
            )
        elif key == "seed":
            problems.append(("train.seed", f"not allowed: {NOT_SEARCHABLE['seed']}"))
    if problems:
        return problems
    try:
        config = _try_config(spec.train, lambda k: f"train.{k}" if k in spec.train else "train")
    except _Problem as p:
        return [(p.path, p.message)]
    return _check_data_settings(spec, config)


def _check_data_settings(spec: SearchSpec, config: TrainConfig) -> Problems:
    """Dataset, noise and label-file settings that `TrainConfig` leaves to the data loader."""
    from reset_tune.data import DATASET_NAMES, parse_noise_spec

    def at(key: str) -> str:
        return f"train.{key}" if key in spec.train else "train"

    dataset = config.dataset
    if dataset not in DATASET_NAMES:
        hint = _did_you_mean(dataset, DATASET_NAMES)
        return [
            (
                at("dataset"),
                f"unknown dataset {dataset!r}{hint}; allowed: {', '.join(DATASET_NAMES)}",
            )
        ]
    try:
        noise = parse_noise_spec(config.noise)
    except ConfigError as exc:
        return [(at("noise"), str(exc))]
    problems: Problems = []
    if dataset in _CIFAR_N and config.label_file is None:
        file_name = "CIFAR-10_human.pt" if dataset == "cifar10n" else "CIFAR-100_human.pt"
        problems.append(
            (
                "train.label_file",
                f"required for dataset {dataset!r}: the path of the "
                f"CIFAR-N project's {file_name} (read when trials start, not now)",
            )
        )
    if config.label_file is not None and dataset not in _CIFAR_N:
        problems.append(
            ("train.label_file", f"only cifar10n and cifar100n use it, not {dataset!r}")
        )
    if noise.kind == "human":
        sets = _HUMAN_LABEL_SETS.get(dataset)
        if sets is None:
            problems.append(
                (
                    at("noise"),
                    f"human label noise needs dataset cifar10n or cifar100n, not {dataset!r}",
                )
            )
        elif noise.label_set not in sets:
            problems.append(
                (
                    at("noise"),
                    f"dataset {dataset!r} has no human label set "
                    f"{noise.label_set!r}; allowed: {', '.join(sets)}",
                )
            )
    if config.image_size is not None and dataset != "imagefolder":
        problems.append(("train.image_size", f"only imagefolder uses it, not {dataset!r}"))
    if dataset == "imagefolder" and config.data_root is None:
        problems.append(
            (
                "train.data_root",
                "required for imagefolder: a folder with one sub-folder of images per class",
            )
        )
    return problems


def _check_param(spec: SearchSpec, name: str, value: Any) -> tuple[str, str] | None:
    """The first problem with parameter `name` on its own, or None."""
    path = f"params.{name}"
    if name == RESETTING:
        return path, "reserved for the on/off switch of params.reset_prob.off_arm"
    if name not in _FIELDS:
        hint = _did_you_mean(name, _FIELDS)
        return path, f"unknown setting{hint}; parameters are TrainConfig fields"
    if name in NOT_SEARCHABLE:
        verb = "not a search parameter" if _is_fixed(value) else "cannot be searched"
        return path, f"{verb}: {NOT_SEARCHABLE[name]}"
    if name in spec.train:
        return path, f"both fixed under train.{name} and set under params.{name}; keep one"
    if isinstance(value, LogUniform) and value.off_arm is not None and name != RESET_PROB:
        return f"{path}.off_arm", "only params.reset_prob has an off arm"
    if name == RESET_PROB:
        if not isinstance(value, LogUniform):
            return path, (
                "must be {type: loguniform, low, high, off_arm} (r is searched on a "
                "log scale); to use one r in every trial set train.reset_prob"
            )
        if value.high > 1:
            return f"{path}.high", (
                "r range outside [0, 1]: reset_prob is a per-step "
                f"probability, so high must be <= 1, got {value.high!r}"
            )
    if isinstance(value, Range):
        kind = _field_kind(name)
        if kind == "int" and isinstance(value, LogUniform | Uniform):
            return f"{path}.type", (
                f"{name} is an integer setting; use type: int (with log: true for a log scale)"
            )
        if kind in ("bool", "str"):
            what = "true/false" if kind == "bool" else "string"
            return f"{path}.type", f"{name} is a {what} setting; use type: categorical"
    return None


def _check_params(spec: SearchSpec) -> Problems:
    problems = [p for n, v in spec.params.items() if (p := _check_param(spec, n, v))]
    if problems:
        return problems
    if RESET_PROB not in spec.params and spec.train.get(RESET_PROB, _DEFAULTS[RESET_PROB]) == 0:
        for name in set(spec.params) & set(RESET_SUBPARAMETERS):
            problems.append(
                (
                    f"params.{name}",
                    "resetting is off in every trial (train.reset_prob "
                    "is 0), so this changes nothing; remove it or search reset_prob",
                )
            )
    if not spec.searched:
        problems.append(("params", "nothing is searched: give a parameter a range or choices"))
    return problems


def _check_values(spec: SearchSpec) -> Problems:
    """Every fixed value, range end and choice makes a valid TrainConfig with `train`."""
    problems: Problems = []
    for name in spec.params:
        for path, value in _candidates(spec, name):
            try:
                _try_config(
                    {**spec.train, name: value},
                    lambda key, p=path: f"train.{key}" if key in spec.train else p,
                )
            except _Problem as p:
                problems.append((p.path, p.message))
    return problems


@lru_cache(maxsize=32)
def _meta_model(model: str, dataset: str, image_size: int | None) -> Any:
    """`model` for `dataset`'s image shape on the meta device: its names, no memory, no init."""
    import torch

    from reset_tune.models import build_model

    channels, side = _IMAGE_SHAPES[dataset]
    with torch.device("meta"):
        return build_model(
            model, in_channels=channels, num_classes=10, image_size=image_size or side
        )


def _check_reset_layers(spec: SearchSpec) -> Problems:
    """`reset_layers` values name groups of every candidate model; globs match something."""
    from reset_tune.resetting.selection import select_reset_tensors

    train = TrainConfig.from_dict(spec.train)
    problems: Problems = []
    for layers_path, layers in _candidates(spec, "reset_layers"):
        for model_path, model in _candidates(spec, "model"):
            try:
                built = _meta_model(model, train.dataset, train.image_size)
            except ConfigError as exc:
                problems.append((model_path or "train.model", str(exc)))
                continue
            try:
                select_reset_tensors(built, layers)
            except ConfigError as exc:
                message = f"{str(exc).rstrip('.')} (model {model!r})"
                problems.append((layers_path or "train.reset_layers", message))
    return problems


def _check_run(spec: SearchSpec) -> Problems:
    """Resources against the device setting, and the scheduler against the budget."""
    problems: Problems = []
    device = str(spec.train.get("device", _DEFAULTS["device"]))
    gpus = spec.resources.gpus
    if gpus > 0 and device == "cpu":
        problems.append(
            (
                "resources.gpus",
                f"trials request {gpus} GPU but train.device is 'cpu'; use device auto or cuda",
            )
        )
    if gpus == 0 and device.startswith("cuda"):
        problems.append(
            (
                "resources.gpus",
                f"train.device is {device!r}, so each trial needs a "
                "GPU: set gpus (e.g. 0.25 packs 4 trials per GPU)",
            )
        )
    if gpus == 0 and "bf16" in [v for _, v in _candidates(spec, "precision")]:
        problems.append(("resources.gpus", "precision bf16 needs a CUDA device; request gpus"))
    scheduler = spec.scheduler
    if spec.racing is not None:
        if len(spec.seeds) > spec.racing.max_seeds:
            problems.append(
                (
                    "racing.max_seeds",
                    f"seeds lists {len(spec.seeds)} seeds, more than max_seeds "
                    f"({spec.racing.max_seeds}); raise max_seeds or list fewer seeds",
                )
            )
        if isinstance(scheduler, AshaScheduler):
            problems.append(
                (
                    "racing",
                    "racing compares finished seed runs, and asha stops runs early; use one "
                    "of them (scheduler: none with racing)",
                )
            )
    if not isinstance(scheduler, AshaScheduler):
        return problems
    if "steps" in spec.params and scheduler.max_t is None:
        problems.append(("scheduler.max_t", "required when steps is searched"))
    budget = max(v for _, v in _candidates(spec, "steps"))
    if scheduler.max_t is not None and scheduler.max_t > budget:
        problems.append(
            (
                "scheduler.max_t",
                f"must not exceed the training budget (steps = {budget}), got {scheduler.max_t}",
            )
        )
    if spec.max_t is not None and scheduler.grace_period > spec.max_t:
        problems.append(
            (
                "scheduler.grace_period",
                f"must not exceed max_t ({spec.max_t}), got {scheduler.grace_period}",
            )
        )
    if len(spec.seeds) > 1:
        problems.append(
            (
                "scheduler",
                "asha compares trials at equal step counts, but a "
                "configuration runs its seeds one after another; use one seed with "
                "asha, or scheduler: none",
            )
        )
    return problems
