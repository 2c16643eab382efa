"""`mlp`: a two-hidden-layer perceptron on flattened images."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten → (Linear, BatchNorm1d, ReLU) × 2 → Linear head.

    Groups: ``hidden1``, ``hidden2``, ``head``. Input must be ``in_features`` values per sample
    (C·H·W of the images it was built for).
    """

    def __init__(self, in_features: int, num_classes: int, hidden_features: int = 512) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden1 = nn.Sequential(
            nn.Linear(in_features, hidden_features),
            nn.BatchNorm1d(hidden_features),
            nn.ReLU(inplace=True),
        )
        self.hidden2 = nn.Sequential(
            nn.Linear(hidden_features, hidden_features),
            nn.BatchNorm1d(hidden_features),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(hidden_features, num_classes)
        self.layer_groups: dict[str, tuple[str, ...]] = {
            "hidden1": ("hidden1",),
            "hidden2": ("hidden2",),
            "head": ("head",),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden2(self.hidden1(self.flatten(x))))
