"""What a search's parent run holds at its end, read as a report: the winners' figures under
``summary/``, a description that leads with the gain, the winning trials tagged and marked."""

from __future__ import annotations

from reset_tune.search.parent_run import BEST_MARK, finish_search_run, search_params
from reset_tune.search.record import SearchRecord
from reset_tune.search.report import SearchReport, TrialOutcome
from reset_tune.search.spec import SearchSpec
from reset_tune.search.trial_run import trial_run_key
from reset_tune.search.tune_files import COMPLETE, FAILED
from reset_tune.tracking import MemorySink, names

SEARCH_ID = "s-report"


def _trial(number: int, reset_prob: float, objective: float | None, test_acc: float | None):
    return TrialOutcome(
        label=f"trial-{number:04d}",
        tune_trial_id=f"t{number}",
        outcome=COMPLETE if objective is not None else FAILED,
        params={"reset_prob": reset_prob},
        config={"reset_prob": reset_prob, "lr": 0.1, "batch_size": 32},
        objective=objective,
        test_acc=test_acc,
    )


def _finish(trials: list[TrialOutcome]) -> tuple[MemorySink, str]:
    sink = MemorySink()
    parent = sink.start_search(SEARCH_ID, run_key=SEARCH_ID)
    for trial in trials:
        sink.start_trial(
            parent, trial.tune_trial_id, run_key=trial_run_key(SEARCH_ID, trial.tune_trial_id)
        )
    record = SearchRecord(
        search_id=SEARCH_ID, experiment_name="report", spec={}, spec_source="test",
        spec_text="trials: 4\n", tracking_uri="memory", optuna_storage="", target_trials=4,
    )  # fmt: skip
    report = SearchReport(SEARCH_ID, "val_acc", "max", trials, {})
    finish_search_run(sink, parent, record, report)
    return sink, parent


def test_the_parent_run_reads_as_the_searchs_report():
    trials = [
        _trial(0, 0.0, 0.70, 0.80),
        _trial(1, 0.02, 0.75, 0.84),  # the best
        _trial(2, 0.005, 0.72, 0.82),
        _trial(3, 0.0, None, None),  # failed
    ]
    sink, parent = _finish(trials)
    run = sink.runs[parent]
    metrics = run.summary_metrics
    assert metrics["summary/objective"] == 0.75 and metrics["summary/test_acc"] == 0.84
    assert metrics["summary/r0_objective"] == 0.70 and metrics["summary/r0_test_acc"] == 0.80
    assert abs(metrics["summary/gain_test_acc"] - 0.04) < 1e-12
    assert metrics["summary/trials"] == 4 and metrics["summary/trials_failed"] == 1
    # No summary value under two names.
    assert not {k for k in metrics if k.startswith(("best/", "baseline/", "gain/", "trials/"))}

    note = run.tags[names.MLFLOW_NOTE]
    assert note.splitlines()[0].startswith("#### Gain of resetting: +4.0 points")
    assert "trial-0001 r=0.02" in note and "trial-0000 r=0" in note and "84.0 %" in note

    by_key = {r.run_key: r for r in sink.runs.values() if r.kind == "trial"}
    best = by_key[trial_run_key(SEARCH_ID, "t1")]
    baseline = by_key[trial_run_key(SEARCH_ID, "t0")]
    assert best.tags[names.BEST] == names.BEST_OVERALL
    assert best.tags[names.MLFLOW_RUN_NAME] == f"trial-0001 r=0.02 {BEST_MARK} best"
    assert baseline.tags[names.BEST] == names.BEST_R0
    assert names.BEST not in by_key[trial_run_key(SEARCH_ID, "t2")].tags


def test_a_best_trial_without_resetting_is_both_winners_in_one_tag():
    sink, _ = _finish([_trial(0, 0.0, 0.80, 0.85), _trial(1, 0.01, 0.70, 0.83)])
    (best,) = [r for r in sink.runs.values() if names.BEST in r.tags]
    assert best.tags[names.BEST] == f"{names.BEST_OVERALL}, {names.BEST_R0}"
    assert best.tags[names.MLFLOW_RUN_NAME] == f"trial-0000 r=0 {BEST_MARK} best"


def test_parent_params_name_things_as_the_trials_do():
    spec = SearchSpec.from_dict(
        {
            "train": {"dataset": "digits", "model": "mlp", "steps": 100},
            "params": {"reset_prob": {"type": "loguniform", "low": 0.005, "high": 0.05}},
        },
        source="test spec",
    )
    params = search_params(spec)
    assert params["steps"] == "100" and params["objective_metric"] == "val_acc"
    assert "train.steps" not in params and "objective" not in params
