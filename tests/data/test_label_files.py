"""CIFAR-N label files and CIFAR pickles are read through allow-lists, never by running code."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from reset_tune.data.label_files import (
    load_cifar10n_labels,
    load_cifar100n_labels,
    safe_pickle_load,
)
from reset_tune.errors import DataError

N = 40


def clean_labels(num_classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, num_classes, N).astype(np.int64)


class _RunsShell:
    """Unpickling this runs a shell command (the attack a restricted loader must stop)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10n_file_loads(tmp_path, fixtures):
    path = tmp_path / "CIFAR-10_human.pt"
    written = fixtures.write_cifar10n(str(path), clean_labels())
    labels = load_cifar10n_labels(path, expected_length=N)
    assert set(labels) == {"clean", "aggre", "worst", "random1", "random2", "random3"}
    for key, file_key in [
        ("clean", "clean_label"),
        ("aggre", "aggre_label"),
        ("worst", "worse_label"),
        ("random1", "random_label1"),
        ("random3", "random_label3"),
    ]:
        np.testing.assert_array_equal(labels[key], written[file_key])
        assert labels[key].dtype == np.int64


def test_cifar100n_file_with_coarse_lists_loads(tmp_path):
    rng = np.random.default_rng(1)
    clean, noisy = rng.integers(0, 100, N), rng.integers(0, 100, N)
    path = tmp_path / "CIFAR-100_human.pt"
    torch.save(
        {
            "clean_label": clean.astype(np.int64),
            "noisy_label": noisy.astype(np.int64),
            "clean_coarse_label": [int(v) for v in rng.integers(0, 20, N)],
            "noisy_coarse_label": [np.int64(v) for v in rng.integers(0, 20, N)],
        },
        path,
    )
    labels = load_cifar100n_labels(path, expected_length=N)
    assert set(labels) == {"clean", "noisy"}
    np.testing.assert_array_equal(labels["clean"], clean)
    np.testing.assert_array_equal(labels["noisy"], noisy)


def test_file_written_under_numpy_1_loads(tmp_path, fixtures):
    """Numpy 1.x (the real CIFAR-N files) names the rebuilder numpy.core.multiarray."""
    modern = tmp_path / "modern.pt"
    written = fixtures.write_cifar10n(str(modern), clean_labels())
    legacy = tmp_path / "legacy.pt"
    with zipfile.ZipFile(modern) as source, zipfile.ZipFile(legacy, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info.filename, data)
    labels = load_cifar10n_labels(legacy, expected_length=N)
    np.testing.assert_array_equal(labels["worst"], written["worse_label"])


def test_wrong_length_names_key_and_both_sizes(tmp_path, fixtures):
    path = tmp_path / "short.pt"
    fixtures.write_cifar10n(str(path), clean_labels())
    with pytest.raises(DataError, match=r"'clean_label' has 40 labels, expected 50000"):
        load_cifar10n_labels(path)


def test_missing_key_is_named(tmp_path, fixtures):
    path = tmp_path / "nokey.pt"
    fixtures.write_cifar10n(str(path), clean_labels(), worse_label=None)
    with pytest.raises(DataError, match="worse_label"):
        load_cifar10n_labels(path, expected_length=N)


def test_out_of_range_class_is_named(tmp_path, fixtures):
    path = tmp_path / "range.pt"
    bad = clean_labels()
    bad[5] = 10
    fixtures.write_cifar10n(str(path), clean_labels(), aggre_label=bad)
    with pytest.raises(DataError, match=r"'aggre_label' contains class 10, expected classes 0..9"):
        load_cifar10n_labels(path, expected_length=N)


def test_non_integer_and_non_dict_content_rejected(tmp_path, fixtures):
    path = tmp_path / "float.pt"
    fixtures.write_cifar10n(str(path), clean_labels(), random_label2=np.zeros(N))
    with pytest.raises(DataError, match="'random_label2' must be a 1-D integer array"):
        load_cifar10n_labels(path, expected_length=N)
    torch.save(np.zeros(3, dtype=np.int64), tmp_path / "array.pt")
    with pytest.raises(DataError, match="must hold a dict"):
        load_cifar10n_labels(tmp_path / "array.pt", expected_length=N)
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(DataError, match="text.pt.*not a file written by torch.save"):
        load_cifar10n_labels(tmp_path / "text.pt", expected_length=N)


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar10n_labels(tmp_path / "absent.pt")
    message = str(info.value)
    assert "absent.pt" in message and "CIFAR-10_human.pt" in message and "--label-file" in message


def test_malicious_label_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"clean_label": _RunsShell(marker)}, path)
    with pytest.raises(DataError, match="safely") as info:
        load_cifar10n_labels(path, expected_length=N)
    assert "system" in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"clean_label": np.array([1, "x"], dtype=object)}, path)
    with pytest.raises(DataError):
        load_cifar10n_labels(path, expected_length=2)


# ----------------------------------------------------------------------------- safe_pickle_load


def test_safe_pickle_load_reads_python3_pickles_of_arrays():
    content = {
        b"data": np.arange(6, dtype=np.uint8).reshape(2, 3),
        b"labels": [1, 2],
        "name": b"raw",
        "scalar": np.int64(7),
        "floats": np.linspace(0, 1, 3),
    }
    loaded = safe_pickle_load(io.BytesIO(pickle.dumps(content, protocol=2)))
    np.testing.assert_array_equal(loaded[b"data"], content[b"data"])
    assert loaded[b"labels"] == [1, 2] and loaded["name"] == b"raw" and loaded["scalar"] == 7
    np.testing.assert_array_equal(loaded["floats"], content["floats"])


def test_safe_pickle_load_reads_python2_cifar_format(fixtures):
    rows = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    raw = fixtures.py2_pickle({b"data": rows, b"labels": [3, 300], b"batch_label": b"b1"})
    loaded = safe_pickle_load(io.BytesIO(raw))
    np.testing.assert_array_equal(loaded["data"], rows)
    assert loaded["labels"] == [3, 300] and loaded["batch_label"] == "b1"


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_safe_pickle_load_refuses_code_without_running_it(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _RunsShell(marker)}, protocol=protocol)
    with pytest.raises(DataError, match="system") as info:
        safe_pickle_load(io.BytesIO(payload), source="evil_batch")
    assert "evil_batch" in str(info.value)
    assert not marker.exists()


def test_safe_pickle_load_refuses_arbitrary_classes():
    payload = pickle.dumps(zipfile.ZipInfo("x"), protocol=2)
    with pytest.raises(DataError, match="not allowed"):
        safe_pickle_load(io.BytesIO(payload))
    with pytest.raises(DataError):
        safe_pickle_load(io.BytesIO(b"\x80\x02}("))  # truncated
