"""Fabricated settings and past searches for the recommendation-logic tests."""

from __future__ import annotations

from reset_tune.config import TrainConfig
from reset_tune.recommend.history import PastSearch, SettingDescription, TrialRecord
from reset_tune.recommend.probe import DriftDiffusion, ProbeResult
from reset_tune.recommend.profile import DatasetProfile, NoiseEstimate


def description(
    *, noise_rate=0.4, batch_size=32, num_train=1300, model="cnn", peclet=-50.0,
    theory_prob=0.004, classes=10, dataset="digits", armed=True, memorised=True,
    checked=True, steps=2000, weight_decay=5e-4,
) -> SettingDescription:  # fmt: skip
    estimate = NoiseEstimate(
        rate=noise_rate, low=noise_rate - 0.02, high=noise_rate + 0.02, level=0.9, samples=1000,
        method="fabricated", probe_accuracy=0.5, true_rate=None, known_rate=None,
    )  # fmt: skip
    profile = DatasetProfile(
        dataset=dataset, noise=f"symmetric:{noise_rate}", num_classes=classes,
        num_train=num_train, num_val=150, input_shape=(1, 8, 8), class_balance=1.0,
        noise_estimate=estimate,
    )  # fmt: skip
    figures = None
    if armed:
        helps = peclet < 1
        figures = DriftDiffusion(
            drift=-0.02 if helps else 0.02, diffusion=1e-4, distance=5.0, step_time=0.2,
            drift_estimator="displacement", gradient_drift=0.01, displacement_drift=-0.02,
            peclet=peclet, peclet_interval=(peclet * 1.5, peclet * 0.5) if peclet < 0 else
            (peclet * 0.5, peclet * 1.5), drift_interval=(-0.03, -0.01),
            diffusion_interval=(0.8e-4, 1.2e-4), optimal_scaled_rate=2.0,
            optimal_rate=0.01, reset_prob=theory_prob if helps else 0.0,
            reset_prob_interval=(theory_prob / 2, theory_prob * 2) if helps else (0.0, 0.0),
            speedup=float("inf"), verdict="helps" if helps else "does not help", level=0.9,
        )  # fmt: skip
    config = TrainConfig(dataset=dataset, model=model, batch_size=batch_size, reset_prob=0.0,
                         steps=steps, weight_decay=weight_decay)  # fmt: skip
    probe = ProbeResult(
        config=config.to_dict(), armed_step=300 if armed else None, best_step=250,
        steps_trained=500 if memorised else steps, wall_time_s=1.0, points=[], figures=figures,
        memorisation_step=350 if memorised else None, memorisation_checked=checked,
        max_gap=0.3 if memorised else 0.02, final_gap=0.3 if memorised else 0.01,
        final_gap_threshold=0.14, window_end_step=500 if armed else None, budget_steps=steps,
    )  # fmt: skip
    return SettingDescription(profile=profile, probe=probe)


def past_search(
    name: str, *, gain: float, reset_prob: float = 0.003, layers: str = "head",
    patience: int = 150, resetting_won: bool | None = None, **setting,
) -> PastSearch:  # fmt: skip
    desc = description(**setting)
    base = TrainConfig.from_dict(desc.probe.config)
    baseline = trial_record(base, 0.0, objective=0.5, test_acc=0.80)
    won = gain > 0 if resetting_won is None else resetting_won
    reset = trial_record(
        base.replace(reset_prob=reset_prob, reset_layers=layers, patience=patience),
        reset_prob, objective=0.55 if won else 0.45, test_acc=0.80 + gain,
    )  # fmt: skip
    return PastSearch(
        run_id=f"run-{name}", name=name, search_id=name, experiment_id="1",
        objective_metric="val_acc", best_reset=reset, best_baseline=baseline, trials=10,
        compute_steps=15000, wall_time_s=100.0, description=desc,
    )  # fmt: skip


def trial_record(config: TrainConfig, _r: float, *, objective: float, test_acc: float):
    return TrialRecord(name=f"trial-r{_r}", config=config.to_dict(), objective=objective,
                       test_acc=test_acc, wall_time_s=10.0)  # fmt: skip
