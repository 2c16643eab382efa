"""Evaluation passes: loss and accuracy on a split, and the memorisation fraction.

Everything stays on the device; callers sync once per evaluation by reading the results.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Normalize = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize: Normalize,
    *,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy of `model` on (images, labels), as 0-dim device tensors."""
    loss_sum = torch.zeros((), device=labels.device, dtype=torch.float64)
    correct = torch.zeros((), device=labels.device, dtype=torch.int64)
    for start in range(0, labels.shape[0], batch_size):
        x = normalize(images[start : start + batch_size])
        y = labels[start : start + batch_size]
        with autocast_context(labels.device, autocast_dtype, cache_enabled=False):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(dim=1) == y).sum()
    n = max(1, labels.shape[0])
    return loss_sum / n, correct.double() / n


@torch.no_grad()
def predictions(
    model: torch.nn.Module,
    images: torch.Tensor,
    normalize: Normalize,
    *,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Predicted classes (int64, on the device) of `images`."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        with autocast_context(images.device, autocast_dtype, cache_enabled=False):
            out.append(model(normalize(images[start : start + batch_size])).argmax(dim=1))
    if not out:
        return torch.empty(0, dtype=torch.int64, device=images.device)
    return torch.cat(out)


def memorisation_fraction(predicted: torch.Tensor, noisy_labels: torch.Tensor) -> torch.Tensor:
    """Of samples whose label is wrong, the share predicted as that wrong label
    (docs/method.md §2.5).

    `predicted` and `noisy_labels` cover only wrong-labelled samples; NaN when there are none.
    """
    if noisy_labels.numel() == 0:
        return torch.full((), float("nan"), device=noisy_labels.device, dtype=torch.float64)
    return (predicted == noisy_labels).double().mean()


def autocast_context(
    device: torch.device, dtype: torch.dtype | None, *, cache_enabled: bool = True
) -> torch.autocast:
    """bf16 autocast when `dtype` is given; a no-op context otherwise.

    `cache_enabled=False` inside CUDA-graph capture: the cast-weight cache would keep tensors from
    the capture alive outside the graph's memory pool (values are the same either way)."""
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache_enabled)
