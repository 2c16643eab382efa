"""Delivery of run records to MLflow through `MlflowClient`: runs, batches, artifacts, statuses.

Used by the sink's background thread and by `replay_outbox`. Every call here may block on the
network; nothing here retries: a transient failure raises `TransientError` and the caller decides
when to try again.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from reset_tune.redact import redact_text, redact_uri
from reset_tune.tracking import names
from reset_tune.tracking.outbox import (
    ARTIFACT,
    BATCHABLE,
    METRICS,
    PARAMS,
    TAGS,
    TERMINATE,
    Op,
    RunRecord,
)

if TYPE_CHECKING:  # MLflow is imported on first use, not with this module
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Request bodies above 1 MB are refused by the server; stay well below.
_BATCH_BYTES_BUDGET = 800_000


class TransientError(Exception):
    """The tracking backend could not be reached or failed in a way worth retrying."""


def configure_http_client() -> None:
    """Make MLflow's HTTP client fail fast; the sink retries on its own schedule.

    Sets (only where not set already) no client-side retries, a 30 s request timeout and no
    "View run at" lines printed on stdout by `set_terminated`. These are process-wide MLflow
    settings; this module is the process's only MLflow user.
    """
    os.environ.setdefault(names.HTTP_MAX_RETRIES_ENV, "0")
    os.environ.setdefault(names.HTTP_TIMEOUT_ENV, "30")
    os.environ.setdefault(names.SUPPRESS_URL_PRINTING_ENV, "true")


def is_transient(error: BaseException) -> bool:
    """Server errors, timeouts, refused connections: yes. A request MLflow refused (4xx): no."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status in (408, 429)
    return True


def _error_code(error: BaseException) -> str | None:
    return getattr(error, "error_code", None)


def take_batch(ops: Sequence[Op], start: int) -> int:
    """End index of the longest run of batchable ops from `start` that fits one log_batch call."""
    metrics = params = tags = nbytes = 0
    end = start
    while end < len(ops) and ops[end].kind in BATCHABLE:
        op = ops[end]
        metrics_after = metrics + len(op.metrics)
        params_after = params + len(op.params)
        tags_after = tags + len(op.tags)
        nbytes_after = nbytes + op.nbytes
        fits = (
            metrics_after <= names.MAX_METRICS_PER_BATCH
            and params_after <= names.MAX_PARAMS_TAGS_PER_BATCH
            and tags_after <= names.MAX_PARAMS_TAGS_PER_BATCH
            and metrics_after + params_after + tags_after <= names.MAX_ENTITIES_PER_BATCH
            and nbytes_after <= _BATCH_BYTES_BUDGET
        )
        if not fits and end > start:
            break
        metrics, params, tags, nbytes = metrics_after, params_after, tags_after, nbytes_after
        end += 1
    return end


class Delivery:
    """One MLflow client plus the experiment ids it has resolved."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._experiments: dict[str, str] = {}

    @classmethod
    def for_uri(cls, tracking_uri: str) -> Delivery:
        configure_http_client()
        from mlflow import MlflowClient

        try:
            return cls(MlflowClient(tracking_uri=tracking_uri))
        except Exception as error:  # e.g. a database that cannot be opened right now
            raise TransientError(
                f"cannot open tracking store {redact_uri(tracking_uri)!r}: "
                f"{redact_text(str(error))}"
            ) from error

    # -- guarded calls --------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run one client call; transient failures become `TransientError`, others propagate."""
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            if is_transient(error):
                raise TransientError(f"{what}: {error}") from error
            raise

    # -- experiments and runs -------------------------------------------------------------------
    def experiment_id(self, name: str, artifact_location: str | None = None) -> str:
        """The id of experiment `name`, created if missing (a concurrent creator may win)."""
        from mlflow.exceptions import MlflowException

        if name in self._experiments:
            return self._experiments[name]
        experiment = self._call("get experiment", self.client.get_experiment_by_name, name)
        if experiment is None:
            try:
                experiment_id = self._call(
                    "create experiment",
                    self.client.create_experiment,
                    name,
                    artifact_location=artifact_location,
                    tags={names.MLFLOW_EXPERIMENT_KIND: names.EXPERIMENT_KIND_TRAINING},
                )
            except MlflowException as error:
                if _error_code(error) != "RESOURCE_ALREADY_EXISTS":
                    raise
                # Another process created it between our lookup and our create.
                experiment = self._call("get experiment", self.client.get_experiment_by_name, name)
                if experiment is None:
                    raise TransientError(
                        f"experiment {name!r} exists but cannot be read"
                    ) from error
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                _log.warning("MLflow experiment %r was deleted; restoring it", name)
                self._call("restore experiment", self.client.restore_experiment, experiment_id)
        self._experiments[name] = experiment_id
        return experiment_id

    def find_run(self, experiment_id: str, run_key: str) -> str | None:
        """The MLflow run id carrying tag `reset_tune.run_key = run_key`, if any."""
        runs = self._call(
            "search runs",
            self.client.search_runs,
            [experiment_id],
            filter_string=f"tags.`{names.RUN_KEY}` = '{run_key}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._call("get run", self.client.get_run, run_id)
        except MlflowException as error:
            if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def find_parent(self, record: RunRecord) -> str | None:
        """The parent's MLflow run id on this server, by its recorded id or its run key."""
        if record.parent_key is None:
            return None
        if record.parent_run_id and self.run_exists(record.parent_run_id):
            return record.parent_run_id
        experiment_id = self.experiment_id(record.experiment_name, record.artifact_location)
        return self.find_run(experiment_id, record.parent_key)

    def ensure_run(
        self, record: RunRecord, parent_run_id: str | None, *, verify_existing: bool = False
    ) -> str:
        """Create the run unless it exists; sets and returns `record.mlflow_run_id`.

        A creation that may have reached the server before (`create_attempted`), or any run
        when `verify_existing`, is first looked up by its run key, so no run is created twice.
        """
        if record.mlflow_run_id is not None:
            if not verify_existing or self.run_exists(record.mlflow_run_id):
                return record.mlflow_run_id
            record.mlflow_run_id = None
        experiment_id = self.experiment_id(record.experiment_name, record.artifact_location)
        if record.create_attempted or verify_existing:
            found = self.find_run(experiment_id, record.run_key)
            if found is not None:
                record.mlflow_run_id = found
                return found
        tags = {**record.tags, names.RUN_KEY: record.run_key}
        if record.parent_key is not None:
            tags[names.PARENT_RUN_KEY] = record.parent_key
            if parent_run_id is not None:
                tags[names.MLFLOW_PARENT_RUN_ID] = parent_run_id
                record.parent_run_id = parent_run_id
        record.create_attempted = True
        run = self._call(
            "create run",
            self.client.create_run,
            experiment_id,
            start_time=record.start_time,
            tags=tags,
            run_name=record.run_name,
        )
        record.mlflow_run_id = run.info.run_id
        return record.mlflow_run_id

    # -- operations -----------------------------------------------------------------------------
    def send(
        self,
        run_id: str,
        ops: Sequence[Op],
        delivered: Callable[[int], None],
        rejected: Callable[[Op, str], None],
    ) -> None:
        """Deliver `ops` in order; `delivered(n)` after each success, `rejected` for refusals.

        Consecutive metrics/params/tags ops share one log_batch call. When MLflow refuses a
        call, its entries are sent one at a time so that only the offending entries are rejected.
        Raises `TransientError` at the first transient failure (earlier ops stay delivered).
        """
        i = 0
        while i < len(ops):
            op = ops[i]
            if op.kind in BATCHABLE:
                end = take_batch(ops, i)
                group = list(ops[i:end])
                try:
                    self._log_batch(run_id, group)
                    delivered(len(group))
                except TransientError:
                    raise
                except Exception:
                    # Refused: find the offending entries by sending each one alone.
                    for single in group:
                        self._send_entries(run_id, single, rejected)
                        delivered(1)
                i = end
                continue
            try:
                if op.kind == ARTIFACT:
                    self._log_artifact(run_id, op)
                elif op.kind == TERMINATE:
                    self._call(
                        "end run",
                        self.client.set_terminated,
                        run_id,
                        status=op.status,
                        end_time=op.end_time,
                    )
                else:
                    raise ValueError(f"unknown operation {op.kind!r}")
            except TransientError:
                raise
            except Exception as error:
                rejected(op, str(error))
            delivered(1)
            i += 1

    def _send_entries(self, run_id: str, op: Op, rejected: Callable[[Op, str], None]) -> None:
        """Send a refused op's entries one per call, rejecting only those MLflow refuses."""
        entries = (
            [Op(METRICS, metrics=[m]) for m in op.metrics]
            + [Op(PARAMS, params={k: v}) for k, v in op.params.items()]
            + [Op(TAGS, tags={k: v}) for k, v in op.tags.items()]
        )
        for entry in entries:
            try:
                self._log_batch(run_id, [entry])
            except TransientError:
                raise
            except Exception as error:
                rejected(entry, str(error))

    def _log_batch(self, run_id: str, ops: Sequence[Op]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics: list[Metric] = []
        params: list[Param] = []
        tags: list[RunTag] = []
        for op in ops:
            if op.kind == METRICS:
                metrics.extend(Metric(k, v, t, s) for k, v, t, s in op.metrics)
            elif op.kind == PARAMS:
                params.extend(Param(k, v) for k, v in op.params.items())
            elif op.kind == TAGS:
                tags.extend(RunTag(k, v) for k, v in op.tags.items())
        self._call(
            "log batch", self.client.log_batch, run_id, metrics=metrics, params=params, tags=tags
        )

    def _log_artifact(self, run_id: str, op: Op) -> None:
        path = PurePosixPath(op.name or "artifact")
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"artifact name must be a relative path, but got {op.name!r}")
        with tempfile.TemporaryDirectory(prefix="reset-tune-artifact-") as tmp:
            local = Path(tmp) / path.name
            local.write_bytes(op.data or b"")
            parent = str(path.parent)
            self._call(
                "log artifact",
                self.client.log_artifact,
                run_id,
                str(local),
                artifact_path=None if parent == "." else parent,
            )
