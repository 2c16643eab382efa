"""Functional core of resetting: snapshot selected tensors (weights, buffers, optimizer state, LR)
and restore them in place with fused copies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class Snapshot:
    """Copies of named model tensors, their optimizer state and the learning rates at `step`.

    `optimizer_state[name]` is absent when that parameter had no optimizer state yet; a restore
    then clears the live state, as loading the optimizer's full state dict would.
    """

    step: int
    tensors: dict[str, torch.Tensor]
    optimizer_state: dict[str, dict[str, object]] = field(default_factory=dict)
    lrs: list[float] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "tensors": dict(self.tensors),
            "optimizer_state": {k: dict(v) for k, v in self.optimizer_state.items()},
            "lrs": list(self.lrs),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Snapshot:
        return cls(
            step=int(state["step"]),
            tensors=dict(state["tensors"]),
            optimizer_state={k: dict(v) for k, v in state["optimizer_state"].items()},
            lrs=[float(x) for x in state["lrs"]],
        )


def _named_live(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Gathered per call, not cached: `model.to()` replaces buffer objects.
    live: dict[str, torch.Tensor] = dict(model.named_parameters())
    live.update(model.named_buffers())
    return live


def _clone_state(state: dict) -> dict[str, object]:
    return {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in state.items()}


def learning_rates(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(group["lr"]) for group in optimizer.param_groups]


@torch.no_grad()
def take_snapshot(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    names: Sequence[str],
    *,
    optimizer_names: Sequence[str] = (),
    step: int,
) -> Snapshot:
    """Clone `names` (parameters or buffers) and the optimizer state of `optimizer_names`."""
    live = _named_live(model)
    tensors = {n: live[n].detach().clone() for n in names}
    opt_state: dict[str, dict[str, object]] = {}
    lrs: list[float] = []
    if optimizer is not None:
        for n in optimizer_names:
            state = optimizer.state.get(live[n])
            if state:
                opt_state[n] = _clone_state(state)
        lrs = learning_rates(optimizer)
    return Snapshot(step=step, tensors=tensors, optimizer_state=opt_state, lrs=lrs)


def _copy_pairs_(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    if targets:
        # One fused launch per (device, dtype) group instead of one copy kernel per tensor.
        torch._foreach_copy_(targets, sources)


def _optimizer_pairs(
    optimizer: torch.optim.Optimizer,
    live: dict[str, torch.Tensor],
    saved_state: dict[str, dict[str, object]],
    names: Sequence[str],
    targets: list[torch.Tensor],
    sources: list[torch.Tensor],
    *,
    into_optimizer: bool,
) -> None:
    """Pair live optimizer-state tensors with saved ones; non-tensor entries are assigned."""
    for n in names:
        param = live[n]
        saved = saved_state.get(n)
        current = optimizer.state.get(param)
        if into_optimizer:
            if saved is None:
                optimizer.state.pop(param, None)
                continue
            if not current or current.keys() != saved.keys():
                optimizer.state[param] = _clone_state(saved)
                continue
            for key, value in saved.items():
                if torch.is_tensor(value):
                    targets.append(current[key])
                    sources.append(value)
                else:
                    current[key] = value
        else:
            if not current:
                saved_state.pop(n, None)
                continue
            if saved is None or saved.keys() != current.keys():
                saved_state[n] = _clone_state(current)
                continue
            for key, value in current.items():
                if torch.is_tensor(value):
                    targets.append(saved[key])  # type: ignore[arg-type]
                    sources.append(value)
                else:
                    saved[key] = value


@torch.no_grad()
def update_snapshot_(
    snapshot: Snapshot,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    optimizer_names: Sequence[str] = (),
    step: int,
) -> None:
    """Overwrite `snapshot` in place with the model's current values (no new allocations)."""
    live = _named_live(model)
    targets = [snapshot.tensors[n] for n in snapshot.tensors]
    sources = [live[n] for n in snapshot.tensors]
    if optimizer is not None:
        _optimizer_pairs(
            optimizer,
            live,
            snapshot.optimizer_state,
            optimizer_names,
            targets,
            sources,
            into_optimizer=False,
        )
        snapshot.lrs = learning_rates(optimizer)
    _copy_pairs_(targets, sources)
    snapshot.step = step


@torch.no_grad()
def copy_between_snapshots_(dst: Snapshot, src: Snapshot) -> None:
    """dst := src restricted to dst's names (used for θc := θbest)."""
    _copy_pairs_([dst.tensors[n] for n in dst.tensors], [src.tensors[n] for n in dst.tensors])
    dst.optimizer_state = {
        n: _clone_state(state) for n, state in src.optimizer_state.items() if n in dst.tensors
    }
    dst.lrs = list(src.lrs)
    dst.step = src.step


@torch.no_grad()
def restore_(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    snapshot: Snapshot,
    *,
    optimizer_names: Sequence[str] = (),
    restore_lr: bool = False,
) -> None:
    """Copy `snapshot` back into the live model (and optimizer state / LR) in place."""
    live = _named_live(model)
    targets = [live[n] for n in snapshot.tensors]
    sources = list(snapshot.tensors.values())
    if optimizer is not None:
        _optimizer_pairs(
            optimizer,
            live,
            snapshot.optimizer_state,
            optimizer_names,
            targets,
            sources,
            into_optimizer=True,
        )
        if restore_lr:
            for group, lr in zip(optimizer.param_groups, snapshot.lrs, strict=True):
                group["lr"] = lr
    _copy_pairs_(targets, sources)
