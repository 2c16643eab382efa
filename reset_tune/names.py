"""Names that cross module boundaries: metric keys, defined once."""

from __future__ import annotations

STEP = "step"
TRAIN_LOSS = "train/loss"
TRAIN_ACC = "train/acc"  # against the (noisy) training labels
MEMORISATION = "train/memorisation"
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
