"""Train / validation / test splits: determinism, disjointness, noise bookkeeping, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from reset_tune.data import ArrayDataset, LoadedDataset, build_splits, load_dataset
from reset_tune.data.noise import parse_noise_spec
from reset_tune.errors import ConfigError, DataError

NUM_TRAIN = 2000
NUM_CLASSES = 10


def indexed_dataset(num_train=NUM_TRAIN, num_classes=NUM_CLASSES, channels=3) -> LoadedDataset:
    """Each training image carries its own index in pixels (0, 0, 0) and (0, 0, 1)."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (num_train, channels, 6, 6), dtype=np.uint8)
    index = np.arange(num_train)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = index // 256, index % 256
    labels = rng.integers(0, num_classes, num_train).astype(np.int64)
    test_images = rng.integers(0, 256, (50, channels, 6, 6), dtype=np.uint8)
    test_labels = rng.integers(0, num_classes, 50).astype(np.int64)
    return LoadedDataset(
        name="indexed",
        train=ArrayDataset(images, labels),
        test=ArrayDataset(test_images, test_labels),
        num_classes=num_classes,
        class_names=[str(c) for c in range(num_classes)],
        default_augment="crop-flip",
        human_labels=None,
        source="test",
    )


def indices_of(x: torch.Tensor) -> np.ndarray:
    pixels = x.numpy().astype(np.int64)
    return pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 0, 1]


def split(dataset=None, **kwargs):
    kwargs.setdefault("noise", parse_noise_spec("symmetric:0.4"))
    kwargs.setdefault("seed", 0)
    return build_splits(dataset or indexed_dataset(), **kwargs)


def test_train_and_val_are_disjoint_and_sized():
    splits = split(val_fraction=0.1)
    train, val = indices_of(splits.train_x), indices_of(splits.val_x)
    assert len(val) == 200 and len(train) == 1800
    assert len(set(train) | set(val)) == NUM_TRAIN  # disjoint and complete
    assert splits.train_x.dtype == torch.uint8 and splits.train_y.dtype == torch.int64
    assert splits.train_x.shape[1:] == (3, 6, 6)
    assert (splits.in_channels, splits.image_size, splits.num_classes) == (3, 6, 10)


def test_subset_pool_includes_validation():
    splits = split(train_subset=300, val_fraction=0.25)
    train, val = indices_of(splits.train_x), indices_of(splits.val_x)
    assert (len(train), len(val)) == (225, 75)
    assert not set(train) & set(val)


def test_same_seed_same_splits_other_seed_differs():
    first, again, other = split(seed=3), split(seed=3), split(seed=4)
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert first.fingerprint == again.fingerprint
    assert not torch.equal(first.train_y, other.train_y)
    assert not np.array_equal(indices_of(first.val_x), indices_of(other.val_x))
    assert first.fingerprint != other.fingerprint


def test_noisy_label_of_a_sample_does_not_depend_on_subset():
    full, subset = split(seed=1), split(seed=1, train_subset=500)
    label_by_index = dict(zip(indices_of(full.train_x), full.train_y.tolist(), strict=True))
    label_by_index.update(zip(indices_of(full.val_x), full.val_y.tolist(), strict=True))
    for index, label in zip(indices_of(subset.train_x), subset.train_y.tolist(), strict=True):
        assert label_by_index[index] == label


def test_wrong_fractions_measured_against_clean_labels():
    dataset = indexed_dataset()
    clean = dataset.train.labels
    splits = split(dataset, noise=parse_noise_spec("symmetric:0.4"))
    train_wrong = splits.train_y.numpy() != clean[indices_of(splits.train_x)]
    val_wrong = splits.val_y.numpy() != clean[indices_of(splits.val_x)]
    np.testing.assert_array_equal(splits.train_is_wrong.numpy(), train_wrong)
    assert splits.wrong_fraction == pytest.approx(train_wrong.mean())
    assert splits.val_wrong_fraction == pytest.approx(val_wrong.mean())
    assert 0.35 < splits.wrong_fraction < 0.45 and splits.val_wrong_fraction > 0.3
    assert "symmetric 40%" in splits.noise_description


def test_clean_val_uses_clean_labels_and_keeps_train_noisy():
    dataset = indexed_dataset()
    clean = dataset.train.labels
    noisy_val, clean_val = split(dataset), split(dataset, clean_val=True)
    np.testing.assert_array_equal(clean_val.val_y.numpy(), clean[indices_of(clean_val.val_x)])
    assert clean_val.val_wrong_fraction == 0.0
    assert torch.equal(noisy_val.train_y, clean_val.train_y)
    assert not torch.equal(noisy_val.val_y, clean_val.val_y)
    assert noisy_val.fingerprint != clean_val.fingerprint


def test_test_split_is_always_clean():
    dataset = indexed_dataset()
    splits = split(dataset, noise=parse_noise_spec("symmetric:0.8"))
    np.testing.assert_array_equal(splits.test_y.numpy(), dataset.test.labels)
    np.testing.assert_array_equal(splits.test_x.numpy(), dataset.test.images)


def test_fingerprint_tracks_noise():
    a = split(noise="symmetric:0.4")
    b = split(noise=parse_noise_spec("symmetric:0.4"))
    c = split(noise="pairflip:0.4")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert len(a.fingerprint) == 16 and int(a.fingerprint, 16) >= 0


def test_mean_std_from_training_part():
    splits = split()
    x = splits.train_x.double() / 255
    np.testing.assert_allclose(splits.mean, x.mean(dim=(0, 2, 3)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(splits.std, x.std(dim=(0, 2, 3), correction=0).numpy(), rtol=1e-9)


def test_augment_resolution():
    assert split().augment == "crop-flip"  # dataset default
    assert split(augment="none").augment == "none"
    assert build_splits(load_dataset("digits"), noise="none", seed=0).augment == "none"


def test_summary_is_json():
    splits = split(train_subset=400)
    summary = json.loads(json.dumps(splits.summary(), allow_nan=False))
    assert (summary["num_train"], summary["num_val"], summary["num_test"]) == (360, 40, 50)
    assert summary["noise"] == "symmetric:0.4" and summary["fingerprint"] == splits.fingerprint
    assert summary["train_wrong_fraction"] == pytest.approx(splits.wrong_fraction)
    assert summary["dataset"] == "indexed" and math.isfinite(summary["mean"][0])


def test_digits_end_to_end():
    splits = build_splits(
        load_dataset("digits"), noise="symmetric:0.6", seed=2, train_subset=500, val_fraction=0.2
    )
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (400, 100, 359)
    assert 0.5 < splits.wrong_fraction < 0.7


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"val_fraction": 0}, "val_fraction=0"),
        ({"val_fraction": 1.0}, "val_fraction=1.0"),
        ({"val_fraction": -0.1}, "val_fraction=-0.1"),
        ({"train_subset": 19}, "train_subset=19"),
        ({"train_subset": 2001}, "train_subset=2001"),
        ({"augment": "mixup"}, "augment='mixup'"),
        ({"seed": -1}, "seed=-1"),
        ({"val_fraction": 0.001, "train_subset": 100}, "0 validation samples"),
        ({"noise": "symmetric:7"}, "7"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        split(**kwargs)
    assert fragment in str(info.value)


def test_constant_channel_is_data_error():
    dataset = indexed_dataset(channels=2)
    dataset.train.images[:, 1] = 9
    with pytest.raises(DataError, match="channel 1"):
        split(dataset)
