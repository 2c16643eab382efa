"""Tests for the define-by-run space in real in-memory Optuna studies: arms, ranges, warm starts."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest

from reset_tune.config import TrainConfig
from reset_tune.errors import ConfigError
from reset_tune.search import (
    RESET_SUBPARAMETERS,
    RESETTING,
    SearchSpec,
    enqueue_configurations,
    load_spec,
    make_sampler,
    space_function,
    suggest,
)
from reset_tune.search.spec import Categorical, IntRange, LogUniform, Uniform

SPEC_DIR = Path(__file__).resolve().parents[2] / "search_spaces"

SPEC = {
    "train": {"dataset": "digits", "noise": "symmetric:0.4", "model": "cnn", "steps": 400},
    "trials": 30,
    "sampler": {"seed": 7, "startup_trials": 8},
    "params": {
        "reset_prob": {"type": "loguniform", "low": 0.002, "high": 0.05},
        "reset_layers": {"type": "categorical", "choices": ["all", "head", "block3,head"]},
        "patience": {"type": "int", "low": 100, "high": 300, "step": 50},
        "adaptive": True,  # a fixed reset sub-parameter: present only in the "on" arm
        "lr": {"type": "loguniform", "low": 0.01, "high": 0.2},
        "momentum": {"type": "uniform", "low": 0.5, "high": 0.95},
        "batch_size": {"type": "int", "low": 16, "high": 64, "log": True},
        "weight_decay": 0.0001,
    },
}


FIXED_ARM = {"lr": 0.05, "momentum": 0.9, "batch_size": 32}


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def spec() -> SearchSpec:
    return SearchSpec.from_dict(SPEC, source="test-spec")


def toy_objective(params: dict[str, Any]) -> float:
    """A deterministic score that prefers resetting near r = 0.01 and lr near 0.05."""
    score = -abs(math.log10(params["lr"] / 0.05)) - abs(params["momentum"] - 0.9)
    if params["reset_prob"] > 0:
        score += 0.3 - abs(math.log10(params["reset_prob"] / 0.01))
    return score


def run_study(spec: SearchSpec, n_trials: int) -> tuple[optuna.Study, list[dict[str, Any]]]:
    study = optuna.create_study(sampler=make_sampler(spec), direction=spec.objective.direction)
    returned: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, spec)
        returned.append(params)
        return toy_objective(params)

    study.optimize(objective, n_trials=n_trials)
    return study, returned


def in_range(spec: Any, value: Any) -> bool:
    if isinstance(spec, Categorical):
        return value in spec.choices
    if isinstance(spec, IntRange):
        return isinstance(value, int) and spec.low <= value <= spec.high
    assert isinstance(spec, LogUniform | Uniform)
    return spec.low <= value <= spec.high


def test_space_in_a_real_study(spec: SearchSpec) -> None:
    study, returned = run_study(spec, 30)
    assert len(returned) == 30
    arms = {p["reset_prob"] > 0 for p in returned}
    assert arms == {True, False}, "both the resetting arm and the r = 0 arm must be drawn"
    searched = spec.searched
    for trial, params in zip(study.trials, returned, strict=True):
        on = params["reset_prob"] > 0
        assert trial.params[RESETTING] == ("on" if on else "off")
        # Keys are TrainConfig fields only, and rebuild a valid config both ways.
        assert set(params) <= set(TrainConfig().to_dict())
        assert isinstance(spec.config_for(params), TrainConfig)
        TrainConfig.from_dict({**spec.fixed, **params})
        # Reset sub-parameters exist only in the "on" arm: neither drawn nor returned when off.
        sub = set(RESET_SUBPARAMETERS) & set(spec.params)
        assert (sub <= set(params)) if on else not (sub & set(params) | sub & set(trial.params))
        if not on:
            assert params["reset_prob"] == 0.0 and "reset_prob" not in trial.params
        # What Optuna recorded is exactly what was drawn (the constants are not parameters).
        drawn = {k: v for k, v in params.items() if k in searched and (on or k != "reset_prob")}
        assert drawn == {k: v for k, v in trial.params.items() if k != RESETTING}
        assert params["weight_decay"] == 0.0001 and "weight_decay" not in trial.params
        for name, value in trial.params.items():
            if name != RESETTING:
                assert in_range(searched[name], value), (name, value)


def test_tpe_learns_from_the_results(spec: SearchSpec) -> None:
    _, returned = run_study(spec, 40)
    late = returned[20:]  # past the 8 random start-up trials
    # Random draws would reset in ~10 of 20 (P(>= 15) ~ 2 %); TPE on this objective, in 17-20
    # of 20 across sampler seeds 0-4.
    assert sum(p["reset_prob"] > 0 for p in late) >= 15


def test_enqueued_configurations_come_first(spec: SearchSpec) -> None:
    study = optuna.create_study(sampler=make_sampler(spec), direction="maximize")
    seeds = [
        {"reset_prob": 0, "lr": 0.05, "momentum": 0.9, "batch_size": 32},
        {"reset_prob": 0.01, "reset_layers": "head", "patience": 150, "lr": 0.1},
    ]
    queued = enqueue_configurations(study, spec, seeds)
    assert queued[0] == {RESETTING: "off", "lr": 0.05, "momentum": 0.9, "batch_size": 32}
    returned: list[dict[str, Any]] = []
    study.optimize(lambda t: returned.append(suggest(t, spec)) or 0.0, n_trials=3)
    assert returned[0] == {**seeds[0], "reset_prob": 0.0, "weight_decay": 0.0001}
    # The second was partial: its given values come back, the rest is drawn.
    assert {k: returned[1][k] for k in seeds[1]} == seeds[1]
    assert returned[1]["adaptive"] is True and "momentum" in returned[1]
    assert study.trials[1].params[RESETTING] == "on"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"lr": 0.5}, r"seed configurations\[1\]: lr: 0.5 is outside \[0.01, 0.2\]"),
        ({"batch_size": 128}, r"seed configurations\[1\]: batch_size: 128 is outside"),
        ({"reset_prob": 0, "patience": 150}, r"\[1\]: patience: exists only when resetting"),
        ({"weight_decay": 0.01}, r"\[1\]: weight_decay: is fixed at 0.0001"),
        ({"lrr": 0.01}, r"\[1\]: lrr: not a parameter of this search"),
    ],
)
def test_enqueue_rejects_configurations_outside_the_space(
    spec: SearchSpec, config: dict[str, Any], expected: str
) -> None:
    study = optuna.create_study(sampler=make_sampler(spec), direction="maximize")
    with pytest.raises(ConfigError, match=expected):
        enqueue_configurations(study, spec, [{"lr": 0.05}, config])
    assert study.trials == []  # a bad configuration queues nothing, not even the good ones


def test_seeded_sampler_repeats_its_sequence(spec: SearchSpec) -> None:
    _, first = run_study(spec, 15)
    _, second = run_study(spec, 15)
    assert first == second
    other = SearchSpec.from_dict({**SPEC, "sampler": {"seed": 8, "startup_trials": 8}})
    _, third = run_study(other, 15)
    assert third != first


def test_space_function_is_what_ray_calls(spec: SearchSpec) -> None:
    """Ray's OptunaSearch calls `space(trial)` and merges drawn values with what it returns."""
    study = optuna.create_study(sampler=make_sampler(spec))
    trial = study.ask()
    returned = space_function(spec)(trial)
    tune_config = {**trial.params, **returned}
    assert spec.config_for(tune_config) == spec.config_for(returned)


def test_space_survives_pickling(spec: SearchSpec) -> None:
    """Ray Tune pickles its searcher (space function included) when it checkpoints a search."""
    restored = pickle.loads(pickle.dumps(space_function(spec)))
    first = optuna.create_study(sampler=make_sampler(spec))
    second = optuna.create_study(sampler=make_sampler(spec))
    assert restored(first.ask()) == space_function(spec)(second.ask())
    assert pickle.loads(pickle.dumps(spec)).config_for({"reset_prob": 0.0, **FIXED_ARM}).lr == 0.05


def test_without_off_arm_every_trial_resets() -> None:
    params = dict(SPEC["params"])
    params["reset_prob"] = {**params["reset_prob"], "off_arm": False}
    spec = SearchSpec.from_dict({**SPEC, "params": params})
    study, returned = run_study(spec, 6)
    assert all(p["reset_prob"] > 0 and "patience" in p for p in returned)
    assert all(RESETTING not in t.params for t in study.trials)


@pytest.mark.parametrize("name", ["default", "cifar10-sym60"])
def test_shipped_spaces_draw_valid_configs(name: str) -> None:
    spec = load_spec(SPEC_DIR / f"{name}.yaml")
    _, returned = run_study_any(spec, 8)
    for params in returned:
        spec.config_for(params)


def run_study_any(spec: SearchSpec, n_trials: int) -> tuple[optuna.Study, list[dict[str, Any]]]:
    study = optuna.create_study(sampler=make_sampler(spec), direction=spec.objective.direction)
    returned: list[dict[str, Any]] = []
    study.optimize(lambda t: returned.append(suggest(t, spec)) or 0.0, n_trials=n_trials)
    return study, returned


def test_make_sampler_is_multivariate_grouped_tpe(spec: SearchSpec) -> None:
    sampler = make_sampler(spec)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._group and sampler._n_startup_trials == 8
