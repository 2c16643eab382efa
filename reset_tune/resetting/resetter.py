"""`StochasticResetter`: stochastic resetting to a checkpoint, called like an LR scheduler.

In a training loop::

    resetter = StochasticResetter(model, optimizer, reset_prob=0.01, patience=500)
    for step in range(1, num_steps + 1):
        loss_fn(model(x), y).backward()
        optimizer.step()
        resetter.step()             # may restore the selected tensors from θc
        scheduler.step()
        if step % eval_every == 0:
            resetter.observe(val_loss=..., val_acc=...)   # tracks θbest, arms, moves θc

Semantics (docs/method.md §1): resetting is off until the first evaluation at which the checkpoint
metric has not improved for `patience` steps (and the step is at least `warmup`); then
θc := θbest. With `arm_on_memorisation`, that evaluation must also report that memorisation has
begun (`observe(..., memorising=True)`, e.g. from `reset_tune.engine.memorisation`'s detector).
While armed, after every step, with probability `reset_prob` the selected parameters,
their layers' buffers and their optimizer state are restored from θc. With `adaptive`, each new
θbest after arming becomes θc. `lr_on_reset="keep"` leaves the learning rate alone; `"restore"`
brings back the LR stored with θc (a chainable scheduler then decays from it).

Reset times are drawn as geometric gaps from the resetter's own generator: the same distribution
as one Bernoulli(r) draw per step, with no per-step random-number cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from reset_tune import names
from reset_tune.errors import ConfigError
from reset_tune.resetting.policies import (
    CheckpointMetric,
    CheckpointPolicy,
    MemorisationArming,
    PatienceArming,
)
from reset_tune.resetting.selection import select_reset_tensors
from reset_tune.resetting.snapshot import (
    Snapshot,
    copy_between_snapshots_,
    restore_,
    take_snapshot,
    update_snapshot_,
)

LR_ON_RESET = ("keep", "restore")
_STATE_VERSION = 1


class StochasticResetter:
    """Resets the selected layers of `model` (and their optimizer state) to a good checkpoint."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        reset_prob: float,
        reset_layers: str | Sequence[str] = "all",
        patience: int = 0,
        warmup: int = 0,
        arm_on_memorisation: bool = False,
        checkpoint_metric: str = names.METRIC_VAL_LOSS,
        adaptive: bool = True,
        restore_optimizer: bool = True,
        lr_on_reset: str = "keep",
        seed: int = 0,
        layer_groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if (
            isinstance(reset_prob, bool)
            or not isinstance(reset_prob, int | float)
            or not (0.0 <= float(reset_prob) <= 1.0)
        ):
            raise ConfigError(
                f"reset_prob must be a probability in [0, 1], but got reset_prob={reset_prob!r}."
            )
        if lr_on_reset not in LR_ON_RESET:
            raise ConfigError(
                f"lr_on_reset must be one of {', '.join(LR_ON_RESET)}, but got {lr_on_reset!r}."
            )
        self.metric = CheckpointMetric(checkpoint_metric)
        if not isinstance(arm_on_memorisation, bool):
            raise ConfigError(
                "arm_on_memorisation must be true or false, but got "
                f"arm_on_memorisation={arm_on_memorisation!r}."
            )
        patience_arming = PatienceArming(patience, warmup)
        self.arming: PatienceArming | MemorisationArming = (
            MemorisationArming(patience_arming) if arm_on_memorisation else patience_arming
        )
        self.checkpoint_policy = CheckpointPolicy(bool(adaptive))
        self.selection = select_reset_tensors(model, reset_layers, layer_groups=layer_groups)
        self.model = model
        self.optimizer = optimizer
        self.reset_prob = float(reset_prob)
        self.restore_optimizer = bool(restore_optimizer)
        self.lr_on_reset = lr_on_reset
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(int(seed))

        self._all_names = tuple(n for n, _ in model.named_parameters()) + tuple(
            n for n, _ in model.named_buffers()
        )
        self._selected_names = self.selection.parameter_names + self.selection.buffer_names
        self._optimizer_names = (
            self.selection.parameter_names
            if optimizer is not None and self.restore_optimizer
            else ()
        )

        self.step_count = 0
        self.armed_step: int | None = None
        self.reset_steps: list[int] = []
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.best_val_loss: float | None = None
        self.best_val_acc: float | None = None
        self._best: Snapshot | None = None
        self._checkpoint: Snapshot | None = None
        self._next_reset_step: int | None = None

    # -- read-only views -------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        return self.armed_step is not None

    @property
    def num_resets(self) -> int:
        return len(self.reset_steps)

    @property
    def checkpoint_step(self) -> int | None:
        """The step at which the current θc was taken (None before arming)."""
        return None if self._checkpoint is None else self._checkpoint.step

    # -- the two calls of the training loop -------------------------------------------------------
    def step(self) -> bool:
        """Call once after every `optimizer.step()`; returns whether this step reset."""
        self.step_count += 1
        if self._next_reset_step is None or self.step_count < self._next_reset_step:
            return False
        assert self._checkpoint is not None  # invariant: a reset is scheduled only once armed
        restore_(
            self.model,
            self.optimizer,
            self._checkpoint,
            optimizer_names=self._optimizer_names,
            restore_lr=self.lr_on_reset == "restore",
        )
        self.reset_steps.append(self.step_count)
        self._schedule_next_reset()
        return True

    def observe(
        self,
        *,
        val_loss: float | None = None,
        val_acc: float | None = None,
        memorising: bool | None = None,
    ) -> bool:
        """Call at each evaluation with host floats; returns whether this is a new θbest.

        Only the checkpoint metric is required (`val_loss` by default, `val_acc` with
        `checkpoint_metric="val_acc"`); the other is recorded with θbest when given
        (`best_val_loss`, `best_val_acc`; None otherwise).
        `memorising`: whether memorisation has begun by now (a latching verdict); needed only
        with `arm_on_memorisation`, ignored otherwise.
        """
        # Checked before anything changes, so a wrong call leaves the resetter as it was.
        given = {names.METRIC_VAL_LOSS: val_loss, names.METRIC_VAL_ACC: val_acc}
        metric_value = given[self.metric.name]
        if metric_value is None:
            raise ValueError(
                f"this resetter picks θbest by {self.metric.name} (checkpoint_metric="
                f"{self.metric.name!r}): pass observe({self.metric.name}=...) at every evaluation."
            )
        if memorising is None and isinstance(self.arming, MemorisationArming):
            # Checked before anything changes, so a wrong call leaves the resetter as it was.
            raise ValueError(
                "this resetter arms on memorisation: pass observe(..., memorising=True/False) at "
                "every evaluation (a memorisation detector's verdict)."
            )
        value = float(metric_value)
        improved = self.metric.is_better(value, self.best_value)
        if improved:
            self.best_value = value
            self.best_step = self.step_count
            self.best_val_loss = None if val_loss is None else float(val_loss)
            self.best_val_acc = None if val_acc is None else float(val_acc)
            self._save_best()
            if self.checkpoint_policy.follows_new_best(armed=self.armed):
                assert self._checkpoint is not None and self._best is not None
                copy_between_snapshots_(self._checkpoint, self._best)
        if (
            not self.armed
            and self.best_step is not None
            and self.arming.should_arm(
                step=self.step_count, best_step=self.best_step, memorising=memorising
            )
        ):
            self._arm()
        return improved

    # -- θbest ------------------------------------------------------------------------------------
    def best_model_state(self) -> dict[str, torch.Tensor]:
        """A copy of θbest's parameters and buffers, keyed like `model.state_dict()`.

        Copies, unlike `model.state_dict()`'s references: the resetter updates θbest in place at
        each new best, so references would change under the caller (and writing to them would
        corrupt θbest). The copy costs one model's memory on θbest's device; to load θbest into a
        model without it, use `copy_best_to_`.
        """
        if self._best is None:
            raise RuntimeError("no evaluation has been observed yet, so there is no θbest")
        return {name: tensor.clone() for name, tensor in self._best.tensors.items()}

    def copy_best_to_(self, model: torch.nn.Module | None = None) -> None:
        """Load θbest's weights and buffers into `model` (default: the trained model) in place."""
        if self._best is None:
            raise RuntimeError("no evaluation has been observed yet, so there is no θbest")
        restore_(model if model is not None else self.model, None, self._best)

    # -- internals --------------------------------------------------------------------------------
    def _save_best(self) -> None:
        if self._best is None:
            self._best = take_snapshot(
                self.model,
                self.optimizer,
                self._all_names,
                optimizer_names=self._optimizer_names,
                step=self.step_count,
            )
        else:
            update_snapshot_(
                self._best,
                self.model,
                self.optimizer,
                optimizer_names=self._optimizer_names,
                step=self.step_count,
            )

    def _arm(self) -> None:
        assert self._best is not None
        self.armed_step = self.step_count
        self._checkpoint = Snapshot(
            step=self._best.step,
            tensors={n: self._best.tensors[n].clone() for n in self._selected_names},
        )
        copy_between_snapshots_(self._checkpoint, self._best)
        self._schedule_next_reset()

    def _schedule_next_reset(self) -> None:
        r = self.reset_prob
        if r <= 0.0:
            self._next_reset_step = None
            return
        if r >= 1.0:
            gap = 1
        else:
            u = torch.rand((), generator=self._generator, dtype=torch.float64).item()
            # P(gap = k) = r (1 - r)^(k - 1), k >= 1: the waiting time of per-step Bernoulli(r).
            gap = math.floor(math.log1p(-u) / math.log1p(-r)) + 1
        self._next_reset_step = self.step_count + gap

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "version": _STATE_VERSION,
            "selected_names": list(self._selected_names),
            "all_names": list(self._all_names),
            "step_count": self.step_count,
            "armed_step": self.armed_step,
            "reset_steps": list(self.reset_steps),
            "best_step": self.best_step,
            "best_value": self.best_value,
            "best_val_loss": self.best_val_loss,
            "best_val_acc": self.best_val_acc,
            "next_reset_step": self._next_reset_step,
            "generator": self._generator.get_state(),
            "best": None if self._best is None else self._best.state_dict(),
            "checkpoint": None if self._checkpoint is None else self._checkpoint.state_dict(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore from `state_dict()`; checks the structure before changing anything."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"resetter state has version {state.get('version')!r}; expected {_STATE_VERSION}"
            )
        if list(state["selected_names"]) != list(self._selected_names):
            raise ValueError(
                "resetter state was saved with a different reset_layers selection "
                f"({len(state['selected_names'])} tensors vs {len(self._selected_names)} now)"
            )
        if list(state["all_names"]) != list(self._all_names):
            raise ValueError("resetter state was saved for a model with different tensors")
        live: dict[str, torch.Tensor] = dict(self.model.named_parameters())
        live.update(self.model.named_buffers())
        for key in ("best", "checkpoint"):
            snap = state[key]
            if snap is None:
                continue
            for name, tensor in snap["tensors"].items():
                if name not in live or tuple(tensor.shape) != tuple(live[name].shape):
                    raise ValueError(f"resetter state's {key} tensor {name!r} does not fit")

        def to_device(snap_state: dict | None) -> Snapshot | None:
            if snap_state is None:
                return None
            snap = Snapshot.from_state_dict(snap_state)
            snap.tensors = {n: t.to(live[n].device) for n, t in snap.tensors.items()}
            for n, opt_state in snap.optimizer_state.items():
                for k, v in opt_state.items():
                    if torch.is_tensor(v) and v.dim() > 0:
                        opt_state[k] = v.to(live[n].device)
            return snap

        self.step_count = int(state["step_count"])
        self.armed_step = state["armed_step"]
        self.reset_steps = [int(s) for s in state["reset_steps"]]
        self.best_step = state["best_step"]
        self.best_value = state["best_value"]
        self.best_val_loss = state["best_val_loss"]
        self.best_val_acc = state["best_val_acc"]
        self._next_reset_step = state["next_reset_step"]
        self._generator.set_state(state["generator"])
        self._best = to_device(state["best"])
        self._checkpoint = to_device(state["checkpoint"])
