"""What describes a dataset for a recommendation: its shape, and its label-noise rate estimated
without clean labels.

The noise estimate is confident learning (cleanlab's `estimate_joint`): out-of-sample predicted
probabilities from a cross-validated probe classifier (k-nearest neighbours on a PCA of the
pixels: seconds on a CPU, and robust to the noisy labels it is fitted on, since it averages over
many neighbours) give an estimate of the joint distribution of noisy and true labels, whose
off-diagonal mass is the wrong-label fraction. The interval is a bootstrap over samples.

It estimates what the probe classifier can tell apart: classes it confuses even with clean labels
(shirts and T-shirts in Fashion-MNIST) count as noise, so on hard datasets it overestimates. Past
searches are profiled the same way, so the similarity of two settings compares like with like;
where the true rate is known (injected noise, or `known_noise_rate`) the error is reported.

Why k-NN on up to 10,000 samples (`benchmarks/recommend/noise_probe.py`): on digits and
Fashion-MNIST with injected noise, a logistic regression on a PCA and a small CNN trained on each
fold were at most 0.01 closer to the truth, and further from it on digits and on pairflip noise
(the CNN took ~30× as long); 10,000 samples instead of 3,000 cut Fashion-MNIST's overestimate by
0.02–0.03 at the same cost.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reset_tune.data import DataSplits

PROBE_CLASSIFIER = "knn25-pca40-5fold"


@dataclass(frozen=True)
class NoiseEstimate:
    """The wrong-label fraction of the training labels, estimated without clean labels."""

    rate: float
    low: float  # bootstrap interval (`level`)
    high: float
    level: float
    samples: int  # training samples the estimate used
    method: str
    probe_accuracy: float  # the probe's out-of-sample agreement with the (noisy) labels
    true_rate: float | None  # wrong fraction of those samples, when the clean labels are known
    known_rate: float | None  # a rate the user stated (e.g. a published figure)

    @property
    def error(self) -> float | None:
        """Estimate minus the truth (the measured rate, else the stated one); None if neither."""
        truth = self.true_rate if self.true_rate is not None else self.known_rate
        return None if truth is None else self.rate - truth


@dataclass(frozen=True)
class DatasetProfile:
    """Classes, sizes and input shape of a prepared dataset, and its noise estimate."""

    dataset: str
    noise: str  # the noise setting the data were prepared with ("none" for real labels)
    num_classes: int
    num_train: int
    num_val: int
    input_shape: tuple[int, int, int]  # (channels, height, width)
    class_balance: float  # smallest class's share of the training labels × number of classes
    noise_estimate: NoiseEstimate

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["input_shape"] = list(self.input_shape)
        values["noise_estimate"]["error"] = self.noise_estimate.error
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DatasetProfile:
        estimate = dict(values["noise_estimate"])
        estimate.pop("error", None)
        return cls(
            **{
                **values,
                "input_shape": tuple(values["input_shape"]),
                "noise_estimate": NoiseEstimate(**estimate),
            }
        )


def out_of_sample_probabilities(
    features: np.ndarray, labels: np.ndarray, *, num_classes: int, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Predicted class probabilities of each sample from a model that never saw it."""
    from sklearn.decomposition import PCA
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline

    counts = np.bincount(labels, minlength=num_classes)
    folds = int(max(2, min(folds, counts[counts > 0].min())))
    components = int(min(40, features.shape[1], features.shape[0] // 2))
    neighbours = int(min(25, max(1, (features.shape[0] * (folds - 1)) // folds - 1)))
    model = make_pipeline(
        PCA(components, random_state=seed),
        KNeighborsClassifier(neighbours, weights="distance"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's warnings about tiny classes in a fold
        probs = cross_val_predict(
            model,
            features,
            labels,
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            method="predict_proba",
        )
    full = np.zeros((labels.shape[0], num_classes))
    present = np.unique(labels)  # cross_val_predict orders columns by the classes it saw
    full[:, present] = probs
    full = np.clip(full, 1e-6, None)
    return full / full.sum(axis=1, keepdims=True)


def wrong_label_fraction(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Confident learning's estimate: 1 − trace of the estimated noisy/true joint."""
    from cleanlab.count import estimate_joint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joint = estimate_joint(labels, probabilities)
    return float(np.clip(1.0 - np.trace(joint), 0.0, 1.0))


def estimate_noise_rate(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    is_wrong: np.ndarray | None = None,
    known_rate: float | None = None,
    max_samples: int = 10000,
    bootstrap: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> NoiseEstimate:
    """Estimate the wrong-label fraction of `labels` for uint8 images (N, C, H, W)."""
    if labels.shape[0] < 2 * num_classes:
        raise ValueError(
            f"too few samples ({labels.shape[0]}) to estimate label noise over {num_classes} "
            "classes; need at least two per class"
        )
    rng = np.random.default_rng(seed)
    index = rng.permutation(labels.shape[0])[:max_samples]
    features = images[index].reshape(index.shape[0], -1).astype(np.float32) / 255.0
    y = labels[index].astype(np.int64)
    probs = out_of_sample_probabilities(features, y, num_classes=num_classes, seed=seed)
    rate = wrong_label_fraction(y, probs)
    replicates = []
    for _ in range(bootstrap):
        pick = rng.integers(0, y.shape[0], y.shape[0])
        if np.unique(y[pick]).shape[0] < 2:
            continue
        replicates.append(wrong_label_fraction(y[pick], probs[pick]))
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return NoiseEstimate(
        rate=rate,
        low=float(min(low, rate)),
        high=float(max(high, rate)),
        level=level,
        samples=int(y.shape[0]),
        method=f"cleanlab estimate_joint on {PROBE_CLASSIFIER} out-of-sample probabilities",
        probe_accuracy=float((probs.argmax(axis=1) == y).mean()),
        true_rate=None if is_wrong is None else float(is_wrong[index].mean()),
        known_rate=known_rate,
    )


def profile_dataset(
    data: DataSplits,
    *,
    known_noise_rate: float | None = None,
    max_samples: int = 10000,
    seed: int = 0,
) -> DatasetProfile:
    """Profile prepared splits: the training split's shape, classes and estimated noise rate."""
    if known_noise_rate is not None and not 0 <= known_noise_rate < 1:
        raise ValueError(f"a known noise rate must be in [0, 1), got {known_noise_rate}")
    labels = data.train_y.cpu().numpy()
    is_wrong = None if data.train_is_wrong is None else data.train_is_wrong.cpu().numpy()
    estimate = estimate_noise_rate(
        data.train_x.cpu().numpy(),
        labels,
        num_classes=data.num_classes,
        is_wrong=is_wrong,
        known_rate=known_noise_rate,
        max_samples=max_samples,
        seed=seed,
    )
    counts = np.bincount(labels, minlength=data.num_classes)
    return DatasetProfile(
        dataset=data.dataset_name,
        noise=data.noise,
        num_classes=data.num_classes,
        num_train=int(labels.shape[0]),
        num_val=int(data.val_y.shape[0]),
        input_shape=(data.in_channels, data.image_size, data.image_size),
        class_balance=float(counts.min() / counts.sum() * data.num_classes),
        noise_estimate=estimate,
    )


def describe_estimate(estimate: NoiseEstimate) -> str:
    text = (
        f"{estimate.rate:.1%} wrong labels "
        f"({estimate.level:.0%} interval {estimate.low:.1%}–{estimate.high:.1%}, "
        f"{estimate.samples} samples)"
    )
    if estimate.error is not None and math.isfinite(estimate.error):
        truth = estimate.true_rate if estimate.true_rate is not None else estimate.known_rate
        text += f"; true {truth:.1%}, error {estimate.error:+.1%}"
    return text
