"""`TrackingSink`: what the search driver calls to record a search and its trials.

The driver's side of one search, with the hook points in order::

    sink = MlflowSink(tracking_uri, experiment_name="reset-tune")   # or MemorySink() in tests
    parent = sink.start_search(search_id, params=spec_params, tags=spec_tags)
    for trial in trials:                                          # concurrently, in any order
        run = sink.start_trial(parent, trial.id, params=config.to_dict(), tags=trial_tags)
        for row in trial.history:                                 # every evaluation
            step = int(row["step"])                               # reset_tune.names.STEP
            sink.log_metrics(run, [(step, {k: v for k, v in row.items() if k != "step"})])
        sink.finish_trial(run, FINISHED, summary_metrics=..., artifacts={"curves.png": png})
    sink.finish_search(parent, FINISHED, summary_metrics=..., artifacts={"spec.yaml": text})
    sink.flush()                                                  # optional: wait for delivery
    sink.close()                                                  # always, e.g. in `finally`

Run handles are opaque strings owned by the sink (not necessarily the backend's run ids); every
method returns at once and never raises because the tracking backend is unreachable. Programming
errors (an unknown handle, a status that is not one of `END_STATUSES`, a non-numeric metric) raise
`ValueError`/`TypeError` before anything is recorded.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from reset_tune.tracking import names

# One evaluation's metrics: (step, {metric key: value}). Non-numeric values are a TypeError.
StepMetrics = tuple[int, Mapping[str, float]]
# Artifact name (a relative path such as "curves.png" or "plots/compare.png") -> content.
Artifacts = Mapping[str, bytes | str]


@runtime_checkable
class TrackingSink(Protocol):
    """Receives a search's events; implementations decide where they go and when."""

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
        """Called once when a search starts, before any trial. Returns the parent run's handle.

        A `run_key` (see `check_run_key`) names the run durably: a run recorded earlier under
        the same key (by a search that was interrupted, or by `sync`) is continued, not doubled.
        """
        ...

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
        """Called when a trial starts (after `start_search`), with its resolved parameters.

        `params` keys are the config's field names (`TrainConfig.to_dict()`), so a trial's
        parameters rebuild its config. Returns the trial run's handle.
        """
        ...

    def log_metrics(self, run_id: str, metrics_by_step: Sequence[StepMetrics]) -> None:
        """Called at every evaluation a trial reports (or with several evaluations at once)."""
        ...

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
        """Called once when a trial ends: FINISHED, FAILED (with its reason) or KILLED (pruned).

        Summary metrics are logged once per key, at step 0 (run-level values, not curves).
        """
        ...

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
        """Called once when the search ends, after every trial's `finish_trial`."""
        ...

    def tag_run(self, run_key: str, tags: Mapping[str, str]) -> bool:
        """Add tags to a run this sink started under `run_key`, finished or not (a search's
        winners are known only at its end). False when this sink holds no such run."""
        ...

    def backend_run_id(self, run_key: str) -> str | None:
        """The backend's id of the run started under `run_key`, once the backend has it."""
        ...

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Try to deliver everything recorded so far; True when nothing is left undelivered."""
        ...

    def close(self, timeout_s: float | None = None) -> None:
        """Called last, also after errors: delivers or keeps what is left; the sink is then done."""
        ...


def check_status(status: str) -> str:
    if status not in names.END_STATUSES:
        raise ValueError(
            f"`status` must be one of {', '.join(names.END_STATUSES)}, but got {status!r}."
        )
    return status


_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_run_key(run_key: str) -> str:
    """A caller-chosen run key: letters, digits, '.', '_', '-' (it also names outbox files)."""
    if not isinstance(run_key, str) or not _RUN_KEY.match(run_key):
        raise ValueError(
            f"run key {run_key!r} must be 1-200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_key


def metric_value(key: str, value: Any) -> float:
    """A metric value as a float (bools count as 0/1; NaN and infinities are kept)."""
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r} must be a number, but got {value!r}.") from None


def trial_run_name(trial_id: str | int) -> str:
    """`trial-0007` for numeric ids (sorts well in the UI), `trial-<id>` otherwise."""
    text = str(trial_id)
    return f"trial-{int(text):04d}" if text.isdigit() else f"trial-{text}"


@dataclass
class RecordedRun:
    """Everything a `MemorySink` received for one run."""

    run_id: str
    kind: str
    run_name: str
    experiment_name: str
    parent_run_id: str | None
    params: dict[str, Any]
    tags: dict[str, str]
    metrics: list[tuple[int, str, float]] = field(default_factory=list)  # (step, key, value)
    summary_metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, bytes | str] = field(default_factory=dict)
    status: str | None = None  # None while running
    failure_reason: str | None = None
    run_key: str | None = None


class MemorySink:
    """A `TrackingSink` that keeps everything in memory: for tests and tracking-free runs."""

    def __init__(self, *, experiment_name: str = names.DEFAULT_EXPERIMENT) -> None:
        self.experiment_name = experiment_name
        self.runs: dict[str, RecordedRun] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = False

    def _new(self, **kwargs: Any) -> str:
        with self._lock:
            run_id = f"memory-{next(self._ids):06d}"
            self.runs[run_id] = RecordedRun(run_id=run_id, **kwargs)
        return run_id

    def _by_key(self, run_key: str | None) -> str | None:
        if run_key is None:
            return None
        check_run_key(run_key)
        with self._lock:
            for run in self.runs.values():
                if run.run_key == run_key:
                    return run.run_id
        return None

    def _run(self, run_id: str) -> RecordedRun:
        try:
            return self.runs[run_id]
        except KeyError:
            raise ValueError(f"unknown run handle {run_id!r}") from None

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
        existing = self._by_key(run_key)
        if existing is not None:
            return existing
        all_tags = {
            **(tags or {}),
            names.KIND: names.KIND_SEARCH,
            names.SEARCH_ID: str(search_id),
        }
        return self._new(
            kind=names.KIND_SEARCH,
            run_name=run_name or str(search_id),
            experiment_name=experiment_name or self.experiment_name,
            parent_run_id=None,
            params=dict(params or {}),
            tags=all_tags,
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
        parent = self._run(parent_run_id)
        existing = self._by_key(run_key)
        if existing is not None:
            return existing
        all_tags = {
            **(tags or {}),
            names.KIND: names.KIND_TRIAL,
            names.TRIAL_ID: str(trial_id),
            names.SEARCH_ID: parent.tags.get(names.SEARCH_ID, ""),
        }
        return self._new(
            kind=names.KIND_TRIAL,
            run_name=run_name or trial_run_name(trial_id),
            experiment_name=parent.experiment_name,
            parent_run_id=parent_run_id,
            params=dict(params or {}),
            tags=all_tags,
            run_key=run_key,
        )

    def log_metrics(self, run_id: str, metrics_by_step: Sequence[StepMetrics]) -> None:
        run = self._run(run_id)
        rows = [
            (int(step), key, metric_value(key, value))
            for step, values in metrics_by_step
            for key, value in values.items()
        ]
        with self._lock:
            run.metrics.extend(rows)

    def _finish(
        self,
        run_id: str,
        status: str,
        summary_metrics: Mapping[str, float] | None,
        artifacts: Artifacts | None,
        failure_reason: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        run = self._run(run_id)
        check_status(status)
        summary = {k: metric_value(k, v) for k, v in (summary_metrics or {}).items()}
        with self._lock:
            run.summary_metrics.update(summary)
            run.artifacts.update(artifacts or {})
            run.tags.update(tags or {})
            run.status = status
            run.failure_reason = failure_reason

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
        run_id = self._by_key(run_key)
        if run_id is None:
            return False
        with self._lock:
            self.runs[run_id].tags.update(tags)
        return True

    def backend_run_id(self, run_key: str) -> str | None:
        return self._by_key(run_key)

    def flush(self, timeout_s: float = 30.0) -> bool:
        return True

    def close(self, timeout_s: float | None = None) -> None:
        self.closed = True

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in logging order."""
        return [(step, value) for step, k, value in self._run(run_id).metrics if k == key]
