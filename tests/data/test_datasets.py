"""Dataset loading from torchvision's on-disk layouts, fixtures written here, and errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reset_tune.data.datasets as datasets_module
from reset_tune.data import DATASET_NAMES, build_splits, load_dataset, parse_noise_spec
from reset_tune.errors import ConfigError, DataError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def sorted_rows(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(images.shape[0], -1)
    return flat[np.lexsort(flat.T[::-1])]


# ----------------------------------------------------------------------------- digits


def test_digits_loads_all_images_with_a_fixed_stratified_test_split():
    from sklearn.datasets import load_digits

    first = load_dataset("digits")
    assert (first.num_classes, first.default_augment, first.human_labels) == (10, "none", None)
    assert first.train.images.shape[1:] == (1, 8, 8) and first.test.images.shape[1:] == (1, 8, 8)
    assert first.train.images.dtype == np.uint8 and first.train.labels.dtype == np.int64
    assert first.train.images.flags["C_CONTIGUOUS"] and first.test.images.flags["C_CONTIGUOUS"]
    assert len(first.train) + len(first.test) == 1797
    assert 0.19 < len(first.test) / 1797 < 0.21
    raw = load_digits()
    per_class = np.bincount(raw.target, minlength=10)
    test_per_class = np.bincount(first.test.labels, minlength=10)
    assert np.all(np.abs(test_per_class - 0.2 * per_class) <= 1)
    # Same pixels as scikit-learn's (values 0..16 scaled to 0..255), none lost or duplicated.
    expected = np.rint(raw.images * 255 / 16).astype(np.uint8)
    combined = np.concatenate([first.train.images, first.test.images])[:, 0]
    np.testing.assert_array_equal(sorted_rows(combined), sorted_rows(expected))
    assert combined.max() == 255 and combined.min() == 0
    # ... each with its own label.
    labelled = np.concatenate([first.train.labels, first.test.labels])
    ours = np.column_stack([combined.reshape(len(combined), -1), labelled])
    theirs = np.column_stack([expected.reshape(len(expected), -1), raw.target])
    np.testing.assert_array_equal(sorted_rows(ours), sorted_rows(theirs))
    second = load_dataset("digits")
    np.testing.assert_array_equal(first.test.images, second.test.images)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)


def test_digits_come_from_load_digits_where_scikit_learns_file_is_not_found(monkeypatch):
    from reset_tune.data import datasets

    assert datasets._bundled_digits_csv() is not None  # else both loads below are the fallback
    read = load_dataset("digits")
    monkeypatch.setattr(datasets, "_bundled_digits_csv", lambda: None)
    fallback = load_dataset("digits")
    for split in ("train", "test"):
        ours, theirs = getattr(read, split), getattr(fallback, split)
        np.testing.assert_array_equal(ours.images, theirs.images)
        np.testing.assert_array_equal(ours.labels, theirs.labels)


# ----------------------------------------------------------------------------- MNIST-like


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_like_idx_files_load(tmp_path, fixtures, name, folder, gz):
    written = fixtures.write_mnist_like(
        str(tmp_path / folder / "raw"), num_train=12, num_test=5, gz=gz, seed=3
    )
    loaded = load_dataset(name, data_root=str(tmp_path))
    np.testing.assert_array_equal(loaded.train.images[:, 0], written["train_x"])
    np.testing.assert_array_equal(loaded.train.labels, written["train_y"])
    np.testing.assert_array_equal(loaded.test.images[:, 0], written["test_x"])
    np.testing.assert_array_equal(loaded.test.labels, written["test_y"])
    assert loaded.train.images.shape == (12, 1, 28, 28) and loaded.train.labels.dtype == np.int64
    assert loaded.default_augment == "none" and loaded.num_classes == 10
    assert loaded.source == str(tmp_path / folder / "raw")
    if name == "fashion-mnist":
        assert loaded.class_names[0] == "t-shirt/top" and loaded.class_names[9] == "ankle boot"


def test_idx_files_directly_under_data_root(tmp_path, fixtures):
    written = fixtures.write_mnist_like(str(tmp_path), num_train=4, num_test=2, gz=True, seed=0)
    np.testing.assert_array_equal(
        load_dataset("mnist", data_root=str(tmp_path)).test.labels, written["test_y"]
    )


def test_corrupt_idx_file_is_named(tmp_path, fixtures):
    raw = tmp_path / "MNIST" / "raw"
    fixtures.write_mnist_like(str(raw), num_train=4, num_test=2, gz=False, seed=0)
    path = raw / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[3] = 7  # wrong magic
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*magic number"):
        load_dataset("mnist", data_root=str(tmp_path))
    path.write_bytes(bytes(data[:3]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", data_root=str(tmp_path))


def test_missing_mnist_names_paths_and_fixes(tmp_path, monkeypatch):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_root=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train" in message and "--data-root" in message and "--download" in message
    monkeypatch.setattr(datasets_module, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="dataset-fashion-mnist") as info:
        load_dataset("fashion-mnist", data_root=str(tmp_path))
    assert "FashionMNIST" in str(info.value)


def test_download_goes_through_torchvision(tmp_path, fixtures, monkeypatch):
    import torchvision

    calls = []

    def fake_mnist(root, train=True, download=False):
        calls.append((root, download))
        fixtures.write_mnist_like(
            os.path.join(root, "MNIST", "raw"), num_train=6, num_test=3, gz=True, seed=1
        )

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    loaded = load_dataset("mnist", data_root=str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True)] and len(loaded.train) == 6
    load_dataset("mnist", data_root=str(tmp_path), download=True)
    assert len(calls) == 1  # files present: no second download


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="downloading 'mnist'.*network is unreachable"):
        load_dataset("mnist", data_root=str(tmp_path), download=True)


@pytest.mark.skipif(
    not DEBIAN_FASHION.exists(), reason="Debian's dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_debian_package(tmp_path):
    loaded = load_dataset("fashion-mnist", data_root=str(tmp_path))  # empty root: falls back
    assert loaded.source == str(DEBIAN_FASHION)
    assert loaded.train.images.shape == (60_000, 1, 28, 28)
    assert loaded.test.images.shape == (10_000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(loaded.train.labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(loaded.test.labels), [1000] * 10)


# ----------------------------------------------------------------------------- CIFAR


def planes(rows: np.ndarray) -> np.ndarray:
    """Independent reference of CIFAR's row layout: 1024 R, 1024 G, 1024 B, each 32x32."""
    out = np.empty((rows.shape[0], 3, 32, 32), dtype=np.uint8)
    for k in range(rows.shape[0]):
        for channel in range(3):
            for i in range(32):
                start = channel * 1024 + i * 32
                out[k, channel, i] = rows[k, start : start + 32]
    return out


def test_cifar10_batches_load(tmp_path, fixtures):
    written = fixtures.write_cifar10(str(tmp_path), per_batch=3, num_test=4)
    loaded = load_dataset("cifar10", data_root=str(tmp_path))
    assert loaded.train.images.shape == (15, 3, 32, 32) and loaded.test.images.shape == (
        4,
        3,
        32,
        32,
    )
    np.testing.assert_array_equal(loaded.train.images, planes(written["train_rows"]))
    np.testing.assert_array_equal(loaded.train.labels, written["train_labels"])
    np.testing.assert_array_equal(loaded.test.images, planes(written["test_rows"]))
    np.testing.assert_array_equal(loaded.test.labels, written["test_labels"])
    assert loaded.num_classes == 10 and loaded.default_augment == "crop-flip"
    assert loaded.class_names[9] == "truck" and loaded.class_names[3] == "cat"
    assert loaded.source == str(tmp_path / "cifar-10-batches-py")


def test_cifar100_loads_fine_labels(tmp_path, fixtures):
    written = fixtures.write_cifar100(str(tmp_path), num_train=30, num_test=6)
    loaded = load_dataset("cifar100", data_root=str(tmp_path))
    np.testing.assert_array_equal(loaded.train.images, planes(written["train_rows"]))
    np.testing.assert_array_equal(loaded.train.labels, written["train_labels"])
    np.testing.assert_array_equal(loaded.test.labels, written["test_labels"])
    assert loaded.num_classes == 100 and loaded.class_names[0] == "apple"


def test_cifar_repickled_by_python3_also_loads(tmp_path, fixtures):
    fixtures.write_cifar10(str(tmp_path))
    folder = tmp_path / "cifar-10-batches-py"
    rows = fixtures.cifar_rows(2, 9)
    content = {b"data": rows, b"labels": [4, 5], b"batch_label": b"x"}
    (folder / "test_batch").write_bytes(pickle.dumps(content, protocol=4))
    loaded = load_dataset("cifar10", data_root=str(tmp_path))
    np.testing.assert_array_equal(loaded.test.images, planes(rows))
    np.testing.assert_array_equal(loaded.test.labels, [4, 5])


def test_malicious_cifar_pickle_refused(tmp_path, fixtures):
    fixtures.write_cifar10(str(tmp_path))
    marker = tmp_path / "pwned"

    class RunsShell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        pickle.dumps({b"data": RunsShell()}, protocol=2)
    )
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", data_root=str(tmp_path))
    assert not marker.exists()


def test_malformed_cifar_batch_named(tmp_path, fixtures):
    fixtures.write_cifar10(str(tmp_path))
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(
        fixtures.py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    )
    with pytest.raises(DataError, match=r"data_batch_2.*\(N, 3072\)"):
        load_dataset("cifar10", data_root=str(tmp_path))
    path.write_bytes(fixtures.py2_pickle({b"data": fixtures.cifar_rows(2, 0), b"labels": [0, 10]}))
    with pytest.raises(DataError, match=r"data_batch_2.*0..9"):
        load_dataset("cifar10", data_root=str(tmp_path))


def test_missing_cifar_names_missing_file(tmp_path, fixtures):
    fixtures.write_cifar10(str(tmp_path))
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_4")
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_root=str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_4") in str(info.value)
    assert "--download" in str(info.value)


def test_cifar_download_uses_torchvision_archive(tmp_path, fixtures, monkeypatch):
    import torchvision
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, root, filename=None, md5=None):
        calls.append((url, filename, md5))
        fixtures.write_cifar10(root)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    loaded = load_dataset("cifar10", data_root=str(tmp_path), download=True)
    cls = torchvision.datasets.CIFAR10
    assert calls == [(cls.url, cls.filename, cls.tgz_md5)] and len(loaded.train) == 15


# ----------------------------------------------------------------------------- CIFAR-N


def test_cifar10n_attaches_human_labels(tmp_path, fixtures):
    written = fixtures.write_cifar10(str(tmp_path))
    label_file = tmp_path / "CIFAR-10_human.pt"
    saved = fixtures.write_cifar10n(str(label_file), written["train_labels"])
    loaded = load_dataset("cifar10n", data_root=str(tmp_path), label_file=str(label_file))
    assert loaded.name == "cifar10n"
    assert set(loaded.human_labels) == {"clean", "aggre", "worst", "random1", "random2", "random3"}
    np.testing.assert_array_equal(loaded.human_labels["worst"], saved["worse_label"])
    np.testing.assert_array_equal(loaded.train.labels, written["train_labels"])  # clean
    splits = build_splits(
        loaded, noise=parse_noise_spec("human:worst"), seed=0, val_fraction=0.2, train_subset=None
    )
    human_by_image = {
        image.tobytes(): label
        for image, label in zip(loaded.train.images, saved["worse_label"], strict=True)
    }
    for image, label in zip(splits.train_x.numpy(), splits.train_y.numpy(), strict=True):
        assert human_by_image[image.tobytes()] == label


def test_cifar10n_label_file_must_match_images(tmp_path, fixtures):
    written = fixtures.write_cifar10(str(tmp_path))
    shifted = (written["train_labels"] + 1) % 10
    label_file = tmp_path / "CIFAR-10_human.pt"
    fixtures.write_cifar10n(str(label_file), shifted)
    with pytest.raises(DataError, match="does not match this cifar10 copy"):
        load_dataset("cifar10n", data_root=str(tmp_path), label_file=str(label_file))


def test_cifar_n_requires_label_file(tmp_path, fixtures):
    fixtures.write_cifar10(str(tmp_path))
    with pytest.raises(ConfigError, match="--label-file.*CIFAR-10_human.pt"):
        load_dataset("cifar10n", data_root=str(tmp_path))
    with pytest.raises(ConfigError, match="--label-file.*'cifar10'"):
        load_dataset("cifar10", data_root=str(tmp_path), label_file="x.pt")


# ----------------------------------------------------------------------------- image folders

COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}


def write_folder(root: Path, per_class: int = 5, sizes=((10, 12), (7, 7))) -> None:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", sizes[i % len(sizes)], colour).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")


def test_image_folder_with_carved_test_split(tmp_path):
    write_folder(tmp_path)
    loaded = load_dataset("imagefolder", data_root=str(tmp_path), image_size=16)
    assert loaded.class_names == ["cat", "dog", "emu"]
    assert loaded.train.images.shape == (12, 3, 16, 16) and loaded.test.images.shape == (
        3,
        3,
        16,
        16,
    )
    np.testing.assert_array_equal(np.bincount(loaded.test.labels), [1, 1, 1])
    for split in (loaded.train, loaded.test):
        for image, label in zip(split.images, split.labels, strict=True):
            colour = COLOURS[loaded.class_names[label]]
            np.testing.assert_array_equal(
                image, np.broadcast_to(np.array(colour)[:, None, None], (3, 16, 16))
            )
    assert load_dataset("imagefolder", data_root=str(tmp_path)).train.images.shape[-1] == 32
    again = load_dataset("imagefolder", data_root=str(tmp_path), image_size=16)
    np.testing.assert_array_equal(again.test.labels, loaded.test.labels)


def test_image_folder_with_train_and_test_folders(tmp_path):
    write_folder(tmp_path / "train", per_class=3)
    (tmp_path / "test" / "dog").mkdir(parents=True)
    Image.new("L", (5, 5), 77).save(tmp_path / "test" / "dog" / "g.png")  # grayscale -> RGB
    loaded = load_dataset("imagefolder", data_root=str(tmp_path), image_size=8)
    assert len(loaded.train) == 9 and len(loaded.test) == 1
    assert loaded.test.labels.tolist() == [1]
    assert np.all(loaded.test.images == 77)


def test_image_folder_with_only_a_train_folder(tmp_path):
    write_folder(tmp_path / "train", per_class=5)
    loaded = load_dataset("imagefolder", data_root=str(tmp_path), image_size=4)
    assert loaded.class_names == ["cat", "dog", "emu"]
    assert (len(loaded.train), len(loaded.test)) == (12, 3)


def test_corrupt_gzip_idx_is_named(tmp_path, fixtures):
    raw = tmp_path / "MNIST" / "raw"
    fixtures.write_mnist_like(str(raw), num_train=4, num_test=2, gz=True, seed=0)
    path = raw / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[20:40] = bytes(20)  # damage the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_root=str(tmp_path))


def test_image_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="--data-root"):
        load_dataset("imagefolder")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("imagefolder", data_root=str(tmp_path / "absent"))
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="1 class sub-folder"):
        load_dataset("imagefolder", data_root=str(tmp_path))
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "only" / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "only" / "b.png")
    with pytest.raises(DataError, match="empty"):
        load_dataset("imagefolder", data_root=str(tmp_path))
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", data_root=str(tmp_path))
    assert str(tmp_path / "empty" / "broken.png") in str(info.value)


# ----------------------------------------------------------------------------- registry


def test_unknown_dataset_lists_choices():
    with pytest.raises(ConfigError, match="'cifar11'") as info:
        load_dataset("cifar11")
    for name in DATASET_NAMES:
        assert name in str(info.value)


def test_image_size_only_for_image_folders():
    assert load_dataset("digits", image_size=8).train.images.shape[-1] == 8
    with pytest.raises(ConfigError, match="image_size=32"):
        load_dataset("digits", image_size=32)
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("digits", image_size=0)
    with pytest.raises(ConfigError, match="image_size=64.*'cifar10' has 32x32"):
        load_dataset("cifar10", data_root="/nonexistent", download=True, image_size=64)
