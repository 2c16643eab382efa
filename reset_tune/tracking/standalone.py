"""Writes outside a search: one whole run logged at once, and an artifact added to an existing run.

Used by `recommend`: its answer is one run in the `recommendations` experiment, and a past
search's description (profile and probe figures) is cached on that search's parent run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reset_tune.tracking import names
from reset_tune.tracking.queries import _client
from reset_tune.tracking.records import string_params, string_tags

if TYPE_CHECKING:  # MLflow is imported on first use, not with this module
    from mlflow import MlflowClient


def _log_artifacts(client: MlflowClient, run_id: str, artifacts: Mapping[str, bytes | str]) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        for path, content in artifacts.items():
            local = os.path.join(tmp, path)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(local, mode) as handle:
                handle.write(content)
        client.log_artifacts(run_id, tmp)


def log_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    *,
    kind: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, bytes | str] | None = None,
) -> str:
    """Log one finished run (params, metrics, tags, artifacts) and return its run id.

    A run that fails half-way is marked FAILED, so no RUNNING run is left behind.
    """
    from mlflow.entities import Metric, Param

    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    all_tags = {**string_tags(tags), names.KIND: kind, names.MLFLOW_RUN_NAME: run_name}
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    try:
        params_list = [Param(k, v) for k, v in string_params(params).items()]
        now = int(time.time() * 1000)
        metric_list = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        for start in range(0, max(len(params_list), 1), names.MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(
                run_id,
                params=params_list[start : start + names.MAX_PARAMS_TAGS_PER_BATCH],
                metrics=metric_list if start == 0 else [],
            )
        if artifacts:
            _log_artifacts(client, run_id, artifacts)
    except BaseException:
        client.set_terminated(run_id, names.FAILED)
        raise
    client.set_terminated(run_id, names.FINISHED)
    return run_id


def attach_artifacts(tracking_uri: str, run_id: str, artifacts: Mapping[str, bytes | str]) -> None:
    """Add artifacts to an existing (possibly finished) run; its status is left as it is."""
    _log_artifacts(_client(tracking_uri), run_id, artifacts)
