"""Tests for search specs: shipped specs load, bad ones name file and key, configs rebuild."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from reset_tune.config import TrainConfig
from reset_tune.errors import ConfigError
from reset_tune.search import RESET_SUBPARAMETERS, SearchSpec, SpecError, load_spec
from reset_tune.search.spec import AshaScheduler, Categorical, IntRange, LogUniform

SPEC_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
SHIPPED = sorted(SPEC_DIR.glob("*.yaml"))

BASE: dict[str, Any] = {
    "train": {"dataset": "digits", "noise": "symmetric:0.4", "model": "cnn", "steps": 400},
    "trials": 4,
    "params": {
        "reset_prob": {"type": "loguniform", "low": 0.001, "high": 0.05},
        "reset_layers": {"type": "categorical", "choices": ["all", "head", ["block3", "head"]]},
        "patience": {"type": "int", "low": 100, "high": 300, "step": 50},
        "checkpoint_metric": {"type": "categorical", "choices": ["val_loss", "val_acc"]},
        "lr": {"type": "loguniform", "low": 0.01, "high": 0.2},
        "batch_size": {"type": "categorical", "choices": [16, 32]},
        "momentum": 0.8,
    },
}


def write(tmp_path: Path, data: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def changed(**sections: Any) -> dict[str, Any]:
    """BASE with top-level keys replaced and `train`/`params` entries merged in (None deletes)."""
    data = copy.deepcopy(BASE)
    for key, value in sections.items():
        if key in ("train", "params"):
            for name, entry in value.items():
                if entry is None:
                    data[key].pop(name, None)
                else:
                    data[key][name] = entry
        else:
            data[key] = value
    return data


def error_for(tmp_path: Path, data: Any) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), line  # every problem names the file
    return message


# -- the shipped specs ---------------------------------------------------------------------------
def test_every_shipped_spec_is_found() -> None:
    names = {p.name for p in SHIPPED}
    assert {"default.yaml", "fashion-mnist.yaml", "cifar10-sym60.yaml", "cifar10n-worst.yaml"} <= (
        names
    )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_spec_loads_and_rebuilds_configs(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem and spec.source == str(path)
    assert spec.objective.metric == "val_acc" and spec.mode == "max"
    assert spec.has_off_arm  # every shipped search lets the r = 0 baseline compete
    lowest = {}
    for name, value in spec.searched.items():
        lowest[name] = value.choices[0] if isinstance(value, Categorical) else value.low
    assert spec.config_for(lowest).reset_prob == lowest["reset_prob"]
    off = {k: v for k, v in lowest.items() if k not in RESET_SUBPARAMETERS} | {"reset_prob": 0}
    assert [c.seed for c in spec.configs_for(off)] == spec.seeds


def test_default_spec_is_the_cpu_main_job() -> None:
    spec = load_spec(SPEC_DIR / "default.yaml")
    assert spec.train["dataset"] == "digits" and spec.train["device"] == "cpu"
    assert spec.resources.gpus == 0 and spec.resources.cpus * spec.concurrency <= 2


def test_cifar10n_spec_validates_without_its_label_file(tmp_path: Path) -> None:
    data = yaml.safe_load((SPEC_DIR / "cifar10n-worst.yaml").read_text(encoding="utf-8"))
    missing = tmp_path / "absent" / "CIFAR-10_human.pt"
    data["train"]["label_file"] = str(missing)
    spec = load_spec(write(tmp_path, data))
    assert not missing.exists() and spec.train["label_file"] == str(missing)
    assert spec.train["noise"] == "human:worst"


def test_defaults_name_and_shorthands(tmp_path: Path) -> None:
    data = changed(scheduler="none", sampler="tpe", objective="val_loss")
    spec = load_spec(write(tmp_path, data, "my-search.yaml"))
    assert spec.name == "my-search"
    assert spec.objective.mode == "min" and spec.objective.result_key == "best/val_loss"
    assert spec.scheduler.type == "none" and spec.seeds == [0] and spec.concurrency == 1
    assert spec.sampler.seed == 0
    assert isinstance(spec.params["patience"], IntRange)
    assert spec.params["reset_layers"].choices == ["all", "head", "block3,head"]
    assert spec.reset_range is not None and spec.reset_range.off_arm is None  # default: on
    assert spec.has_off_arm and spec.is_conditional("patience")
    assert not spec.is_conditional("checkpoint_metric") and not spec.is_conditional("lr")
    assert spec.fixed["momentum"] == 0.8 and spec.fixed["steps"] == 400


def test_yaml_1_2_floats_and_asha(tmp_path: Path) -> None:
    text = yaml.safe_dump(changed(scheduler={"type": "asha", "grace_period": 100}))
    text = text.replace("low: 0.01", "low: 1e-2")  # PyYAML alone would read a string here
    spec = load_spec(write(tmp_path, text))
    assert isinstance(spec.params["lr"], LogUniform) and spec.params["lr"].low == 0.01
    assert isinstance(spec.scheduler, AshaScheduler) and spec.max_t == 400


# -- bad specs: one message per problem, naming the file and the key ----------------------------
BAD = {
    "unknown top-level key": (changed(trails=3), "trails: unknown key (did you mean 'trials'?)"),
    "unknown nested key": (changed(resources={"cpus": 1, "gpu": 1}), "resources.gpu: unknown key"),
    "unknown key in a param": (
        changed(params={"lr": {"type": "loguniform", "low": 0.01, "high": 0.2, "stp": 2}}),
        "params.lr.stp: unknown key; allowed: type, low, high",
    ),
    "unknown key in the scheduler": (
        changed(scheduler={"type": "asha", "grace_period": 100, "grace": 3}),
        "scheduler.grace: unknown key",
    ),
    "unknown train setting": (
        changed(train={"lrr": 0.1}),
        "train.lrr: unknown setting (did you mean 'lr'?)",
    ),
    "unknown parameter": (
        changed(params={"learning_rate": {"type": "uniform", "low": 0.1, "high": 0.2}}),
        "params.learning_rate: unknown setting",
    ),
    "unknown param type": (
        changed(params={"lr": {"type": "normal", "low": 0.1, "high": 0.2}}),
        "params.lr: unknown type 'normal'; allowed: loguniform, uniform, int, categorical",
    ),
    "empty range": (
        changed(params={"lr": {"type": "loguniform", "low": 0.2, "high": 0.2}}),
        "params.lr.high: empty range",
    ),
    "empty int range": (
        changed(params={"patience": {"type": "int", "low": 300, "high": 100}}),
        "params.patience.high: empty range",
    ),
    "empty choices": (
        changed(params={"batch_size": {"type": "categorical", "choices": []}}),
        "params.batch_size.choices: must list at least 1",
    ),
    "r range above 1": (
        changed(params={"reset_prob": {"type": "loguniform", "low": 0.01, "high": 1.5}}),
        "params.reset_prob.high: r range outside [0, 1]",
    ),
    "r range at 0": (
        changed(params={"reset_prob": {"type": "loguniform", "low": 0, "high": 0.1}}),
        "params.reset_prob.low: must be > 0 for a log-uniform range, got 0",
    ),
    "r fixed in params": (
        changed(params={"reset_prob": 0.01}),
        "params.reset_prob: must be {type: loguniform",
    ),
    "off arm on another param": (
        changed(params={"lr": {"type": "loguniform", "low": 0.01, "high": 0.2, "off_arm": True}}),
        "params.lr.off_arm: only params.reset_prob has an off arm",
    ),
    "unknown layer group": (
        changed(params={"reset_layers": {"type": "categorical", "choices": ["head", "layer4"]}}),
        "params.reset_layers.choices[1]: reset_layers has unknown layer group 'layer4'; "
        "allowed: all, block1, block2, block3, head",
    ),
    "glob matching nothing": (
        changed(params={"reset_layers": {"type": "categorical", "choices": ["head", "fc.*"]}}),
        "params.reset_layers.choices[1]: reset_layers pattern 'fc.*' matches no parameter",
    ),
    "fixed layer group unknown to a searched model": (
        changed(
            train={"model": None},
            params={
                "model": {"type": "categorical", "choices": ["cnn", "vcnn"]},
                "reset_layers": "block3",
            },
        ),
        "params.reset_layers: reset_layers has unknown layer group 'block3'; allowed: all, fc1",
    ),
    "test accuracy as objective": (changed(objective="test_acc"), "objective.metric: 'test_acc'"),
    "test accuracy as objective mapping": (
        changed(objective={"metric": "test_acc"}),
        "is not allowed: the test split is only reported",
    ),
    "param fixed and searched": (
        changed(train={"lr": 0.1}),
        "params.lr: both fixed under train.lr and set under params.lr; keep one",
    ),
    "seed in train": (changed(train={"seed": 3}), "train.seed: not allowed"),
    "noise searched": (
        changed(params={"noise": {"type": "categorical", "choices": ["symmetric:0.2"]}}),
        "params.noise: cannot be searched",
    ),
    "float range for an integer setting": (
        changed(params={"batch_size": {"type": "loguniform", "low": 16, "high": 64}}),
        "params.batch_size.type: batch_size is an integer setting; use type: int",
    ),
    "invalid choice": (
        changed(params={"optimizer": {"type": "categorical", "choices": ["sgd", "adamx"]}}),
        "params.optimizer.choices[1]: optimizer must be one of sgd, adam, adamw",
    ),
    "range end invalid for the engine": (
        changed(params={"momentum": {"type": "uniform", "low": 0.5, "high": 1.5}}),
        "params.momentum.high: momentum must be in [0.0, 0.999]",
    ),
    "invalid train value": (changed(train={"steps": -5}), "train.steps: steps must be an integer"),
    "unknown dataset": (changed(train={"dataset": "cifar11"}), "train.dataset: unknown dataset"),
    "bad noise": (changed(train={"noise": "gaussian:0.2"}), "train.noise: unknown label-noise"),
    "cifar10n without a label file": (
        changed(train={"dataset": "cifar10n", "noise": "human:worst"}),
        "train.label_file: required for dataset 'cifar10n'",
    ),
    "fractional gpus above 1": (
        changed(resources={"cpus": 1, "gpus": 1.5}),
        "resources.gpus: must be a fraction of one GPU",
    ),
    "gpus with a cpu device": (
        changed(train={"device": "cpu"}, resources={"gpus": 0.5}),
        "resources.gpus: trials request 0.5 GPU but train.device is 'cpu'",
    ),
    "no seeds": (changed(seeds=[]), "seeds: must list at least 1"),
    "no trials": (changed(trials=0), "trials: must be greater than or equal to 1, got 0"),
    "step not dividing the range": (
        changed(params={"patience": {"type": "int", "low": 100, "high": 310, "step": 50}}),
        "params.patience.step: high - low (310 - 100) must be a multiple of step",
    ),
    "grace period past the budget": (
        changed(scheduler={"type": "asha", "grace_period": 5000}),
        "scheduler.grace_period: must not exceed max_t (400)",
    ),
    "asha with several seeds": (
        changed(scheduler={"type": "asha", "grace_period": 100}, seeds=[0, 1]),
        "scheduler: asha compares trials at equal step counts",
    ),
    "bad name": (changed(name="my search"), "name: must match pattern"),
    "nothing searched": ({**BASE, "params": {"lr": 0.1}}, "params: nothing is searched"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_spec_names_file_and_key(tmp_path: Path, case: str) -> None:
    data, expected = BAD[case]
    assert expected in error_for(tmp_path, data)


def test_every_pydantic_problem_is_its_own_line(tmp_path: Path) -> None:
    data = changed(trails=3, concurrency=0, resources={"cpus": 0})
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert len(info.value.problems) == 3
    assert sorted(p.split(": ")[1] for p in info.value.problems) == [
        "concurrency",
        "resources.cpus",
        "trails",
    ]


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  dataset: digits\n params: [\n")
    with pytest.raises(ConfigError, match=rf"^{path}: invalid YAML: line \d+"):
        load_spec(path)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "trials: 3\ntrials: 4\nparams: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'trials'"):
        load_spec(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"^{path}: no such search spec file"):
        load_spec(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "the top level must be a mapping" in error_for(tmp_path, "- a\n- b\n")
    assert "params: required key is missing" in error_for(tmp_path, "")


# -- rebuilding a trial's config -----------------------------------------------------------------
def test_config_for_round_trips_both_arms(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE))
    on = {
        "reset_prob": 0.01,
        "reset_layers": "block3,head",
        "patience": 150,
        "checkpoint_metric": "val_acc",
        "lr": 0.05,
        "batch_size": 16,
    }
    config = spec.config_for(on, seed=3)
    assert isinstance(config, TrainConfig)
    assert {k: getattr(config, k) for k in on} == on
    assert config.momentum == 0.8 and config.steps == 400 and config.seed == 3
    # The resolved config feeds back as a trial's parameters: a round trip.
    resolved = config.to_dict()
    assert spec.config_for({k: resolved[k] for k in on}, seed=3) == config
    # The flat route the driver may take gives the same config.
    assert TrainConfig.from_dict({**spec.fixed, **on, "seed": 3}) == config

    off = {"resetting": "off", "reset_prob": 0.0, "checkpoint_metric": "val_acc", "lr": 0.05}
    config = spec.config_for(off | {"batch_size": 32})
    defaults = TrainConfig()
    assert config.reset_prob == 0.0 and config.checkpoint_metric == "val_acc"
    assert config.reset_layers == defaults.reset_layers and config.patience == defaults.patience
    assert config.seed == spec.seeds[0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"reset_prob": 0.5}, "reset_prob: 0.5 is outside [0.001, 0.05]"),
        ({"patience": 125}, "patience: 125 is outside [100, 300] in steps of 50"),
        ({"batch_size": 24}, "batch_size: 24 is not one of the choices [16, 32]"),
        ({"momentum": 0.5}, "momentum: is fixed at 0.8 by params.momentum, got 0.5"),
        ({"steps": 500}, "steps: is fixed by the spec at 400, got 500"),
        ({"lrr": 0.1}, "lrr: not a parameter of this search (did you mean 'lr'?)"),
        ({"seed": 1}, "seed: not a search parameter"),
        ({"reset_prob": 0, "reset_layers": None}, "patience: exists only when resetting is on"),
        ({"resetting": "off", "reset_prob": 0.01}, "contradicts reset_prob=0.01"),
        ({"batch_size": None}, "missing searched parameter(s): batch_size"),
    ],
)
def test_config_for_rejects_parameters_outside_the_space(
    tmp_path: Path, params: dict[str, Any], expected: str
) -> None:
    spec = load_spec(write(tmp_path, BASE))
    full = {
        "reset_prob": 0.01,
        "reset_layers": "all",
        "patience": 200,
        "checkpoint_metric": "val_loss",
        "lr": 0.05,
        "batch_size": 16,
    }
    given = {k: v for k, v in (full | params).items() if v is not None}
    with pytest.raises(ConfigError, match=r"trial parameters: ") as info:
        spec.config_for(given)
    assert expected in str(info.value)


def test_without_off_arm_everything_is_unconditional(tmp_path: Path) -> None:
    reset = {"type": "loguniform", "low": 0.001, "high": 0.05, "off_arm": False}
    spec = load_spec(write(tmp_path, changed(params={"reset_prob": reset})))
    assert not spec.has_off_arm and not spec.is_conditional("patience")
    with pytest.raises(ConfigError, match="params.reset_prob.off_arm is false"):
        spec.config_for({"reset_prob": 0})


def test_reset_subparameters_need_resetting_somewhere(tmp_path: Path) -> None:
    data = changed(train={"reset_prob": 0.0}, params={"reset_prob": None})
    assert "params.reset_layers: resetting is off in every trial" in error_for(tmp_path, data)


def test_from_dict_without_a_file(tmp_path: Path) -> None:
    spec = SearchSpec.from_dict(BASE)
    assert spec.name == "search" and spec.source == "search spec"
    with pytest.raises(SpecError, match=r"^my-source: trails: unknown key"):
        SearchSpec.from_dict(changed(trails=1), source="my-source")


def test_racing_seeds_extend_the_listed_ones_and_seed_runs_rebuild_their_config(
    tmp_path: Path,
) -> None:
    spec = load_spec(write(tmp_path, changed(racing={"max_seeds": 4}, seeds=[7])))
    assert spec.race_seeds == [7, 8, 9, 10]
    assert spec.seeds_per_trial == 1
    params = {"reset_prob": 0.01, "reset_layers": "head", "patience": 100,
              "checkpoint_metric": "val_loss", "lr": 0.05, "batch_size": 16}  # fmt: skip
    (first,) = spec.configs_for(params)
    assert first.seed == 7  # a configuration's first run: the first race seed
    (seed_run,) = spec.configs_for({**params, "race_config": 3, "race_seed": 9})
    assert seed_run.seed == 9 and seed_run.reset_prob == 0.01
    assert load_spec(write(tmp_path, changed(racing=True))).racing.max_seeds == 4
    assert load_spec(write(tmp_path, changed(racing="off"))).racing is None
    assert load_spec(write(tmp_path, changed(seeds=[0, 1]))).seeds_per_trial == 2


@pytest.mark.parametrize(
    ("racing", "extra", "key", "words"),
    [
        ({"max_seeds": 1}, {}, "racing.max_seeds", "greater than or equal to 2"),
        ({"max_seeds": 2}, {"seeds": [0, 1, 2]}, "racing.max_seeds", "more than max_seeds"),
        ({"z": -1}, {}, "racing.z", "greater than or equal to 0"),
        ({"max_seed": 3}, {}, "racing", "max_seed"),
        ({}, {"scheduler": {"type": "asha", "grace_period": 100}}, "racing", "asha stops"),
    ],
    ids=["one-seed", "more-seeds-than-max", "negative-z", "typo", "with-asha"],
)
def test_bad_racing_settings_name_the_key(
    tmp_path: Path, racing: dict, extra: dict, key: str, words: str
) -> None:
    message = error_for(tmp_path, changed(racing=racing, **extra))
    assert key in message and words in message, message
