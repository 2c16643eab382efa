"""`TrainConfig`: every setting of one training run, validated, flat, and JSON round-trippable.

Field names are the public vocabulary: CLI options (`--reset-prob`), search-space parameter names
and MLflow parameter names are these names, so a trial's parameters rebuild its config directly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from reset_tune import names
from reset_tune.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. Units: steps are optimizer updates; rates are per step.

    Settings are keyword-only (`TrainConfig(dataset="digits", reset_prob=0.01)`): with forty of
    them, a positional value would silently land on whichever field happens to come first.
    """

    # data
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    label_file: str | None = None  # CIFAR-N human label file for cifar10n / cifar100n
    image_size: int | None = None  # imagefolder only: images are resized to this square size
    noise: str = "symmetric:0.4"  # KIND:RATE, e.g. symmetric:0.4, pairflip:0.45, human:worst
    val_fraction: float = 0.1  # of the training pool, carved before training
    clean_val: bool = False  # validation labels are noisy by default, as a practitioner's are
    train_subset: int | None = None  # training pool size (validation included); None = all
    augment: str = "auto"  # auto = the dataset's default (crop-flip for CIFAR-like sets)
    # model and loss
    model: str = "cnn"
    loss: str = "ce"
    gce_q: float = 0.7
    sce_alpha: float = 0.1
    sce_beta: float = 1.0
    # optimisation
    steps: int = 2000
    eval_every: int = 50  # steps between evaluations on the validation split
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    lr_step_every: int | None = None  # step schedule: steps between decays (default steps // 3)
    lr_gamma: float = 0.1  # step schedule: decay factor
    precision: str = "fp32"  # bf16 = autocast on CUDA
    # resetting (docs/method.md §1)
    reset_prob: float = 0.01  # r: per-step probability of a reset once armed; 0 = baseline
    reset_layers: str = (
        "all"  # all | head | a model group | glob over parameter names; comma-separated
    )
    patience: int = 200  # steps without improvement of the checkpoint metric before arming
    warmup: int = 0  # no arming before this step
    # Arm only once memorisation has begun by the label-free signal (train − val accuracy on the
    # noisy labels, `reset_tune.engine.memorisation`) as well as by the patience rule. Off: the
    # method's patience rule alone (docs/method.md §1.3), which also arms on plateaus without
    # memorisation.
    arm_on_memorisation: bool = False
    checkpoint_metric: str = names.METRIC_VAL_LOSS  # what picks θbest: val_loss | val_acc
    adaptive: bool = True  # after arming, each new θbest becomes θc
    restore_optimizer: bool = True  # a reset also restores the layers' optimizer state (momentum)
    lr_on_reset: str = "keep"  # keep = the schedule continues; restore = θc's LR comes back
    reset_seed: int | None = None  # reset decisions' own generator; None = derived from seed
    # run
    seed: int = 0  # data split, noise, initialisation and batch order depend only on this
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = True  # deterministic kernels (GPU non-determinism swamps comparisons)
    eval_batch_size: int = 1024
    # Capture the training step and the evaluation in CUDA graphs where valid (a CUDA device;
    # the step: SGD); `reset_tune.engine.graphs`. Off: the eager path everywhere.
    cuda_graphs: bool = True
    memorisation_samples: int = (
        2048  # wrong-labelled training samples probed per evaluation; 0 = all
    )

    def __post_init__(self) -> None:
        _validate(self)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a did-you-mean hint."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                hint = difflib.get_close_matches(str(key), sorted(known), n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"{source}: unknown setting {key!r}{suggestion}.")
        return cls(**{k: _coerce(k, v, source) for k, v in values.items()})

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def resolved_reset_seed(self) -> int:
        # A fixed offset keeps reset draws independent of the data streams seeded by `seed`.
        return self.reset_seed if self.reset_seed is not None else self.seed + 1_000_003


class FieldKind(NamedTuple):
    """What a `TrainConfig` field holds: `type` is bool, int, float or str; `optional`: None too."""

    type: type
    optional: bool


def _field_kind(hint: Any) -> FieldKind:
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [m for m in members if m is not type(None)]
    if len(kinds) != 1 or kinds[0] not in (bool, int, float, str):
        raise TypeError(f"TrainConfig fields are one of bool, int, float, str (or None): {hint}")
    return FieldKind(kinds[0], len(kinds) < len(members))


# Every field's kind, from the evaluated annotations (not their text: `from __future__ import
# annotations` leaves `field.type` a string).
FIELD_KINDS: dict[str, FieldKind] = {
    name: _field_kind(hint) for name, hint in typing.get_type_hints(TrainConfig).items()
}


def _coerce(key: str, value: Any, source: str) -> Any:
    """Accept ints for float fields and reject values of the wrong kind with the key named."""
    kind, optional = FIELD_KINDS[key]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} must not be empty.")
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, but got {value!r}.")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, but got {value!r}.")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} must be a number, but got {value!r}.")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string, but got {value!r}.")
    return value


MAX_COUNT = 10**9  # steps, batch sizes, patience...: a billion steps is weeks of training
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds; reset_seed defaults to seed + 1,000,003
MAX_IMAGE_SIZE = 1024  # pixels per side of a resized imagefolder image


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _choice(config: TrainConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = getattr(config, key)
    _check(value in allowed, f"{key} must be one of {', '.join(allowed)}, but got {value!r}.")


def _validate(c: TrainConfig) -> None:
    def at_least(key: str, low: int) -> None:
        value = getattr(c, key)
        _check(
            value is None or (isinstance(value, int) and value >= low),
            f"{key} must be an integer >= {low}, but got {key}={value!r}.",
        )

    def in_range(key: str, low: float, high: float, *, open_low: bool = False) -> None:
        value = getattr(c, key)
        ok = isinstance(value, int | float) and math.isfinite(value)
        ok = ok and (value > low if open_low else value >= low) and value <= high
        bracket = "(" if open_low else "["
        _check(ok, f"{key} must be in {bracket}{low}, {high}], but got {key}={value!r}.")

    for f in fields(c):
        if FIELD_KINDS[f.name].type is bool:
            value = getattr(c, f.name)
            _check(
                isinstance(value, bool),
                f"{f.name} must be true or false, but got {f.name}={value!r}.",
            )

    def at_most(key: str, high: int) -> None:
        value = getattr(c, key)
        _check(
            value is None or value <= high,
            f"{key} must be at most {high:,}, but got {key}={value!r}.",
        )

    for key in ("steps", "eval_every", "batch_size", "eval_batch_size"):
        at_least(key, 1)
    for key in ("patience", "warmup", "memorisation_samples", "seed"):
        at_least(key, 0)
    at_least("train_subset", 2)
    at_least("lr_step_every", 1)
    at_least("image_size", 4)
    _check(c.reset_seed is None or isinstance(c.reset_seed, int), "reset_seed must be an integer.")
    at_least("reset_seed", 0)
    # Upper bounds: a mistyped huge number is refused now, not after hours (or at the random
    # generators, which take 32/64-bit seeds).
    for key in (
        "steps", "eval_every", "batch_size", "eval_batch_size", "patience", "warmup",
        "memorisation_samples", "train_subset", "lr_step_every",
    ):  # fmt: skip
        at_most(key, MAX_COUNT)
    at_most("seed", MAX_SEED)
    at_most("reset_seed", MAX_SEED)
    at_most("image_size", MAX_IMAGE_SIZE)
    in_range("reset_prob", 0.0, 1.0)
    in_range("val_fraction", 0.0, 0.9, open_low=True)
    in_range("lr", 0.0, 100.0, open_low=True)
    in_range("momentum", 0.0, 0.999)
    in_range("weight_decay", 0.0, 1.0)
    in_range("lr_gamma", 0.0, 1.0, open_low=True)
    in_range("gce_q", 0.0, 1.0, open_low=True)
    in_range("sce_alpha", 0.0, 100.0)
    in_range("sce_beta", 0.0, 100.0)
    _check(
        c.eval_every <= c.steps, f"eval_every ({c.eval_every}) must not exceed steps ({c.steps})."
    )
    _choice(c, "optimizer", OPTIMIZERS)
    _choice(c, "schedule", SCHEDULES)
    _choice(c, "precision", PRECISIONS)
    _choice(c, "augment", names.AUGMENT_SETTINGS)
    _choice(c, "checkpoint_metric", names.VALIDATION_METRICS)
    _choice(c, "lr_on_reset", ("keep", "restore"))
    _check(
        re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,3})?", c.device) is not None,
        f"device must be auto, cpu, cuda or cuda:N (N a GPU number), but got {c.device!r}.",
    )
