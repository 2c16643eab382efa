"""Hooks into the training loop. The Ray Tune trainable and the CLI's progress lines plug in here.

Call order in `TrainingRun.run`::

    on_train_start(run)
    for every step: sample → augment → forward/backward → optimizer.step → resetter.step
                    → scheduler.step
        at every evaluation (each `eval_every` steps and at the last step):
            on_evaluation(run, metrics)     # metrics keyed by reset_tune.names; run.state_dict()
                                            # here captures a resumable state; run.request_stop()
                                            # ends training after this evaluation
    on_train_end(run, result)
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from reset_tune import names

if TYPE_CHECKING:
    from reset_tune.engine.loop import TrainingRun
    from reset_tune.engine.result import TrainResult


class Callback:
    """Base class: override the hooks you need; each is called on the training process."""

    def on_train_start(self, run: TrainingRun) -> None:
        """Once, after everything is built (and a resumed state loaded), before the first step."""

    def on_evaluation(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        """After each evaluation, once the resetter has observed it."""

    def on_train_end(self, run: TrainingRun, result: TrainResult) -> None:
        """Once, after θbest's clean test accuracy is known."""


class ProgressPrinter(Callback):
    """One line per evaluation (or every `every`-th), for people watching a terminal."""

    def __init__(self, *, stream: TextIO | None = None, every: int = 1, label: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.every = max(1, every)
        self.label = f"[{label}] " if label else ""
        self._count = 0

    def on_train_start(self, run: TrainingRun) -> None:
        c = run.config
        print(
            f"{self.label}{c.dataset} ({run.data.noise_description}), model {c.model}, "
            f"{c.steps} steps of batch {c.batch_size} on {run.device}, reset_prob={c.reset_prob}",
            file=self.stream,
            flush=True,
        )

    def on_evaluation(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        self._count += 1
        if self._count % self.every and metrics[names.STEP] < run.config.steps:
            return
        armed = "on " if metrics[names.RESET_ARMED] else "off"
        print(
            f"{self.label}step {int(metrics[names.STEP]):>6}/{run.config.steps}  "
            f"train loss {metrics[names.TRAIN_LOSS]:.3f}  val loss {metrics[names.VAL_LOSS]:.3f}  "
            f"val acc {metrics[names.VAL_ACC]:.3f}  mem {metrics[names.MEMORISATION]:.2f}  "
            f"gap {metrics[names.MEMORISATION_GAP]:+.2f}"
            f"{' (memorising)' if metrics[names.MEMORISING] else ''}  "
            f"reset {armed} ({int(metrics[names.RESET_COUNT])})  "
            f"{metrics[names.STEPS_PER_S]:.0f} steps/s",
            file=self.stream,
            flush=True,
        )

    def on_train_end(self, run: TrainingRun, result: TrainResult) -> None:
        memorisation = (
            "no memorisation"
            if result.memorisation_step is None
            else f"memorisation from step {result.memorisation_step}"
        )
        print(
            f"{self.label}done: test acc of θbest {result.test_acc:.4f} (best step "
            f"{result.best_step}), {result.num_resets} resets, {memorisation}, "
            f"{result.wall_time_s:.1f} s",
            file=self.stream,
            flush=True,
        )
