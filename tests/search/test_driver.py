"""The driver's parts that need no cluster: opening a search and its study, finding searches,
refusing an unreachable cluster quickly."""

from __future__ import annotations

import time

import pytest

from reset_tune.errors import ConfigError
from reset_tune.search import load_spec, suggest
from reset_tune.search.driver import SearchFailed, SearchOptions, _check_reachable, _open_search
from reset_tune.search.driver import _open_study as open_study
from reset_tune.search.record import find_search
from reset_tune.tracking.server import free_port


def test_start_up_trials_alternate_resetting_on_and_off(tmp_path):
    # With seed 0 a fair coin would give six r = 0 trials in a row for this spec.
    options = SearchOptions(state=tmp_path)
    record, spec, _ = _open_search("search_spaces/default.yaml", options)
    study = open_study(spec, record, options)
    arms = []
    for _ in range(spec.sampler.startup_trials + 2):
        trial = study.ask()
        config = suggest(trial, spec)
        arms.append(trial.params["resetting"])
        assert (config["reset_prob"] > 0) == (arms[-1] == "on")
        study.tell(trial, 0.5)
    startup = spec.sampler.startup_trials
    assert arms[:startup] == ["on", "off"] * (startup // 2)


def test_seed_configurations_run_first_and_bad_ones_stop_before_anything(tmp_path):
    good = tmp_path / "seeds.yaml"
    good.write_text("- {reset_prob: 0, lr: 0.05, batch_size: 32}\n")
    options = SearchOptions(state=tmp_path, seed_configs=str(good))
    record, spec, seeds = _open_search("search_spaces/default.yaml", options)
    study = open_study(spec, record, options, seeds)
    first = study.ask()
    suggest(first, spec)
    assert first.params == {"resetting": "off", "lr": 0.05, "batch_size": 32}

    bad = tmp_path / "bad.yaml"
    bad.write_text("- {reset_prob: 0.5, lr: 0.05, batch_size: 32}\n")
    state = tmp_path / "other"
    with pytest.raises(ConfigError, match=r"bad.yaml\[0\].*reset_prob"):
        _open_search(
            "search_spaces/default.yaml", SearchOptions(state=state, seed_configs=str(bad))
        )
    assert not state.exists()  # no record, no study


def test_a_specs_first_trials_run_before_everything_else(tmp_path):
    spec_text = open("search_spaces/default.yaml").read() + (
        "first_trials:\n"
        "  - {reset_prob: 0.01, reset_layers: head, lr: 0.05, batch_size: 32}\n"
        "  - {reset_prob: 0, lr: 0.05, batch_size: 32}\n"
    )
    path = tmp_path / "with-first.yaml"
    path.write_text(spec_text)
    options = SearchOptions(state=tmp_path / "state")
    record, spec, seeds = _open_search(str(path), options)
    study = open_study(spec, record, options, seeds)
    asked = []
    for _ in range(3):
        trial = study.ask()
        asked.append(suggest(trial, spec))
        study.tell(trial, 0.5)
    assert asked[0]["reset_prob"] == 0.01 and asked[0]["reset_layers"] == "head"
    assert asked[1]["reset_prob"] == 0 and asked[1]["lr"] == 0.05
    assert asked[2]["reset_prob"] > 0  # then the alternating start-up trials, "on" first

    bad = tmp_path / "bad-first.yaml"
    bad.write_text(spec_text.replace("reset_prob: 0.01", "reset_prob: 0.5"))
    state = tmp_path / "other"
    with pytest.raises(ConfigError, match=r"first_trials\[0\].*reset_prob"):
        _open_search(str(bad), SearchOptions(state=state))
    assert not state.exists()


def test_resume_finds_the_latest_search_or_says_what_exists(tmp_path):
    with pytest.raises(ConfigError, match="no search to resume in"):
        find_search(tmp_path, None)
    first, _, _ = _open_search("search_spaces/default.yaml", SearchOptions(state=tmp_path))
    time.sleep(0.01)
    second, _, _ = _open_search("search_spaces/fashion-mnist.yaml", SearchOptions(state=tmp_path))
    assert find_search(tmp_path, None).search_id == second.search_id
    assert find_search(tmp_path, None, spec_name="reset-tune").search_id == first.search_id
    with pytest.raises(ConfigError, match=f"no search 'nope'.*{first.search_id}"):
        find_search(tmp_path, "nope")
    resumed, spec, _ = _open_search(
        "search_spaces/default.yaml", SearchOptions(state=tmp_path, resume=True)
    )
    assert resumed.search_id == first.search_id
    assert spec.model_dump() == load_spec("search_spaces/default.yaml").model_dump()
    with pytest.raises(ConfigError, match="differs from the one search"):
        _open_search(
            "search_spaces/fashion-mnist.yaml",
            SearchOptions(state=tmp_path, resume=True, search_id=first.search_id),
        )


def test_an_unreachable_cluster_fails_in_seconds_with_the_fix():
    started = time.monotonic()
    with pytest.raises(SearchFailed, match="reset-tune up"):
        _check_reachable(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5
