"""Building blocks shared by the small models, and the static spatial-size arithmetic."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A 3×3 same-padding convolution, BatchNorm and ReLU (no conv bias: BN's shift replaces it)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def halving_pool(size: int) -> tuple[list[nn.Module], int]:
    """A 2×2 max-pool and the side length after it, or nothing if ``size`` is already 1.

    Decided from ``image_size`` at construction, so ``forward`` has no shape-dependent branches,
    and an 8×8 input can go through three stages (8 → 4 → 2 → 1) without reaching 0×0.
    """
    if size < 2:
        return [], size
    return [nn.MaxPool2d(2)], size // 2
