"""Contract checks every resetting policy must pass."""

from __future__ import annotations

import pytest

from reset_tune.errors import ConfigError
from reset_tune.resetting import (
    CheckpointMetric,
    CheckpointPolicy,
    MemorisationArming,
    PatienceArming,
)

METRICS = [CheckpointMetric("val_loss"), CheckpointMetric("val_acc")]


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_metric_contract(metric):
    good, bad = (0.1, 0.9) if metric.name == "val_loss" else (0.9, 0.1)
    assert metric.is_better(bad, None)  # anything beats having no checkpoint
    assert metric.is_better(good, bad)
    assert not metric.is_better(bad, good)
    assert not metric.is_better(good, good)  # ties keep the earlier checkpoint
    assert not metric.is_better(float("nan"), bad)
    assert metric.value(val_loss=0.3, val_acc=0.7) == (0.3 if metric.name == "val_loss" else 0.7)


@pytest.mark.parametrize("patience, warmup", [(0, 0), (50, 0), (0, 100), (30, 200)])
def test_arming_contract(patience, warmup):
    arming = PatienceArming(patience, warmup)
    for step in range(0, 400, 10):
        for best_step in range(0, step + 1, 10):
            expected = step >= warmup and step - best_step >= patience
            assert arming.should_arm(step=step, best_step=best_step) == expected


@pytest.mark.parametrize("patience, warmup", [(0, 0), (50, 0), (0, 100), (30, 200)])
def test_memorisation_arming_contract(patience, warmup):
    patience_rule = PatienceArming(patience, warmup)
    arming = MemorisationArming(patience_rule)
    for step in range(0, 400, 10):
        for best_step in range(0, step + 1, 10):
            plateau = patience_rule.should_arm(step=step, best_step=best_step)
            assert arming.should_arm(step=step, best_step=best_step, memorising=True) == plateau
            assert not arming.should_arm(step=step, best_step=best_step, memorising=False)
            # The patience rule does not look at memorisation.
            for memorising in (None, False, True):
                assert (
                    patience_rule.should_arm(step=step, best_step=best_step, memorising=memorising)
                    == plateau
                )
    with pytest.raises(ValueError, match="memorising"):
        arming.should_arm(step=10, best_step=0)


@pytest.mark.parametrize("adaptive", [True, False])
def test_checkpoint_policy_contract(adaptive):
    policy = CheckpointPolicy(adaptive)
    assert not policy.follows_new_best(armed=False)  # before arming there is no θc to move
    assert policy.follows_new_best(armed=True) == adaptive


def test_bad_policy_settings():
    with pytest.raises(ConfigError, match="val_top5"):
        CheckpointMetric("val_top5")
    with pytest.raises(ConfigError, match="patience=-5"):
        PatienceArming(-5)
