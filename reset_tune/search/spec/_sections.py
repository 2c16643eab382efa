"""The spec's sections besides `params` and `train`: objective, resources, scheduler, sampler,
racing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from reset_tune import names
from reset_tune.search.spec._params import StrictModel
from reset_tune.search.spec._vocabulary import OBJECTIVE_KEYS


class Objective(StrictModel):
    """What the search ranks configurations by: a validation metric at each trial's θbest."""

    metric: Literal["val_acc", "val_loss"] = "val_acc"

    @field_validator("metric", mode="before")
    @classmethod
    def _never_test(cls, metric: Any) -> Any:
        if isinstance(metric, str) and metric.lower().startswith("test"):
            raise ValueError(
                f"{metric!r} is not allowed: the test split is only reported, never used for a "
                "decision (docs/method.md §3); use val_acc (default) or val_loss"
            )
        return metric

    @property
    def mode(self) -> Literal["max", "min"]:
        """Ray Tune's `mode`: accuracy is maximised, loss minimised."""
        return names.MODE_OF_METRIC[self.metric]

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Optuna's study direction."""
        return "maximize" if self.metric == "val_acc" else "minimize"

    @property
    def result_key(self) -> str:
        """The engine's result key holding this metric at θbest (`best/val_acc`, …)."""
        return OBJECTIVE_KEYS[self.metric]


class Resources(StrictModel):
    """What one trial requests from Ray: CPUs and a GPU fraction (or whole GPUs)."""

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)

    @field_validator("gpus")
    @classmethod
    def _fraction_or_whole(cls, gpus: float) -> float:
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(
                f"must be a fraction of one GPU (0 < gpus <= 1) or a whole number, got {gpus!r}"
            )
        return gpus


class NoScheduler(StrictModel):
    """Every trial runs its full budget."""

    type: Literal["none"]


class AshaScheduler(StrictModel):
    """ASHA early stopping; times are training steps (the engine's `step`)."""

    type: Literal["asha"]
    grace_period: int = Field(ge=1)  # steps before a trial can be stopped
    reduction_factor: float = Field(default=4.0, gt=1)  # Ray Tune's default
    max_t: int | None = Field(default=None, ge=1)  # default: train.steps

    @field_validator("max_t")
    @classmethod
    def _after_grace(cls, max_t: int | None, info: ValidationInfo) -> int | None:
        grace = info.data.get("grace_period")
        if max_t is not None and grace is not None and max_t < grace:
            raise ValueError(f"must be >= grace_period ({grace}), got {max_t}")
        return max_t


Scheduler = Annotated[NoScheduler | AshaScheduler, Field(discriminator="type")]


class Sampler(StrictModel):
    """Optuna's multivariate TPE (see `reset_tune.search.space.make_sampler`)."""

    type: Literal["tpe"] = "tpe"
    seed: int | None = 0  # None: a fresh random sequence every search
    startup_trials: int = Field(default=10, ge=0)  # random trials before TPE models the results


class Racing(StrictModel):
    """Race configurations on seeds (`reset_tune.search.racing`): each starts on one seed, and
    those that might still beat their arm's incumbent run on more, up to `max_seeds`."""

    max_seeds: int = Field(default=4, ge=2)  # seeds an incumbent ends on (the verdict's n)
    z: float = Field(default=1.0, ge=0.0, le=5.0)  # standard errors a challenger may trail by
