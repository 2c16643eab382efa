"""Plotting from the library leaves matplotlib's global state (backend, pyplot figures) alone."""

from __future__ import annotations

import matplotlib
import pytest

from reset_tune import names
from reset_tune.engine.result import TrainResult
from reset_tune.plots import render_curves
from reset_tune.search.report import SearchReport, TrialOutcome
from reset_tune.search.tune_files import COMPLETE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def caller_uses_svg():
    """A caller who chose another non-interactive backend and holds an open pyplot figure."""
    import matplotlib.pyplot as plt

    previous = matplotlib.get_backend()
    plt.switch_backend("svg")
    figure = plt.figure()
    yield plt, figure
    plt.close(figure)
    plt.switch_backend(previous)


def _result(reset_prob: float) -> TrainResult:
    history = [
        {
            names.STEP: float(step),
            names.VAL_ACC: 0.5 + step / 1000,
            names.VAL_LOSS: 1.5 - step / 1000,
            names.MEMORISATION: step / 400,
            names.MEMORISATION_GAP: step / 500,
        }
        for step in (50, 100, 150, 200)
    ]
    return TrainResult(
        test_acc=0.7, final_test_acc=0.65, best_step=150, best_val_loss=1.35, best_val_acc=0.65,
        num_resets=2 if reset_prob else 0, reset_steps=[120, 180] if reset_prob else [],
        armed_step=100 if reset_prob else None, checkpoint_step=150, steps_completed=200,
        stopped_early=None, wall_time_s=1.0, steps_per_s=200.0, memorisation_step=100,
        history=history,
    )  # fmt: skip


def _outcome(label: str, reset_prob: float, test_acc: float) -> TrialOutcome:
    return TrialOutcome(
        label=label,
        tune_trial_id=label,
        outcome=COMPLETE,
        params={"reset_prob": reset_prob},
        config={"reset_prob": reset_prob, "batch_size": 32},
        objective=test_acc - 0.05,
        test_acc=test_acc,
    )


def test_render_curves_keeps_the_callers_backend_and_figures(caller_uses_svg):
    plt, figure = caller_uses_svg
    png = render_curves({"resetting": _result(0.01), "baseline": _result(0.0)}, title="t")
    assert png.startswith(PNG_MAGIC)
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == [figure.number]
    assert plt.gcf() is figure


def test_comparison_plot_keeps_the_callers_backend_and_figures(caller_uses_svg):
    plt, figure = caller_uses_svg
    trials = [_outcome("a", 0.01, 0.72), _outcome("b", 0.003, 0.70), _outcome("c", 0.0, 0.69)]
    png = SearchReport("s", "val_acc", "max", trials, {}).comparison_plot()
    assert png.startswith(PNG_MAGIC)
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == [figure.number]
    assert plt.gcf() is figure
