"""Optimizer and learning-rate schedule of a run, built from its config."""

from __future__ import annotations

import torch

from reset_tune.config import TrainConfig


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """A chainable schedule, stepped once per training step.

    Chainable (each LR computed from the previous one) matters for `lr_on_reset="restore"`: the
    restored LR is then decayed from, as in the method's reference code.
    """
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    if config.schedule == "step":
        every = config.lr_step_every or max(1, config.steps // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=config.lr_gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
