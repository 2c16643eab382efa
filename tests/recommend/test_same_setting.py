"""A past search that profiled and probed exactly this setting, on the same data, spares the
recommendation its own probe; anything less than exactly the same probes again."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from reset_tune.config import TrainConfig
from reset_tune.engine import prepare_data
from reset_tune.recommend import History, recommend
from reset_tune.recommend.history import PastSearch, same_setting
from reset_tune.recommend.probe import probe_config

from .fabricate import past_search

# The module (the package exports its function under the same name).
recommend_module = importlib.import_module("reset_tune.recommend.recommend")

CONFIG = TrainConfig(
    dataset="digits", noise="symmetric:0.4", model="mlp", steps=300, eval_every=50, patience=80
)


@pytest.fixture(scope="module")
def fingerprint() -> str:
    return prepare_data(CONFIG, "cpu").fingerprint


def _probed(config: TrainConfig, fingerprint: str | None, name: str = "past") -> PastSearch:
    """A fabricated past search whose description is the probe of `config` on data with
    `fingerprint`."""
    search = past_search(name, gain=0.02, dataset=config.dataset, model=config.model)
    assert search.description is not None
    probe = dataclasses.replace(search.description.probe, config=probe_config(config).to_dict())
    search.description = dataclasses.replace(search.description, probe=probe)
    search.best_baseline = dataclasses.replace(search.best_baseline, data_fingerprint=fingerprint)
    return search


def test_only_the_same_probe_on_the_same_data_is_the_same_setting(fingerprint):
    same = _probed(CONFIG, fingerprint, "same")
    assert same_setting([same], CONFIG, fingerprint) is same
    # The probe ignores r: a config that differs only in it probes the same run.
    assert same_setting([same], CONFIG.replace(reset_prob=0.01), fingerprint) is same
    assert same_setting([_probed(CONFIG, "other-data")], CONFIG, fingerprint) is None
    assert same_setting([_probed(CONFIG, None)], CONFIG, fingerprint) is None  # not recorded
    for other in (CONFIG.replace(seed=1), CONFIG.replace(batch_size=64), CONFIG.replace(lr=0.01)):
        assert same_setting([_probed(other, fingerprint)], CONFIG, fingerprint) is None
    stated = _probed(CONFIG, fingerprint)
    assert stated.description is not None
    estimate = dataclasses.replace(stated.description.profile.noise_estimate, known_rate=0.4)
    profile = dataclasses.replace(stated.description.profile, noise_estimate=estimate)
    stated.description = dataclasses.replace(stated.description, profile=profile)
    assert same_setting([stated], CONFIG, fingerprint) is None
    searches = [_probed(CONFIG.replace(seed=1), fingerprint), same]
    assert same_setting(searches, CONFIG, fingerprint) is same


def test_recommend_takes_the_description_of_the_same_setting_and_says_so(fingerprint, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("probed again although a past search probed the same setting")

    monkeypatch.setattr(recommend_module, "describe_setting", no_probe)
    same = _probed(CONFIG, fingerprint, "same")
    said: list[str] = []
    answer = recommend(CONFIG, tracking_uri=None, history=History(searches=[same]), log=False,
                       say=said.append)  # fmt: skip
    assert answer.description is same.description
    assert any("past search same" in note for note in answer.notes), answer.notes
    assert any("past search same" in line for line in said), said


@pytest.mark.parametrize("known_noise_rate", [None, 0.4])
def test_recommend_probes_when_no_past_search_is_the_same(
    fingerprint, monkeypatch, known_noise_rate
):
    described = _probed(CONFIG, fingerprint).description
    calls = []

    def probe(config, *, known_noise_rate=None, data=None, **kwargs):
        calls.append((config, known_noise_rate, data.fingerprint))
        return described

    monkeypatch.setattr(recommend_module, "describe_setting", probe)
    searches = [_probed(CONFIG, "other-data")]
    if known_noise_rate is not None:
        # The same probe and data, but the user states a rate: the past profile estimated its own.
        searches.append(_probed(CONFIG, fingerprint))
    history = History(searches=searches)
    answer = recommend(CONFIG, tracking_uri=None, history=history, log=False,
                       known_noise_rate=known_noise_rate)  # fmt: skip
    assert calls == [(CONFIG, known_noise_rate, fingerprint)]
    assert not any("past search" in note for note in answer.notes)
