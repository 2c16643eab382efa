"""Label-noise models: measured rates against theory, allowed transitions, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from reset_tune.data.cifar_classes import (
    CIFAR100_CLASSES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR100_SUPERCLASSES,
)
from reset_tune.data.noise import (
    NOISE_KINDS,
    NoiseSpec,
    apply_noise,
    load_transition_matrix,
    parse_noise_spec,
)
from reset_tune.errors import ConfigError, DataError

NUM = 100_000
TOL = 0.01  # binomial sd at n=100k, p<=0.5 is <= 0.0016: 0.01 is > 6 sd


def uniform_labels(num_classes: int, num: int = NUM, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, num).astype(np.int64)


def noisy(labels, num_classes, text, *, seed=0, dataset="synthetic", human_labels=None):
    return apply_noise(
        labels,
        num_classes,
        parse_noise_spec(text),
        dataset=dataset,
        rng=np.random.default_rng(seed),
        human_labels=human_labels,
    )


# The official CIFAR-100 super-class table (https://www.cs.toronto.edu/~kriz/cifar.html).
SUPERCLASS_MEMBERS = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text",
    [
        "none",
        "symmetric:0.4",
        "symmetric-uniform:0.4",
        "asymmetric:0.4",
        "asymmetric-cifar10:0.3",
        "asymmetric-cifar100:0.2",
        "pairflip:0.45",
        "matrix:/tmp/x:y/T.npy",
        "human:worst",
    ],
)
def test_spec_text_round_trips(text):
    spec = parse_noise_spec(text)
    assert str(spec) == text
    assert parse_noise_spec(str(spec)) == spec


def test_parse_fields():
    assert parse_noise_spec(" Symmetric:0.25 ") == NoiseSpec("symmetric", rate=0.25)
    assert parse_noise_spec("matrix:C:\\T.csv").path == "C:\\T.csv"
    assert parse_noise_spec("human:aggre").label_set == "aggre"
    assert set(NOISE_KINDS) >= {"symmetric", "pairflip", "matrix", "human", "none"}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("symmetric:1.5", ["1.5", "[0, 1]"]),
        ("pairflip:-0.1", ["-0.1"]),
        ("foo:0.1", ["'foo'", "symmetric", "pairflip"]),
        ("symmetric", ["missing", "symmetric:0.4"]),
        ("symmetric:", ["missing"]),
        ("symmetric:abc", ["'abc'"]),
        ("none:0.3", ["none:0.3"]),
        ("matrix", ["matrix:"]),
        ("human:", ["human:worst"]),
        ("", ["symmetric:0.4"]),
        ("symmetric:nan", ["nan"]),
    ],
)
def test_bad_spec_text_names_the_bad_value(text, fragments):
    with pytest.raises(ConfigError) as info:
        parse_noise_spec(text)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_spec_constructor_validates():
    with pytest.raises(ConfigError, match="2.0"):
        NoiseSpec("symmetric", rate=2.0)
    with pytest.raises(ConfigError, match="takes no rate"):
        NoiseSpec("human", rate=0.2, label_set="worst")
    with pytest.raises(ConfigError, match="'bogus'"):
        NoiseSpec("bogus")
    with pytest.raises(ConfigError, match="takes no path"):
        NoiseSpec("symmetric", rate=0.2, path="T.npy")


# ----------------------------------------------------------------------------- rates


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8, 1.0])
def test_symmetric_wrong_fraction_is_rate(rate):
    clean = uniform_labels(10)
    result = noisy(clean, 10, f"symmetric:{rate}")
    measured = np.mean(result.labels != clean)
    assert abs(measured - rate) < TOL
    assert result.wrong_fraction == pytest.approx(measured)
    np.testing.assert_array_equal(result.is_wrong, result.labels != clean)
    assert result.labels.dtype == np.int64


def test_symmetric_flips_spread_uniformly_over_other_classes():
    clean = np.zeros(NUM, dtype=np.int64) + 3
    result = noisy(clean, 10, "symmetric:1.0")
    assert not np.any(result.labels == 3)  # a flip never lands on the true class
    frequencies = np.bincount(result.labels, minlength=10) / NUM
    others = np.delete(frequencies, 3)
    np.testing.assert_allclose(others, 1 / 9, atol=TOL)


def test_symmetric_uniform_may_keep_true_class():
    clean = uniform_labels(10)
    result = noisy(clean, 10, "symmetric-uniform:0.4")
    assert abs(np.mean(result.labels != clean) - 0.4 * 9 / 10) < TOL
    all_replaced = noisy(np.full(NUM, 3, dtype=np.int64), 10, "symmetric-uniform:1.0")
    frequencies = np.bincount(all_replaced.labels, minlength=10) / NUM
    np.testing.assert_allclose(frequencies, 0.1, atol=TOL)  # true class included


CIFAR10_TRANSITIONS = {(9, 1), (2, 0), (3, 5), (5, 3), (4, 7)}  # truck, bird, cat, dog, deer


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_asymmetric_cifar10_only_listed_transitions(rate):
    clean = uniform_labels(10)
    result = noisy(clean, 10, f"asymmetric-cifar10:{rate}")
    changed = result.labels != clean
    transitions = set(zip(clean[changed].tolist(), result.labels[changed].tolist(), strict=True))
    assert transitions == CIFAR10_TRANSITIONS
    assert abs(changed.mean() - rate * 5 / 10) < TOL
    for source, _ in CIFAR10_TRANSITIONS:
        assert abs(changed[clean == source].mean() - rate) < 2 * TOL
    for untouched in (0, 1, 6, 7, 8):
        assert not changed[clean == untouched].any()


def test_asymmetric_picks_map_from_dataset_name():
    clean = uniform_labels(10, 5000)
    for name in ("cifar10", "cifar10n"):
        by_name = noisy(clean, 10, "asymmetric:0.4", dataset=name)
        explicit = noisy(clean, 10, "asymmetric-cifar10:0.4", dataset=name)
        np.testing.assert_array_equal(by_name.labels, explicit.labels)
    clean100 = uniform_labels(100, 5000)
    by_name = noisy(clean100, 100, "asymmetric:0.4", dataset="cifar100n")
    explicit = noisy(clean100, 100, "asymmetric-cifar100:0.4")
    np.testing.assert_array_equal(by_name.labels, explicit.labels)
    with pytest.raises(ConfigError, match="pairflip") as info:
        noisy(clean, 10, "asymmetric:0.4", dataset="fashion-mnist")
    assert "'fashion-mnist'" in str(info.value)


def test_asymmetric_class_count_mismatch_is_config_error():
    with pytest.raises(ConfigError, match="10 classes"):
        noisy(uniform_labels(5, 100), 5, "asymmetric-cifar10:0.4")
    with pytest.raises(ConfigError, match="100 classes"):
        noisy(uniform_labels(10, 100), 10, "asymmetric-cifar100:0.4")


def test_cifar100_table_matches_official_superclasses():
    assert len(CIFAR100_CLASSES) == 100 and len(set(CIFAR100_CLASSES)) == 100
    for coarse, superclass in enumerate(CIFAR100_SUPERCLASSES):
        members = SUPERCLASS_MEMBERS[superclass].split()
        table = [CIFAR100_CLASSES[f] for f in range(100) if CIFAR100_FINE_TO_COARSE[f] == coarse]
        assert sorted(table) == sorted(members), superclass


def test_asymmetric_cifar100_cycles_within_superclass():
    clean = uniform_labels(100)
    result = noisy(clean, 100, "asymmetric-cifar100:0.4")
    changed = result.labels != clean
    assert abs(changed.mean() - 0.4) < TOL
    # Expected successor by name: the next member of the super-class in fine-label order.
    index = {name: i for i, name in enumerate(CIFAR100_CLASSES)}
    successor = {}
    for text in SUPERCLASS_MEMBERS.values():
        members = sorted(index[name] for name in text.split())
        for position, fine in enumerate(members):
            successor[fine] = members[(position + 1) % len(members)]
    expected = np.array([successor[c] for c in clean[changed]])
    np.testing.assert_array_equal(result.labels[changed], expected)
    apple, mushroom, sweet_pepper = index["apple"], index["mushroom"], index["sweet_pepper"]
    assert successor[apple] == mushroom and successor[sweet_pepper] == apple


@pytest.mark.parametrize("num_classes", [2, 10])
def test_pairflip(num_classes):
    clean = uniform_labels(num_classes)
    result = noisy(clean, num_classes, "pairflip:0.45")
    changed = result.labels != clean
    assert abs(changed.mean() - 0.45) < TOL
    np.testing.assert_array_equal(result.labels[changed], (clean[changed] + 1) % num_classes)


def test_none_keeps_labels():
    clean = uniform_labels(10, 1000)
    result = noisy(clean, 10, "none")
    np.testing.assert_array_equal(result.labels, clean)
    assert result.wrong_fraction == 0.0 and not result.is_wrong.any()
    assert result.labels is not clean


# ----------------------------------------------------------------------------- matrix


def random_stochastic(num_classes, seed=0):
    matrix = np.random.default_rng(seed).random((num_classes, num_classes)) ** 3
    return matrix / matrix.sum(axis=1, keepdims=True)


def test_matrix_sampling_matches_matrix(tmp_path):
    matrix = random_stochastic(5)
    path = tmp_path / "T.npy"
    np.save(path, matrix)
    clean = uniform_labels(5)
    result = noisy(clean, 5, f"matrix:{path}")
    empirical = np.zeros((5, 5))
    np.add.at(empirical, (clean, result.labels), 1)
    empirical /= empirical.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(empirical, matrix, atol=TOL)
    expected_wrong = sum(np.mean(clean == c) * (1 - matrix[c, c]) for c in range(5))
    assert abs(result.wrong_fraction - expected_wrong) < TOL


def test_matrix_formats_load_the_same(tmp_path):
    matrix = random_stochastic(4)
    np.savetxt(tmp_path / "T.csv", matrix, delimiter=",", fmt="%.17g")
    np.savetxt(tmp_path / "T.txt", matrix, fmt="%.17g")
    np.save(tmp_path / "T.npy", matrix)
    for name in ("T.csv", "T.txt", "T.npy"):
        np.testing.assert_allclose(load_transition_matrix(tmp_path / name, 4), matrix, rtol=1e-15)


def test_matrix_rows_within_tolerance_are_accepted(tmp_path):
    matrix = np.full((3, 3), 1 / 3)
    matrix[0, 0] += 5e-7  # inside the 1e-6 tolerance, outside numpy's own sampling tolerance
    np.save(tmp_path / "T.npy", matrix)
    result = noisy(uniform_labels(3, 1000), 3, f"matrix:{tmp_path / 'T.npy'}")
    assert 0.55 < result.wrong_fraction < 0.78


def test_matrix_identity_is_noise_free(tmp_path):
    np.savetxt(tmp_path / "I.csv", np.eye(3), delimiter=",")
    clean = uniform_labels(3, 1000)
    np.testing.assert_array_equal(noisy(clean, 3, f"matrix:{tmp_path / 'I.csv'}").labels, clean)


def test_matrix_errors_name_the_problem(tmp_path):
    bad_row = random_stochastic(4)
    bad_row[2] *= 1.1
    np.save(tmp_path / "rows.npy", bad_row)
    with pytest.raises(DataError, match="row 2 sums to 1.1"):
        load_transition_matrix(tmp_path / "rows.npy", 4)
    np.save(tmp_path / "shape.npy", random_stochastic(3))
    with pytest.raises(DataError, match=r"shape \(3, 3\).*4 classes"):
        noisy(uniform_labels(4, 100), 4, f"matrix:{tmp_path / 'shape.npy'}")
    negative = np.eye(3)
    negative[1] = [0.5, -0.5, 1.0]
    np.save(tmp_path / "neg.npy", negative)
    with pytest.raises(DataError, match="row 1 has a negative entry"):
        load_transition_matrix(tmp_path / "neg.npy", 3)
    with pytest.raises(DataError, match="missing.npy"):
        load_transition_matrix(tmp_path / "missing.npy", 3)
    (tmp_path / "T.json").write_text("[]")
    with pytest.raises(DataError, match="'.json'"):
        load_transition_matrix(tmp_path / "T.json", 3)
    (tmp_path / "garbage.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="garbage.csv"):
        load_transition_matrix(tmp_path / "garbage.csv", 2)


# ----------------------------------------------------------------------------- human


def test_human_labels_taken_verbatim():
    clean = uniform_labels(10, 500)
    worst = clean.copy()
    worst[::4] = (worst[::4] + 3) % 10
    result = noisy(clean, 10, "human:worst", human_labels={"clean": clean, "worst": worst})
    np.testing.assert_array_equal(result.labels, worst)
    np.testing.assert_array_equal(result.is_wrong, np.arange(500) % 4 == 0)
    assert result.wrong_fraction == pytest.approx(0.25)


def test_human_errors():
    clean = uniform_labels(10, 50)
    with pytest.raises(ConfigError, match="cifar10n") as info:
        noisy(clean, 10, "human:worst", dataset="cifar10")
    assert "'cifar10'" in str(info.value)
    with pytest.raises(ConfigError, match="'best'.*aggre, worst"):
        noisy(clean, 10, "human:best", human_labels={"worst": clean, "aggre": clean})
    with pytest.raises(DataError, match="shape"):
        noisy(clean, 10, "human:worst", human_labels={"worst": clean[:10]})


# ----------------------------------------------------------------------------- generic


@pytest.mark.parametrize(
    "text", ["symmetric:0.4", "symmetric-uniform:0.4", "pairflip:0.3", "asymmetric-cifar10:0.5"]
)
def test_same_seed_same_labels_other_seed_differs(text):
    clean = uniform_labels(10, 2000)
    first = noisy(clean, 10, text, seed=7).labels
    np.testing.assert_array_equal(first, noisy(clean, 10, text, seed=7).labels)
    assert not np.array_equal(first, noisy(clean, 10, text, seed=8).labels)


def test_input_labels_are_not_modified():
    clean = uniform_labels(10, 1000)
    before = clean.copy()
    noisy(clean, 10, "symmetric:0.9")
    np.testing.assert_array_equal(clean, before)


def test_labels_out_of_range_rejected():
    clean = np.array([0, 1, 10, 2])
    with pytest.raises(DataError, match="label 10 at index 2") as info:
        noisy(clean, 10, "symmetric:0.1")
    assert "0..9" in str(info.value)
    with pytest.raises(DataError, match="label -1"):
        noisy(np.array([0, -1]), 10, "none")
    with pytest.raises(DataError, match="integer"):
        noisy(np.array([0.5, 1.0]), 10, "none")
    with pytest.raises(ConfigError, match="num_classes=1"):
        noisy(np.zeros(3, dtype=np.int64), 1, "none")
