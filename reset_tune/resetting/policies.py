"""Small policies of the resetter: what counts as a better checkpoint, when resetting arms
(a plateau alone, or a plateau once memorisation has begun), and whether θc follows θbest."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reset_tune import names
from reset_tune.errors import ConfigError

CHECKPOINT_METRICS = names.VALIDATION_METRICS


@dataclass(frozen=True)
class CheckpointMetric:
    """Ranks evaluations: lower `val_loss` or higher `val_acc` is better; ties are not better."""

    name: str = names.METRIC_VAL_LOSS

    def __post_init__(self) -> None:
        if self.name not in CHECKPOINT_METRICS:
            raise ConfigError(
                f"checkpoint metric must be one of {', '.join(CHECKPOINT_METRICS)}, "
                f"but got {self.name!r}."
            )

    def value(self, *, val_loss: float, val_acc: float) -> float:
        return val_loss if self.name == names.METRIC_VAL_LOSS else val_acc

    def is_better(self, value: float, best: float | None) -> bool:
        if math.isnan(value):
            return False
        if best is None:
            return True
        return names.better(value, best, names.MODE_OF_METRIC[self.name])


@dataclass(frozen=True)
class PatienceArming:
    """Arms resetting (once) at the first evaluation with no improvement for `patience`
    steps, at or after `warmup`."""

    patience: int
    warmup: int = 0

    def __post_init__(self) -> None:
        for name in ("patience", "warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, but got {name}={value!r}.")

    def should_arm(self, *, step: int, best_step: int, memorising: bool | None = None) -> bool:
        """`memorising` is ignored: a plateau alone arms (the method's rule, docs/method.md
        §1.3)."""
        return step >= self.warmup and step - best_step >= self.patience


@dataclass(frozen=True)
class MemorisationArming:
    """Arms resetting (once) when `patience` would *and* memorisation has begun.

    A plateau of the noisy validation metric without memorisation is wandering, not the latent
    bias resetting counters (docs/method.md §8); this rule waits for the caller's verdict
    that the model has begun fitting wrong labels (e.g. a latching
    `reset_tune.engine.memorisation.MemorisationDetector`), passed at every evaluation.
    """

    patience: PatienceArming

    def should_arm(self, *, step: int, best_step: int, memorising: bool | None = None) -> bool:
        if memorising is None:
            raise ValueError(
                "arming on memorisation needs observe(..., memorising=True/False) at every "
                "evaluation; pass a memorisation detector's verdict, or arm on patience alone."
            )
        return bool(memorising) and self.patience.should_arm(step=step, best_step=best_step)


@dataclass(frozen=True)
class CheckpointPolicy:
    """Which model is θc. Adaptive: every new θbest after arming becomes θc; otherwise θc stays
    the θbest of the arming moment."""

    adaptive: bool = True

    def follows_new_best(self, *, armed: bool) -> bool:
        return armed and self.adaptive
