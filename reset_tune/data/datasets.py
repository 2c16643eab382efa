"""The dataset registry: reads each supported dataset from disk into uint8 (N, C, H, W) arrays.

Nothing here touches the network unless `download=True`, and then only through torchvision's own
downloaders. Where a dataset has no official test split (digits, an image folder without
train/test sub-folders), a stratified 20 % test split is carved with a fixed seed that does not
depend on the run seed, so every run of every trial is tested on the same images.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reset_tune.data.cifar_classes import CIFAR10_CLASSES, CIFAR100_CLASSES
from reset_tune.data.files import require_folder
from reset_tune.data.label_files import (
    load_cifar10n_labels,
    load_cifar100n_labels,
    safe_pickle_load,
)
from reset_tune.errors import ConfigError, DataError

DATASET_NAMES = (
    "digits",
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "cifar10n",
    "cifar100n",
    "imagefolder",
)
# Where `data_root=None` points (relative to the working directory).
DEFAULT_DATA_ROOT = "data"
# Debian's `dataset-fashion-mnist` package installs the four gzipped idx files here.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

TEST_FRACTION = 0.2  # share of each class held out as the test split when none is shipped
_HOLDOUT_SEED = 20_240_601  # fixed on purpose: the test split must not move with the run seed

FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
DEFAULT_IMAGE_SIZE = 32
# (channels, side) of each dataset's images as loaded; imagefolder's side is `image_size`, by
# default DEFAULT_IMAGE_SIZE (its images are read as RGB). The others have one native size.
IMAGE_SHAPES = {
    "digits": (1, 8),
    "mnist": (1, 28),
    "fashion-mnist": (1, 28),
    "cifar10": (3, 32),
    "cifar100": (3, 32),
    "cifar10n": (3, 32),
    "cifar100n": (3, 32),
    "imagefolder": (3, DEFAULT_IMAGE_SIZE),
}
_NATIVE_IMAGE_SIZE = {
    name: side for name, (_, side) in IMAGE_SHAPES.items() if name != "imagefolder"
}


@dataclass
class ArrayDataset:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class LoadedDataset:
    """A dataset as read from disk: clean train/test arrays and what describes them."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    class_names: list[str]
    default_augment: str
    human_labels: dict[str, np.ndarray] | None
    source: str


def load_dataset(
    name: str,
    *,
    data_root: str | None = None,
    download: bool = False,
    label_file: str | None = None,
    image_size: int | None = None,
) -> LoadedDataset:
    """Loads dataset `name` (one of `DATASET_NAMES`) with clean labels.

    `data_root` is the folder holding torchvision's on-disk layouts (default ``./data``) or, for
    ``imagefolder``, the class-per-folder images. `label_file` is the CIFAR-N human label file
    (cifar10n / cifar100n only). `image_size` is the square size images of ``imagefolder`` are
    resized to (default 32); other datasets keep their native size.
    """
    if name not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if label_file is not None and name not in ("cifar10n", "cifar100n"):
        raise ConfigError(
            f"--label-file is only used by cifar10n and cifar100n, not by dataset {name!r}"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ConfigError(f"image_size must be a positive integer, but got {image_size!r}")
    native = _NATIVE_IMAGE_SIZE.get(name)
    if image_size is not None and native is not None and image_size != native:
        raise ConfigError(
            f"image_size={image_size} is only supported for imagefolder; dataset {name!r} has "
            f"{native}x{native} images (leave image_size unset)"
        )
    root = os.path.expanduser(data_root) if data_root is not None else DEFAULT_DATA_ROOT

    if name == "digits":
        loaded = _load_digits()
    elif name in ("mnist", "fashion-mnist"):
        loaded = _load_mnist_like(name, root, download, explicit_root=data_root is not None)
    elif name in ("cifar10", "cifar100"):
        loaded = _load_cifar(name, root, download)
    elif name in ("cifar10n", "cifar100n"):
        loaded = _load_cifar_n(name, root, download, label_file)
    else:
        if data_root is None:
            raise ConfigError(
                "dataset 'imagefolder' needs --data-root: a folder with one sub-folder of "
                "images per class (optionally split into train/ and test/)"
            )
        loaded = _load_image_folder(root, image_size or DEFAULT_IMAGE_SIZE)
    return loaded


# ----------------------------------------------------------------------------- helpers


def stratified_holdout(
    labels: np.ndarray, fraction: float, *, seed: int = _HOLDOUT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into (keep, holdout), holding out round(fraction * n_c) of each class c.

    A class with at least 2 members always gets at least one held-out member, so tiny folders
    still test every class. Both index arrays are sorted. Deterministic in `seed`, which
    defaults to a fixed constant.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed]))
    holdout = []
    for cls in np.unique(labels):
        members = np.nonzero(labels == cls)[0]
        count = int(round(fraction * members.size))
        if members.size >= 2:
            count = min(max(count, 1), members.size - 1)
        holdout.append(rng.permutation(members)[:count])
    held = np.sort(np.concatenate(holdout)) if holdout else np.zeros(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(labels.shape[0]), held, assume_unique=True)
    return keep.astype(np.int64), held.astype(np.int64)


def _split_by_holdout(images: np.ndarray, labels: np.ndarray) -> tuple[ArrayDataset, ArrayDataset]:
    keep, held = stratified_holdout(labels, TEST_FRACTION)
    return (
        ArrayDataset(np.ascontiguousarray(images[keep]), labels[keep]),
        ArrayDataset(np.ascontiguousarray(images[held]), labels[held]),
    )


# ----------------------------------------------------------------------------- digits


def _bundled_digits_csv() -> Path | None:
    """scikit-learn's digits file (what `load_digits` reads), found without importing
    scikit-learn: that import costs about 2 s on one CPU, paid by every search driver on digits."""
    found = importlib.util.find_spec("sklearn")
    locations = found.submodule_search_locations if found is not None else None
    if not locations:
        return None
    table = Path(next(iter(locations))) / "datasets" / "data" / "digits.csv.gz"
    return table if table.is_file() else None


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (images 8x8 with counts 0..16, labels); through `load_digits` where the
    file is not where scikit-learn 1.x keeps it."""
    table = _bundled_digits_csv()
    if table is not None:
        rows = np.loadtxt(table, delimiter=",")  # as load_digits: 64 pixels, then the label
        return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def _load_digits() -> LoadedDataset:
    pixels, labels = _digits_table()
    # Pixel values are counts 0..16 (a 4x4 block of a 32x32 bitmap); scale to the 0..255 range.
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    train, test = _split_by_holdout(images, labels)
    return LoadedDataset(
        name="digits",
        train=train,
        test=test,
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        default_augment="none",
        human_labels=None,
        source="scikit-learn load_digits (bundled)",
    )


# ----------------------------------------------------------------------------- MNIST-like

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension


def read_idx(path: str) -> np.ndarray:
    """Reads an idx file (MNIST's format; gzipped when the name ends in .gz) as uint8."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read idx file {path!r}: {exc}") from None
    if len(raw) < 4:
        raise DataError(f"idx file {path!r} is truncated ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC):
        raise DataError(
            f"idx file {path!r} has magic number {magic}, expected {_IDX_IMAGES_MAGIC} (images) "
            f"or {_IDX_LABELS_MAGIC} (labels)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx file {path!r} is truncated in its header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"idx file {path!r} holds {len(raw) - header} data bytes, but its header "
            f"announces shape {dims} ({expected} bytes)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx_dir(candidates: list[str]) -> dict[str, str] | None:
    for folder in candidates:
        found = {}
        for key, stem in _IDX_FILES.items():
            for filename in (stem, stem + ".gz"):
                if os.path.isfile(os.path.join(folder, filename)):
                    found[key] = os.path.join(folder, filename)
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _load_mnist_like(name: str, root: str, download: bool, *, explicit_root: bool) -> LoadedDataset:
    folder = _TORCHVISION_FOLDER[name]
    candidates = [os.path.join(root, folder, "raw"), root]
    if name == "fashion-mnist":
        candidates.append(DEBIAN_FASHION_MNIST_DIR)
    files = _find_idx_dir(candidates)
    if files is None and download:
        _download_torchvision(name, root)
        files = _find_idx_dir(candidates)
    if files is None:
        expected = os.path.join(root, folder, "raw", "{train,t10k}-{images-idx3,labels-idx1}-ubyte")
        where = "" if explicit_root else f" (data_root defaulted to {DEFAULT_DATA_ROOT!r})"
        hint = ""
        if name == "fashion-mnist":
            hint = (
                f", or install Debian's dataset-fashion-mnist (files in {DEBIAN_FASHION_MNIST_DIR})"
            )
        raise DataError(
            f"dataset {name!r} not found: expected {expected}[.gz]{where}; pass --data-root "
            f"pointing at a folder holding {folder}/raw/, or --download{hint}"
        )
    train_x, train_y = read_idx(files["train_images"]), read_idx(files["train_labels"])
    test_x, test_y = read_idx(files["test_images"]), read_idx(files["test_labels"])
    for images_key, labels_key, images, labels in (
        ("train_images", "train_labels", train_x, train_y),
        ("test_images", "test_labels", test_x, test_y),
    ):
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{files[images_key]} (shape {images.shape}) and {files[labels_key]} "
                f"(shape {labels.shape}) do not hold one label per image"
            )
        if labels.size and labels.max() >= 10:
            raise DataError(f"{files[labels_key]} has class {labels.max()}, expected 0..9")
    names = FASHION_MNIST_CLASSES if name == "fashion-mnist" else tuple(str(d) for d in range(10))
    return LoadedDataset(
        name=name,
        train=ArrayDataset(np.ascontiguousarray(train_x[:, None]), train_y.astype(np.int64)),
        test=ArrayDataset(np.ascontiguousarray(test_x[:, None]), test_y.astype(np.int64)),
        num_classes=10,
        class_names=list(names),
        default_augment="none",
        human_labels=None,
        source=os.path.dirname(files["train_images"]),
    )


# ----------------------------------------------------------------------------- CIFAR

_CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": (["train"], ["test"]),
}


def _download_torchvision(name: str, root: str) -> None:
    """Fetches `name` into `root` in torchvision's layout (never unpickles anything itself)."""
    try:
        import torchvision

        os.makedirs(root, exist_ok=True)
        if name == "mnist":
            torchvision.datasets.MNIST(root, train=True, download=True)
        elif name == "fashion-mnist":
            torchvision.datasets.FashionMNIST(root, train=True, download=True)
        else:
            # torchvision's CIFAR classes unpickle the batches unrestricted after downloading;
            # only their archive metadata is used here, and the files are read safely below.
            from torchvision.datasets.utils import download_and_extract_archive

            cls = (
                torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            )
            download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
    except Exception as exc:  # network, checksum and file-system errors all end the same way
        raise DataError(
            f"downloading {name!r} into {root!r} failed ({type(exc).__name__}: {exc}); "
            "check the network, or place the files there yourself and drop --download"
        ) from None


def _read_cifar_file(path: str, labels_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        content = safe_pickle_load(handle, source=path)
    if not isinstance(content, dict):
        raise DataError(f"CIFAR file {path!r} must hold a dict, but holds {type(content).__name__}")
    # Python-2 pickles give str keys under latin1 decoding, Python-3 ones bytes keys.
    content = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}
    for key in ("data", labels_key):
        if key not in content:
            raise DataError(
                f"CIFAR file {path!r} lacks key {key!r} (has: {', '.join(map(str, content))})"
            )
    data = np.asarray(content["data"])
    try:
        labels = np.asarray(content[labels_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"CIFAR file {path!r}: {labels_key!r} is not a list of integers") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"CIFAR file {path!r}: 'data' must be uint8 of shape (N, 3072), "
            f"but is {data.dtype} of shape {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"CIFAR file {path!r}: {data.shape[0]} images but {labels.shape} labels "
            f"under {labels_key!r}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"CIFAR file {path!r}: labels must be in 0..{num_classes - 1}, "
            f"found {labels.min()}..{labels.max()}"
        )
    # Rows are 1024 red, then 1024 green, then 1024 blue values, each a row-major 32x32 plane.
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(name: str, root: str, download: bool) -> LoadedDataset:
    folder = os.path.join(root, _CIFAR_FOLDER[name])
    train_files, test_files = _CIFAR_FILES[name]
    paths = [os.path.join(folder, f) for f in train_files + test_files]
    if not all(os.path.isfile(p) for p in paths) and download:
        _download_torchvision(name, root)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"dataset {name!r} not found: missing {', '.join(missing)}; pass --data-root "
            f"pointing at the folder that holds {_CIFAR_FOLDER[name]}/, or --download"
        )
    labels_key, num_classes = ("labels", 10) if name == "cifar10" else ("fine_labels", 100)
    parts = {}
    for split, files in (("train", train_files), ("test", test_files)):
        read = [_read_cifar_file(os.path.join(folder, f), labels_key, num_classes) for f in files]
        parts[split] = ArrayDataset(
            np.ascontiguousarray(np.concatenate([x for x, _ in read])),
            np.concatenate([y for _, y in read]),
        )
    return LoadedDataset(
        name=name,
        train=parts["train"],
        test=parts["test"],
        num_classes=num_classes,
        class_names=list(CIFAR10_CLASSES if name == "cifar10" else CIFAR100_CLASSES),
        default_augment="crop-flip",
        human_labels=None,
        source=folder,
    )


def _load_cifar_n(name: str, root: str, download: bool, label_file: str | None) -> LoadedDataset:
    base = "cifar10" if name == "cifar10n" else "cifar100"
    file_name = "CIFAR-10_human.pt" if name == "cifar10n" else "CIFAR-100_human.pt"
    if label_file is None:
        raise ConfigError(
            f"dataset {name!r} needs --label-file: the CIFAR-N project's {file_name} "
            "(https://github.com/UCSC-REAL/cifar-10-100n, folder data/)"
        )
    cifar = _load_cifar(base, root, download)
    loader = load_cifar10n_labels if name == "cifar10n" else load_cifar100n_labels
    human = loader(os.path.expanduser(label_file), expected_length=len(cifar.train))
    differ = np.nonzero(human["clean"] != cifar.train.labels)[0]
    if differ.size:
        raise DataError(
            f"label file {label_file!r} does not match this {base} copy under {cifar.source!r}: "
            f"{differ.size} of {len(cifar.train)} clean labels differ (first at index "
            f"{differ[0]}); CIFAR-N labels follow CIFAR's original training order"
        )
    cifar.name = name
    cifar.human_labels = human
    cifar.source = f"{cifar.source} + {label_file}"
    return cifar


# ----------------------------------------------------------------------------- image folders


def _class_folders(folder: str) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _read_images(folder: str, classes: list[str], image_size: int) -> ArrayDataset:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, cls in enumerate(classes):
        class_dir = os.path.join(folder, cls)
        if not os.path.isdir(class_dir):
            continue
        files = sorted(
            f
            for f in os.listdir(class_dir)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        )
        for filename in files:
            path = os.path.join(class_dir, filename)
            try:
                with Image.open(path) as image:
                    rgb = image.convert("RGB").resize(
                        (image_size, image_size), Image.Resampling.BILINEAR
                    )
                    images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            except (
                OSError,
                UnidentifiedImageError,
                ValueError,
                Image.DecompressionBombError,
            ) as exc:
                raise DataError(f"cannot read image {path!r}: {exc}") from None
            labels.append(label)
    if not images:
        return ArrayDataset(
            np.zeros((0, 3, image_size, image_size), np.uint8), np.zeros(0, np.int64)
        )
    return ArrayDataset(np.stack(images), np.asarray(labels, dtype=np.int64))


def _load_image_folder(root: str, image_size: int) -> LoadedDataset:
    require_folder(root, "image folder", "; check --data-root")
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    presplit = os.path.isdir(train_dir) and os.path.isdir(test_dir)
    # A lone train/ folder is still the training data; its test split is carved from it.
    source_dir = train_dir if os.path.isdir(train_dir) else root
    classes = _class_folders(source_dir)
    if len(classes) < 2:
        raise DataError(
            f"image folder {source_dir!r} has {len(classes)} class sub-folder(s); it needs at "
            "least 2 (one sub-folder of images per class)"
        )
    train = _read_images(source_dir, classes, image_size)
    counts = np.bincount(train.labels, minlength=len(classes))
    empty = [cls for cls, count in zip(classes, counts, strict=True) if count == 0]
    if empty:
        raise DataError(
            f"image folder {source_dir!r}: class folder(s) {', '.join(empty)} contain no images "
            f"(recognised extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    if presplit:
        extra = sorted(set(_class_folders(test_dir)) - set(classes))
        if extra:
            raise DataError(
                f"image folder {test_dir!r} has class folder(s) {', '.join(extra)} that "
                f"{train_dir!r} lacks; train/ and test/ must use the same class names"
            )
        test = _read_images(test_dir, classes, image_size)
        if len(test) == 0:
            raise DataError(f"image folder {test_dir!r} contains no images")
    else:
        if counts.min() < 2:
            raise DataError(
                f"image folder {source_dir!r}: every class needs at least 2 images to carve a test "
                f"split, but {classes[int(counts.argmin())]!r} has {counts.min()}"
            )
        train, test = _split_by_holdout(train.images, train.labels)
    return LoadedDataset(
        name="imagefolder",
        train=train,
        test=test,
        num_classes=len(classes),
        class_names=classes,
        default_augment="crop-flip",
        human_labels=None,
        source=root,
    )
