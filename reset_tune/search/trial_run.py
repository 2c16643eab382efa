"""What a trial's MLflow run holds, and the one code path that records it.

The driver's live `TrialTracker` (from Tune's events) and `sync` (from Tune's files, afterwards)
both record a trial through these functions, so a trial recorded either way has the same
parameters, tags, metrics (each evaluation at its step, the summary at the end), artifacts and end
status: FINISHED, FAILED with its reason, or KILLED (pruned by the scheduler, or left running by a
stopped search) with its reason.

What a reader of the MLflow UI sees, and why:

- parameters: the searched ones (an r = 0 trial leaves out the reset settings it does not use)
  and the fixed ones people filter on (`FILTER_PARAMS`); the full resolved config is the run's
  `config.json`. Names are `TrainConfig`'s, as on the parent run.
- run name: the trial and its arm, ``trial-0004 r=0.02`` or ``trial-0001 r=0``.
- metrics: each evaluation at its step (an r = 0 trial logs no reset metrics), and the summary
  once, under ``summary/`` (`SUMMARY_METRICS`), so the UI's charts keep it apart from curves.

Run keys are ``<search id>.<Tune trial id>``, so `sync` and a resumed search find the same run
instead of making a second one. No Ray import: `sync` runs without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from reset_tune import names
from reset_tune.search.labels import configuration_label, run_label
from reset_tune.search.spec import (
    RESET_PROB,
    RESET_SUBPARAMETERS,
    RESETTING,
    RESETTING_OFF,
    RESETTING_ON,
    SearchSpec,
)
from reset_tune.search.trainable import (
    FINAL_KEYS,
    OBJECTIVE,
    RUNNING_OBJECTIVE,
    SEED_INDEX,
    WALL_TIME,
    results_from_row,
    trial_summary,
)
from reset_tune.search.tune_files import COMPLETE, FAILED, INTERRUPTED, PRUNED, metric_items
from reset_tune.tracking import TrackingSink, config_tags
from reset_tune.tracking import names as tracking_names

OPTUNA_TRIAL_TAG = "reset_tune.optuna_trial"

Evaluation = tuple[int, dict[str, float]]  # (step, metrics)

# Fixed settings every trial records as parameters, beside its searched ones: what people filter
# and group runs by. Everything else is in the run's `config.json` (and the parent's spec.yaml).
FILTER_PARAMS = ("dataset", "noise", "model", "steps", "seed")
# An evaluation's metrics that say nothing on an r = 0 trial (it never arms, never resets).
RESET_METRICS = (names.RESET_ARMED, names.RESET_COUNT)
# A trial's summary in MLflow: one value per run, under one prefix. The key a summary value comes
# from (`trainable.trial_summary`) -> its MLflow name. The validation metric that is the
# objective is logged once, as `summary/objective` (see `summary_metrics`).
SUMMARY_PREFIX = "summary/"
SUMMARY_OBJECTIVE = "summary/objective"  # the spec's objective metric at θbest (mean over seeds)
SUMMARY_TEST_ACC = "summary/test_acc"  # clean test accuracy of θbest: the reported number
SUMMARY_METRICS = {
    OBJECTIVE: SUMMARY_OBJECTIVE,
    names.TEST_ACC: SUMMARY_TEST_ACC,
    names.FINAL_TEST_ACC: "summary/last_model_test_acc",  # of the last model, for context only
    names.BEST_VAL_ACC: "summary/val_acc",  # at θbest
    names.BEST_VAL_LOSS: "summary/val_loss",  # at θbest
    names.BEST_STEP: "summary/best_step",  # the step of θbest
    names.RESET_COUNT: "summary/resets",
    names.STEPS_PER_S: "summary/steps_per_s",
    WALL_TIME: "summary/wall_time_s",
}


def trial_run_key(search_id: str, tune_trial_id: str) -> str:
    return f"{search_id}.{tune_trial_id}"


def is_resetting(spec: SearchSpec, tune_config: Mapping[str, Any]) -> bool:
    """Whether a trial resets at all (r > 0), from its Tune config."""
    return float(spec.config_for(tune_config).reset_prob) > 0


def arm_name(reset_prob: float) -> str:
    """A trial's arm as its run name says it: ``r=0`` or ``r=0.02``."""
    return "r=0" if reset_prob <= 0 else f"r={reset_prob:.2g}"


def trial_params(spec: SearchSpec, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a trial's MLflow run records as parameters: the searched ones (resolved, so a
    conditional parameter shows the value the trial ran with) and `FILTER_PARAMS`; an r = 0
    trial leaves out the reset settings it does not use. With several seeds, ``seed`` is the
    first and ``seeds`` lists them all."""
    resolved = spec.config_for(config).to_dict()
    baseline = float(resolved[RESET_PROB]) <= 0
    params: dict[str, Any] = {name: resolved[name] for name in FILTER_PARAMS}
    for name in spec.params:
        if name == RESETTING or name not in resolved:
            continue
        if baseline and name in RESET_SUBPARAMETERS:
            continue
        params[name] = resolved[name]
    if spec.has_off_arm:
        default = RESETTING_OFF if baseline else RESETTING_ON
        params[RESETTING] = config.get(RESETTING, default)
    if spec.seeds_per_trial > 1:
        params["seeds"] = ",".join(str(s) for s in spec.seeds)
    return params


def run_tags(
    spec: SearchSpec, tune_config: Mapping[str, Any], params: Mapping[str, Any], number: int | None
) -> dict[str, str]:
    """A trial run's tags: its config's, its Optuna trial and (racing) its configuration."""
    tags = config_tags(params)
    if number is not None:
        tags[OPTUNA_TRIAL_TAG] = str(number)
    if spec.racing is not None:
        tags[tracking_names.CONFIGURATION] = configuration_label(spec, tune_config, number)
        tags[tracking_names.RACE_SEED] = str(params["seed"])
    return tags


def evaluation_metrics(
    row: Mapping[str, Any], *, seeds: int, resets: bool = True
) -> dict[str, float]:
    """One evaluation row as MLflow metrics: with several seeds, keys are ``seed<i>/<key>``.

    The running objective (what a scheduler compares) is left out: it repeats the validation
    metric. An r = 0 trial (`resets` false) leaves out `RESET_METRICS`."""
    metrics = metric_items(dict(row))
    for key in (names.STEP, "seed", SEED_INDEX, RUNNING_OBJECTIVE, *FINAL_KEYS):
        metrics.pop(key, None)
    if not resets:
        for key in RESET_METRICS:
            metrics.pop(key, None)
    if seeds > 1:
        index = int(row.get(SEED_INDEX, 0))
        metrics = {f"seed{index}/{k}": v for k, v in metrics.items()}
    return metrics


def evaluation_key(row: Mapping[str, Any]) -> tuple[int, int]:
    """(seed index, step): what identifies one evaluation of a trial."""
    return int(row.get(SEED_INDEX, 0)), int(row[names.STEP])


def new_evaluations(
    rows: Iterable[Mapping[str, Any]],
    logged: set[tuple[int, int]],
    *,
    seeds: int,
    resets: bool = True,
) -> list[Evaluation]:
    """The evaluations among `rows` not in `logged` (which they join), as (step, metrics).

    A trial restarted from an earlier checkpoint reports some evaluations again; a run already
    holding some evaluations (`sync`) gets only the others.
    """
    batch = []
    for row in rows:
        key = evaluation_key(row)
        if key in logged:
            continue
        logged.add(key)
        batch.append((key[1], evaluation_metrics(row, seeds=seeds, resets=resets)))
    return batch


def summary_metrics(spec: SearchSpec, row: Mapping[str, Any]) -> dict[str, float]:
    """A final row's summary as MLflow metrics (means over seeds), recomputed from its full
    results: `SUMMARY_METRICS`' names, without the validation metric that the objective already
    is, and without reset counts on an r = 0 trial."""
    summary = trial_summary(spec, results_from_row(row))
    same_as_objective = (
        names.BEST_VAL_ACC if spec.objective.metric == names.METRIC_VAL_ACC else names.BEST_VAL_LOSS
    )
    summary.pop(same_as_objective, None)
    if not any(float(r.config.get(RESET_PROB, 0.0)) > 0 for r in results_from_row(row)):
        summary.pop(names.RESET_COUNT, None)
    return {SUMMARY_METRICS[k]: v for k, v in summary.items() if k in SUMMARY_METRICS}


def trial_artifacts(row: Mapping[str, Any], label: str) -> dict[str, bytes | str]:
    """The curve plot (one curve per seed), the resolved config and the full results."""
    from reset_tune.plots import render_curves

    results = results_from_row(row)
    title = f"{label} {arm_name(float(results[0].config.get(RESET_PROB, 0.0)))}"
    curves = {
        (title if len(results) == 1 else f"{title} seed {r.config.get('seed')}"): r for r in results
    }
    config = results[0].config
    setting = ", ".join(str(config.get(k)) for k in ("dataset", "noise", "model"))
    return {
        "curves.png": render_curves(curves, title=f"{title}: {setting}"),
        "config.json": json.dumps(results[0].config, indent=2, sort_keys=True) + "\n",
        "result.json": json.dumps([r.to_dict() for r in results], indent=2, default=str) + "\n",
    }


def start_trial_run(
    sink: TrackingSink,
    parent: str,
    spec: SearchSpec,
    search_id: str,
    tune_trial_id: str,
    tune_config: Mapping[str, Any],
    number: int | None,
    *,
    tags: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Open (or find again, by its run key) a trial's run under `parent`; returns its sink
    handle and its label (``trial-0007``; the run's name adds its arm, ``trial-0007 r=0.02``).
    `tags` are added to the trial's own."""
    label = run_label(spec, tune_trial_id, tune_config, number)
    params = trial_params(spec, tune_config)
    handle = sink.start_trial(
        parent,
        tune_trial_id,
        params=params,
        tags={**(tags or {}), **run_tags(spec, tune_config, params, number)},
        run_name=trial_run_title(spec, label, tune_config),
        run_key=trial_run_key(search_id, tune_trial_id),
    )
    return handle, label


def trial_run_title(spec: SearchSpec, label: str, tune_config: Mapping[str, Any]) -> str:
    """A trial run's name in MLflow: its label and its arm, ``trial-0004 r=0.02``."""
    return f"{label} {arm_name(float(spec.config_for(tune_config).reset_prob))}"


def pruned_reason(last_step: int) -> str:
    return f"stopped early by the scheduler at step {last_step}"


def finish_trial_run(
    sink: TrackingSink,
    handle: str,
    spec: SearchSpec,
    outcome: str,
    *,
    label: str,
    final_row: Mapping[str, Any] | None = None,
    failure_reason: str | None = None,
    last_step: int = 0,
) -> None:
    """End a trial's run by its outcome (`tune_files`' COMPLETE, FAILED, PRUNED, INTERRUPTED).

    COMPLETE needs the trial's `final_row` (summary metrics and artifacts come from it); FAILED
    and INTERRUPTED record `failure_reason`; PRUNED records the step it was stopped at.
    """
    if outcome == COMPLETE:
        if final_row is None:
            raise ValueError("a complete trial's run needs its final row")
        sink.finish_trial(
            handle,
            tracking_names.FINISHED,
            summary_metrics=summary_metrics(spec, final_row),
            artifacts=trial_artifacts(final_row, label),
        )
    elif outcome == FAILED:
        sink.finish_trial(handle, tracking_names.FAILED, failure_reason=failure_reason)
    elif outcome == PRUNED:
        sink.finish_trial(handle, tracking_names.KILLED, failure_reason=pruned_reason(last_step))
    elif outcome == INTERRUPTED:
        sink.finish_trial(handle, tracking_names.KILLED, failure_reason=failure_reason)
    else:
        raise ValueError(f"unknown trial outcome {outcome!r}")
