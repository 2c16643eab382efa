"""The read side: finished searches and their trials from MLflow, as plain dataclasses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reset_tune.tracking import names
from reset_tune.tracking._delivery import configure_http_client

if TYPE_CHECKING:  # MLflow is imported on first use, not with this module
    from mlflow import MlflowClient
    from mlflow.entities import Run


@dataclass(frozen=True)
class RunSummary:
    """One MLflow run: identity, status, params, tags and each metric's latest value."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    start_time: int | None  # ms since the epoch
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get(names.MLFLOW_PARENT_RUN_ID)

    @property
    def search_id(self) -> str | None:
        return self.tags.get(names.SEARCH_ID)

    @property
    def trial_id(self) -> str | None:
        return self.tags.get(names.TRIAL_ID)


def _client(tracking_uri: str) -> MlflowClient:
    configure_http_client()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _summary(run: Run) -> RunSummary:
    info, data = run.info, run.data
    return RunSummary(
        run_id=info.run_id,
        run_name=info.run_name,
        experiment_id=info.experiment_id,
        status=info.status,
        start_time=info.start_time,
        end_time=info.end_time,
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags=dict(data.tags),
    )


def _search(
    client: MlflowClient, experiment_ids: list[str], filter_string: str
) -> list[RunSummary]:
    runs: list[RunSummary] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            max_results=1000,
            order_by=["attributes.start_time ASC", "attributes.run_name ASC"],
            page_token=token,
        )
        runs.extend(_summary(run) for run in page)
        token = page.token
        if not token:
            return runs


def _experiment_ids(client: MlflowClient, experiment_name: str | None) -> list[str]:
    if experiment_name is not None:
        experiment = client.get_experiment_by_name(experiment_name)
        return [] if experiment is None else [experiment.experiment_id]
    return [e.experiment_id for e in client.search_experiments()]


def find_search_runs(tracking_uri: str, experiment_name: str | None = None) -> list[RunSummary]:
    """Parent runs of searches (tag `reset_tune.kind = search`), oldest first (ties by name)."""
    client = _client(tracking_uri)
    ids = _experiment_ids(client, experiment_name)
    if not ids:
        return []
    return _search(client, ids, f"tags.`{names.KIND}` = '{names.KIND_SEARCH}'")


def trial_runs(tracking_uri: str, parent_run_id: str) -> list[RunSummary]:
    """Trials nested under a search's parent run (tag `mlflow.parentRunId`), oldest first.

    Runs started in the same millisecond come by name (`trial-0001` before `trial-0002`).
    """
    client = _client(tracking_uri)
    parent = client.get_run(parent_run_id)
    return _search(
        client,
        [parent.info.experiment_id],
        f"tags.`{names.MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
    )


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every point of one metric, by step."""
    points = _client(tracking_uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in points)


def run_url(tracking_uri: str, run_id: str) -> str | None:
    """The MLflow UI page of a run, in the model-training view (None for a server-less URI such
    as sqlite:///). Without `workflowType`, MLflow 3.17 opens its GenAI view (Traces, Judges)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    base = tracking_uri.rstrip("/")
    try:
        experiment_id = _client(tracking_uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - the server is down: the UI's front page is still right
        return base
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{names.UI_TRAINING_VIEW}"


def runs_table_url(
    tracking_uri: str, run_id: str, *, filter_string: str, order_by_metric: str, ascending: bool
) -> str | None:
    """The runs table of `run_id`'s experiment, filtered and sorted by one metric, in the
    model-training view (None for a server-less URI, or when the server cannot say where)."""
    from urllib.parse import urlencode

    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        experiment_id = _client(tracking_uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - the server is down: no table to point at
        return None
    query = urlencode(
        {
            "searchFilter": filter_string,
            "orderByKey": f"metrics.`{order_by_metric}`",
            "orderByAsc": "true" if ascending else "false",
        }
    )
    base = tracking_uri.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs?{names.UI_TRAINING_VIEW}&{query}"


def read_artifact_text(tracking_uri: str, run_id: str, path: str) -> str | None:
    """The text of one artifact of a run, or None when the run has no such artifact."""
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = _client(tracking_uri)
    folder, _, name = path.rpartition("/")
    listed = {f.path for f in client.list_artifacts(run_id, folder or None)}
    if path not in listed and name not in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        with open(local, encoding="utf-8") as handle:
            return handle.read()
