"""The resetter's call surface for a library user: `observe` with the one metric it ranks by, and
`best_model_state()` as a copy that later training cannot change."""

from __future__ import annotations

import pytest
import torch

from reset_tune.resetting import StochasticResetter


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _nudge_(model: torch.nn.Module, amount: float) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(amount)


@pytest.mark.parametrize(
    ("metric", "given", "missing"),
    [("val_loss", {"val_loss": 1.0}, "val_acc"), ("val_acc", {"val_acc": 0.5}, "val_loss")],
)
def test_observe_needs_only_the_checkpoint_metric(metric, given, missing):
    resetter = StochasticResetter(_model(), reset_prob=0.1, checkpoint_metric=metric)
    assert resetter.observe(**given) is True
    assert resetter.best_value == next(iter(given.values()))
    assert getattr(resetter, f"best_{missing}") is None
    assert resetter.armed  # patience 0: the first evaluation arms, as with both metrics


@pytest.mark.parametrize(("metric", "given"), [("val_loss", "val_acc"), ("val_acc", "val_loss")])
def test_observe_without_the_checkpoint_metric_says_which_and_changes_nothing(metric, given):
    resetter = StochasticResetter(_model(), reset_prob=0.1, checkpoint_metric=metric)
    with pytest.raises(ValueError, match=f"observe\\({metric}=...\\)"):
        resetter.observe(**{given: 0.5})
    assert resetter.best_step is None and not resetter.armed


def test_best_model_state_is_a_copy_that_later_bests_leave_alone():
    model = _model()
    resetter = StochasticResetter(model, reset_prob=0.0, patience=1000)
    resetter.observe(val_loss=1.0)
    first = resetter.best_model_state()
    expected = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    _nudge_(model, 0.5)
    resetter.step()
    assert resetter.observe(val_loss=0.5) is True  # a new θbest, written over the old in place
    assert all(torch.equal(first[name], expected[name]) for name in expected)

    second = resetter.best_model_state()
    second["0.weight"].zero_()  # the caller's copy: θbest itself is untouched
    fresh = _model()
    resetter.copy_best_to_(fresh)
    assert torch.equal(fresh.state_dict()["0.weight"], model.state_dict()["0.weight"])
    assert not torch.equal(fresh.state_dict()["0.weight"], torch.zeros_like(second["0.weight"]))
