"""The model registry: build any model of the zoo by name for a dataset's image shape."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from reset_tune.errors import ConfigError
from reset_tune.models.cnn import SmallCNN
from reset_tune.models.mlp import MLP
from reset_tune.models.resnet import build_cifar_resnet
from reset_tune.models.vcnn import VCNN

MODEL_NAMES = ("mlp", "cnn", "vcnn", "resnet18", "resnet34")

_BUILDERS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "mlp": lambda c, k, s: MLP(c * s * s, k),
    "cnn": lambda c, k, s: SmallCNN(c, k, s),
    "vcnn": lambda c, k, s: VCNN(c, k, s),
    "resnet18": lambda c, k, s: build_cifar_resnet(18, in_channels=c, num_classes=k),
    "resnet34": lambda c, k, s: build_cifar_resnet(34, in_channels=c, num_classes=k),
}


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """A freshly initialised model for ``in_channels``×``image_size``×``image_size`` images.

    Weights are drawn from torch's global RNG: seed it (e.g. inside ``torch.random.fork_rng``)
    around this call for a reproducible initialisation. The model carries a ``layer_groups``
    attribute (see :func:`reset_tune.models.layer_groups`); groups up to and including ``head``
    partition its parameters in input-to-output order, and any after ``head`` are finer or
    coarser views of them. In train mode, BatchNorm needs batches of at least 2.
    """
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}.")
    for arg, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("image_size", image_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"`{arg}` must be an integer of at least 1, but got {arg}={value!r}.")
    return _BUILDERS[name](in_channels, num_classes, image_size)
