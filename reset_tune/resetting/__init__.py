"""Stochastic resetting for any torch training loop: the resetter, its policies and its core."""

from reset_tune.resetting.groups import layer_groups, matches_prefixes
from reset_tune.resetting.policies import (
    CHECKPOINT_METRICS,
    CheckpointMetric,
    CheckpointPolicy,
    MemorisationArming,
    PatienceArming,
)
from reset_tune.resetting.resetter import LR_ON_RESET, StochasticResetter
from reset_tune.resetting.selection import (
    ResetSelection,
    parse_reset_layers,
    select_reset_tensors,
)
from reset_tune.resetting.snapshot import Snapshot, restore_, take_snapshot, update_snapshot_

__all__ = [
    "CHECKPOINT_METRICS",
    "LR_ON_RESET",
    "CheckpointMetric",
    "CheckpointPolicy",
    "MemorisationArming",
    "PatienceArming",
    "ResetSelection",
    "Snapshot",
    "StochasticResetter",
    "layer_groups",
    "matches_prefixes",
    "parse_reset_layers",
    "restore_",
    "select_reset_tensors",
    "take_snapshot",
    "update_snapshot_",
]
