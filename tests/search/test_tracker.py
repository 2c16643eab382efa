"""The driver's Tune callback and the readers of Tune's files, without a cluster: Tune's events
are replayed by hand into a `MemorySink`, rows are those a real trial reports."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import pytest

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.engine import train
from reset_tune.search import SearchSpec
from reset_tune.search.report import SearchReport, outcomes
from reset_tune.search.tracker import TrialTracker, trial_run_key
from reset_tune.search.trainable import (
    EVALUATIONS,
    FAILURE_REASON,
    OBJECTIVE,
    RUNNING_OBJECTIVE,
    SEED_INDEX,
    final_row,
)
from reset_tune.search.trial_run import SUMMARY_OBJECTIVE, SUMMARY_TEST_ACC
from reset_tune.search.tune_files import COMPLETE, FAILED, INTERRUPTED, PRUNED, read_experiment
from reset_tune.tracking import MemorySink

STEPS = 100


@pytest.fixture(scope="module")
def spec():
    return SearchSpec.from_dict(
        {
            "train": {"dataset": "digits", "model": "mlp", "steps": STEPS, "eval_every": 50},
            "params": {
                "reset_prob": {"type": "loguniform", "low": 0.005, "high": 0.05},
                "lr": {"type": "loguniform", "low": 0.01, "high": 0.2},
            },
        },
        source="test spec",
    )


@pytest.fixture(scope="module")
def finished(spec):
    """What one real trial of `spec` produced: its Tune config, result, rows as reported."""
    params = {"resetting": "on", "reset_prob": 0.02, "lr": 0.1}
    result = train(spec.config_for(params))
    rows = [{**h, SEED_INDEX: 0, RUNNING_OBJECTIVE: h[names.VAL_ACC]} for h in result.history[:-1]]
    last = {**result.history[-1], SEED_INDEX: 0, RUNNING_OBJECTIVE: result.best_val_acc}
    rows.append({**last, **final_row(spec, [result])})
    return SimpleNamespace(params=params, result=result, rows=rows)


def _trial(trial_id, config, *, last_result=None, error=None):
    return SimpleNamespace(
        trial_id=trial_id,
        config=config,
        last_result=last_result or {},
        status="RUNNING",
        get_error=lambda: error,
    )


def test_a_trial_becomes_one_nested_run_with_each_evaluation_once(spec, finished):
    sink = MemorySink()
    parent = sink.start_search("s1")
    tracker = TrialTracker(sink, parent, spec, "s1", trial_number=lambda _id: 7)
    trial = _trial("abc_00000", finished.params)
    tracker.on_trial_start(0, [], trial)
    first, *rest = finished.rows
    for row in [first, first, *rest]:  # a restarted trial reports an evaluation again
        tracker.on_trial_result(0, [], trial, row)
    tracker.on_trial_complete(0, [], trial)

    (run,) = [r for r in sink.runs.values() if r.kind == "trial"]
    assert run.parent_run_id == parent and run.run_name == "trial-0007 r=0.02"
    assert run.run_key == trial_run_key("s1", "abc_00000")
    assert run.status == "FINISHED"
    assert float(run.params["reset_prob"]) == 0.02 and run.params["resetting"] == "on"
    assert run.params["model"] == "mlp" and run.tags["reset_tune.dataset"] == "digits"
    assert sink.history(run.run_id, names.VAL_ACC) == [
        (int(h[names.STEP]), h[names.VAL_ACC]) for h in finished.result.history
    ]
    assert run.summary_metrics[SUMMARY_TEST_ACC] == finished.result.test_acc
    assert run.summary_metrics["summary/resets"] == finished.result.num_resets
    assert run.summary_metrics[SUMMARY_OBJECTIVE] == finished.result.best_val_acc
    assert run.artifacts["curves.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(run.artifacts["config.json"])["lr"] == 0.1

    # The same evaluations reported several to a row (as trials batch them) log the same curve.
    batched = {**finished.rows[-1], EVALUATIONS: json.dumps(finished.rows[:-1])}
    other = _trial("abc_00001", finished.params)
    tracker.on_trial_start(0, [], other)
    tracker.on_trial_result(0, [], other, batched)
    tracker.on_trial_complete(0, [], other)
    (second,) = [r for r in sink.runs.values() if r.tags.get("reset_tune.trial_id") == "abc_00001"]
    assert sink.history(second.run_id, names.VAL_ACC) == sink.history(run.run_id, names.VAL_ACC)


def test_pruned_and_failed_trials_end_with_their_status_and_reason(spec, finished):
    sink = MemorySink()
    parent = sink.start_search("s2")
    tracker = TrialTracker(sink, parent, spec, "s2")
    pruned = _trial("p_00001", finished.params)
    tracker.on_trial_start(0, [], pruned)
    tracker.on_trial_result(0, [], pruned, finished.rows[0])
    tracker.on_trial_complete(0, [], pruned)
    diverged = _trial("d_00002", finished.params)
    tracker.on_trial_start(0, [], diverged)
    tracker.on_trial_result(0, [], diverged, {names.STEP: 50, FAILURE_REASON: "diverged at 50"})
    tracker.on_trial_error(0, [], diverged)
    crashed = _trial("c_00003", finished.params, error="Traceback ...\nRuntimeError: node lost")
    tracker.on_trial_start(0, [], crashed)
    tracker.on_trial_error(0, [], crashed)

    runs = {r.tags["reset_tune.trial_id"]: r for r in sink.runs.values() if r.kind == "trial"}
    assert runs["p_00001"].status == "KILLED" and "step 50" in runs["p_00001"].failure_reason
    assert runs["d_00002"].status == "FAILED"
    assert runs["d_00002"].failure_reason == "diverged at 50"
    assert runs["c_00003"].failure_reason == "RuntimeError: node lost"


def test_tune_pickles_an_inert_tracker(spec):
    sink = MemorySink()
    tracker = TrialTracker(sink, sink.start_search("s3"), spec, "s3")
    copy = pickle.loads(pickle.dumps(tracker))  # the live one holds a sink with a lock
    copy.on_trial_start(0, [], _trial("x", {"resetting": "on", "reset_prob": 0.01, "lr": 0.1}))
    assert [r.kind for r in sink.runs.values()] == ["search"]


def _write_trial(root, name, params, rows, *, error=None, cut=False):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    lines = [json.dumps({**row, "trial_id": name}) for row in rows]
    text = "\n".join(lines) + "\n"
    if cut:
        text += '{"step": 150, "val/ac'  # the driver was killed mid-write
    (folder / "result.json").write_text(text)
    if error:
        (folder / "error.txt").write_text(error)
    return folder


def test_tune_files_give_each_trial_its_outcome(spec, finished, tmp_path):
    params = finished.params
    _write_trial(tmp_path, "t0", params, finished.rows)
    _write_trial(tmp_path, "t1", params, finished.rows[:1], cut=True)
    _write_trial(tmp_path, "t2", params, [{names.STEP: 50, FAILURE_REASON: "out of memory"}])
    _write_trial(tmp_path, "t3", params, finished.rows[:1], error="boom\nValueError: bad\n")
    (tmp_path / "t4").mkdir()  # no params.json: not a trial folder
    trials = {t.trial_id: t for t in read_experiment(tmp_path)}
    assert sorted(trials) == ["t0", "t1", "t2", "t3"]
    assert [int(r[names.STEP]) for r in trials["t0"].evaluation_rows] == [50, 100]
    assert [int(r[names.STEP]) for r in trials["t1"].evaluation_rows] == [50]

    assert trials["t0"].outcome(pruning=True) == COMPLETE
    assert trials["t1"].outcome(pruning=True) == PRUNED
    assert trials["t1"].outcome(pruning=False) == INTERRUPTED
    assert trials["t1"].outcome(pruning=True, interrupted={"t1"}) == INTERRUPTED
    assert trials["t2"].outcome(pruning=False) == FAILED
    assert trials["t2"].failure_reason == "out of memory"
    assert trials["t3"].failure_reason == "ValueError: bad"

    listed = outcomes(spec, list(trials.values()), numbers={"t0": 0, "t1": 1})
    report = SearchReport("s", "val_acc", "max", listed, {})
    assert report.best.label == "trial-0000"
    assert report.best.test_acc == finished.result.test_acc
    assert report.counts() == {COMPLETE: 1, INTERRUPTED: 1, FAILED: 2}
    assert report.table().splitlines()[2].startswith("trial-0000")


def test_objective_ties_go_to_the_lower_validation_loss(spec, finished):
    def trial(name, val_loss):
        row = dict(finished.rows[-1])
        results = json.loads(row["result_json"])
        results[0]["best_val_loss"] = val_loss
        row["result_json"] = json.dumps(results)
        return SimpleNamespace(
            trial_id=name,
            params=finished.params,
            rows=[row],
            final_row=row,
            failure_reason=None,
            evaluation_rows=[row],
            outcome=lambda **_: COMPLETE,
        )

    listed = outcomes(spec, [trial("a", 1.9), trial("b", 1.7), trial("c", 1.8)], numbers={})
    assert len({t.objective for t in listed}) == 1
    report = SearchReport("s", "val_acc", "max", listed, {})
    assert [t.tune_trial_id for t in report.ranked()] == ["b", "c", "a"]


def test_the_best_is_chosen_by_the_objective_not_by_test_accuracy(spec, finished):
    rows = finished.rows
    better_test = dict(rows[-1])
    result = json.loads(better_test["result_json"])
    result[0]["test_acc"] = 0.999  # better on test, worse on the objective
    result[0]["best_val_acc"] = 0.1
    better_test["result_json"] = json.dumps(result)
    better_test[OBJECTIVE] = 0.1
    trials = [
        SimpleNamespace(
            trial_id=f"t{i}",
            params=finished.params,
            rows=[row],
            final_row=row,
            failure_reason=None,
            evaluation_rows=[row],
            outcome=lambda **_: COMPLETE,
        )
        for i, row in enumerate([better_test, rows[-1]])
    ]
    report = SearchReport("s", "val_acc", "max", outcomes(spec, trials, numbers={}), {})
    assert report.best.tune_trial_id == "t1"
    assert TrainConfig.from_dict(report.best.config).reset_prob == 0.02
