"""Turns a loaded dataset into noisy train / validation and clean test tensors on the device."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from reset_tune.data.datasets import LoadedDataset
from reset_tune.data.noise import NoiseSpec, apply_noise, parse_noise_spec
from reset_tune.errors import ConfigError, DataError
from reset_tune.names import AUGMENT_SETTINGS
from reset_tune.seeding import NOISE_STREAM, SPLIT_STREAM, check_seed, numpy_generator


@dataclass
class DataSplits:
    """Device-resident splits of one run. Images are uint8 (N, C, H, W), labels int64 (N,)."""

    dataset_name: str
    train_x: torch.Tensor
    train_y: torch.Tensor  # noisy
    train_is_wrong: torch.Tensor | None  # bool; None when the clean labels are unknown
    val_x: torch.Tensor
    val_y: torch.Tensor  # noisy unless clean_val
    test_x: torch.Tensor
    test_y: torch.Tensor  # always clean
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]  # per channel, 0..1 scale, from train_x
    std: tuple[float, ...]
    augment: str  # resolved: "none" | "crop-flip"
    noise: str  # the NoiseSpec as text
    noise_description: str
    wrong_fraction: float  # measured on the training part (nan when unknown)
    val_wrong_fraction: float  # measured on the validation labels in use (0 with clean_val)
    clean_val: bool
    fingerprint: str
    # What produced these splits (the engine's data settings); runs check it before sharing.
    settings: dict = field(default_factory=dict)

    def to(self, device: torch.device | str) -> DataSplits:
        """These splits on `device` (self when already there): prepared once, shared by runs."""
        device = torch.device(device)
        if self.train_x.device == device:
            return self
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def summary(self) -> dict:
        """JSON-able description: sizes, classes, noise, measured wrong fractions, fingerprint."""

        def finite_or_none(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {
            "dataset": self.dataset_name,
            "num_train": int(self.train_y.shape[0]),
            "num_val": int(self.val_y.shape[0]),
            "num_test": int(self.test_y.shape[0]),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "augment": self.augment,
            "noise": self.noise,
            "noise_description": self.noise_description,
            "train_wrong_fraction": finite_or_none(self.wrong_fraction),
            "val_wrong_fraction": finite_or_none(self.val_wrong_fraction),
            "clean_val": self.clean_val,
            "mean": list(self.mean),
            "std": list(self.std),
            "fingerprint": self.fingerprint,
        }


def channel_mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 (N, C, H, W) images on the 0..1 scale.

    Works from a 256-bin histogram per channel, so no float copy of the images is made.
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = np.bincount(images[:, channel].reshape(-1), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        variance = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(math.sqrt(variance))
    return tuple(means), tuple(stds)


def _fingerprint(name: str, arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256(name.encode())
    for array in arrays:
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def build_splits(
    dataset: LoadedDataset,
    *,
    noise: NoiseSpec | str,
    seed: int,
    val_fraction: float = 0.1,
    clean_val: bool = False,
    train_subset: int | None = None,
    augment: str = "auto",
    device: torch.device | str = "cpu",
) -> DataSplits:
    """Applies label noise and carves train / validation splits, then moves them to `device`.

    Order, each step depending only on `seed` and the inputs:

    1. Noise is applied to the FULL training set with the seed's noise stream, so a sample's noisy
       label does not depend on `train_subset` or `val_fraction`.
    2. The training set is permuted with the seed's split stream; with `train_subset`, the first
       `train_subset` samples of that permutation form the pool (validation included).
    3. The first ``round(val_fraction * pool)`` samples of the pool are validation, the rest train.

    `noise` is a `NoiseSpec` or its text form ("symmetric:0.4"). Validation labels are the
    noisy ones unless `clean_val`; the test split is always clean.
    `augment="auto"` takes the dataset's default. Channel mean/std come from the training part.
    """
    seed = check_seed(seed)
    if isinstance(noise, str):
        noise = parse_noise_spec(noise)
    if not isinstance(val_fraction, int | float) or isinstance(val_fraction, bool):
        raise ConfigError(f"val_fraction must be a number in (0, 1), but got {val_fraction!r}")
    if val_fraction == 0:
        raise ConfigError(
            "val_fraction=0 leaves no validation split, but the method needs one (checkpoint "
            "choice and arming of resetting use validation metrics); use e.g. val_fraction=0.1"
        )
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), but got val_fraction={val_fraction!r}")
    if augment not in AUGMENT_SETTINGS:
        raise ConfigError(
            f"augment must be one of {', '.join(AUGMENT_SETTINGS)}, but got augment={augment!r}"
        )
    available = len(dataset.train)
    num_classes = dataset.num_classes
    if train_subset is not None:
        if isinstance(train_subset, bool) or not isinstance(train_subset, int | np.integer):
            raise ConfigError(f"train_subset must be an integer, but got {train_subset!r}")
        if train_subset < 2 * num_classes:
            raise ConfigError(
                f"train_subset must be at least 2 x num_classes = {2 * num_classes}, "
                f"but got train_subset={train_subset}"
            )
        if train_subset > available:
            raise ConfigError(
                f"train_subset={train_subset} exceeds the {available} training samples of "
                f"{dataset.name!r}; use at most {available} (or leave it unset for all)"
            )

    noisy = apply_noise(
        dataset.train.labels,
        num_classes,
        noise,
        dataset=dataset.name,
        rng=numpy_generator(seed, NOISE_STREAM),
        human_labels=dataset.human_labels,
    )
    pool = numpy_generator(seed, SPLIT_STREAM).permutation(available)
    if train_subset is not None:
        pool = pool[: int(train_subset)]
    num_val = int(round(val_fraction * pool.shape[0]))
    if num_val < 1 or num_val >= pool.shape[0]:
        raise ConfigError(
            f"val_fraction={val_fraction} of {pool.shape[0]} samples gives {num_val} validation "
            "samples; choose it so that both validation and training are non-empty"
        )
    val_index, train_index = pool[:num_val], pool[num_val:]

    images = dataset.train.images
    clean = dataset.train.labels
    train_x, val_x = images[train_index], images[val_index]
    train_y = noisy.labels[train_index]
    val_y = (clean if clean_val else noisy.labels)[val_index]
    if noisy.is_wrong is None:
        train_wrong, wrong_fraction = None, math.nan
        val_wrong_fraction = 0.0 if clean_val else math.nan
    else:
        train_wrong = noisy.is_wrong[train_index]
        wrong_fraction = float(train_wrong.mean())
        val_wrong_fraction = 0.0 if clean_val else float(noisy.is_wrong[val_index].mean())

    mean, std = channel_mean_std(train_x)
    if min(std) == 0.0:
        channel = std.index(0.0)
        raise DataError(
            f"channel {channel} of the {train_x.shape[0]} training images of {dataset.name!r} "
            "is constant; the images carry no information there"
        )
    test_x, test_y = dataset.test.images, dataset.test.labels
    fingerprint = _fingerprint(dataset.name, [train_x, train_y, val_x, val_y, test_x, test_y])

    def to_device(array: np.ndarray) -> torch.Tensor:
        # Writable and contiguous: a read-only array (e.g. a cached dataset) would be shared.
        return torch.from_numpy(np.require(array, requirements=["C", "W"])).to(device)

    return DataSplits(
        dataset_name=dataset.name,
        train_x=to_device(train_x),
        train_y=to_device(train_y.astype(np.int64)),
        train_is_wrong=None if train_wrong is None else to_device(train_wrong),
        val_x=to_device(val_x),
        val_y=to_device(val_y.astype(np.int64)),
        test_x=to_device(test_x),
        test_y=to_device(test_y.astype(np.int64)),
        num_classes=num_classes,
        in_channels=int(images.shape[1]),
        image_size=int(images.shape[-1]),
        mean=mean,
        std=std,
        augment=dataset.default_augment if augment == "auto" else augment,
        noise=str(noise),
        noise_description=noisy.description,
        wrong_fraction=wrong_fraction,
        val_wrong_fraction=val_wrong_fraction,
        clean_val=bool(clean_val),
        fingerprint=fingerprint,
    )
