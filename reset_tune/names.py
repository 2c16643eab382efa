"""Names that cross module boundaries, defined once: metric keys, the validation metrics users
name, and which way each one is better."""

from __future__ import annotations

from typing import Literal

Mode = Literal["max", "min"]  # Ray Tune's word for which way a metric is better

STEP = "step"
TRAIN_LOSS = "train/loss"
TRAIN_ACC = "train/acc"  # against the (noisy) training labels
MEMORISATION = "train/memorisation"  # true fraction of wrong labels fitted (injected noise only)
# Label-free memorisation signal (reset_tune.engine.memorisation): train/acc − val/acc, both on
# the noisy labels, and whether the detector has decided that memorisation began (0/1, latches).
MEMORISATION_GAP = "train/memorisation_gap"  # train/probe_acc − val/acc
# Accuracy of the evaluated model (eval mode, like val/acc) on a fixed random subset of the
# training split, against its noisy labels: the "train" side of the gap.
TRAIN_PROBE_ACC = "train/probe_acc"
MEMORISING = "train/memorising"
VAL_LOSS = "val/loss"  # cross-entropy on the validation split, whatever the training loss
VAL_ACC = "val/acc"
LR = "train/lr"
RESET_COUNT = "reset/count"
RESET_ARMED = "reset/armed"  # 1.0 once resetting has turned on
STEPS_PER_S = "perf/steps_per_s"  # training steps per second since the previous evaluation

BEST_VAL_LOSS = "best/val_loss"
BEST_VAL_ACC = "best/val_acc"
BEST_STEP = "best/step"
TEST_ACC = "test/acc"  # clean test accuracy of θbest: the reported number
FINAL_TEST_ACC = "test/final_acc"  # clean test accuracy of the last model, for context only

# A search's per-trial keys, logged to MLflow and read back by `recommend`.
OBJECTIVE = "objective"  # what the searcher ranks trials by (the spec's metric at θbest)
WALL_TIME = "perf/wall_time_s"  # a trial's total training wall time over its seeds

# The validation metrics a user names: a TrainConfig's `checkpoint_metric` (what picks θbest) and
# a search spec's `objective.metric` (what ranks configurations). Loss is minimised, accuracy
# maximised.
METRIC_VAL_LOSS = "val_loss"
METRIC_VAL_ACC = "val_acc"
VALIDATION_METRICS = (METRIC_VAL_LOSS, METRIC_VAL_ACC)
MODE_OF_METRIC: dict[str, Mode] = {METRIC_VAL_LOSS: "min", METRIC_VAL_ACC: "max"}

# Augmentations the device augmenter applies (reset_tune.data.batches); a TrainConfig's `augment`
# may also say "auto": the dataset's default.
AUGMENTS = ("none", "crop-flip")
AUGMENT_SETTINGS = ("auto", *AUGMENTS)


def gain_sign(mode: str) -> float:
    """+1 for mode "max", −1 for "min": `gain_sign(mode) * (a − b) > 0` when `a` is the better."""
    return 1.0 if mode == "max" else -1.0


def better(value: float, best: float, mode: str) -> bool:
    """Whether `value` beats `best`: larger for mode "max", smaller for "min". Ties do not, and
    neither does a NaN on either side (every comparison with NaN is false)."""
    return value > best if mode == "max" else value < best
