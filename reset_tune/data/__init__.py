"""Data for training with label noise: datasets, noise models, splits and the device batch path."""

from reset_tune.data.batches import AUGMENTS, BatchSampler, DeviceAugmenter
from reset_tune.data.datasets import (
    DATASET_NAMES,
    DEBIAN_FASHION_MNIST_DIR,
    DEFAULT_DATA_ROOT,
    ArrayDataset,
    LoadedDataset,
    load_dataset,
)
from reset_tune.data.label_files import (
    load_cifar10n_labels,
    load_cifar100n_labels,
    safe_pickle_load,
)
from reset_tune.data.noise import (
    NOISE_KINDS,
    NoiseSpec,
    NoisyLabels,
    apply_noise,
    load_transition_matrix,
    parse_noise_spec,
)
from reset_tune.data.splits import DataSplits, build_splits, channel_mean_std

__all__ = [
    "AUGMENTS",
    "DATASET_NAMES",
    "DEBIAN_FASHION_MNIST_DIR",
    "DEFAULT_DATA_ROOT",
    "NOISE_KINDS",
    "ArrayDataset",
    "BatchSampler",
    "DataSplits",
    "DeviceAugmenter",
    "LoadedDataset",
    "NoiseSpec",
    "NoisyLabels",
    "apply_noise",
    "build_splits",
    "channel_mean_std",
    "load_cifar10n_labels",
    "load_cifar100n_labels",
    "load_dataset",
    "load_transition_matrix",
    "parse_noise_spec",
    "safe_pickle_load",
]
