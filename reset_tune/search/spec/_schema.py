"""`SearchSpec`: the validated spec, and what the space and the driver ask of it (a trial's
config, its parameters checked against the space, seeds, the scheduler's horizon)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator

from reset_tune.config import TrainConfig
from reset_tune.errors import ConfigError
from reset_tune.search.racing import split_race_params
from reset_tune.search.spec._checks import semantic_problems
from reset_tune.search.spec._errors import SpecError, describe_error
from reset_tune.search.spec._params import (
    Categorical,
    FixedValue,
    LogUniform,
    Param,
    Range,
    Scalar,
    StrictModel,
    TrainValue,
    Uniform,
    is_fixed,
    outside_reason,
    same_value,
)
from reset_tune.search.spec._sections import (
    AshaScheduler,
    NoScheduler,
    Objective,
    Racing,
    Resources,
    Sampler,
    Scheduler,
)
from reset_tune.search.spec._vocabulary import (
    RESET_PROB,
    RESET_SUBPARAMETERS,
    RESETTING,
    RESETTING_OFF,
    RESETTING_ON,
    TRAIN_DEFAULTS,
    TRAIN_FIELDS,
    did_you_mean,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class SearchSpec(StrictModel):
    """A validated search specification. Build it with `load_spec` or `SearchSpec.from_dict`."""

    name: str = Field(default="search", pattern=NAME_PATTERN)
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
        if "name" not in data and ext in (".yaml", ".yml") and re.match(NAME_PATTERN, stem):
            data["name"] = stem
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(source, [describe_error(cls, e) for e in exc.errors()]) from None
        spec._source = source
        problems = semantic_problems(spec)
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
        return {k: v for k, v in self.params.items() if not is_fixed(v)}

    @property
    def fixed(self) -> dict[str, Scalar]:
        """Settings every trial shares: `train` plus the unconditional fixed values of `params`.

        ``TrainConfig.from_dict({**spec.fixed, **trial_params, "seed": s})`` rebuilds a trial's
        config from the parameters `space.suggest` returned.
        """
        fixed = dict(self.train)
        for name, value in self.params.items():
            if is_fixed(value) and not self.is_conditional(name):
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
        return self.scheduler.max_t or int(self.train.get("steps", TRAIN_DEFAULTS["steps"]))

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
            if is_fixed(value) and not (off and self.is_conditional(name)):
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
            if key in fixed or key in TRAIN_FIELDS:
                expected = fixed.get(key, TRAIN_DEFAULTS.get(key))
                if same_value(value, expected):
                    return value
                origin = "fixed by the spec" if key in fixed else "not searched (default)"
                raise ConfigError(
                    f"{where}: {key}: is {origin} at {expected!r}, got {value!r}; "
                    "only searched parameters may vary"
                )
            raise ConfigError(
                f"{where}: {key}: not a parameter of this search{did_you_mean(key, TRAIN_FIELDS)}; "
                f"searched: {', '.join(self.searched)}"
            )
        spec = self.params[key]
        if is_fixed(spec):
            if not same_value(value, spec):
                raise ConfigError(
                    f"{where}: {key}: is fixed at {spec!r} by params.{key}, got {value!r}"
                )
            return value
        if key == RESET_PROB and value == 0 and not isinstance(value, bool):
            if not self.has_off_arm and isinstance(spec, LogUniform):  # a checked spec's r range
                raise ConfigError(
                    f"{where}: reset_prob: 0 is not in this search (params.reset_prob.off_arm is "
                    f"false); allowed: [{spec.low}, {spec.high}]"
                )
            return 0.0
        problem = outside_reason(spec, value)
        if problem:
            raise ConfigError(f"{where}: {key}: {problem}")
        return float(value) if isinstance(spec, LogUniform | Uniform) else value


def _build_config(values: Mapping[str, Any], source: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(values, source=source)
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(source) else f"{source}: {text}") from None
