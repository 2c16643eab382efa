"""`vcnn`: the VGG-style network of the method's small-data experiments."""

from __future__ import annotations

import torch
from torch import nn

from reset_tune.models._layers import conv_bn_relu, halving_pool

# Flatten at most this side length into fc1: a 32×32 input reaches 4×4 after three pools, which
# is flattened as in the reference VGG-style net (196·4·4 = 3136 features).
_MAX_FLAT_SIZE = 4


class VCNN(nn.Module):
    """Six 3×3 conv-BN-ReLU in three stages (64,64 | 128,128 | 196,196; 2×2 max-pool after each),
    flatten (average-pooled first if larger than 4×4), then Linear-BN-ReLU 256, Linear-BN-ReLU
    256, Linear head.

    Groups, input to output: ``stage1``, ``stage2``, ``stage3``, ``fc1``, ``fc2``, ``head``; then
    ``fc_block`` = ``fc1`` + ``fc2`` + ``head`` (all three fully connected layers).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        widths: tuple[int, int, int] = (64, 128, 196),
        fc_features: int = 256,
    ) -> None:
        super().__init__()
        size = image_size
        stages: list[nn.Sequential] = []
        channels = in_channels
        for width in widths:
            pool, size = halving_pool(size)
            stages.append(
                nn.Sequential(*conv_bn_relu(channels, width), *conv_bn_relu(width, width), *pool)
            )
            channels = width
        self.stage1, self.stage2, self.stage3 = stages
        self.pool, size = _shrink_to_flat_size(size)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(
            nn.Linear(channels * size * size, fc_features),
            nn.BatchNorm1d(fc_features),
            nn.ReLU(inplace=True),
        )
        self.fc2 = nn.Sequential(
            nn.Linear(fc_features, fc_features),
            nn.BatchNorm1d(fc_features),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(fc_features, num_classes)
        self.layer_groups: dict[str, tuple[str, ...]] = {
            "stage1": ("stage1",),
            "stage2": ("stage2",),
            "stage3": ("stage3",),
            "fc1": ("fc1",),
            "fc2": ("fc2",),
            "head": ("head",),
            "fc_block": ("fc1", "fc2", "head"),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stage3(self.stage2(self.stage1(x))))
        return self.head(self.fc2(self.fc1(self.flatten(x))))


def _shrink_to_flat_size(size: int) -> tuple[nn.Module, int]:
    # Large imagefolder inputs would otherwise make fc1 enormous. AvgPool2d rather than
    # AdaptiveAvgPool2d: the latter's CUDA backward refuses deterministic mode.
    if size <= _MAX_FLAT_SIZE:
        return nn.Identity(), size
    kernel = -(-size // _MAX_FLAT_SIZE)
    return nn.AvgPool2d(kernel, ceil_mode=True), -(-size // kernel)
