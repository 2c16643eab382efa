"""Names of a search's Tune trials: ``trial-0004``, or with racing ``trial-0004 seed 2``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reset_tune.search.racing import split_race_params
from reset_tune.search.spec import SearchSpec
from reset_tune.tracking.sink import trial_run_name


def run_label(
    spec: SearchSpec, trial_id: str, params: Mapping[str, Any], number: int | None
) -> str:
    """A Tune trial's name. With racing, a seed run of configuration 4 (whose first run was
    Optuna trial 4) on seed 2 is ``trial-0004 seed 2``."""
    _values, config_id, seed = split_race_params(params)
    if spec.racing is None:
        return trial_run_name(trial_id if number is None else number)
    config_id = number if config_id is None else config_id
    seed = spec.race_seeds[0] if seed is None else seed
    return f"{trial_run_name(trial_id if config_id is None else config_id)} seed {seed}"


def configuration_label(spec: SearchSpec, params: Mapping[str, Any], number: int | None) -> str:
    """The configuration a Tune trial runs, e.g. ``trial-0004``."""
    _values, config_id, _seed = split_race_params(params)
    config_id = number if config_id is None else config_id
    return trial_run_name("?" if config_id is None else config_id)


def configuration_id(params: Mapping[str, Any], number: int | None) -> int | None:
    """The race id of the configuration a Tune trial runs (its first run's Optuna number)."""
    _values, config_id, _seed = split_race_params(params)
    return number if config_id is None else config_id
