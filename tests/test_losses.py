"""Tests for the classification losses: hand-written references, edge cases, argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reset_tune.errors import ConfigError
from reset_tune.losses import LOSS_NAMES, build_loss

# Fixed logits with confident-right, confident-wrong, uncertain and tied rows; 4 classes.
LOGITS = torch.tensor(
    [
        [4.0, -1.0, 0.5, 0.0],
        [-2.0, 3.0, 1.0, -0.5],
        [0.1, 0.2, 0.3, 0.4],
        [0.0, 0.0, 0.0, 0.0],
        [-3.0, -3.0, 6.0, 1.0],
        [1.5, -0.5, -2.5, 2.5],
    ]
)
TARGETS = torch.tensor([0, 0, 3, 2, 1, 3])


def _softmax_rows(logits: torch.Tensor) -> list[np.ndarray]:
    rows = []
    for z in logits.double().numpy():
        e = np.exp(z - z.max())
        rows.append(e / e.sum())
    return rows


def _reference(name: str, logits: torch.Tensor, targets: torch.Tensor, **kw: float) -> float:
    """Per-sample formulas as written in the papers, averaged with an explicit loop."""
    total = 0.0
    rows = _softmax_rows(logits)
    for p, y in zip(rows, targets.tolist(), strict=True):
        onehot = np.zeros_like(p)
        onehot[y] = 1.0
        if name == "ce":
            total += -math.log(p[y])
        elif name == "gce":
            q = kw["q"]
            total += (1.0 - p[y] ** q) / q
        elif name == "sce":
            # Wang et al.'s code: clamp p to [1e-7, 1] and the one-hot to [1e-4, 1] before the log.
            ce = -math.log(p[y])
            rce = -sum(
                min(max(p[k], 1e-7), 1.0) * math.log(max(onehot[k], 1e-4)) for k in range(len(p))
            )
            total += kw["alpha"] * ce + kw["beta"] * rce
        elif name == "mae":
            total += sum(abs(p[k] - onehot[k]) for k in range(len(p)))
    return total / len(rows)


def _random_batch(
    seed: int, batch: int = 32, classes: int = 10, scale: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(batch, classes, generator=g)
    return logits, torch.randint(0, classes, (batch,), generator=g)


def test_ce_equals_torch_cross_entropy() -> None:
    logits, targets = _random_batch(0)
    loss = build_loss("ce", num_classes=10)(logits, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets))
    assert math.isclose(loss.item(), _reference("ce", logits, targets), rel_tol=1e-6)


@pytest.mark.parametrize("q", [0.1, 0.7, 1.0])
def test_gce_matches_reference(q: float) -> None:
    loss = build_loss("gce", num_classes=4, gce_q=q)(LOGITS, TARGETS)
    assert math.isclose(loss.item(), _reference("gce", LOGITS, TARGETS, q=q), rel_tol=1e-5)
    logits, targets = _random_batch(1)
    loss = build_loss("gce", num_classes=10, gce_q=q)(logits, targets)
    assert math.isclose(loss.item(), _reference("gce", logits, targets, q=q), rel_tol=1e-5)


@pytest.mark.parametrize(("alpha", "beta"), [(0.1, 1.0), (1.0, 0.0), (0.0, 1.0), (6.0, 0.1)])
def test_sce_matches_reference(alpha: float, beta: float) -> None:
    loss_fn = build_loss("sce", num_classes=4, sce_alpha=alpha, sce_beta=beta)
    expected = _reference("sce", LOGITS, TARGETS, alpha=alpha, beta=beta)
    assert math.isclose(loss_fn(LOGITS, TARGETS).item(), expected, rel_tol=1e-5)
    logits, targets = _random_batch(2)
    loss_fn = build_loss("sce", num_classes=10, sce_alpha=alpha, sce_beta=beta)
    expected = _reference("sce", logits, targets, alpha=alpha, beta=beta)
    assert math.isclose(loss_fn(logits, targets).item(), expected, rel_tol=1e-5)


def test_mae_matches_reference() -> None:
    loss = build_loss("mae", num_classes=4)(LOGITS, TARGETS)
    assert math.isclose(loss.item(), _reference("mae", LOGITS, TARGETS), rel_tol=1e-5)
    logits, targets = _random_batch(3)
    loss = build_loss("mae", num_classes=10)(logits, targets)
    assert math.isclose(loss.item(), _reference("mae", logits, targets), rel_tol=1e-5)


def test_gce_tends_to_ce_as_q_goes_to_zero() -> None:
    logits, targets = _random_batch(4)
    ce = build_loss("ce", num_classes=10)(logits, targets)
    gce = build_loss("gce", num_classes=10, gce_q=1e-4)(logits, targets)
    torch.testing.assert_close(gce, ce, rtol=1e-3, atol=0.0)
    # and it really is a different loss away from q → 0
    gce_half = build_loss("gce", num_classes=10, gce_q=0.5)(logits, targets)
    assert not torch.allclose(gce_half, ce, rtol=0.1)


def test_gce_at_q_one_is_half_mae() -> None:
    logits, targets = _random_batch(5)
    gce = build_loss("gce", num_classes=10, gce_q=1.0)(logits, targets)
    mae = build_loss("mae", num_classes=10)(logits, targets)
    torch.testing.assert_close(gce, mae / 2)


def test_mae_is_bounded_by_0_and_2() -> None:
    mae = build_loss("mae", num_classes=10)
    for seed, scale in [(6, 1.0), (7, 10.0), (8, 100.0)]:
        logits, targets = _random_batch(seed, scale=scale)
        value = mae(logits, targets).item()
        assert 0.0 <= value <= 2.0
    confident = torch.full((4, 10), -50.0)
    confident[:, 3] = 50.0
    right, wrong = torch.full((4,), 3), torch.full((4,), 0)
    assert mae(confident, right).item() == pytest.approx(0.0, abs=1e-6)
    assert mae(confident, wrong).item() == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("name", ["gce", "mae"])
def test_gradient_matches_the_closed_form(name: str) -> None:
    # d/dz_k of (1 - p_y^q)/q is p_y^q (p_k - onehot_k); MAE = 2(1 - p_y) is GCE at q = 1, x2.
    q, factor = (0.7, 1.0) if name == "gce" else (1.0, 2.0)
    logits, targets = _random_batch(9, batch=8)
    logits = logits.double().requires_grad_()
    build_loss(name, num_classes=10, gce_q=q)(logits, targets).backward()
    p = torch.softmax(logits.detach(), dim=1)
    onehot = F.one_hot(targets, 10).double()
    p_y = p.gather(1, targets[:, None])
    expected = factor * p_y**q * (p - onehot) / len(targets)
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_extreme_logits_give_finite_loss_and_gradient(name: str) -> None:
    # p_y underflows to 0 in float32 for the wrong-label rows: a naive p_y^q or log p_y breaks.
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    loss = build_loss(name, num_classes=3)(logits, torch.tensor([1, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bf16_logits_give_a_float32_loss_computed_in_float32(name: str) -> None:
    logits, targets = _random_batch(10)
    logits16 = logits.bfloat16().requires_grad_()
    loss_fn = build_loss(name, num_classes=10)
    loss = loss_fn(logits16, targets)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    # Same value as float32 logits holding the bf16-rounded numbers, so no bf16 softmax inside.
    torch.testing.assert_close(loss, loss_fn(logits16.detach().float(), targets), rtol=0, atol=0)
    loss.backward()
    assert logits16.grad.dtype == torch.bfloat16


def test_shape_mismatches_name_both_sizes() -> None:
    loss_fn = build_loss("gce", num_classes=10)
    with pytest.raises(ValueError, match=r"\(batch, 10\).*\(4, 3\)"):
        loss_fn(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(4,\).*\(5,\)"):
        loss_fn(torch.zeros(4, 10), torch.zeros(5, dtype=torch.long))


def test_unknown_loss_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="focal") as info:
        build_loss("focal", num_classes=10)
    assert all(name in str(info.value) for name in LOSS_NAMES)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"gce_q": 0.0}, "gce_q=0.0"),
        ({"gce_q": -0.5}, "gce_q=-0.5"),
        ({"gce_q": 1.5}, "gce_q=1.5"),
        ({"gce_q": float("nan")}, "gce_q=nan"),
        ({"gce_q": True}, "gce_q=True"),
        ({"sce_alpha": -0.1}, "sce_alpha=-0.1"),
        ({"sce_beta": float("inf")}, "sce_beta=inf"),
        ({"sce_beta": "1"}, "sce_beta='1'"),
        ({"sce_alpha": 0.0, "sce_beta": 0.0}, "both be 0"),
        ({"num_classes": 0}, "num_classes=0"),
    ],
)
def test_invalid_arguments_raise_naming_the_value(kwargs: dict, fragment: str) -> None:
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(ConfigError) as info:
        build_loss("sce", **kwargs)
    assert fragment in str(info.value)


def test_valid_edges_are_accepted() -> None:
    logits, targets = _random_batch(11)
    build_loss("gce", num_classes=10, gce_q=1.0)(logits, targets)
    build_loss("sce", num_classes=10, sce_alpha=0.0, sce_beta=1.0)(logits, targets)
