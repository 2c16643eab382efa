"""`sync`: make MLflow hold everything a search did, from the search's own files.

Two sources, in order:

1. the search's outbox: records the sink could not deliver while the tracking server was down
   (replayed as they were queued);
2. Ray Tune's result files: every trial's reported rows. A trial whose MLflow run is missing or
   was never ended is (re)recorded under its run key ``<search id>.<Tune trial id>``: parameters,
   each evaluation not yet in MLflow, the summary, artifacts and the final status. Runs already
   ended are left alone, so `sync` is safe to repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reset_tune.errors import ResetTuneError
from reset_tune.redact import redact_uri
from reset_tune.search.parent_run import (
    build_report,
    finish_search_run,
    search_params,
    search_tags,
)
from reset_tune.search.record import FINISHED, SearchRecord
from reset_tune.search.spec import SearchSpec
from reset_tune.search.trial_run import (
    evaluation_key,
    finish_trial_run,
    is_resetting,
    new_evaluations,
    start_trial_run,
    trial_run_key,
)
from reset_tune.search.tune_files import INTERRUPTED, TuneTrial, read_experiment
from reset_tune.tracking import (
    MlflowSink,
    RunSummary,
    TrackingSink,
    metric_history,
    replay_outbox,
    trial_runs,
)
from reset_tune.tracking import names as tracking_names


class SyncFailed(ResetTuneError):
    """The tracking server could not be reached or did not take the records."""


@dataclass
class SyncReport:
    outbox_runs: int = 0  # runs replayed from the outbox
    trials_recorded: int = 0  # trials (re)recorded from Tune's files
    trials_present: int = 0  # trials already ended in MLflow, left alone
    metrics_logged: int = 0
    errors: list[str] = field(default_factory=list)


def sync_search(record: SearchRecord, tracking_uri: str) -> SyncReport:
    server = redact_uri(tracking_uri)  # what messages show
    report = SyncReport()
    replayed = replay_outbox(record.outbox_dir, tracking_uri)
    report.outbox_runs = replayed.runs_completed
    if replayed.runs_remaining:
        raise SyncFailed(
            f"the tracking server at {server} did not take the outbox "
            f"({'; '.join(replayed.errors[:2])}); check that it runs, then sync again"
        )
    report.errors.extend(replayed.errors)

    spec = SearchSpec.from_dict(record.spec, source=record.spec_source)
    sink = MlflowSink(tracking_uri, record.experiment_name, outbox_dir=record.outbox_dir)
    try:
        parent = sink.start_search(
            record.search_id,
            params=search_params(spec),
            tags=search_tags(spec),
            run_name=record.search_id,
            run_key=record.search_id,
        )
        if not sink.flush(timeout_s=60.0):
            raise SyncFailed(
                f"the tracking server at {server} does not answer; start it (or pass "
                "--mlflow-uri) and sync again"
            )
        parent_id = sink.mlflow_run_id(parent)
        if parent_id is None:  # flushed, so the run exists; a sink that cannot say is broken
            raise SyncFailed(f"the tracking server at {server} did not create the search run")
        existing = {
            run.tags.get(tracking_names.RUN_KEY): run for run in trial_runs(tracking_uri, parent_id)
        }
        finished = record.status == FINISHED
        for segment in record.segments:
            for trial in read_experiment(record.tune_dir / segment.name):
                key = trial_run_key(record.search_id, trial.trial_id)
                present = existing.get(key)
                if present is not None and present.status in tracking_names.END_STATUSES:
                    report.trials_present += 1
                    continue
                report.metrics_logged += record_tune_trial(
                    sink,
                    parent,
                    spec,
                    record,
                    trial,
                    logged=_logged_steps(tracking_uri, present),
                )
                report.trials_recorded += 1
        if finished and not _ended(tracking_uri, parent_id):
            search_report = build_report(spec, record, None)
            search_report.tracking_uri = tracking_uri  # the description links the winners
            finish_search_run(sink, parent, record, search_report)
        if not sink.flush(timeout_s=120.0):
            raise SyncFailed(
                f"the tracking server at {server} stopped answering during sync; what was "
                f"not delivered is kept in {record.outbox_dir}; sync again when it is back"
            )
    finally:
        sink.close()
    return report


def record_tune_trial(
    sink: TrackingSink,
    parent: str,
    spec: SearchSpec,
    record: SearchRecord,
    trial: TuneTrial,
    *,
    logged: set[tuple[int, int]] | None = None,
) -> int:
    """Record one trial from its Tune files as the live tracker would have: its run (found
    again by its run key), the evaluations not in `logged` ((seed index, step) pairs the run
    already has), and its end, unless the search was stopped while it ran (then the run stays
    open for a resumed search). Returns the number of metric values logged."""
    handle, label = start_trial_run(
        sink,
        parent,
        spec,
        record.search_id,
        trial.trial_id,
        trial.params,
        record.trial_numbers.get(trial.trial_id),
    )
    rows = trial.evaluation_rows
    batch = new_evaluations(
        rows,
        set(logged or ()),
        seeds=spec.seeds_per_trial,
        resets=is_resetting(spec, trial.params),
    )
    if batch:
        sink.log_metrics(handle, batch)
    outcome = trial.outcome(pruning=spec.prunes, interrupted=record.interrupted_trials)
    if outcome != INTERRUPTED:
        finish_trial_run(
            sink,
            handle,
            spec,
            outcome,
            label=label,
            final_row=trial.final_row,
            failure_reason=trial.failure_reason,
            last_step=max((evaluation_key(row)[1] for row in rows), default=0),
        )
    return sum(len(metrics) for _, metrics in batch)


def _logged_steps(tracking_uri: str, run: RunSummary | None) -> set[tuple[int, int]]:
    """(seed index, step) pairs of evaluations the run already has (by its val/loss history)."""
    if run is None:
        return set()
    from reset_tune import names

    steps: set[tuple[int, int]] = set()
    for key in run.metrics:
        if key == names.VAL_LOSS:
            steps |= {(0, step) for step, _ in metric_history(tracking_uri, run.run_id, key)}
        elif key.endswith("/" + names.VAL_LOSS) and key.startswith("seed"):
            index = int(key.split("/", 1)[0].removeprefix("seed"))
            steps |= {(index, s) for s, _ in metric_history(tracking_uri, run.run_id, key)}
    return steps


def _ended(tracking_uri: str, run_id: str) -> bool:
    from reset_tune.tracking import find_search_runs

    for run in find_search_runs(tracking_uri):
        if run.run_id == run_id:
            return run.status in tracking_names.END_STATUSES
    return False
