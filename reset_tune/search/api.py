"""`reset_tune.search.run`: run (or resume) a search from Python, as `reset-tune search` does.

Every argument is checked before anything starts (no state directory entry, no cluster, no
tracking server) by `reset_tune.search.preflight`, the same checks `reset-tune search` makes; a bad
one raises `ConfigError` naming it (and its flag). Ray, Optuna and the engine are
imported only when a search runs, so importing `reset_tune.search` stays light.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TextIO

from reset_tune.search.preflight import check_arguments, check_services
from reset_tune.state import state_dir as default_state_dir

if TYPE_CHECKING:
    from reset_tune.search.driver import SearchOutcome
    from reset_tune.tracking import TrackingSink


def run(
    spec_path: str | os.PathLike[str] | None = None,
    *,
    trials: int | None = None,
    address: str | None = None,
    mlflow_uri: str | None = None,
    resume: bool = False,
    search_id: str | None = None,
    seed_configs: str | None = None,
    storage: str | None = None,
    tune_storage: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    max_failures: int = 2,
    checkpoint_every: int = 5,
    report_interval_s: float = 2.0,
    stream: TextIO | None = None,
    tracking: TrackingSink | None = None,
) -> SearchOutcome:
    """Run the search `spec_path` describes, or resume one; returns its record and report.

    `trials`: target number of finished trials (default: the spec's). `address`: the Ray
    cluster (default: $RAY_ADDRESS, `reset-tune up`'s, else a local instance). `mlflow_uri`:
    the tracking server (default: $MLFLOW_TRACKING_URI, else an embedded local one). `resume`
    continues search `search_id` (default: the latest of `spec_path`'s name; `spec_path` may
    then be None). `seed_configs`: configurations to try first (a YAML/JSON file or a previous
    search id; new searches only). `max_failures`: Tune's retries of a trial whose worker died;
    `checkpoint_every`: evaluations between trial checkpoints. `stream` gets the progress lines
    (default stdout); `tracking` replaces the MLflow sink (tests pass a `MemorySink`).
    """
    check_arguments(
        spec_path,
        resume=resume,
        search_id=search_id,
        trials=trials,
        max_failures=max_failures,
        checkpoint_every=checkpoint_every,
        report_interval_s=report_interval_s,
    )

    state = default_state_dir(None if state_dir is None else os.fspath(state_dir))
    # Before the driver (and torch, Ray, MLflow) is imported: a wrong address answers at once.
    check_services(
        state,
        address=address,
        storage=storage,
        tune_storage=tune_storage,
        mlflow_uri=mlflow_uri,
        tracking_given=tracking is not None,
        new_search=not resume,
    )

    from reset_tune.search.driver import SearchOptions, run_search

    options = SearchOptions(
        state=state,
        address=address,
        mlflow_uri=mlflow_uri,
        storage=storage,
        resume=resume,
        search_id=search_id,
        trials=trials,
        seed_configs=seed_configs,
        max_failures=max_failures,
        checkpoint_every=checkpoint_every,
        report_interval_s=report_interval_s,
        tune_storage=tune_storage,
        stream=stream,
        tracking=tracking,
    )
    return run_search(spec_path, options)
