"""`cnn`: a small, fast three-block CNN for quick runs on any image size."""

from __future__ import annotations

import torch
from torch import nn

from reset_tune.models._layers import conv_bn_relu, halving_pool


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks (32, 64, 128 channels; 2×2 max-pool after the first two),
    global average pool → Linear head.

    Groups: ``block1``, ``block2``, ``block3``, ``head``.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        size = image_size
        pool1, size = halving_pool(size)
        pool2, size = halving_pool(size)
        self.block1 = nn.Sequential(*conv_bn_relu(in_channels, 32), *pool1)
        self.block2 = nn.Sequential(*conv_bn_relu(32, 64), *pool2)
        self.block3 = nn.Sequential(*conv_bn_relu(64, 128))
        self.head = nn.Linear(128, num_classes)
        self.layer_groups: dict[str, tuple[str, ...]] = {
            "block1": ("block1",),
            "block2": ("block2",),
            "block3": ("block3",),
            "head": ("head",),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        # A plain mean, not AdaptiveAvgPool2d: its CUDA backward refuses deterministic mode
        # for output sizes other than 1×1, and the mean says what is meant.
        return self.head(x.mean(dim=(2, 3)))
