"""The checks of a spec that need the engine: settings `TrainConfig` accepts, datasets and noise
the data loader knows, the models' layer groups, resources against devices, scheduler against
budget. Each returns (key path, message) problems; pydantic has checked shapes and types."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from reset_tune.config import TrainConfig
from reset_tune.errors import ConfigError
from reset_tune.search.spec._params import Categorical, LogUniform, Range, Uniform, is_fixed
from reset_tune.search.spec._sections import AshaScheduler
from reset_tune.search.spec._vocabulary import (
    NOT_SEARCHABLE,
    RESET_PROB,
    RESET_SUBPARAMETERS,
    RESETTING,
    TRAIN_DEFAULTS,
    TRAIN_FIELDS,
    did_you_mean,
    field_kind,
)

if TYPE_CHECKING:
    from reset_tune.search.spec._schema import SearchSpec

_CIFAR_N = ("cifar10n", "cifar100n")
# Human label sets per CIFAR-N dataset (as `reset_tune.data.label_files` names them).
_HUMAN_LABEL_SETS = {
    "cifar10n": ("aggre", "worst", "random1", "random2", "random3"),
    "cifar100n": ("noisy",),
}
Problems = list[tuple[str, str]]  # (key path, message)
_PROBLEM_SOURCE = "<spec>"


class _Problem(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def _try_config(values: Mapping[str, Any], path_of: Callable[[str | None], str]) -> TrainConfig:
    """Build a TrainConfig, turning its error into a `_Problem` at the offending key's path."""
    try:
        return TrainConfig.from_dict(values, source=_PROBLEM_SOURCE)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{_PROBLEM_SOURCE}: ")
        first = re.match(r"[a-z_]+", message)  # TrainConfig's messages start with the key
        key = first.group(0) if first and first.group(0) in TRAIN_FIELDS else None
        raise _Problem(path_of(key), message) from None


def _candidates(spec: SearchSpec, name: str) -> list[tuple[str, Any]]:
    """(path, value) for the values `name` can take: its fixed value, range ends or choices."""
    if name in spec.train:
        return [(f"train.{name}", spec.train[name])]
    value = spec.params.get(name)
    if value is None:
        return [("", TRAIN_DEFAULTS[name])]
    if is_fixed(value):
        return [(f"params.{name}", value)]
    if isinstance(value, Categorical):
        return [(f"params.{name}.choices[{i}]", c) for i, c in enumerate(value.choices)]
    return [(f"params.{name}.low", value.low), (f"params.{name}.high", value.high)]


def semantic_problems(spec: SearchSpec) -> Problems:
    problems: Problems = []
    for check in (_check_train, _check_params, _check_values, _check_reset_layers, _check_run):
        problems += check(spec)
        if problems:  # later checks assume the earlier ones passed
            break
    return problems


def _check_train(spec: SearchSpec) -> Problems:
    problems: Problems = []
    for key in spec.train:
        if key not in TRAIN_FIELDS:
            hint = did_you_mean(key, TRAIN_FIELDS)
            problems.append(
                (
                    f"train.{key}",
                    f"unknown setting{hint}; settings are TrainConfig "
                    "fields (see `reset-tune train --help`)",
                )
            )
        elif key == "seed":
            problems.append(("train.seed", f"not allowed: {NOT_SEARCHABLE['seed']}"))
    if problems:
        return problems
    try:
        config = _try_config(spec.train, lambda k: f"train.{k}" if k in spec.train else "train")
    except _Problem as p:
        return [(p.path, p.message)]
    return _check_data_settings(spec, config)


def _check_data_settings(spec: SearchSpec, config: TrainConfig) -> Problems:
    """Dataset, noise and label-file settings that `TrainConfig` leaves to the data loader."""
    from reset_tune.data import DATASET_NAMES, parse_noise_spec

    def at(key: str) -> str:
        return f"train.{key}" if key in spec.train else "train"

    dataset = config.dataset
    if dataset not in DATASET_NAMES:
        hint = did_you_mean(dataset, DATASET_NAMES)
        return [
            (
                at("dataset"),
                f"unknown dataset {dataset!r}{hint}; allowed: {', '.join(DATASET_NAMES)}",
            )
        ]
    try:
        noise = parse_noise_spec(config.noise)
    except ConfigError as exc:
        return [(at("noise"), str(exc))]
    problems: Problems = []
    if dataset in _CIFAR_N and config.label_file is None:
        file_name = "CIFAR-10_human.pt" if dataset == "cifar10n" else "CIFAR-100_human.pt"
        problems.append(
            (
                "train.label_file",
                f"required for dataset {dataset!r}: the path of the "
                f"CIFAR-N project's {file_name} (read when trials start, not now)",
            )
        )
    if config.label_file is not None and dataset not in _CIFAR_N:
        problems.append(
            ("train.label_file", f"only cifar10n and cifar100n use it, not {dataset!r}")
        )
    if noise.kind == "human":
        sets = _HUMAN_LABEL_SETS.get(dataset)
        if sets is None:
            problems.append(
                (
                    at("noise"),
                    f"human label noise needs dataset cifar10n or cifar100n, not {dataset!r}",
                )
            )
        elif noise.label_set not in sets:
            problems.append(
                (
                    at("noise"),
                    f"dataset {dataset!r} has no human label set "
                    f"{noise.label_set!r}; allowed: {', '.join(sets)}",
                )
            )
    if config.image_size is not None and dataset != "imagefolder":
        problems.append(("train.image_size", f"only imagefolder uses it, not {dataset!r}"))
    if dataset == "imagefolder" and config.data_root is None:
        problems.append(
            (
                "train.data_root",
                "required for imagefolder: a folder with one sub-folder of images per class",
            )
        )
    return problems


def _check_param(spec: SearchSpec, name: str, value: Any) -> tuple[str, str] | None:
    """The first problem with parameter `name` on its own, or None."""
    path = f"params.{name}"
    if name == RESETTING:
        return path, "reserved for the on/off switch of params.reset_prob.off_arm"
    if name not in TRAIN_FIELDS:
        hint = did_you_mean(name, TRAIN_FIELDS)
        return path, f"unknown setting{hint}; parameters are TrainConfig fields"
    if name in NOT_SEARCHABLE:
        verb = "not a search parameter" if is_fixed(value) else "cannot be searched"
        return path, f"{verb}: {NOT_SEARCHABLE[name]}"
    if name in spec.train:
        return path, f"both fixed under train.{name} and set under params.{name}; keep one"
    if isinstance(value, LogUniform) and value.off_arm is not None and name != RESET_PROB:
        return f"{path}.off_arm", "only params.reset_prob has an off arm"
    if name == RESET_PROB:
        if not isinstance(value, LogUniform):
            return path, (
                "must be {type: loguniform, low, high, off_arm} (r is searched on a "
                "log scale); to use one r in every trial set train.reset_prob"
            )
        if value.high > 1:
            return f"{path}.high", (
                "r range outside [0, 1]: reset_prob is a per-step "
                f"probability, so high must be <= 1, got {value.high!r}"
            )
    if isinstance(value, Range):
        kind = field_kind(name)
        if kind == "int" and isinstance(value, LogUniform | Uniform):
            return f"{path}.type", (
                f"{name} is an integer setting; use type: int (with log: true for a log scale)"
            )
        if kind in ("bool", "str"):
            what = "true/false" if kind == "bool" else "string"
            return f"{path}.type", f"{name} is a {what} setting; use type: categorical"
    return None


def _check_params(spec: SearchSpec) -> Problems:
    problems = [p for n, v in spec.params.items() if (p := _check_param(spec, n, v))]
    if problems:
        return problems
    fixed_r = spec.train.get(RESET_PROB, TRAIN_DEFAULTS[RESET_PROB])
    if RESET_PROB not in spec.params and fixed_r == 0:
        for name in set(spec.params) & set(RESET_SUBPARAMETERS):
            problems.append(
                (
                    f"params.{name}",
                    "resetting is off in every trial (train.reset_prob "
                    "is 0), so this changes nothing; remove it or search reset_prob",
                )
            )
    if not spec.searched:
        problems.append(("params", "nothing is searched: give a parameter a range or choices"))
    return problems


def _check_values(spec: SearchSpec) -> Problems:
    """Every fixed value, range end and choice makes a valid TrainConfig with `train`."""
    problems: Problems = []
    for name in spec.params:
        for path, value in _candidates(spec, name):

            def path_of(key: str | None, at: str = path) -> str:
                return f"train.{key}" if key in spec.train else at

            try:
                _try_config({**spec.train, name: value}, path_of)
            except _Problem as p:
                problems.append((p.path, p.message))
    return problems


@lru_cache(maxsize=32)
def _meta_model(model: str, dataset: str, image_size: int | None) -> Any:
    """`model` for `dataset`'s image shape on the meta device: its names, no memory, no init.

    Built to check `reset_layers` without loading data: parameter names do not depend on the
    number of classes.
    """
    import torch

    from reset_tune.data.datasets import IMAGE_SHAPES
    from reset_tune.models import build_model

    channels, side = IMAGE_SHAPES[dataset]
    with torch.device("meta"):
        return build_model(
            model, in_channels=channels, num_classes=10, image_size=image_size or side
        )


def _check_reset_layers(spec: SearchSpec) -> Problems:
    """`reset_layers` values name groups of every candidate model; globs match something."""
    from reset_tune.resetting.selection import select_reset_tensors

    train = TrainConfig.from_dict(spec.train)
    problems: Problems = []
    for layers_path, layers in _candidates(spec, "reset_layers"):
        for model_path, model in _candidates(spec, "model"):
            try:
                built = _meta_model(model, train.dataset, train.image_size)
            except ConfigError as exc:
                problems.append((model_path or "train.model", str(exc)))
                continue
            try:
                select_reset_tensors(built, layers)
            except ConfigError as exc:
                message = f"{str(exc).rstrip('.')} (model {model!r})"
                problems.append((layers_path or "train.reset_layers", message))
    return problems


def _check_run(spec: SearchSpec) -> Problems:
    """Resources against the device setting, and the scheduler against the budget."""
    problems: Problems = []
    device = str(spec.train.get("device", TRAIN_DEFAULTS["device"]))
    gpus = spec.resources.gpus
    if gpus > 0 and device == "cpu":
        problems.append(
            (
                "resources.gpus",
                f"trials request {gpus} GPU but train.device is 'cpu'; use device auto or cuda",
            )
        )
    if gpus == 0 and device.startswith("cuda"):
        problems.append(
            (
                "resources.gpus",
                f"train.device is {device!r}, so each trial needs a "
                "GPU: set gpus (e.g. 0.25 packs 4 trials per GPU)",
            )
        )
    if gpus == 0 and "bf16" in [v for _, v in _candidates(spec, "precision")]:
        problems.append(("resources.gpus", "precision bf16 needs a CUDA device; request gpus"))
    scheduler = spec.scheduler
    if spec.racing is not None:
        if len(spec.seeds) > spec.racing.max_seeds:
            problems.append(
                (
                    "racing.max_seeds",
                    f"seeds lists {len(spec.seeds)} seeds, more than max_seeds "
                    f"({spec.racing.max_seeds}); raise max_seeds or list fewer seeds",
                )
            )
        if isinstance(scheduler, AshaScheduler):
            problems.append(
                (
                    "racing",
                    "racing compares finished seed runs, and asha stops runs early; use one "
                    "of them (scheduler: none with racing)",
                )
            )
    if not isinstance(scheduler, AshaScheduler):
        return problems
    if "steps" in spec.params and scheduler.max_t is None:
        problems.append(("scheduler.max_t", "required when steps is searched"))
    budget = max(v for _, v in _candidates(spec, "steps"))
    if scheduler.max_t is not None and scheduler.max_t > budget:
        problems.append(
            (
                "scheduler.max_t",
                f"must not exceed the training budget (steps = {budget}), got {scheduler.max_t}",
            )
        )
    if spec.max_t is not None and scheduler.grace_period > spec.max_t:
        problems.append(
            (
                "scheduler.grace_period",
                f"must not exceed max_t ({spec.max_t}), got {scheduler.grace_period}",
            )
        )
    if len(spec.seeds) > 1:
        problems.append(
            (
                "scheduler",
                "asha compares trials at equal step counts, but a "
                "configuration runs its seeds one after another; use one seed with "
                "asha, or scheduler: none",
            )
        )
    return problems
