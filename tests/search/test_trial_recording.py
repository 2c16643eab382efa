"""One trial, two recorders: the live `TrialTracker` (Tune's events) and `sync` (Tune's files)
record the same run — parameters, tags, metrics, status and reason — into a `MemorySink`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from reset_tune import names
from reset_tune.engine import train
from reset_tune.search import SearchSpec
from reset_tune.search.record import SearchRecord
from reset_tune.search.sync import record_tune_trial
from reset_tune.search.tracker import TrialTracker
from reset_tune.search.trainable import FAILURE_REASON, RUNNING_OBJECTIVE, SEED_INDEX, final_row
from reset_tune.search.trial_run import SUMMARY_OBJECTIVE, SUMMARY_TEST_ACC
from reset_tune.search.tune_files import read_trial
from reset_tune.tracking import MemorySink

SEARCH_ID = "s-recording"


@pytest.fixture(scope="module")
def spec():
    return SearchSpec.from_dict(
        {
            "train": {"dataset": "digits", "model": "mlp", "steps": 100, "eval_every": 50},
            "params": {
                "reset_prob": {"type": "loguniform", "low": 0.005, "high": 0.05},
                "lr": {"type": "loguniform", "low": 0.01, "high": 0.2},
            },
            "scheduler": {"type": "asha", "grace_period": 50},
        },
        source="test spec",
    )


@pytest.fixture(scope="module")
def rows(spec):
    """The rows one real trial of `spec` reports to Tune, its final row last."""
    result = train(spec.config_for({"resetting": "on", "reset_prob": 0.02, "lr": 0.1}))
    reported = [
        {**h, SEED_INDEX: 0, RUNNING_OBJECTIVE: h[names.VAL_ACC]} for h in result.history[:-1]
    ]
    last = {**result.history[-1], SEED_INDEX: 0, RUNNING_OBJECTIVE: result.best_val_acc}
    return [*reported, {**last, **final_row(spec, [result])}]


# (trial id, reported rows, how it ended): a complete trial, a pruned one, a failed one.
def _cases(rows):
    failed = {names.STEP: 50, FAILURE_REASON: "diverged at step 50"}
    return [("t_complete", rows, "complete"), ("t_pruned", rows[:1], "complete"),
            ("t_failed", [rows[0], failed], "error")]  # fmt: skip


def _record_live(spec, params, cases):
    sink = MemorySink()
    parent = sink.start_search(SEARCH_ID)
    tracker = TrialTracker(sink, parent, spec, SEARCH_ID, trial_number=lambda t: int(t[-1:] == "d"))
    for trial_id, reported, end in cases:
        trial = SimpleNamespace(trial_id=trial_id, config=params, get_error=lambda: None)
        tracker.on_trial_start(0, [], trial)
        for row in reported:
            tracker.on_trial_result(0, [], trial, row)
        if end == "complete":
            tracker.on_trial_complete(0, [], trial)
        else:
            tracker.on_trial_error(0, [], trial)
    return sink


def _record_by_sync(spec, params, cases, tmp_path: Path):
    sink = MemorySink()
    parent = sink.start_search(SEARCH_ID)
    record = SearchRecord(
        search_id=SEARCH_ID,
        experiment_name="recording",
        spec={},
        spec_source="test spec",
        spec_text="",
        tracking_uri="memory",
        optuna_storage="",
        target_trials=3,
        directory=str(tmp_path),
        trial_numbers={t: int(t[-1:] == "d") for t, _, _ in cases},
    )
    for trial_id, reported, _end in cases:
        folder = tmp_path / trial_id
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(params))
        lines = [json.dumps({**row, "trial_id": trial_id}) for row in reported]
        (folder / "result.json").write_text("\n".join(lines) + "\n")
        trial = read_trial(folder)
        assert trial is not None
        record_tune_trial(sink, parent, spec, record, trial)
    return sink


def _runs(sink: MemorySink) -> dict[str, object]:
    out = {}
    for run in sink.runs.values():
        if run.kind != "trial":
            continue
        history = {key: sink.history(run.run_id, key) for key in (names.VAL_ACC, names.VAL_LOSS)}
        out[run.tags["reset_tune.trial_id"]] = (
            run.run_key,
            run.run_name,
            run.params,
            run.tags,
            history,
            run.summary_metrics,
            run.status,
            run.failure_reason,
            sorted(run.artifacts),
        )
    return out


def test_a_trial_recorded_live_and_by_sync_is_the_same_run(spec, rows, tmp_path):
    params = {"resetting": "on", "reset_prob": 0.02, "lr": 0.1}
    cases = _cases(rows)
    live = _runs(_record_live(spec, params, cases))
    synced = _runs(_record_by_sync(spec, params, cases, tmp_path))

    assert sorted(live) == ["t_complete", "t_failed", "t_pruned"]
    assert live == synced
    # What they agree on is the real thing, not two empty records.
    assert live["t_complete"][6] == "FINISHED" and live["t_complete"][5][SUMMARY_TEST_ACC] > 0
    assert len(live["t_complete"][4][names.VAL_ACC]) == 2
    assert live["t_pruned"][6] == "KILLED"
    assert live["t_pruned"][7] == "stopped early by the scheduler at step 50"
    assert (live["t_failed"][6], live["t_failed"][7]) == ("FAILED", "diverged at step 50")


def test_a_trial_run_holds_what_a_reader_filters_on_once_and_its_arm(spec, rows):
    """Searched params plus the fixed ones people filter on; the arm in the run's name; each
    value under one name (no running objective, no summary key twice); an r = 0 trial logs no
    reset settings and no reset metrics."""
    resetting = _runs(_record_live(spec, {"resetting": "on", "reset_prob": 0.02, "lr": 0.1},
                                   _cases(rows)[:1]))["t_complete"]  # fmt: skip
    _key, name, params, _tags, _history, summary, *_ = resetting
    assert name == "trial-0000 r=0.02"
    assert set(params) == {"dataset", "noise", "model", "steps", "seed", "reset_prob", "lr",
                           "resetting"}  # fmt: skip
    assert summary[SUMMARY_OBJECTIVE] == pytest.approx(rows[-1]["objective"])
    # val_acc is the objective: its value at θbest is logged once, as the objective.
    assert "summary/val_acc" not in summary and "summary/val_loss" in summary
    assert all(key.startswith("summary/") for key in summary)

    sink = _record_live(spec, {"resetting": "off", "lr": 0.1}, _cases(rows)[:1])
    baseline = next(r for r in sink.runs.values() if r.kind == "trial")
    assert baseline.run_name == "trial-0000 r=0"
    assert set(baseline.params) == {"dataset", "noise", "model", "steps", "seed", "reset_prob",
                                    "lr", "resetting"}  # fmt: skip
    logged = {key for _step, key, _value in baseline.metrics}
    assert names.VAL_ACC in logged
    assert not logged & {names.RESET_ARMED, names.RESET_COUNT, RUNNING_OBJECTIVE}
