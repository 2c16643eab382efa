"""`resnet18`/`resnet34`: torchvision ResNets with a CIFAR stem (3×3 stride-1 conv, no max-pool)."""

from __future__ import annotations

from torch import nn


def build_cifar_resnet(depth: int, *, in_channels: int, num_classes: int) -> nn.Module:
    """torchvision ``resnet{depth}`` (random init) with the CIFAR stem.

    Groups: ``stem`` (conv1, bn1), ``layer1`` … ``layer4``, ``head`` (fc); then one group per
    residual block, ``layer1.0`` … ``layer4.<last>``.
    """
    # Imported here: torchvision costs about a second to import, and only these models need it.
    from torchvision.models import resnet18, resnet34

    constructors = {18: resnet18, 34: resnet34}
    model = constructors[depth](weights=None, num_classes=num_classes)
    # The ImageNet stem (7×7 stride 2 + max-pool) shrinks a 32×32 input 4× before layer1; the
    # CIFAR stem keeps full resolution, and lets 8×8 inputs reach layer4 at 1×1.
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # Same init torchvision gives every other conv, so the stem is not the odd one out.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()

    groups: dict[str, tuple[str, ...]] = {"stem": ("conv1", "bn1")}
    stages = ("layer1", "layer2", "layer3", "layer4")
    for stage in stages:
        groups[stage] = (stage,)
    groups["head"] = ("fc",)
    for stage in stages:
        for index in range(len(getattr(model, stage))):
            groups[f"{stage}.{index}"] = (f"{stage}.{index}",)
    model.layer_groups = groups
    return model
