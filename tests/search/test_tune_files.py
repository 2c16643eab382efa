"""Reading Tune's trial folders: a trial that never reported still gets a usable id."""

from __future__ import annotations

import json

from reset_tune.search.tune_files import read_trial, trial_id_from_folder
from reset_tune.tracking.sink import check_run_key


def test_a_trial_without_results_takes_tunes_id_from_its_folder_name(tmp_path):
    folder = tmp_path / "run_trial_afc06994_2_lr=0.05,reset_prob=0.01_2026-12-04_15-00-00"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"lr": 0.05}))
    trial = read_trial(folder)
    assert trial is not None
    assert trial.trial_id == "afc06994_00002"
    assert check_run_key(trial.trial_id) == trial.trial_id


def test_a_reported_trial_id_wins_over_the_folder_name(tmp_path):
    folder = tmp_path / "run_trial_afc06994_2_lr=0.05"
    folder.mkdir()
    (folder / "params.json").write_text("{}")
    (folder / "result.json").write_text(json.dumps({"trial_id": "afc06994_00007"}) + "\n")
    assert read_trial(folder).trial_id == "afc06994_00007"


def test_a_folder_name_without_a_tune_id_becomes_a_valid_run_key():
    key = trial_id_from_folder("odd name=1,x/y")
    assert check_run_key(key) == key
    assert "=" not in key and "," not in key
