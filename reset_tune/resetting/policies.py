"""Small policies of the resetter: what counts as a better checkpoint, when resetting arms, and
whether θc follows θbest."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reset_tune.errors import ConfigError

CHECKPOINT_METRICS = ("val_loss", "val_acc")


@dataclass(frozen=True)
class CheckpointMetric:
    """Ranks evaluations: lower `val_loss` or higher `val_acc` is better; ties are not better."""

    name: str = "val_loss"

    def __post_init__(self) -> None:
        if self.name not in CHECKPOINT_METRICS:
            raise ConfigError(
                f"checkpoint metric must be one of {', '.join(CHECKPOINT_METRICS)}, "
                f"but got {self.name!r}."
            )

    def value(self, *, val_loss: float, val_acc: float) -> float:
        return val_loss if self.name == "val_loss" else val_acc

    def is_better(self, value: float, best: float | None) -> bool:
        if math.isnan(value):
            return False
        if best is None:
            return True
        return value < best if self.name == "val_loss" else value > best


@dataclass(frozen=True)
class PatienceArming:
    """Arms resetting (once) at the first evaluation with no improvement for `patience_steps`
    steps, at or after `warmup_steps`."""

    patience_steps: int
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("patience_steps", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, but got {name}={value!r}.")

    def should_arm(self, *, step: int, best_step: int) -> bool:
        return step >= self.warmup_steps and step - best_step >= self.patience_steps


@dataclass(frozen=True)
class CheckpointPolicy:
    """Which model is θc. Adaptive: every new θbest after arming becomes θc; otherwise θc stays
    the θbest of the arming moment."""

    adaptive: bool = True

    def follows_new_best(self, *, armed: bool) -> bool:
        return armed and self.adaptive
