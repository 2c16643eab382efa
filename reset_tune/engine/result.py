"""`TrainResult`: what one run produced, JSON round-trippable."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from reset_tune import names


@dataclass
class TrainResult:
    """The reported number is `test_acc`: clean test accuracy of θbest (docs/method.md §1.9)."""

    test_acc: float
    final_test_acc: float  # the last model's, for context; never used for decisions
    best_step: int
    best_val_loss: float
    best_val_acc: float
    num_resets: int
    reset_steps: list[int]
    armed_step: int | None  # when resetting turned on (None: never armed)
    checkpoint_step: int | None  # the step of θc at the end
    steps_completed: int
    stopped_early: str | None  # reason, when a callback stopped the run
    wall_time_s: float
    steps_per_s: float  # training steps over the whole loop's wall time, evaluations included
    # When memorisation began by the label-free signal (`engine.memorisation`): the first step of
    # the confirming streak; None: not within the run (or a result saved before it was recorded).
    memorisation_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def summary_metrics(self) -> dict[str, float]:
        return {
            names.TEST_ACC: self.test_acc,
            names.FINAL_TEST_ACC: self.final_test_acc,
            names.BEST_VAL_LOSS: self.best_val_loss,
            names.BEST_VAL_ACC: self.best_val_acc,
            names.BEST_STEP: float(self.best_step),
            names.RESET_COUNT: float(self.num_resets),
            names.STEPS_PER_S: self.steps_per_s,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainResult:
        return cls(**values)
