"""Tracking: the only module that talks to MLflow (runs, params, metrics, artifacts, servers).

- `TrackingSink` (what the search driver calls) and `MemorySink` (in memory, for tests);
- `MlflowSink`: batched, non-fatal delivery to an MLflow tracking server, with an outbox on disk
  that `replay_outbox` backfills from;
- `start_local_server`: a local `mlflow server` subprocess, reused across invocations;
- `find_search_runs`, `trial_runs`, `metric_history`: the read side.

MLflow itself is imported lazily, on first use.
"""

from reset_tune.tracking import names
from reset_tune.tracking._worker import SinkStats
from reset_tune.tracking.mlflow_sink import MlflowSink, default_outbox_dir
from reset_tune.tracking.outbox import ReplayReport, replay_outbox
from reset_tune.tracking.queries import (
    RunSummary,
    find_search_runs,
    metric_history,
    run_url,
    runs_table_url,
    trial_runs,
)
from reset_tune.tracking.records import (
    config_from_params,
    config_tags,
    result_artifacts,
    result_tags,
    string_params,
)
from reset_tune.tracking.server import (
    LocalServer,
    TrackingServerError,
    find_local_server,
    resolve_tracking_uri,
    start_local_server,
)
from reset_tune.tracking.sink import MemorySink, RecordedRun, TrackingSink, trial_run_name

__all__ = [
    "LocalServer",
    "MemorySink",
    "MlflowSink",
    "RecordedRun",
    "ReplayReport",
    "RunSummary",
    "SinkStats",
    "TrackingServerError",
    "TrackingSink",
    "config_from_params",
    "config_tags",
    "default_outbox_dir",
    "find_local_server",
    "find_search_runs",
    "metric_history",
    "names",
    "replay_outbox",
    "result_artifacts",
    "resolve_tracking_uri",
    "run_url",
    "runs_table_url",
    "result_tags",
    "start_local_server",
    "string_params",
    "trial_run_name",
    "trial_runs",
]
