"""The search's own MLflow run, parent of every trial's: what it records when a search starts
(`search_params`, `search_tags`) and when it ends (`finish_search_run`: the report's summary,
verdict and artifacts), and the report itself, built from the search's files (`build_report`).

The driver records it live; `sync` records it again from the files. No Ray import.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from reset_tune import __version__
from reset_tune.config import TrainConfig
from reset_tune.search.record import SearchRecord
from reset_tune.search.report import (
    SearchReport,
    best_config_text,
    configurations,
    outcomes,
    param_importances,
)
from reset_tune.search.spec import SearchSpec
from reset_tune.search.tune_files import read_experiment
from reset_tune.tracking import TrackingSink, config_tags, names, string_params
from reset_tune.tracking.names import FAILED as RUN_FAILED
from reset_tune.tracking.names import FINISHED as RUN_FINISHED

if TYPE_CHECKING:
    import optuna

VERDICT_TAG = "reset_tune.verdict"  # the parent run's verdict word (helps, no evidence, ...)
VERDICT_LINE_TAG = "reset_tune.verdict_line"  # and the whole line


def search_params(spec: SearchSpec) -> dict[str, Any]:
    """The parent run's parameters: `train`, the search settings and each parameter's space."""
    params: dict[str, Any] = {f"train.{k}": v for k, v in spec.train.items()}
    params.update(
        {
            "objective": spec.objective.metric,
            "racing": (
                "off"
                if spec.racing is None
                else f"max_seeds={spec.racing.max_seeds},z={spec.racing.z:g}"
            ),
            "trials": spec.trials,
            "concurrency": spec.concurrency,
            "seeds": ",".join(map(str, spec.seeds)),
            "resources.cpus": spec.resources.cpus,
            "resources.gpus": spec.resources.gpus,
            "scheduler": spec.scheduler.type,
            "sampler.seed": spec.sampler.seed,
        }
    )
    for name, value in spec.params.items():
        params[f"space.{name}"] = json.dumps(
            value if not hasattr(value, "model_dump") else value.model_dump(exclude_none=True)
        )
    return string_params(params)


def search_tags(spec: SearchSpec) -> dict[str, str]:
    """The parent run's tags: the shared config's, the package version and a description."""
    tags = config_tags({**spec.fixed})
    tags[names.PACKAGE_VERSION] = __version__
    tags["mlflow.note.content"] = spec.description or f"reset-tune search of {spec.source}"
    return tags


def build_report(
    spec: SearchSpec, record: SearchRecord, study: optuna.Study | None
) -> SearchReport:
    """The search's report from its Tune files (and the study's importances, when given)."""
    trials = [t for seg in record.segments for t in read_experiment(record.tune_dir / seg.name)]
    listed = outcomes(
        spec, trials, numbers=record.trial_numbers, interrupted=record.interrupted_trials
    )
    # A trial re-run on resume appears twice; only the attempt that ran to its end counts.
    listed = [t for t in listed if t.tune_trial_id not in record.interrupted_trials]
    importances = param_importances(study) if study is not None else {}
    racing = spec.racing is not None
    grouped = (
        configurations(spec, listed, numbers=record.trial_numbers, race=record.race)
        if racing
        else listed
    )
    return SearchReport(
        search_id=record.search_id,
        objective_metric=spec.objective.metric,
        mode=spec.mode,
        trials=grouped,
        importances=importances,
        racing=racing,
        runs=listed if racing else [],
        steps=int(TrainConfig.from_dict(spec.fixed).steps),
    )


def finish_search_run(
    sink: TrackingSink, parent: str, record: SearchRecord, report: SearchReport
) -> None:
    """End the parent run: the report's summary metrics and verdict tags, the spec, the best
    configuration, the table, the plots; FINISHED when some trial completed, else FAILED."""
    artifacts: dict[str, bytes | str] = {
        "spec.yaml": record.spec_text,
        "best_config.json": best_config_text(report),
        "importances.json": json.dumps(report.importances, indent=2) + "\n",
        "trials.json": json.dumps(report.to_json()["trials"], indent=2, default=str) + "\n",
        "table.txt": report.table(top=len(report.trials)) + "\n",
    }
    if report.complete:
        artifacts["comparison.png"] = report.comparison_plot()
    verdict = report.verdict()
    artifacts["verdict.json"] = json.dumps(verdict.to_json(), indent=2, default=str) + "\n"
    if record.race is not None:
        artifacts["race.json"] = json.dumps(record.race, indent=2) + "\n"
    tags = {VERDICT_TAG: verdict.word, VERDICT_LINE_TAG: verdict.line()}
    best = report.best
    if best is not None:
        tags["reset_tune.best_trial"] = best.label
    status = RUN_FINISHED if report.complete else RUN_FAILED
    metrics = report.summary_metrics()
    for name, value in report.importances.items():
        metrics[f"importance/{name}"] = value
    sink.finish_search(
        parent,
        status,
        summary_metrics=metrics,
        artifacts=artifacts,
        tags=tags,
        failure_reason=None if report.complete else "no trial completed",
    )
