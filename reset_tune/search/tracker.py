"""Ray Tune callbacks of the driver: every trial into the tracking sink, and live progress.

`TrialTracker` turns Tune's trial events into `TrackingSink` calls: a nested child run per trial
(its resolved `TrainConfig` as parameters, identifying tags), each evaluation's metrics at its
step, and at the end the summary metrics, the curve plot and the resolved config, with status
FINISHED, FAILED (reason recorded) or KILLED (pruned). It runs in the driver process, where the
sink's delivery thread batches everything into a few `log_batch` calls.

What a run holds is `trial_run`'s to say: `sync` records a trial from Tune's files through the
same functions, and run keys (``<search id>.<Tune trial id>``) let it and a resumed search find
the same run instead of making a second one.

Tune pickles its callbacks with the experiment state; these hold live objects (a sink with a
thread, an output stream), so what is pickled is an inert placeholder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ray.tune import Callback

from reset_tune import names
from reset_tune.search.labels import run_label
from reset_tune.search.racing import RACE_SEED
from reset_tune.search.spec import SearchSpec
from reset_tune.search.trainable import FAILURE_REASON, OBJECTIVE, RESULT_JSON, evaluation_rows
from reset_tune.search.trial_run import (
    evaluation_key,
    finish_trial_run,
    is_resetting,
    new_evaluations,
    start_trial_run,
    trial_run_key,
)
from reset_tune.search.tune_files import COMPLETE, FAILED, INTERRUPTED, PRUNED
from reset_tune.tracking import TrackingSink

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = ["ProgressPrinter", "TrialTracker", "trial_run_key"]


@dataclass
class _TrialLog:
    handle: str
    label: str
    resets: bool  # r > 0: an r = 0 trial logs no reset metrics
    logged: set[tuple[int, int]] = field(default_factory=set)
    final: dict[str, Any] | None = None
    failure: str | None = None
    last_step: int = 0


class TrialTracker(Callback):
    """Records every trial of one search in `sink`, nested under the search's parent run."""

    def __init__(
        self,
        sink: TrackingSink,
        parent: str,
        spec: SearchSpec,
        search_id: str,
        *,
        tags: Mapping[str, str] | None = None,
        trial_number: Callable[[str], int | None] | None = None,
    ) -> None:
        self.sink = sink
        self.parent = parent
        self.spec = spec
        self.search_id = search_id
        self.tags = dict(tags or {})
        self.trial_number = trial_number or (lambda _trial_id: None)
        self._trials: dict[str, _TrialLog] = {}
        self._inert = False

    def __getstate__(self) -> dict[str, Any]:
        return {"_inert": True}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- Tune's hooks -----------------------------------------------------------------------------
    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        if self._inert or trial.trial_id in self._trials:
            return
        handle, label = start_trial_run(
            self.sink,
            self.parent,
            self.spec,
            self.search_id,
            trial.trial_id,
            trial.config,
            self.trial_number(trial.trial_id),
            tags=self.tags,
        )
        self._trials[trial.trial_id] = _TrialLog(
            handle=handle, label=label, resets=is_resetting(self.spec, trial.config)
        )

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        log = None if self._inert else self._trials.get(trial.trial_id)
        if log is None:
            return
        if result.get(FAILURE_REASON):
            log.failure = str(result[FAILURE_REASON])
        if OBJECTIVE in result and RESULT_JSON in result:
            log.final = dict(result)  # its last evaluation is logged below, like the others
        rows = evaluation_rows(result)
        batch = new_evaluations(
            rows, log.logged, seeds=self.spec.seeds_per_trial, resets=log.resets
        )
        for row in rows:
            log.last_step = max(log.last_step, evaluation_key(row)[1])
        if batch:
            self.sink.log_metrics(log.handle, batch)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        log = None if self._inert else self._trials.pop(trial.trial_id, None)
        if log is None:
            return
        finish_trial_run(
            self.sink,
            log.handle,
            self.spec,
            COMPLETE if log.final is not None else PRUNED,
            label=log.label,
            final_row=log.final,
            last_step=log.last_step,
        )

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        log = None if self._inert else self._trials.pop(trial.trial_id, None)
        if log is None:
            return
        reason = log.failure or _error_line(trial) or "the trial raised an error"
        finish_trial_run(
            self.sink, log.handle, self.spec, FAILED, label=log.label, failure_reason=reason
        )

    # -- the driver's side ------------------------------------------------------------------------
    def has_running(self) -> bool:
        return bool(self._trials)

    def interrupt_running(self, reason: str) -> None:
        """End the runs of trials still running (the search is stopping) as KILLED."""
        for trial_id in list(self._trials):
            log = self._trials.pop(trial_id)
            finish_trial_run(
                self.sink,
                log.handle,
                self.spec,
                INTERRUPTED,
                label=log.label,
                failure_reason=reason,
            )


def _error_line(trial: Trial) -> str | None:
    try:
        text = trial.get_error()
    except Exception:  # noqa: BLE001 - a missing or unreadable error file: no reason to give
        return None
    if not text:
        return None
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else None


class ProgressPrinter(Callback):
    """One line per trial event, and the best objective so far: progress without Tune's tables."""

    def __init__(
        self,
        spec: SearchSpec,
        *,
        total: int,
        stream: TextIO | None = None,
        trial_number: Callable[[str], int | None] | None = None,
        heartbeat_s: float = 30.0,
        race_summary: Callable[[], str] | None = None,
    ) -> None:
        self.spec = spec
        self.race_summary = race_summary  # racing: the incumbents, after each seed run
        self.total = total
        self.stream = stream
        self.trial_number = trial_number or (lambda _trial_id: None)
        self.heartbeat_s = heartbeat_s
        self.done = 0
        self.best: float | None = None
        self._started = time.monotonic()
        self._last_line = self._started
        self._steps: dict[str, int] = {}
        self._inert = False

    def __getstate__(self) -> dict[str, Any]:
        return {"_inert": True}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _print(self, text: str) -> None:
        elapsed = time.monotonic() - self._started
        stream = self.stream or sys.stdout
        print(f"[{elapsed:6.0f}s] {text}", file=stream, flush=True)
        self._last_line = time.monotonic()

    def _label(self, trial: Trial) -> str:
        return run_label(self.spec, trial.trial_id, trial.config, self.trial_number(trial.trial_id))

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        if self._inert:
            return
        config = self.spec.config_for(trial.config)
        r = f"r={config.reset_prob:.4g}" if config.reset_prob > 0 else "r=0 (no resetting)"
        self._print(
            f"{self._label(trial)} started: {r}, lr={config.lr:.4g}, "
            f"batch={config.batch_size}, layers={config.reset_layers}"
        )

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        if self._inert or names.STEP not in result:
            return
        self._steps[trial.trial_id] = int(result[names.STEP])
        if time.monotonic() - self._last_line >= self.heartbeat_s:
            running = ", ".join(
                f"{self._label(t)} step {self._steps.get(t.trial_id, 0)}"
                for t in trials
                if t.status == "RUNNING"
            )
            self._print(f"{self.done}/{self.total} done; running: {running or 'none'}")

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        if self._inert:
            return
        first_run = self.spec.racing is None or RACE_SEED not in trial.config
        self.done += 1 if first_run else 0
        result = trial.last_result or {}
        if OBJECTIVE in result and not first_run:
            self._print(
                f"{self._label(trial)} done: {self.spec.objective.metric} "
                f"{float(result[OBJECTIVE]):.4f}, clean test acc "
                f"{float(result.get(names.TEST_ACC, float('nan'))):.4f}"
            )
        elif OBJECTIVE in result:
            value = float(result[OBJECTIVE])
            if self.best is None or names.better(value, self.best, self.spec.mode):
                self.best = value
            test = float(result.get(names.TEST_ACC, float("nan")))
            self._print(
                f"{self._label(trial)} done ({self.done}/{self.total}): "
                f"{self.spec.objective.metric} {value:.4f}, clean test acc "
                f"{test:.4f}; best {self.spec.objective.metric} so far {self.best:.4f}"
            )
        else:
            self._print(
                f"{self._label(trial)} stopped early at step {self._steps.get(trial.trial_id, 0)}"
                f" ({self.done}/{self.total})"
            )

        if self.race_summary is not None:
            self._print(f"  {self.race_summary()}")

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        if self._inert:
            return
        self.done += 1 if self.spec.racing is None or RACE_SEED not in trial.config else 0
        reason = (trial.last_result or {}).get(FAILURE_REASON) or _error_line(trial)
        self._print(f"{self._label(trial)} failed ({self.done}/{self.total}): {reason}")
