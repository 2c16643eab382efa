"""Names shared by the spec, the Optuna space and the driver, and the `TrainConfig` facts the
checks use (its fields, their defaults and kinds)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable

from reset_tune import names
from reset_tune.config import FIELD_KINDS, TrainConfig

RESET_PROB = "reset_prob"
# The on/off switch's name in Optuna trials (and hence in Ray Tune's trial config): "on" | "off".
RESETTING = "resetting"
RESETTING_ON = "on"
RESETTING_OFF = "off"
# Settings that only matter once resetting is on (with r = 0 they change nothing the run does).
# `checkpoint_metric` is deliberately not here: it picks θbest — and so the reported test accuracy
# and the objective — in every run, the r = 0 baseline included (docs/method.md §1.2, §1.9).
RESET_SUBPARAMETERS = (
    "reset_layers",
    "patience",
    "warmup",
    "adaptive",
    "restore_optimizer",
    "lr_on_reset",
    "arm_on_memorisation",
)
# Settings that define the problem or the measurement rather than a training choice. Searching
# them would make trials incomparable (a different validation split, data or noise per trial), so
# they may only be fixed under `train:`.
NOT_SEARCHABLE = {
    "seed": "list the seeds every configuration is evaluated on under the top-level `seeds:`",
    "reset_seed": "reset decisions derive their own seed from each trial's seed",
    "dataset": "it defines the problem; fix it under `train:`",
    "data_root": "it defines the problem; fix it under `train:`",
    "download": "fix it under `train:`",
    "label_file": "it defines the problem; fix it under `train:`",
    "image_size": "it defines the problem; fix it under `train:`",
    "noise": "it defines the problem; fix it under `train:`",
    "val_fraction": "the objective is measured on the validation split, which must be the same "
    "for every trial; fix it under `train:`",
    "clean_val": "the objective is measured on the validation split, which must be the same "
    "for every trial; fix it under `train:`",
    "train_subset": "it defines the problem (and the validation split); fix it under `train:`",
    "eval_every": "it sets how the objective is measured; fix it under `train:`",
    "eval_batch_size": "it does not change training; fix it under `train:`",
    "memorisation_samples": "it does not change training; fix it under `train:`",
    "device": "trials get devices from `resources:`; fix it under `train:`",
    "deterministic": "comparisons between trials need the same kernels; fix it under `train:`",
}
OBJECTIVE_METRICS = ("val_acc", "val_loss")
# The result key each objective ranks trials by: the validation metric at the trial's θbest.
OBJECTIVE_KEYS = {"val_acc": names.BEST_VAL_ACC, "val_loss": names.BEST_VAL_LOSS}

TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TRAIN_DEFAULTS = TrainConfig().to_dict()


def field_kind(name: str) -> str:
    """`int`, `float`, `bool` or `str`: the kind of a TrainConfig field (Optional stripped)."""
    return FIELD_KINDS[name].type.__name__


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """` (did you mean 'X'?)` for the option closest to `word`, or "" when none is close."""
    hint = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""
