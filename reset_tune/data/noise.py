"""Label-noise models: parsing noise specs and corrupting clean labels with a given generator.

Conventions (docs/method.md §2.2). Labels are int64 arrays of shape (N,) with values in 0..C-1. A
transition matrix T is C x C and row-stochastic: row = true class, column = noisy class.

- ``symmetric:r``          each label is flipped with probability r to one of the *other* C-1
                           classes, so r is the expected wrong-label fraction.
- ``symmetric-uniform:r``  with probability r the label is replaced by a class drawn uniformly
                           from all C (it may be the true one): expected wrong r*(C-1)/C.
- ``asymmetric-cifar10:r`` truck->automobile, bird->airplane, cat<->dog, deer->horse, each with
                           probability r (5 of 10 classes are sources: about r/2 wrong overall).
- ``asymmetric-cifar100:r`` within each of CIFAR-100's 20 super-classes, a cyclic flip to the next
                           fine class of the same super-class, with probability r.
- ``asymmetric:r``         the CIFAR-10 or CIFAR-100 variant, chosen by the dataset name.
- ``pairflip:r``           c -> (c+1) mod C with probability r.
- ``matrix:PATH``          each noisy label is drawn from row T[true] of the matrix in PATH
                           (.npy, .csv or whitespace-separated .txt).
- ``human:SET``            real human labels shipped with the dataset (CIFAR-10N: aggre, worst,
                           random1, random2, random3; CIFAR-100N: noisy).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from reset_tune.data.cifar_classes import CIFAR100_FINE_TO_COARSE
from reset_tune.data.files import require_file
from reset_tune.errors import ConfigError, DataError

NOISE_KINDS: tuple[str, ...] = (
    "none",
    "symmetric",
    "symmetric-uniform",
    "asymmetric",
    "asymmetric-cifar10",
    "asymmetric-cifar100",
    "pairflip",
    "matrix",
    "human",
)
_RATE_KINDS = frozenset(
    {
        "symmetric",
        "symmetric-uniform",
        "asymmetric",
        "asymmetric-cifar10",
        "asymmetric-cifar100",
        "pairflip",
    }
)
_EXAMPLES = "none, symmetric:0.4, asymmetric:0.4, pairflip:0.45, matrix:T.npy, human:worst"
_ROW_SUM_TOLERANCE = 1e-6

# Which asymmetric map a dataset name selects.
_ASYMMETRIC_BY_DATASET = {
    "cifar10": "asymmetric-cifar10",
    "cifar10n": "asymmetric-cifar10",
    "cifar100": "asymmetric-cifar100",
    "cifar100n": "asymmetric-cifar100",
}

# CIFAR-10 indices: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse,
# 8 ship, 9 truck.
_CIFAR10_ASYMMETRIC_TARGETS = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}


def _format_rate(rate: float) -> str:
    return repr(float(rate))


def _percent(value: float) -> str:
    return f"{100 * value:.3g}%"


@dataclass(frozen=True)
class NoiseSpec:
    """A label-noise model: its kind, and a rate, a matrix file or a human label set."""

    kind: str
    rate: float = 0.0
    path: str | None = None
    label_set: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ConfigError(
                f"unknown label-noise kind {self.kind!r}; choose one of {', '.join(NOISE_KINDS)}"
            )
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise ConfigError(f"noise rate must be a number in [0, 1], but got rate={rate!r}")
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"noise rate must be in [0, 1], but got rate={rate!r}")
        if self.kind not in _RATE_KINDS and rate != 0.0:
            raise ConfigError(f"noise kind {self.kind!r} takes no rate, but got rate={rate!r}")
        if self.kind == "matrix":
            if not self.path:
                raise ConfigError(
                    "noise kind 'matrix' needs the path of a transition-matrix file, "
                    "e.g. matrix:/path/to/T.npy"
                )
        elif self.path is not None:
            raise ConfigError(f"noise kind {self.kind!r} takes no path, but got {self.path!r}")
        if self.kind == "human":
            if not self.label_set:
                raise ConfigError(
                    "noise kind 'human' needs a label set, e.g. human:worst (CIFAR-10N) "
                    "or human:noisy (CIFAR-100N)"
                )
        elif self.label_set is not None:
            raise ConfigError(
                f"noise kind {self.kind!r} takes no label set, but got {self.label_set!r}"
            )

    def __str__(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind == "matrix":
            return f"matrix:{self.path}"
        if self.kind == "human":
            return f"human:{self.label_set}"
        return f"{self.kind}:{_format_rate(self.rate)}"


def parse_noise_spec(text: str) -> NoiseSpec:
    """Parses "none", "symmetric:0.4", "pairflip:0.45", "matrix:/path/T.npy", "human:worst", ...

    Raises `ConfigError` naming the bad part and showing valid examples.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"label noise must be a string such as {_EXAMPLES}; got {text!r}")
    kind, sep, argument = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in NOISE_KINDS:
        raise ConfigError(
            f"unknown label-noise kind {kind!r} in {text!r}; choose one of "
            f"{', '.join(NOISE_KINDS)} (examples: {_EXAMPLES})"
        )
    if kind == "none":
        if sep and argument.strip():
            raise ConfigError(f"noise 'none' takes no argument, but got {text!r}")
        return NoiseSpec("none")
    if not sep or not argument.strip():
        hint = {"matrix": "matrix:/path/to/T.npy", "human": "human:worst"}.get(kind, f"{kind}:0.4")
        raise ConfigError(f"noise {text!r} is missing its argument; write e.g. {hint!r}")
    if kind == "matrix":
        return NoiseSpec("matrix", path=argument.strip())
    if kind == "human":
        return NoiseSpec("human", label_set=argument.strip())
    try:
        rate = float(argument)
    except ValueError:
        raise ConfigError(
            f"noise rate must be a number in [0, 1], but got {argument.strip()!r} in {text!r}"
        ) from None
    return NoiseSpec(kind, rate=rate)


@dataclass
class NoisyLabels:
    """Labels after corruption, with which of them are wrong (when the clean labels are known)."""

    labels: np.ndarray
    is_wrong: np.ndarray | None
    wrong_fraction: float
    description: str


NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every file numpy.save writes


def load_transition_matrix(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """Reads a C x C row-stochastic matrix (row = true class) from .npy, .csv or .txt.

    Raises `DataError` when the file is missing or unreadable, or its content is not a valid
    transition matrix for `num_classes` classes (the message names the offending row).
    """
    path = os.fspath(path)
    require_file(path, "transition-matrix file")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as handle:
                if handle.read(6) != NPY_MAGIC:
                    raise DataError(
                        f"transition-matrix file {path!r} is not a .npy file (no NumPy header); "
                        "write it with numpy.save, or as .csv/.txt text"
                    )
            matrix = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            matrix = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        elif suffix == ".txt":
            matrix = np.loadtxt(path, dtype=np.float64, ndmin=2)
        else:
            raise DataError(
                f"transition-matrix file {path!r} must end in .npy, .csv or .txt, "
                f"not {suffix or '(no suffix)'!r}"
            )
    except DataError:
        raise
    except Exception as exc:  # numpy raises ValueError / OSError / UnpicklingError variants
        raise DataError(f"cannot read transition matrix {path!r}: {exc}") from None
    matrix = np.asarray(matrix)
    if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
        raise DataError(f"transition matrix {path!r} must be numeric, but has dtype {matrix.dtype}")
    matrix = matrix.astype(np.float64)
    expected = (num_classes, num_classes)
    if matrix.shape != expected:
        raise DataError(
            f"transition matrix {path!r} has shape {matrix.shape}, but this dataset has "
            f"{num_classes} classes: expected shape {expected} (row = true class)"
        )
    if not np.all(np.isfinite(matrix)):
        row = int(np.nonzero(~np.isfinite(matrix).all(axis=1))[0][0])
        raise DataError(f"transition matrix {path!r}: row {row} contains NaN or infinity")
    if np.any(matrix < 0):
        row = int(np.nonzero((matrix < 0).any(axis=1))[0][0])
        raise DataError(
            f"transition matrix {path!r}: row {row} has a negative entry "
            f"({matrix[row].min():g}); probabilities must be non-negative"
        )
    row_sums = matrix.sum(axis=1)
    bad_rows = np.nonzero(np.abs(row_sums - 1.0) > _ROW_SUM_TOLERANCE)[0]
    if bad_rows.size:
        row = int(bad_rows[0])
        raise DataError(
            f"transition matrix {path!r}: row {row} sums to {row_sums[row]:.9g}, not 1 "
            "(each row is the distribution of noisy labels for one true class)"
        )
    # Rows within the tolerance are renormalised: numpy's sampler demands sums within ~1e-8.
    return matrix / row_sums[:, None]


def _validate_clean_labels(clean_labels: np.ndarray, num_classes: int) -> np.ndarray:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ConfigError(f"num_classes must be an integer, but got {num_classes!r}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, but got num_classes={num_classes}")
    labels = np.asarray(clean_labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be a 1-D integer array, but got dtype {labels.dtype} "
            f"with shape {labels.shape}"
        )
    if labels.size == 0:
        raise DataError("labels are empty: the dataset has no training samples")
    out_of_range = (labels < 0) | (labels >= num_classes)
    if out_of_range.any():
        index = int(np.nonzero(out_of_range)[0][0])
        raise DataError(
            f"label {int(labels[index])} at index {index} is out of range for "
            f"{num_classes} classes (expected 0..{num_classes - 1})"
        )
    return labels.astype(np.int64, copy=False)


def _flip_with_targets(
    labels: np.ndarray, targets: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    flip = rng.random(labels.shape[0]) < rate
    return np.where(flip, targets[labels], labels)


def cifar100_superclass_successor() -> np.ndarray:
    """Fine label -> the next fine label of its super-class (cyclic, in fine-label order)."""
    coarse = np.asarray(CIFAR100_FINE_TO_COARSE)
    successor = np.empty(100, dtype=np.int64)
    for superclass in range(20):
        members = np.nonzero(coarse == superclass)[0]
        successor[members] = np.roll(members, -1)
    return successor


def _resolve_asymmetric(kind: str, dataset: str) -> str:
    if kind != "asymmetric":
        return kind
    try:
        return _ASYMMETRIC_BY_DATASET[dataset]
    except KeyError:
        raise ConfigError(
            f"noise 'asymmetric' has a class map only for CIFAR-10 and CIFAR-100 "
            f"(cifar10, cifar10n, cifar100, cifar100n), not for dataset {dataset!r}; "
            "use pairflip:RATE or matrix:PATH instead"
        ) from None


def apply_noise(
    clean_labels: np.ndarray,
    num_classes: int,
    spec: NoiseSpec,
    *,
    dataset: str,
    rng: np.random.Generator,
    human_labels: dict[str, np.ndarray] | None = None,
) -> NoisyLabels:
    """Corrupts `clean_labels` (int, shape (N,), values 0..C-1) according to `spec`.

    Deterministic given the state of `rng` (the only source of randomness). `dataset` selects the
    class map of ``asymmetric``; `human_labels` supplies the label sets of ``human`` noise.
    """
    if not isinstance(spec, NoiseSpec):
        raise ConfigError(f"noise must be a NoiseSpec (see parse_noise_spec), got {spec!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    clean = _validate_clean_labels(clean_labels, num_classes)
    kind = _resolve_asymmetric(spec.kind, dataset)
    rate = spec.rate
    num = clean.shape[0]

    if kind == "none":
        noisy = clean.copy()
        description = "no label noise (clean labels)"
    elif kind == "symmetric":
        # Offsets 1..C-1 never map a class to itself, so every flip is a wrong label.
        flip = rng.random(num) < rate
        offsets = rng.integers(1, num_classes, size=num)
        noisy = np.where(flip, (clean + offsets) % num_classes, clean)
        description = (
            f"symmetric {_percent(rate)} (flips to one of the other C-1={num_classes - 1} "
            f"classes; expected wrong {_percent(rate)})"
        )
    elif kind == "symmetric-uniform":
        replace = rng.random(num) < rate
        replacement = rng.integers(0, num_classes, size=num)
        noisy = np.where(replace, replacement, clean)
        expected = rate * (num_classes - 1) / num_classes
        description = (
            f"symmetric-uniform {_percent(rate)} (replaced by a uniform class that may be the "
            f"true one; expected wrong {_percent(expected)})"
        )
    elif kind == "asymmetric-cifar10":
        if num_classes != 10:
            raise ConfigError(
                f"noise 'asymmetric-cifar10' needs 10 classes, but the dataset has {num_classes}; "
                "use pairflip:RATE or matrix:PATH instead"
            )
        targets = np.arange(10, dtype=np.int64)
        for source, target in _CIFAR10_ASYMMETRIC_TARGETS.items():
            targets[source] = target
        noisy = _flip_with_targets(clean, targets, rate, rng)
        description = (
            f"asymmetric-cifar10 {_percent(rate)} (truck->automobile, bird->airplane, "
            "cat<->dog, deer->horse)"
        )
    elif kind == "asymmetric-cifar100":
        if num_classes != 100:
            raise ConfigError(
                f"noise 'asymmetric-cifar100' needs 100 classes, but the dataset has "
                f"{num_classes}; use pairflip:RATE or matrix:PATH instead"
            )
        noisy = _flip_with_targets(clean, cifar100_superclass_successor(), rate, rng)
        description = (
            f"asymmetric-cifar100 {_percent(rate)} (cyclic flip to the next class of the same "
            "CIFAR-100 super-class)"
        )
    elif kind == "pairflip":
        targets = (np.arange(num_classes, dtype=np.int64) + 1) % num_classes
        noisy = _flip_with_targets(clean, targets, rate, rng)
        description = f"pairflip {_percent(rate)} (class c -> c+1 mod C)"
    elif kind == "matrix":
        assert spec.path is not None  # NoiseSpec refuses "matrix" without a path
        matrix = load_transition_matrix(spec.path, num_classes)
        noisy = clean.copy()
        for true_class in range(num_classes):
            members = np.nonzero(clean == true_class)[0]
            if members.size:
                noisy[members] = rng.choice(num_classes, size=members.size, p=matrix[true_class])
        description = f"transition matrix from {spec.path} (row = true class)"
    elif kind == "human":
        noisy = _human_labels(clean, num_classes, spec.label_set, dataset, human_labels)
        description = f"human labels {spec.label_set!r} of {dataset}"
    else:  # pragma: no cover - NoiseSpec validates kind
        raise ConfigError(f"unknown label-noise kind {kind!r}")

    noisy = noisy.astype(np.int64, copy=False)
    is_wrong = noisy != clean
    wrong_fraction = float(is_wrong.mean())
    return NoisyLabels(
        labels=noisy,
        is_wrong=is_wrong,
        wrong_fraction=wrong_fraction,
        description=description,
    )


def _human_labels(
    clean: np.ndarray,
    num_classes: int,
    label_set: str | None,
    dataset: str,
    human_labels: dict[str, np.ndarray] | None,
) -> np.ndarray:
    if not human_labels:
        raise ConfigError(
            f"noise 'human:{label_set}' needs a dataset that ships human labels "
            f"(cifar10n or cifar100n), but dataset {dataset!r} has none"
        )
    if label_set not in human_labels:
        raise ConfigError(
            f"dataset {dataset!r} has no human label set {label_set!r}; available: "
            f"{', '.join(sorted(human_labels))}"
        )
    labels = np.asarray(human_labels[label_set])
    if labels.shape != clean.shape:
        raise DataError(
            f"human label set {label_set!r} has shape {labels.shape}, but the training set has "
            f"{clean.shape[0]} labels"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"human label set {label_set!r} must be integer, not {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"human label set {label_set!r} has classes outside 0..{num_classes - 1}")
    return labels.astype(np.int64, copy=True)
