"""What a trial's MLflow run holds, and the one code path that records it.

The driver's live `TrialTracker` (from Tune's events) and `sync` (from Tune's files, afterwards)
both record a trial through these functions, so a trial recorded either way has the same
parameters (its resolved `TrainConfig` and the on/off switch), tags, metrics (each evaluation at
its step, the summary at the end), artifacts and end status: FINISHED, FAILED with its reason,
or KILLED (pruned by the scheduler, or left running by a stopped search) with its reason.

Run keys are ``<search id>.<Tune trial id>``, so `sync` and a resumed search find the same run
instead of making a second one. No Ray import: `sync` runs without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from reset_tune import names
from reset_tune.search.labels import configuration_label, run_label
from reset_tune.search.spec import RESET_PROB, RESETTING, RESETTING_OFF, RESETTING_ON, SearchSpec
from reset_tune.search.trainable import FINAL_KEYS, SEED_INDEX, results_from_row, trial_summary
from reset_tune.search.tune_files import COMPLETE, FAILED, INTERRUPTED, PRUNED, metric_items
from reset_tune.tracking import TrackingSink, config_tags
from reset_tune.tracking import names as tracking_names

OPTUNA_TRIAL_TAG = "reset_tune.optuna_trial"

Evaluation = tuple[int, dict[str, float]]  # (step, metrics)


def trial_run_key(search_id: str, tune_trial_id: str) -> str:
    return f"{search_id}.{tune_trial_id}"


def trial_params(spec: SearchSpec, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a trial's MLflow run records as parameters: its resolved config and the switch.

    With several seeds, ``seed`` is the first and ``seeds`` lists them all.
    """
    resolved = spec.config_for(config).to_dict()
    params: dict[str, Any] = dict(resolved)
    if spec.has_off_arm:
        default = RESETTING_ON if resolved[RESET_PROB] > 0 else RESETTING_OFF
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


def evaluation_metrics(row: Mapping[str, Any], *, seeds: int) -> dict[str, float]:
    """One evaluation row as MLflow metrics: with several seeds, keys are ``seed<i>/<key>``."""
    metrics = metric_items(dict(row))
    for key in (names.STEP, "seed", SEED_INDEX, *FINAL_KEYS):
        metrics.pop(key, None)
    if seeds > 1:
        index = int(row.get(SEED_INDEX, 0))
        metrics = {f"seed{index}/{k}": v for k, v in metrics.items()}
    return metrics


def evaluation_key(row: Mapping[str, Any]) -> tuple[int, int]:
    """(seed index, step): what identifies one evaluation of a trial."""
    return int(row.get(SEED_INDEX, 0)), int(row[names.STEP])


def new_evaluations(
    rows: Iterable[Mapping[str, Any]], logged: set[tuple[int, int]], *, seeds: int
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
        batch.append((key[1], evaluation_metrics(row, seeds=seeds)))
    return batch


def summary_metrics(spec: SearchSpec, row: Mapping[str, Any]) -> dict[str, float]:
    """A final row's summary metrics (means over seeds), recomputed from its full results."""
    return trial_summary(spec, results_from_row(row))


def trial_artifacts(row: Mapping[str, Any], label: str) -> dict[str, bytes | str]:
    """The curve plot (one curve per seed), the resolved config and the full results."""
    from reset_tune.plots import render_curves

    results = results_from_row(row)
    curves = {
        (label if len(results) == 1 else f"{label} seed {r.config.get('seed')}"): r for r in results
    }
    return {
        "curves.png": render_curves(curves),
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
    handle and its label (``trial-0007``). `tags` are added to the trial's own."""
    label = run_label(spec, tune_trial_id, tune_config, number)
    params = trial_params(spec, tune_config)
    handle = sink.start_trial(
        parent,
        tune_trial_id,
        params=params,
        tags={**(tags or {}), **run_tags(spec, tune_config, params, number)},
        run_name=label,
        run_key=trial_run_key(search_id, tune_trial_id),
    )
    return handle, label


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
