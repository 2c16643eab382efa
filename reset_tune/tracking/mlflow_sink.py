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
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reset_tune.tracking import names
from reset_tune.tracking._delivery import Delivery, TransientError, configure_http_client
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

# Ops handed to one delivery call (copied under the queue lock; sent without it).
_OPS_PER_SEND = 1000
# Metrics waiting in memory that wake the worker before its interval is up.
_WAKE_AT_METRICS = 1000


def default_outbox_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "reset-tune" / "mlflow-outbox"


@dataclass(frozen=True)
class SinkStats:
    """Delivery counters. `pending` counts undelivered operations, in memory or in the outbox
    (a run still to be created counts as one); `spooled` those of them in the outbox."""

    pending: int
    spooled: int
    delivered: int  # operations handed to MLflow, refused ones included
    rejected: int  # operations MLflow refused for good (kept in <outbox>/rejected/)
    failed_attempts: int  # delivery attempts that failed transiently (server down, 5xx, timeout)
    last_error: str | None


class _RunState:
    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.ops: deque[Op] = deque()
        self.spooled_ops = 0  # ops in this run's outbox file (which exists iff spooled)
        self.spooled = False
        self.last_step = 0
        self.ended = False

    @property
    def created(self) -> bool:
        return self.record.mlflow_run_id is not None

    def has_work(self) -> bool:
        return bool(self.ops) or self.spooled or not self.created


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
        experiment_name: str = "default",
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
        self._flush_interval_s = flush_interval_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._spool_after = spool_after
        self._close_timeout_s = close_timeout_s

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a pass finished
        self._wake = threading.Event()
        self._runs: dict[str, _RunState] = {}
        self._queued_metrics = 0
        self._delivery: Delivery | None = None
        self._delivered = 0
        self._rejected = 0
        self._failed_attempts = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._next_attempt_at = 0.0
        self._urgent = False
        self._passes_started = 0
        self._passes_finished = 0
        self._closing_deadline: float | None = None
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="reset-tune-mlflow", daemon=True)
        self._worker.start()
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
        parent = self._state(parent_run_id)
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
        state = self._state(run_id)
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
        with self._lock:
            self._check_open()
            state.ops.extend(ops)
            state.last_step = max(state.last_step, max(step for _, _, _, step in rows))
            self._queued_metrics += len(rows)
            wake = self._queued_metrics >= _WAKE_AT_METRICS
        if wake:
            self._wake.set()

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

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Deliver now (ignoring backoff) and wait for that attempt; True when nothing is pending.

        During an outage this returns False after one failed attempt (not after `timeout_s`).
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._closed:
                return self._pending_locked() == 0
            target = self._passes_started + 1
            self._urgent = True
        self._wake.set()
        with self._lock:
            while self._passes_finished < target and self._worker.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self._pending_locked() == 0

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what is left (retrying with backoff up to `timeout_s`), spool the rest.

        `timeout_s` defaults to the constructor's `close_timeout_s`. Returns within about
        `timeout_s` plus one HTTP timeout. Idempotent.
        """
        if timeout_s is None:
            timeout_s = self._close_timeout_s
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closing_deadline = time.monotonic() + timeout_s
        atexit.unregister(self._close_at_exit)
        self._wake.set()
        self._worker.join()

    def __enter__(self) -> MlflowSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- inspection -----------------------------------------------------------------------------
    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(
                pending=self._pending_locked(),
                spooled=sum(
                    s.spooled_ops + (not s.created and s.spooled) for s in self._runs.values()
                ),
                delivered=self._delivered,
                rejected=self._rejected,
                failed_attempts=self._failed_attempts,
                last_error=self._last_error,
            )

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
        return self._state(run_id).record.mlflow_run_id

    # -- caller side ----------------------------------------------------------------------------
    def _state(self, run_id: str) -> _RunState:
        try:
            return self._runs[run_id]
        except KeyError:
            raise ValueError(f"unknown run handle {run_id!r}; use one start_* returned") from None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this MlflowSink is closed")

    def _start(
        self,
        experiment_name: str,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        parent: _RunState | None,
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
        run_key = record.run_key
        state = _RunState(record)
        state.ops.extend(_chunked(PARAMS, params))
        with self._lock:
            self._check_open()
            self._runs[run_key] = state
        self._wake.set()  # create the run soon, so it shows in the UI while it trains
        return run_key

    def _finish(self, run_id, status, summary_metrics, artifacts, failure_reason, tags) -> None:
        state = self._state(run_id)
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
        with self._lock:
            self._check_open()
            if state.ended:
                raise ValueError(f"run {run_id!r} was already finished")
            state.ended = True
            step = state.last_step
            if summary:
                # At the last reported step, so that the summary is each key's latest value.
                state.ops.append(
                    Op(METRICS, metrics=[(k, v, now, step) for k, v in summary.items()])
                )
            state.ops.extend(_chunked(TAGS, all_tags))
            state.ops.extend(files)
            state.ops.append(Op(TERMINATE, status=status, end_time=now))
        self._wake.set()

    # -- background thread ----------------------------------------------------------------------
    def _pending_locked(self) -> int:
        return sum(
            len(s.ops) + s.spooled_ops + (0 if s.created else 1) for s in self._runs.values()
        )

    def _work(self) -> None:
        while True:
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            with self._lock:
                closing = self._closing_deadline is not None
                urgent, self._urgent = self._urgent, False
                has_work = any(s.has_work() for s in self._runs.values())
            if closing:
                self._final_passes()
                return
            if has_work and (urgent or time.monotonic() >= self._next_attempt_at):
                self._pass()
            elif urgent:
                self._count_empty_pass()

    def _count_empty_pass(self) -> None:
        with self._lock:
            self._passes_started += 1
            self._passes_finished = self._passes_started
            self._changed.notify_all()

    def _final_passes(self) -> None:
        """On close: attempt until delivered or past the deadline, then spool what is left."""
        while True:
            with self._lock:
                has_work = any(s.has_work() for s in self._runs.values())
            if not has_work:
                break
            if self._pass():
                wait = 0.0
            else:
                wait = max(self._next_attempt_at - time.monotonic(), 0.0)
            if time.monotonic() + wait >= self._closing_deadline:
                break
            time.sleep(wait)
        self._spool_all_safely()
        with self._lock:
            left = self._pending_locked()
        if left:
            _log.warning(
                "MLflow tracking at %s unreachable: %d records kept in %s; "
                "replay them with replay_outbox (reset-tune sync)",
                self.tracking_uri,
                left,
                self.outbox.directory,
            )

    def _pass(self) -> bool:
        """One delivery attempt over every run with work. True when it did not fail."""
        with self._lock:
            self._passes_started += 1
            number = self._passes_started
            states = [s for s in self._runs.values() if s.has_work()]
        ok = True
        try:
            if self._delivery is None:
                self._delivery = Delivery.for_uri(self.tracking_uri)
            for state in states:
                self._deliver_run(state)
        except TransientError as error:
            ok = False
            self._failed(str(error))
        except Exception as error:  # a defect must not kill the thread: treat it as transient
            ok = False
            _log.exception("unexpected error while delivering to MLflow")
            self._failed(f"{type(error).__name__}: {error}")
        else:
            self._consecutive_failures = 0
            self._next_attempt_at = 0.0
        with self._lock:
            self._passes_finished = number
            self._changed.notify_all()
        return ok

    def _failed(self, message: str) -> None:
        with self._lock:
            self._failed_attempts += 1
            self._last_error = message
        self._consecutive_failures += 1
        delay = min(self._max_backoff_s, self._backoff_s * 2 ** (self._consecutive_failures - 1))
        self._next_attempt_at = time.monotonic() + delay
        if self._consecutive_failures == 1:
            _log.warning("MLflow tracking unavailable (%s); will retry", message)
        if self._consecutive_failures >= self._spool_after:
            self._spool_all_safely()

    def _parent_ready(self, state: _RunState) -> tuple[bool, str | None]:
        key = state.record.parent_key
        if key is None:
            return True, None
        parent = self._runs[key].record.mlflow_run_id
        return parent is not None, parent

    def _deliver_run(self, state: _RunState) -> None:
        assert self._delivery is not None
        if state.spooled:
            self._deliver_spooled(state)
            if state.spooled:
                return
        if not state.created:
            ready, parent_id = self._parent_ready(state)
            if not ready:
                return
            self._delivery.ensure_run(state.record, parent_id)
        while True:
            with self._lock:
                ops = [state.ops[i] for i in range(min(len(state.ops), _OPS_PER_SEND))]
            if not ops:
                return

            def delivered(n: int) -> None:
                with self._lock:
                    for _ in range(n):
                        op = state.ops.popleft()
                        if op.kind == METRICS:
                            self._queued_metrics -= len(op.metrics)
                    self._delivered += n

            self._delivery.send(state.record.mlflow_run_id, ops, delivered, self._rejecter(state))

    def _rejecter(self, state: _RunState):
        def rejected(op: Op, reason: str) -> None:
            _log.warning("MLflow refused %s for run %s: %s", op.kind, state.record.run_name, reason)
            with self._lock:
                self._rejected += 1
            with self.outbox.lock():
                self.outbox.reject(state.record.run_key, op, reason)

        return rejected

    def _deliver_spooled(self, state: _RunState) -> None:
        """Deliver a spooled run's outbox file; on failure rewrite what is left of it."""
        assert self._delivery is not None
        key = state.record.run_key
        with self.outbox.lock():
            if not self.outbox.run_path(key).exists():
                # Someone replayed it (`replay_outbox`): the run exists under its run key.
                with self._lock:
                    state.spooled, state.spooled_ops = False, 0
                state.record.create_attempted = True
                return
            record, ops = self.outbox.read(key)
            state.record.mlflow_run_id = state.record.mlflow_run_id or record.mlflow_run_id
            state.record.create_attempted |= record.create_attempted
            ready, parent_id = self._parent_ready(state)
            if not ready:
                return
            done = 0

            def delivered(n: int) -> None:
                nonlocal done
                done += n
                with self._lock:
                    state.spooled_ops -= n
                    self._delivered += n

            try:
                self._delivery.ensure_run(state.record, parent_id)
                self._delivery.send(
                    state.record.mlflow_run_id, ops, delivered, self._rejecter(state)
                )
            except BaseException:
                self.outbox.write(state.record, ops[done:])
                raise
            self.outbox.remove(key)
            with self._lock:
                state.spooled, state.spooled_ops = False, 0

    def _spool_all_safely(self) -> None:
        try:
            self._spool_all()
        except Exception:  # e.g. an unreadable outbox file: keep the thread (and memory) alive
            _log.exception("spooling to the MLflow outbox %s failed", self.outbox.directory)

    def _spool_all(self) -> None:
        """Move every undelivered op from memory to the outbox (appended after spooled ones)."""
        with self._lock:
            states = [s for s in self._runs.values() if s.has_work()]
        if not states:
            return
        with self.outbox.lock():
            for state in states:
                with self._lock:
                    moved = list(state.ops)
                    state.ops.clear()
                    self._queued_metrics -= sum(len(op.metrics) for op in moved)
                if not moved and state.spooled:
                    continue
                earlier: list[Op] = []
                try:
                    if state.spooled and self.outbox.run_path(state.record.run_key).exists():
                        record, earlier = self.outbox.read(state.record.run_key)
                        state.record.mlflow_run_id = (
                            state.record.mlflow_run_id or record.mlflow_run_id
                        )
                    self.outbox.write(state.record, earlier + moved)
                except Exception as error:
                    # Disk trouble or a damaged file: keep the ops in memory rather than lose them.
                    _log.error("cannot write MLflow outbox %s: %s", self.outbox.directory, error)
                    with self._lock:
                        state.ops.extendleft(reversed(moved))
                        self._queued_metrics += sum(len(op.metrics) for op in moved)
                    continue
                with self._lock:
                    state.spooled = True
                    state.spooled_ops = len(earlier) + len(moved)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit, never raise
            _log.exception("closing MlflowSink at exit failed")


def _chunked(kind: str, values: dict[str, str]) -> list[Op]:
    """Params or tags as ops of at most 100 entries and about 400 kB each."""
    ops: list[Op] = []
    current: dict[str, str] = {}
    size = 0
    for key, value in values.items():
        entry = len(key) + len(value) + 30
        if current and (len(current) >= names.MAX_PARAMS_TAGS_PER_BATCH or size + entry > 400_000):
            ops.append(Op(kind, **{kind: current}))
            current, size = {}, 0
        current[key] = value
        size += entry
    if current:
        ops.append(Op(kind, **{kind: current}))
    return ops


def _now_ms() -> int:
    return int(time.time() * 1000)
