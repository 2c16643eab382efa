"""`MlflowSink`: the `TrackingSink` that records searches in MLflow, batched and non-fatal.

Callers only append to an in-process queue (no network on their thread). A background thread
delivers the queue every `flush_interval_s` (sooner when much is waiting, or on `flush`):
one parent run per search, one nested child run per trial (tag `mlflow.parentRunId`), params,
step-indexed metrics and tags through `log_batch` (chunked to MLflow's limits), artifacts
through `log_artifact`, and the final status through `set_terminated`.

When the tracking server is unreachable nothing raises: failed deliveries stay queued and are
retried with exponential backoff (`backoff_s`, doubling, at most `max_backoff_s`); after
`spool_after` consecutive failed attempts the queue is written to the outbox directory
(see `outbox.py`), which the thread keeps retrying and `replay_outbox` can deliver later from
any process. `close()` tries once more and leaves whatever is still undelivered in the outbox.

This module turns the sink's calls into queued operations; the thread, its retries and the
outbox spooling are `_worker.py`'s, the MLflow client calls `_delivery.py`'s.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reset_tune.tracking import names
from reset_tune.tracking._delivery import Delivery, configure_http_client
from reset_tune.tracking._worker import DeliveryWorker, RunQueue, SinkStats
from reset_tune.tracking.outbox import (
    ARTIFACT,
    METRICS,
    PARAMS,
    TAGS,
    TERMINATE,
    Op,
    Outbox,
    RunRecord,
)
from reset_tune.tracking.records import string_params, string_tags, truncate
from reset_tune.tracking.sink import (
    Artifacts,
    StepMetrics,
    check_run_key,
    check_status,
    metric_value,
    trial_run_name,
)

_log = logging.getLogger(__name__)


def default_outbox_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "reset-tune" / "mlflow-outbox"


class MlflowSink:
    """Records searches and trials in the MLflow tracking server at `tracking_uri`.

    Args:
        tracking_uri: an `http://host:port` server, or any URI `MlflowClient` accepts
            (`sqlite:///path.db` in unit tests).
        experiment_name: default experiment of new searches (created when missing).
        outbox_dir: where undeliverable records are kept (default: a per-user cache directory).
        artifact_location: artifact root of experiments this sink creates; None = the server's
            default (for `mlflow server --artifacts-destination`, proxied uploads).
        flush_interval_s: how often the background thread delivers what has queued up.
        backoff_s, max_backoff_s: delay after the first failed attempt, doubling up to the max.
        spool_after: consecutive failed attempts after which the queue is written to the outbox.
        close_timeout_s: how long `close()` (and the exit hook, for a sink never closed) keeps
            retrying before it leaves the rest in the outbox.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str = names.DEFAULT_EXPERIMENT,
        *,
        outbox_dir: str | os.PathLike | None = None,
        artifact_location: str | None = None,
        flush_interval_s: float = 1.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        spool_after: int = 3,
        close_timeout_s: float = 10.0,
    ) -> None:
        if not tracking_uri or not isinstance(tracking_uri, str):
            raise ValueError(
                f"`tracking_uri` must be a non-empty string, but got {tracking_uri!r}."
            )
        if not experiment_name or not isinstance(experiment_name, str):
            raise ValueError(
                f"`experiment_name` must be a non-empty string, but got {experiment_name!r}."
            )
        for label, value in (
            ("flush_interval_s", flush_interval_s),
            ("backoff_s", backoff_s),
            ("max_backoff_s", max_backoff_s),
            ("close_timeout_s", close_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"`{label}` must be positive, but got {label}={value!r}.")
        if spool_after < 1:
            raise ValueError(
                f"`spool_after` must be at least 1, but got spool_after={spool_after}."
            )
        configure_http_client()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.outbox = Outbox(outbox_dir if outbox_dir is not None else default_outbox_dir())
        self.artifact_location = artifact_location
        self._close_timeout_s = close_timeout_s
        self._worker = DeliveryWorker(
            # Looked up on each connection attempt, so that tests can stand in for MLflow.
            lambda: Delivery.for_uri(tracking_uri),
            self.outbox,
            target=tracking_uri,
            flush_interval_s=flush_interval_s,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            spool_after=spool_after,
        )
        atexit.register(self._close_at_exit)

    # -- TrackingSink -----------------------------------------------------------------------------
    def start_search(
        self,
        search_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
        experiment_name: str | None = None,
        run_key: str | None = None,
    ) -> str:
        all_tags = {
            **string_tags(tags),
            names.KIND: names.KIND_SEARCH,
            names.SEARCH_ID: str(search_id),
        }
        return self._start(
            experiment_name or self.experiment_name,
            run_name or str(search_id),
            all_tags,
            string_params(params),
            parent=None,
            run_key=run_key,
        )

    def start_trial(
        self,
        parent_run_id: str,
        trial_id: str | int,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
        run_key: str | None = None,
    ) -> str:
        parent = self._worker.queue(parent_run_id)
        all_tags = {
            **string_tags(tags),
            names.KIND: names.KIND_TRIAL,
            names.TRIAL_ID: str(trial_id),
        }
        search_id = parent.record.tags.get(names.SEARCH_ID)
        if search_id is not None:
            all_tags.setdefault(names.SEARCH_ID, search_id)
        return self._start(
            parent.record.experiment_name,
            run_name or trial_run_name(trial_id),
            all_tags,
            string_params(params),
            parent=parent,
            run_key=run_key,
        )

    def log_metrics(self, run_id: str, metrics_by_step: Sequence[StepMetrics]) -> None:
        queue = self._worker.queue(run_id)
        now = _now_ms()
        rows: list[tuple[str, float, int, int]] = []
        for step, values in metrics_by_step:
            step = int(step)
            rows.extend((str(k), metric_value(k, v), now, step) for k, v in values.items())
        if not rows:
            return
        ops = [
            Op(METRICS, metrics=rows[i : i + names.MAX_METRICS_PER_BATCH])
            for i in range(0, len(rows), names.MAX_METRICS_PER_BATCH)
        ]
        self._worker.append(queue, ops)

    def finish_trial(
        self,
        run_id: str,
        status: str,
        *,
        summary_metrics: Mapping[str, float] | None = None,
        artifacts: Artifacts | None = None,
        failure_reason: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self._finish(run_id, status, summary_metrics, artifacts, failure_reason, tags)

    def finish_search(
        self,
        parent_run_id: str,
        status: str,
        *,
        summary_metrics: Mapping[str, float] | None = None,
        artifacts: Artifacts | None = None,
        failure_reason: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self._finish(parent_run_id, status, summary_metrics, artifacts, failure_reason, tags)

    def tag_run(self, run_key: str, tags: Mapping[str, str]) -> bool:
        try:
            queue = self._worker.queue(run_key)
        except ValueError:
            return False
        # Tags may follow the run's end: MLflow accepts them on a finished run.
        self._worker.append(queue, [Op(TAGS, tags=chunk) for chunk in _chunked(string_tags(tags))])
        return True

    def backend_run_id(self, run_key: str) -> str | None:
        try:
            return self.mlflow_run_id(run_key)
        except ValueError:
            return None

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Deliver now (ignoring backoff) and wait for that attempt; True when nothing is pending.

        During an outage this returns False after one failed attempt (not after `timeout_s`).
        """
        return self._worker.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what is left (retrying with backoff up to `timeout_s`), spool the rest.

        `timeout_s` defaults to the constructor's `close_timeout_s`. Returns within about
        `timeout_s` plus one HTTP timeout. Idempotent.
        """
        if timeout_s is None:
            timeout_s = self._close_timeout_s
        atexit.unregister(self._close_at_exit)
        self._worker.close(timeout_s)

    def __enter__(self) -> MlflowSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- inspection -----------------------------------------------------------------------------
    def stats(self) -> SinkStats:
        return self._worker.stats()

    @property
    def pending(self) -> int:
        return self.stats().pending

    @property
    def spooled(self) -> int:
        return self.stats().spooled

    @property
    def failed_attempts(self) -> int:
        return self.stats().failed_attempts

    def mlflow_run_id(self, run_id: str) -> str | None:
        """The MLflow run id behind a handle, once the run exists on the server."""
        return self._worker.queue(run_id).record.mlflow_run_id

    # -- caller side ----------------------------------------------------------------------------
    def _start(
        self,
        experiment_name: str,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        parent: RunQueue | None,
        run_key: str | None = None,
    ) -> str:
        if run_key is not None:
            check_run_key(run_key)
        record = RunRecord(
            run_key=run_key or uuid.uuid4().hex,
            experiment_name=experiment_name,
            run_name=run_name,
            start_time=_now_ms(),
            tags=tags,
            parent_key=parent.record.run_key if parent is not None else None,
            artifact_location=self.artifact_location,
            # A caller's key names a run that may exist already (a resumed search, `sync`):
            # look it up before creating one.
            create_attempted=run_key is not None,
        )
        self._worker.add(RunQueue(record, (Op(PARAMS, params=c) for c in _chunked(params))))
        return record.run_key

    def _finish(
        self,
        run_id: str,
        status: str,
        summary_metrics: Mapping[str, float] | None,
        artifacts: Artifacts | None,
        failure_reason: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        queue = self._worker.queue(run_id)
        check_status(status)
        summary = {str(k): metric_value(k, v) for k, v in (summary_metrics or {}).items()}
        all_tags = string_tags(tags)
        if failure_reason:
            all_tags[names.FAILURE_REASON] = truncate(
                str(failure_reason), names.MAX_TAG_VALUE_LENGTH
            )
        files: list[Op] = []
        for name, content in (artifacts or {}).items():
            data = content.encode() if isinstance(content, str) else bytes(content)
            files.append(Op(ARTIFACT, name=str(name), data=data))
        if failure_reason and len(str(failure_reason)) > 1000:
            files.append(Op(ARTIFACT, name="failure.txt", data=str(failure_reason).encode()))
        now = _now_ms()

        def final_ops(last_step: int) -> list[Op]:
            ops: list[Op] = []
            if summary:
                # One value per key at step 0: MLflow's charts draw a run-level value as a bar
                # (comparable across runs), where a lone point at the last step reads as a curve.
                # Summary keys are never evaluation keys (`summary/...`), so nothing is shadowed.
                ops.append(Op(METRICS, metrics=[(k, v, now, 0) for k, v in summary.items()]))
            ops.extend(Op(TAGS, tags=chunk) for chunk in _chunked(all_tags))
            ops.extend(files)
            ops.append(Op(TERMINATE, status=status, end_time=now))
            return ops

        self._worker.end(queue, final_ops)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit, never raise
            _log.exception("closing MlflowSink at exit failed")


def _chunked(values: dict[str, str]) -> list[dict[str, str]]:
    """Params or tags in chunks of at most 100 entries and about 400 kB each."""
    chunks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    size = 0
    for key, value in values.items():
        entry = len(key) + len(value) + 30
        if current and (len(current) >= names.MAX_PARAMS_TAGS_PER_BATCH or size + entry > 400_000):
            chunks.append(current)
            current, size = {}, 0
        current[key] = value
        size += entry
    if current:
        chunks.append(current)
    return chunks


def _now_ms() -> int:
    return int(time.time() * 1000)
