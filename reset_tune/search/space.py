"""The Optuna side of a search spec: the define-by-run space, warm starts and the TPE sampler.

Encoding of the conditional space (when ``params.reset_prob.off_arm`` is true, the default)::

    resetting ~ categorical(["on", "off"])              # Optuna parameter, drawn first
    <unconditional params>                              # lr, batch_size, checkpoint_metric, ...
    if resetting == "on":
        reset_prob ~ loguniform(low, high)
        <reset sub-parameters>                          # reset_layers, patience, ...

The switch is an Optuna parameter of its own rather than a value folded into `reset_prob`'s
range: r = 0 has no place on a log scale, the baseline's share of trials stays an explicit 50/50
prior that TPE then learns, and multivariate TPE with ``group=True`` models the "on" subspace
(r jointly with its sub-parameters) only from trials that reset. What Optuna records is exactly
what was drawn; the dict `suggest` returns adds the constants (fixed params, and reset_prob = 0
in the off arm) under `TrainConfig` field names.

With Ray Tune, pass ``space_function(spec)`` as ``OptunaSearch(space=...)``: Tune's trial
config is then the drawn values (the switch included) merged with the returned dict, and
``spec.config_for(config, seed=s)`` rebuilds each run's `TrainConfig`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from reset_tune.search.spec import (
    RESET_PROB,
    RESETTING,
    RESETTING_OFF,
    RESETTING_ON,
    Categorical,
    IntRange,
    LogUniform,
    SearchSpec,
    Uniform,
)


def _draw(trial: optuna.trial.BaseTrial, name: str, spec: Any) -> Any:
    if isinstance(spec, LogUniform):
        return trial.suggest_float(name, spec.low, spec.high, log=True)
    if isinstance(spec, Uniform):
        return trial.suggest_float(name, spec.low, spec.high)
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
    if isinstance(spec, Categorical):
        return trial.suggest_categorical(name, spec.choices)
    return spec  # a fixed value: a constant, not an Optuna parameter


def suggest(trial: optuna.trial.BaseTrial, spec: SearchSpec) -> dict[str, Any]:
    """Draw one configuration; returns `TrainConfig` field names -> values (fixed ones too).

    In the off arm `reset_prob` is 0.0 and no reset sub-parameter is drawn or returned.
    `trial` may be an `optuna.Trial` or any object with its ``suggest_*`` methods (Ray Tune
    passes a wrapper that records the drawn values).
    """
    on = True
    if spec.has_off_arm:
        on = trial.suggest_categorical(RESETTING, [RESETTING_ON, RESETTING_OFF]) == RESETTING_ON
    params: dict[str, Any] = {}
    for name, value in spec.params.items():
        if name != RESET_PROB and not spec.is_conditional(name):
            params[name] = _draw(trial, name, value)
    reset = spec.reset_range
    if reset is not None:
        params[RESET_PROB] = _draw(trial, RESET_PROB, reset) if on else 0.0
    if on:
        for name, value in spec.params.items():
            if spec.is_conditional(name):
                params[name] = _draw(trial, name, value)
    return params


def space_function(spec: SearchSpec) -> Callable[[optuna.trial.BaseTrial], dict[str, Any]]:
    """`suggest` bound to `spec`: the define-by-run function `OptunaSearch(space=...)` takes."""
    return functools.partial(suggest, spec=spec)


def to_trial_params(spec: SearchSpec, config: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """The Optuna parameters that reproduce `config` (a partial one is completed by sampling).

    `config` uses `TrainConfig` names (``reset_prob: 0`` is the off arm); the switch is added.
    Raises `ConfigError` naming `where` and the key when `config` is not in the space.
    """
    checked = spec.check_params(config, where=where, complete=False)
    params = {k: v for k, v in checked.items() if k in spec.searched}
    if spec.has_off_arm:
        if checked.get(RESET_PROB) == 0:
            params.pop(RESET_PROB)
            params[RESETTING] = RESETTING_OFF
        elif RESET_PROB in checked or RESETTING in config:
            params[RESETTING] = config.get(RESETTING, RESETTING_ON)
    return params


def enqueue_configurations(
    study: optuna.Study,
    spec: SearchSpec,
    configs: Sequence[Mapping[str, Any]],
    *,
    source: str = "seed configurations",
) -> list[dict[str, Any]]:
    """Queue known configurations so that they are the study's next trials (a warm start).

    Every configuration is checked first, so a bad one queues nothing; its error names
    ``{source}[i]`` and the key. Returns the Optuna parameters queued, in order.
    """
    queued = [
        to_trial_params(spec, config, where=f"{source}[{i}]") for i, config in enumerate(configs)
    ]
    for params in queued:
        study.enqueue_trial(params)
    return queued


def make_sampler(spec: SearchSpec, *, seed_offset: int = 0) -> optuna.samplers.TPESampler:
    """Multivariate TPE over the spec's conditional space, seeded by ``spec.sampler.seed``.

    ``group=True`` splits the space into the subspaces trials actually share (the switch and
    the unconditional params; r with its sub-parameters), so the joint model of the reset
    settings is fitted on resetting trials only instead of falling back to independent
    sampling. ``constant_liar`` keeps concurrent trials from being sent to the same point.
    `seed_offset` shifts the seed (for a resumed search, so its draws differ from the first run's).
    """
    with warnings.catch_warnings():
        # `group` is marked experimental (since Optuna 2.8); the warning says nothing actionable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            multivariate=True,
            group=True,
            constant_liar=True,
            n_startup_trials=spec.sampler.startup_trials,
            seed=None if spec.sampler.seed is None else spec.sampler.seed + seed_offset,
        )
