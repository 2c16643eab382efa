"""Fixture writers for the data tests: idx files, CIFAR python batches, CIFAR-N label files.

Each writer produces the on-disk format byte-for-byte as the real files have it (where that
matters to a reader), in torchvision's folder layout.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

# ----------------------------------------------------------------------------- idx (MNIST)


def write_idx(path: str, array: np.ndarray) -> None:
    """idx format: magic 0x0000 08 <ndim> (uint8 data), big-endian uint32 dims, raw bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.tobytes()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        with open(path, "wb") as handle:
            handle.write(payload)


def write_mnist_like(folder: str, *, num_train: int, num_test: int, gz: bool, seed: int) -> dict:
    """Writes the four idx files into `folder`; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, num_train).astype(np.uint8),
        "test_x": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, num_test).astype(np.uint8),
    }
    suffix = ".gz" if gz else ""
    write_idx(os.path.join(folder, "train-images-idx3-ubyte" + suffix), arrays["train_x"])
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte" + suffix), arrays["train_y"])
    write_idx(os.path.join(folder, "t10k-images-idx3-ubyte" + suffix), arrays["test_x"])
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte" + suffix), arrays["test_y"])
    return arrays


# ----------------------------------------------------------------------------- CIFAR batches


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _py2_str(value: bytes) -> bytes:
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value
    return b"T" + struct.pack("<i", len(value)) + value


def _py2_ndarray(array: np.ndarray) -> bytes:
    """numpy 1.x's ndarray reduce as Python 2's cPickle (protocol 2) wrote it."""
    array = np.ascontiguousarray(array)
    shape = b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    dtype = (
        b"cnumpy\ndtype\n"
        + _py2_str(array.dtype.str[1:].encode())
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + _py2_str(array.dtype.str[:1].encode())
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + b"K\x00\x85"
        + _py2_str(b"b")
        + b"\x87R"
        + b"(K\x01"
        + shape
        + dtype
        + b"\x89"
        + _py2_str(array.tobytes())
        + b"tb"
    )


def _py2_value(value: object) -> bytes:
    if isinstance(value, np.ndarray):
        return _py2_ndarray(value)
    if isinstance(value, bytes):
        return _py2_str(value)
    if isinstance(value, int):
        return _py2_int(value)
    if isinstance(value, list):
        if not value:
            return b"]"
        return b"](" + b"".join(_py2_value(v) for v in value) + b"e"
    raise TypeError(type(value))


def py2_pickle(content: dict[bytes, object]) -> bytes:
    """A dict pickled the way the CIFAR python batches are (Python 2 cPickle, protocol 2)."""
    items = b"".join(_py2_value(key) + _py2_value(value) for key, value in content.items())
    return b"\x80\x02}(" + items + b"u."


def cifar_rows(num: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num, 3072), dtype=np.uint8)


def write_cifar10(root: str, *, per_batch: int = 3, num_test: int = 4, seed: int = 0) -> dict:
    """torchvision layout <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_rows, train_labels = [], []
    for batch in range(1, 6):
        rows = cifar_rows(per_batch, seed + batch)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        content = {
            b"batch_label": f"training batch {batch} of 5".encode(),
            b"labels": labels,
            b"data": rows,
            b"filenames": [f"img_{batch}_{i}.png".encode() for i in range(per_batch)],
        }
        with open(os.path.join(folder, f"data_batch_{batch}"), "wb") as handle:
            handle.write(py2_pickle(content))
        train_rows.append(rows)
        train_labels += labels
    test_rows = cifar_rows(num_test, seed + 100)
    test_labels = [int(v) for v in rng.integers(0, 10, num_test)]
    content = {b"batch_label": b"testing batch 1 of 1", b"labels": test_labels, b"data": test_rows}
    with open(os.path.join(folder, "test_batch"), "wb") as handle:
        handle.write(py2_pickle(content))
    return {
        "train_rows": np.concatenate(train_rows),
        "train_labels": np.asarray(train_labels),
        "test_rows": test_rows,
        "test_labels": np.asarray(test_labels),
    }


def write_cifar100(root: str, *, num_train: int = 30, num_test: int = 6, seed: int = 0) -> dict:
    """torchvision layout <root>/cifar-100-python/{train,test}."""
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, num in (("train", num_train), ("test", num_test)):
        rows = cifar_rows(num, seed + len(split))
        fine = [int(v) for v in rng.integers(0, 100, num)]
        content = {
            b"filenames": [b"x.png"] * num,
            b"batch_label": split.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [0] * num,
            b"data": rows,
        }
        with open(os.path.join(folder, split), "wb") as handle:
            handle.write(py2_pickle(content))
        written[f"{split}_rows"], written[f"{split}_labels"] = rows, np.asarray(fine)
    return written


def write_cifar10n(path: str, clean: np.ndarray, *, seed: int = 0, **overrides) -> dict:
    """A CIFAR-10N label file: torch.save of a dict of int64 numpy arrays."""
    rng = np.random.default_rng(seed)
    content = {"clean_label": np.asarray(clean, dtype=np.int64)}
    for key in ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"):
        content[key] = rng.integers(0, 10, len(clean)).astype(np.int64)
    content.update(overrides)
    content = {k: v for k, v in content.items() if v is not None}
    torch.save(content, path)
    return content


@pytest.fixture
def fixtures():
    """The writers above, for tests (conftest helpers are not importable as a module)."""

    class Writers:
        pass

    writers = Writers()
    for function in (
        write_idx,
        write_mnist_like,
        py2_pickle,
        cifar_rows,
        write_cifar10,
        write_cifar100,
        write_cifar10n,
    ):
        setattr(writers, function.__name__, staticmethod(function))
    return writers
