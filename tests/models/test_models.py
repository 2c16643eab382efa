"""Tests for the model zoo: shapes, gradients, layer groups, the CIFAR stem and argument checks."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from reset_tune.errors import ConfigError
from reset_tune.models import MODEL_NAMES, build_model, layer_groups, matches_prefixes

NUM_CLASSES = 7  # not 10, so a head left at a default width would show
# (channels, side): digits, MNIST-like, CIFAR-like
SHAPES = [(1, 8), (1, 28), (3, 32)]
RESNETS = ("resnet18", "resnet34")
# An imagefolder side that is not a power of 2, for the models whose layers depend on image_size.
CASES = [(n, c, s) for n in MODEL_NAMES for c, s in SHAPES] + [
    (n, 3, 40) for n in MODEL_NAMES if n not in RESNETS
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Batches of 1-2 gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    # spin-waiting made a ResNet step 10-20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _built(name: str, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    # Building a ResNet costs ~0.4 s of weight init, so tests share models; each test that
    # trains clears gradients first, and none relies on BatchNorm statistics left by another.
    if name in RESNETS:
        image_size = 32  # ResNets are size-agnostic: build_model ignores image_size for them
    torch.manual_seed(0)
    return build_model(
        name, in_channels=in_channels, num_classes=NUM_CLASSES, image_size=image_size
    )


def _params_under(model: nn.Module, prefixes: tuple[str, ...]) -> set[str]:
    return {n for n, _ in model.named_parameters() if matches_prefixes(n, prefixes)}


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def _partition_groups(groups: dict[str, tuple[str, ...]]) -> list[str]:
    names = list(groups)
    return names[: names.index("head") + 1]


@pytest.mark.parametrize(("name", "channels", "side"), CASES)
def test_forward_gives_logits_and_every_parameter_gets_a_gradient(
    name: str, channels: int, side: int
) -> None:
    model = _built(name, channels, side)
    model.zero_grad(set_to_none=True)
    model.train()
    # batch 2: the smallest BatchNorm trains on
    x = torch.randn(2, channels, side, side, generator=torch.Generator().manual_seed(0))
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert logits.dtype == torch.float32
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, NUM_CLASSES - 1])).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name

    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_input_gives_the_same_logits(name: str) -> None:
    model = _built(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        got = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# resnet34 shares resnet18's construction code and would only add ~1 s.
@pytest.mark.parametrize("name", ["mlp", "cnn", "vcnn", "resnet18"])
def test_same_seed_same_weights_other_seed_other_weights(name: str) -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        model = build_model(name, in_channels=1, num_classes=NUM_CLASSES, image_size=8)
        return [p.detach() for p in model.parameters()]

    first, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    # The first layer and the head are both drawn from the seed, not fixed.
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[-2], other[-2])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_group_prefix_matches_parameters_and_head_is_the_final_linear(name: str) -> None:
    model = _built(name)
    groups = layer_groups(model)
    assert groups == model.layer_groups
    for group, prefixes in groups.items():
        for prefix in prefixes:
            assert _params_under(model, (prefix,)), f"{name}: {group} prefix {prefix!r}"
    head_name, head = _last_linear(model)
    assert head.out_features == NUM_CLASSES
    assert _params_under(model, groups["head"]) == {f"{head_name}.weight", f"{head_name}.bias"}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_groups_up_to_head_partition_parameters_and_buffers(name: str) -> None:
    model = _built(name)
    groups = layer_groups(model)
    partition = _partition_groups(groups)
    assert len(partition) >= 3, "at least one group per stage/block besides head"
    for names in (
        [n for n, _ in model.named_parameters()],
        # BatchNorm running statistics are reset with their layer, so they must be covered too.
        [n for n, _ in model.named_buffers()],
    ):
        for tensor_name in names:
            owners = [g for g in partition if matches_prefixes(tensor_name, groups[g])]
            assert len(owners) == 1, f"{name}: {tensor_name} is in {owners}"


@pytest.mark.parametrize("name", ["mlp", "cnn", "vcnn"])
def test_small_models_declare_their_documented_groups(name: str) -> None:
    expected = {
        "mlp": ["hidden1", "hidden2", "head"],
        "cnn": ["block1", "block2", "block3", "head"],
        "vcnn": ["stage1", "stage2", "stage3", "fc1", "fc2", "head", "fc_block"],
    }[name]
    assert list(layer_groups(_built(name))) == expected


def test_vcnn_stages_hold_two_convs_and_fc_block_all_three_linears() -> None:
    model = _built("vcnn")
    groups = layer_groups(model)
    modules = dict(model.named_modules())
    for stage in ("stage1", "stage2", "stage3"):
        convs = [
            m
            for n, m in modules.items()
            if matches_prefixes(n, groups[stage]) and isinstance(m, nn.Conv2d)
        ]
        assert [c.kernel_size for c in convs] == [(3, 3), (3, 3)]
    assert [m.out_channels for m in modules.values() if isinstance(m, nn.Conv2d)] == [
        64,
        64,
        128,
        128,
        196,
        196,
    ]
    fc_linears = [
        n
        for n, m in modules.items()
        if isinstance(m, nn.Linear) and matches_prefixes(n, groups["fc_block"])
    ]
    all_linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    assert fc_linears == all_linears and len(all_linears) == 3
    assert _params_under(model, groups["fc_block"]) == _params_under(
        model, groups["fc1"] + groups["fc2"] + groups["head"]
    )
    # 32×32 → 4×4 after three pools, flattened like the reference net.
    assert modules["fc1.0"].in_features == 196 * 4 * 4


@pytest.mark.parametrize(
    ("side", "flat_side"), [(1, 1), (4, 1), (8, 1), (28, 3), (40, 3), (64, 4), (100, 4)]
)
def test_vcnn_flattens_at_most_four_by_four(side: int, flat_side: int) -> None:
    model = build_model("vcnn", in_channels=3, num_classes=NUM_CLASSES, image_size=side)
    assert model.fc1[0].in_features == 196 * flat_side * flat_side
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, side, side)).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("side", [1, 2, 4])
def test_cnn_skips_pools_that_would_empty_a_tiny_image(side: int) -> None:
    model = build_model("cnn", in_channels=1, num_classes=NUM_CLASSES, image_size=side)
    model.train()
    assert model(torch.randn(2, 1, side, side)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(
    ("name", "blocks"), [("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))]
)
def test_resnet_groups_cover_stem_stages_blocks_and_head(
    name: str, blocks: tuple[int, ...]
) -> None:
    model = _built(name)
    groups = layer_groups(model)
    stages = ["layer1", "layer2", "layer3", "layer4"]
    assert _partition_groups(groups) == ["stem", *stages, "head"]
    assert groups["stem"] == ("conv1", "bn1")
    assert groups["head"] == ("fc",)
    union = set().union(*(_params_under(model, groups[g]) for g in ["stem", *stages, "head"]))
    assert union == {n for n, _ in model.named_parameters()}
    for stage, count in zip(stages, blocks, strict=True):
        block_groups = [f"{stage}.{i}" for i in range(count)]
        assert all(g in groups for g in block_groups)
        assert f"{stage}.{count}" not in groups
        in_blocks = set().union(*(_params_under(model, groups[g]) for g in block_groups))
        assert in_blocks == _params_under(model, groups[stage])


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_resnet_has_the_cifar_stem(name: str, in_channels: int) -> None:
    model = _built(name, in_channels=in_channels, image_size=32)
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.in_channels == in_channels
    assert conv1.kernel_size == (3, 3)
    assert conv1.stride == (1, 1)
    assert conv1.padding == (1, 1)
    assert conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    # Behaviour, not only structure: layer1 sees the full 32×32 resolution.
    seen = []
    handle = model.layer1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, in_channels, 32, 32))
    handle.remove()
    assert seen == [(1, 64, 32, 32)]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_no_pooling_that_refuses_deterministic_cuda_backward(name: str) -> None:
    # AdaptiveAvgPool2d's CUDA backward raises under torch.use_deterministic_algorithms unless
    # the output is 1×1 (then torch computes a plain mean); searches run deterministic.
    for _, module in _built(name, 3, 40).named_modules():  # 40: vcnn pools 5×5 to 3×3
        if isinstance(module, nn.AdaptiveAvgPool2d):
            assert module.output_size in (1, (1, 1))
        assert not isinstance(module, nn.AdaptiveMaxPool2d)


def test_foreign_module_head_is_its_last_linear() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
            self.classifier = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.body(x))

    assert layer_groups(Net()) == {"head": ("classifier.2",)}
    assert layer_groups(nn.Sequential(nn.Linear(2, 2), nn.Tanh())) == {"head": ("0",)}


def test_foreign_module_without_linear_raises_and_suggests_patterns() -> None:
    with pytest.raises(ConfigError, match="glob patterns") as info:
        layer_groups(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    assert "Sequential" in str(info.value)


def test_declared_groups_are_returned_as_a_copy_and_checked() -> None:
    model = _built("cnn")
    groups = layer_groups(model)
    groups["head"] = ("block1",)
    assert layer_groups(model)["head"] == ("head",)

    bad = nn.Linear(2, 2)
    bad.layer_groups = {"head": "weight"}  # a bare string, not a tuple of prefixes
    with pytest.raises(ConfigError, match="'weight'"):
        layer_groups(bad)
    bad.layer_groups = {"head": ()}
    with pytest.raises(ConfigError, match="non-empty"):
        layer_groups(bad)


def test_matches_prefixes_respects_module_boundaries() -> None:
    assert matches_prefixes("layer4.0.conv1.weight", ("layer4",))
    assert matches_prefixes("layer4", ("layer4",))
    assert not matches_prefixes("layer40.weight", ("layer4",))
    assert not matches_prefixes("fc.weight", ("layer4", "bn1"))
    assert matches_prefixes("anything.at.all", ("",))


def test_unknown_model_name_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="resnet50") as info:
        build_model("resnet50", in_channels=3, num_classes=10, image_size=32)
    assert all(name in str(info.value) for name in MODEL_NAMES)


@pytest.mark.parametrize("arg", ["in_channels", "num_classes", "image_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_sizes_raise_naming_the_argument(arg: str, value: object) -> None:
    kwargs = {"in_channels": 3, "num_classes": 10, "image_size": 32, arg: value}
    with pytest.raises(ConfigError, match=f"{arg}={value!r}"):
        build_model("cnn", **kwargs)
