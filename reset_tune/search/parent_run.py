"""The search's own MLflow run, parent of every trial's: what it records when a search starts
(`search_params`, `search_tags`) and when it ends (`finish_search_run`: the report's summary,
verdict and artifacts, a description a reader sees first, the winners tagged), the report itself,
built from the search's files (`build_report`), and the UI links printed for it (`add_ui_links`).

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
    TrialOutcome,
    best_config_text,
    configurations,
    outcomes,
    param_importances,
)
from reset_tune.search.spec import RESET_PROB, SearchSpec
from reset_tune.search.trainable import results_from_row
from reset_tune.search.trial_run import SUMMARY_OBJECTIVE, arm_name, trial_run_key
from reset_tune.search.tune_files import read_experiment
from reset_tune.tracking import (
    TrackingSink,
    config_tags,
    names,
    run_url,
    runs_table_url,
    string_params,
)
from reset_tune.tracking.names import FAILED as RUN_FAILED
from reset_tune.tracking.names import FINISHED as RUN_FINISHED

if TYPE_CHECKING:
    import optuna

VERDICT_TAG = "reset_tune.verdict"  # the parent run's verdict word (helps, no evidence, ...)
VERDICT_LINE_TAG = "reset_tune.verdict_line"  # and the whole line
# The parent's parameter naming the validation metric the search ranks by (``val_acc``); its
# value at θbest is every run's ``summary/objective``. Searches before 0.x called it "objective".
OBJECTIVE_METRIC_PARAM = "objective_metric"
LEGACY_OBJECTIVE_PARAM = "objective"
# A run's name with this mark is one of the search's winners (also tagged `names.BEST`).
BEST_MARK = "★"


def search_params(spec: SearchSpec) -> dict[str, Any]:
    """The parent run's parameters: the spec's fixed `train` settings (named as on the trials,
    ``steps``, not ``train.steps``), the search settings and each parameter's space."""
    params: dict[str, Any] = dict(spec.train)
    params.update(
        {
            OBJECTIVE_METRIC_PARAM: spec.objective.metric,
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
    tags[names.MLFLOW_NOTE] = spec.description or f"reset-tune search of {spec.source}"
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
    results = {
        t.trial_id: results_from_row(t.final_row)
        for t in trials
        if t.final_row is not None and t.trial_id not in record.interrupted_trials
    }
    return SearchReport(
        results=results,
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
    """End the parent run: the report's summary metrics and verdict tags, a description that
    says what the search found (with links to the winning trials), the spec, the best
    configuration, the table, the plots; FINISHED when some trial completed, else FAILED. The
    winning trials are tagged (`names.BEST`) and their names marked (`BEST_MARK`)."""
    artifacts: dict[str, bytes | str] = {
        "spec.yaml": record.spec_text,
        "best_config.json": best_config_text(report),
        "importances.json": json.dumps(report.importances, indent=2) + "\n",
        "trials.json": json.dumps(report.to_json()["trials"], indent=2, default=str) + "\n",
        "table.txt": report.table(top=len(report.trials)) + "\n",
    }
    if report.complete:
        artifacts["comparison.png"] = report.comparison_plot()
        curves = report.winners_curves_plot()
        if curves is not None:
            artifacts["curves.png"] = curves
    verdict = report.verdict()
    artifacts["verdict.json"] = json.dumps(verdict.to_json(), indent=2, default=str) + "\n"
    if record.race is not None:
        artifacts["race.json"] = json.dumps(record.race, indent=2) + "\n"
    winners = _winners(report)
    # The description links the winners' runs and the report links the parent: they must exist
    # on the server first.
    keys = [parent, *_run_keys(record, report, winners)]
    if any(sink.backend_run_id(key) is None for key in keys):
        sink.flush(timeout_s=10.0)
    tracking_uri = _server_uri(sink, report)
    if tracking_uri:
        add_ui_links(report, tracking_uri, sink.backend_run_id(parent))
    links = {trial.label: _run_link(sink, record, report, trial) for trial, _ in winners.values()}
    tags = {
        VERDICT_TAG: verdict.word,
        VERDICT_LINE_TAG: verdict.line(),
        names.MLFLOW_NOTE: search_note(record, report, links),
    }
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
    for trial, marks in winners.values():
        for run in _seed_runs(report, trial):
            sink.tag_run(
                trial_run_key(record.search_id, run.tune_trial_id),
                {
                    names.BEST: ", ".join(marks),
                    # The best trial is "best" even when it is also the best r = 0 trial.
                    names.MLFLOW_RUN_NAME: f"{run_title(run)} {BEST_MARK} {marks[0]}",
                },
            )


def run_title(trial: TrialOutcome) -> str:
    """A trial's run name, ``trial-0004 r=0.02`` (as `trial_run.trial_run_title` names it)."""
    return f"{trial.label} {arm_name(float(trial.config.get(RESET_PROB, 0.0)))}"


def _winners(report: SearchReport) -> dict[str, tuple[TrialOutcome, list[str]]]:
    """The best trial and the best r = 0 trial (one trial when they are the same), by label,
    with what each won."""
    out: dict[str, tuple[TrialOutcome, list[str]]] = {}
    for trial, mark in ((report.best, names.BEST_OVERALL), (report.best_baseline, names.BEST_R0)):
        if trial is not None:
            out.setdefault(trial.label, (trial, []))[1].append(mark)
    return out


def _seed_runs(report: SearchReport, trial: TrialOutcome) -> list[TrialOutcome]:
    """The runs behind a trial: itself, or with racing its configuration's seed runs."""
    if not report.racing:
        return [trial]
    return [run for run in report.runs if run.label in trial.runs] or [trial]


def _run_keys(
    record: SearchRecord, report: SearchReport, winners: dict[str, tuple[TrialOutcome, list[str]]]
) -> list[str]:
    return [
        trial_run_key(record.search_id, run.tune_trial_id)
        for trial, _ in winners.values()
        for run in _seed_runs(report, trial)
    ]


def _run_link(
    sink: TrackingSink, record: SearchRecord, report: SearchReport, trial: TrialOutcome
) -> str | None:
    """A link to a trial's run (its first seed run with racing), relative to the UI's address:
    the user may reach the UI by another host name than the search did. The UI's short route
    ``#/runs/<id>`` does not render a run in MLflow 3.17, so the link names its experiment."""
    run_id = sink.backend_run_id(
        trial_run_key(record.search_id, _seed_runs(report, trial)[0].tune_trial_id)
    )
    tracking_uri = _server_uri(sink, report)
    if run_id is None or not tracking_uri:
        return None
    url = run_url(tracking_uri, run_id)
    if url is None or "#/" not in url:
        return None  # no server-backed UI, or the server did not answer
    return "#" + url.split("#", 1)[1]


def _server_uri(sink: TrackingSink, report: SearchReport) -> str | None:
    """Where to ask about the runs: the sink's own URI (the report's may have its password
    masked), else the report's."""
    uri = getattr(sink, "tracking_uri", None)
    return uri if isinstance(uri, str) and uri else report.tracking_uri


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def search_note(record: SearchRecord, report: SearchReport, links: dict[str, str | None]) -> str:
    """The parent run's description (markdown): what the search found, first."""
    metric = report.objective_metric

    def objective(trial: TrialOutcome) -> str:
        return _percent(trial.objective) if metric == "val_acc" else f"{trial.objective:.4f}"

    def name(trial: TrialOutcome) -> str:
        link = links.get(trial.label)
        title = run_title(trial)
        return f"[{title}]({link})" if link else title

    # The UI shows a description's first lines only (then "Show more"): the finding goes first.
    gain, verdict = report.gain, report.verdict()
    headline = "no complete trial" if report.best is None else "no gain measured (one arm only)"
    if gain is not None:
        headline = f"Gain of resetting: {100 * gain:+.1f} points clean test accuracy"
    lines = [f"#### {headline} — verdict: {verdict.word}", ""]
    rows = [
        (f"{BEST_MARK} best trial", report.best),
        (f"{BEST_MARK} best r = 0 trial", report.best_baseline),
        ("best resetting trial", report.best_resetting),
    ]
    lines += [
        f"| | trial | {metric} (objective) | clean test accuracy |",
        "|---|---|---|---|",
    ]
    for what, trial in rows:
        if trial is not None:
            lines.append(f"| {what} | {name(trial)} | {objective(trial)} | "
                         f"{_percent(trial.test_acc)} |")  # fmt: skip
    lines.append("")
    if gain is not None:
        lines += [
            "Gain: clean test accuracy of the best resetting trial minus the best r = 0 "
            "trial's, each chosen by the objective (test accuracy never chooses).",
            "",
        ]
    tied = report.tied_with_best()
    if tied:
        lines += [
            "≈ Tied with the best (within one standard error of its objective): "
            + ", ".join(run_title(t) for t in tied)
            + ".",
            "",
        ]
    lines += [verdict.line(), ""]
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.counts().items()))
    lines += [
        f"Trials: {len(report.trials)} ({counts}). Winners carry `{names.BEST}` "
        f"(filter: ``tags.`{names.BEST}` LIKE 'best%'``) and {BEST_MARK} in their names.",
        "",
        f"Metrics: `{SUMMARY_OBJECTIVE}` = {metric} at θbest (what ranks trials); "
        "`summary/test_acc` = clean test accuracy of θbest (the reported number); "
        "`summary/last_model_test_acc` = of the last model, for context; the parent's "
        "`summary/*` are its best trials'. Full configs: each trial's `config.json`.",
        "",
        f"Search `{record.search_id}`.",
    ]
    return "\n".join(lines)


def add_ui_links(report: SearchReport, tracking_uri: str, run_id: str | None) -> None:
    """The report's MLflow UI links: the parent run (model-training view), and the table of
    the search's trials sorted by the objective, best first."""
    from reset_tune.redact import redact_uri

    if run_id is None:
        report.mlflow_url = report.mlflow_trials_url = None
        return
    url = run_url(tracking_uri, run_id)
    report.mlflow_url = None if url is None else redact_uri(url)
    url = runs_table_url(
        tracking_uri,
        run_id,
        filter_string=f"tags.`{names.SEARCH_ID}` = '{report.search_id}' "
        f"AND tags.`{names.KIND}` = '{names.KIND_TRIAL}'",
        order_by_metric=SUMMARY_OBJECTIVE,
        ascending=report.mode == "min",
    )
    report.mlflow_trials_url = None if url is None else redact_uri(url)
