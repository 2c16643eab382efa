"""The dynamics probe's estimators on problems where v and D are known, and on a real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reset_tune.config import TrainConfig
from reset_tune.recommend import probe as probe_module
from reset_tune.recommend.probe import (
    DISPLACEMENT,
    GRADIENT,
    HELPS,
    ProbePoint,
    ProbeResult,
    direction_to_best,
    estimate_drift_diffusion,
    probe_dynamics,
    projected_minibatch_gradients,
)


class LinearLoss(torch.nn.Module):
    """loss(batch) = mean_i a_i · θ: its minibatch gradient is the batch mean of the a_i."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(dim, dtype=torch.float64))


def test_gradient_projection_gives_the_known_drift_and_diffusion():
    dim, batch, mean_along_u, sd = 5, 8, 0.3, 2.0
    model = LinearLoss(dim)
    u = torch.zeros(dim, dtype=torch.float64)
    u[0] = 1.0
    generator = torch.Generator().manual_seed(0)

    def loss_of_batch(_: int) -> torch.Tensor:
        a = torch.randn(batch, dim, generator=generator, dtype=torch.float64) * sd
        a[:, 0] += mean_along_u
        return (a @ model.theta).mean()

    projections = projected_minibatch_gradients(
        model, loss_of_batch, {"theta": u}, minibatches=4000
    )
    eta = 0.1
    point = ProbePoint(step=100, best_step=0, distance=1.0, step_time=eta,
                       projections=tuple(projections))  # fmt: skip
    # Gradient mean along u is +0.3: SGD moves against it, i.e. away from θbest: v = −0.3.
    assert point.drift == pytest.approx(-mean_along_u, abs=0.03)
    # var(g·u) = sd² / batch, so D = η sd² / (2 batch).
    assert point.diffusion == pytest.approx(eta * sd**2 / (2 * batch), rel=0.08)


def test_weight_decay_adds_its_term_to_each_projection():
    model = LinearLoss(3)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))
    u = {"theta": torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)}

    def zero_loss(_: int) -> torch.Tensor:
        return (model.theta * 0).sum()

    assert projected_minibatch_gradients(
        model, zero_loss, u, minibatches=2, weight_decay=0.1
    ) == pytest.approx([0.2, 0.2])


def test_displacement_drift_and_peclet_on_a_synthetic_walk():
    rng = np.random.default_rng(0)
    eta, speed, variance = 0.05, 0.02, 0.004  # distance grows by `speed` per unit of time
    points = []
    for i in range(10):
        step = 400 + 25 * i
        distance = 1.0 + speed * eta * 25 * i
        projections = rng.normal(0.0, math.sqrt(variance), 200)
        points.append(ProbePoint(step, 300, distance, eta, tuple(projections)))
    figures = estimate_drift_diffusion(points, estimator=DISPLACEMENT, bootstrap=200)
    assert figures.drift_estimator == DISPLACEMENT
    assert figures.drift == pytest.approx(-speed, rel=1e-9)
    assert figures.diffusion == pytest.approx(eta * variance / 2, rel=0.15)
    expected_pe = figures.distance * figures.drift / (2 * figures.diffusion)
    assert figures.peclet == pytest.approx(expected_pe)
    assert figures.peclet < 0 and figures.verdict == HELPS
    assert figures.reset_prob > 0
    low, high = figures.reset_prob_interval
    assert low <= figures.reset_prob <= high
    # The gradient estimator sees zero-mean projections here: no drift along u.
    gradient = estimate_drift_diffusion(points, estimator=GRADIENT, bootstrap=50)
    assert abs(gradient.drift) < 3 * math.sqrt(variance / 200)


def test_a_new_best_restarts_the_distance_series():
    common = dict(step_time=0.1, projections=(0.1, -0.1, 0.2))
    points = [
        ProbePoint(step=100, best_step=50, distance=1.0, **common),
        ProbePoint(step=125, best_step=50, distance=1.5, **common),
        ProbePoint(step=150, best_step=150, distance=0.0, **common),  # a new θbest: skipped
        ProbePoint(step=175, best_step=150, distance=0.2, **common),
        ProbePoint(step=200, best_step=150, distance=0.7, **common),
    ]
    figures = estimate_drift_diffusion(points, bootstrap=20)
    # Pairs (100→125) and (175→200): ΔL = 1.0 over Δt = 2 × 25 × 0.1.
    assert figures.displacement_drift == pytest.approx(-1.0 / 5.0)


def test_the_direction_points_to_the_best_weights():
    model = LinearLoss(2)
    best = {"theta": torch.tensor([3.0, 4.0], dtype=torch.float64)}
    direction, distance = direction_to_best(model, best)
    assert distance == pytest.approx(5.0)
    assert direction["theta"].tolist() == pytest.approx([0.6, 0.8])


@pytest.mark.integration  # trains for many seconds
def test_a_real_probe_measures_after_validation_stops_improving():
    torch.set_num_threads(1)
    config = TrainConfig(dataset="digits", noise="symmetric:0.5", batch_size=16, steps=1500,
                         patience=100, device="cpu")  # fmt: skip
    result = probe_dynamics(config, minibatches=8, bootstrap=100)
    assert result.armed_step is not None
    # It stops once the window after arming is measured, not at the end of the budget.
    assert result.steps_trained < config.steps
    assert result.points[0].step == result.armed_step
    assert result.points[-1].step - result.armed_step >= 100
    f = result.figures
    assert f is not None and f.diffusion > 0 and f.distance > 0
    assert f.level == 0.9 and f.peclet_interval[0] <= f.peclet <= f.peclet_interval[1]
    # The probe ran without resetting, whatever the config said.
    assert result.config["reset_prob"] == 0.0
    assert ProbeResult.from_dict(result.to_dict()).to_dict() == result.to_dict()


def test_a_run_that_never_stops_improving_says_resetting_cannot_act(monkeypatch):
    config = TrainConfig(dataset="digits", noise="none", steps=100, eval_every=50,
                         patience=1000, device="cpu")  # fmt: skip
    result = probe_dynamics(config)
    assert result.armed_step is None and result.figures is None
    assert result.verdict == probe_module.NEVER_ARMED
    assert "did not start" in result.describe()


def _evaluation(step, train_acc, val_acc):
    return {"step": float(step), "train/acc": train_acc, "val/acc": val_acc}


def test_lasting_memorisation_counts_a_persistent_gap_and_discards_a_transient_one():
    from reset_tune.recommend.probe import LastingMemorisation

    # n_val 1000 and 25 × 32 samples per evaluation: the threshold is about 0.05 + 0.05.
    transient = LastingMemorisation(n_val=1000, batch_size=32)
    gaps = [0.4, 0.4, 0.0, 0.0, 0.0, 0.0]  # an unstable start, then nothing
    for i, gap in enumerate(gaps):
        transient.observe(_evaluation(25 * (i + 1), 0.5 + gap / 2, 0.5 - gap / 2))
    assert transient.onset_step is None and transient.transient_onsets == [25]
    assert transient.max_gap == pytest.approx(0.4)

    lasting = LastingMemorisation(n_val=1000, batch_size=32)
    gaps = [0.4, 0.4, 0.0, 0.0, 0.0, 0.3, 0.35, 0.4, 0.05, 0.45]  # one dip is not a reversal
    for i, gap in enumerate(gaps):
        lasting.observe(_evaluation(25 * (i + 1), 0.5 + gap / 2, 0.5 - gap / 2))
    assert lasting.transient_onsets == [25] and lasting.onset_step == 150
