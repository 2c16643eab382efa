"""The driver's `TUNE_*` settings hold while a search runs and are gone afterwards."""

from __future__ import annotations

import os

import pytest

from reset_tune.search.driver import tune_environment

LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
STRICT = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
SYNC_WARNING = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"


@pytest.fixture
def clean_environment(monkeypatch):
    for key in (LOGGERS, STRICT, SYNC_WARNING):
        monkeypatch.delenv(key, raising=False)


def test_settings_hold_inside_and_are_removed_afterwards(clean_environment):
    before = dict(os.environ)
    with tune_environment():
        assert os.environ[LOGGERS] == "1"
        assert os.environ[STRICT] == "1"
        assert os.environ[SYNC_WARNING] == "0"
    assert dict(os.environ) == before


def test_a_callers_values_come_back_and_their_threshold_wins(clean_environment, monkeypatch):
    monkeypatch.setenv(LOGGERS, "0")
    monkeypatch.setenv(SYNC_WARNING, "30")
    before = dict(os.environ)
    with tune_environment():
        assert os.environ[LOGGERS] == "1"  # the driver needs its own loggers only
        assert os.environ[SYNC_WARNING] == "30"
    assert dict(os.environ) == before


def test_settings_are_removed_when_the_search_raises(clean_environment):
    before = dict(os.environ)
    with pytest.raises(KeyboardInterrupt), tune_environment():
        raise KeyboardInterrupt
    assert dict(os.environ) == before
