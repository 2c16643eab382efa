"""The dataset profile and its noise estimate, made without the clean labels."""

from __future__ import annotations

import numpy as np
import pytest

from reset_tune.config import TrainConfig
from reset_tune.engine import prepare_data
from reset_tune.recommend.profile import DatasetProfile, estimate_noise_rate, profile_dataset


@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_estimate_recovers_injected_symmetric_noise_on_digits(rate):
    data = prepare_data(TrainConfig(dataset="digits", noise=f"symmetric:{rate}", seed=3))
    profile = profile_dataset(data, seed=3)
    estimate = profile.noise_estimate
    truth = float(data.train_is_wrong.double().mean())
    assert estimate.true_rate == pytest.approx(truth, abs=1e-9)
    assert abs(estimate.rate - truth) < 0.05
    assert estimate.error == pytest.approx(estimate.rate - truth, abs=1e-6)
    assert estimate.low <= estimate.rate <= estimate.high
    assert estimate.high - estimate.low < 0.1
    assert (profile.num_classes, profile.input_shape) == (10, (1, 8, 8))
    assert profile.num_train == data.train_y.shape[0]


def test_clean_labels_give_an_estimate_near_zero_and_more_noise_a_higher_one():
    clean = profile_dataset(prepare_data(TrainConfig(dataset="digits", noise="none")))
    noisy = profile_dataset(prepare_data(TrainConfig(dataset="digits", noise="symmetric:0.3")))
    assert clean.noise_estimate.rate < 0.03
    assert noisy.noise_estimate.rate > clean.noise_estimate.rate + 0.2


def test_a_stated_rate_is_compared_when_the_truth_is_unknown():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    images = (labels[:, None, None, None] * 80 + rng.integers(0, 30, (300, 1, 4, 4))).astype(
        np.uint8
    )
    flipped = labels.copy()
    flip = rng.random(300) < 0.25
    flipped[flip] = (labels[flip] + 1) % 3
    estimate = estimate_noise_rate(images, flipped, num_classes=3, known_rate=0.25, seed=0)
    assert estimate.true_rate is None
    assert estimate.error == pytest.approx(estimate.rate - 0.25)
    assert abs(estimate.error) < 0.06


def test_too_few_samples_are_refused_with_the_reason():
    images = np.zeros((5, 1, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="too few samples"):
        estimate_noise_rate(images, np.arange(5) % 5, num_classes=5)


def test_a_profile_round_trips_through_json_values():
    profile = profile_dataset(prepare_data(TrainConfig(dataset="digits", noise="symmetric:0.3")))
    assert DatasetProfile.from_dict(profile.to_dict()) == profile
