"""Classification losses (standard and noise-robust): logits (B, C), int64 targets (B,) → mean loss.

All of them compute softmax in at least float32 whatever the logits' dtype (bf16 probabilities
are too coarse for 1 − p_y near 0), return a scalar of that dtype, and make no host syncs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reset_tune.errors import ConfigError

LOSS_NAMES = ("ce", "gce", "sce", "mae")

# SCE's reverse cross-entropy takes log of the one-hot target clamped to this floor (Wang et al.
# 2019, A = log 1e-4), which makes RCE = -log(1e-4) · (1 - p_y).
_RCE_LOG_FLOOR = math.log(1e-4)


class _ClassificationLoss(nn.Module):
    """Checks shapes and gives subclasses the log-probabilities, upcast to at least float32."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def _log_softmax(self, logits: Tensor, targets: Tensor) -> Tensor:
        # Shape checks read metadata only: no host sync.
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must have shape (batch, {self.num_classes}), "
                f"but got {tuple(logits.shape)}."
            )
        if targets.shape != logits.shape[:1]:
            raise ValueError(
                f"targets must have shape ({logits.shape[0]},) to match logits "
                f"{tuple(logits.shape)}, but got {tuple(targets.shape)}."
            )
        # Upcast bf16/fp16 only: float64 logits (e.g. in gradient checks) keep their precision.
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return F.log_softmax(logits.to(dtype), dim=1)

    def _target_log_prob(self, logits: Tensor, targets: Tensor) -> Tensor:
        """log p_y, shape (B,)."""
        log_probs = self._log_softmax(logits, targets)
        return log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class CrossEntropy(_ClassificationLoss):
    """Standard cross-entropy, -log p_y."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.nll_loss(self._log_softmax(logits, targets), targets)


class GeneralizedCrossEntropy(_ClassificationLoss):
    """GCE (Zhang & Sabuncu 2018): (1 - p_y^q) / q; q → 0 gives CE, q = 1 gives MAE / 2."""

    def __init__(self, num_classes: int, q: float) -> None:
        super().__init__(num_classes)
        self.q = q

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_p_y = self._target_log_prob(logits, targets)
        # p_y^q = exp(q·log p_y) needs no probability clamp and keeps its gradient for tiny p_y;
        # expm1 avoids the cancellation in 1 - p_y^q when q is small.
        return (-torch.expm1(self.q * log_p_y) / self.q).mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, q={self.q}"


class SymmetricCrossEntropy(_ClassificationLoss):
    """SCE (Wang et al. 2019): alpha·CE + beta·RCE, with RCE = -log(1e-4) · (1 - p_y)."""

    def __init__(self, num_classes: int, alpha: float, beta: float) -> None:
        super().__init__(num_classes)
        self.alpha = alpha
        self.beta = beta

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_p_y = self._target_log_prob(logits, targets)
        ce = -log_p_y
        # -sum_k p_k log(clamp(onehot_k, 1e-4)) in closed form: only k != y contribute.
        rce = -_RCE_LOG_FLOOR * (1.0 - log_p_y.exp())
        return (self.alpha * ce + self.beta * rce).mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, alpha={self.alpha}, beta={self.beta}"


class MeanAbsoluteError(_ClassificationLoss):
    """MAE between softmax and one-hot: sum_k |p_k - onehot_k| = 2 (1 - p_y), in [0, 2]."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_p_y = self._target_log_prob(logits, targets)
        return (2.0 * (1.0 - log_p_y.exp())).mean()


def build_loss(
    name: str,
    *,
    num_classes: int,
    gce_q: float = 0.7,
    sce_alpha: float = 0.1,
    sce_beta: float = 1.0,
) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss ``name`` as a callable: (logits (B, C), int64 targets (B,)) → mean loss, float32
    for bf16/fp16/fp32 logits.

    ``gce_q`` is used by ``gce`` only; ``sce_alpha``/``sce_beta`` by ``sce`` only, but all are
    validated whatever the name, so a bad value in a config is caught even while unused.
    """
    if name not in LOSS_NAMES:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_NAMES)}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(
            f"`num_classes` must be an integer of at least 1, but got num_classes={num_classes!r}."
        )
    if not (_is_real(gce_q) and 0.0 < gce_q <= 1.0):
        raise ConfigError(f"`gce_q` must be in (0, 1], but got gce_q={gce_q!r}.")
    for arg, value in (("sce_alpha", sce_alpha), ("sce_beta", sce_beta)):
        if not (_is_real(value) and math.isfinite(value) and value >= 0.0):
            raise ConfigError(f"`{arg}` must be finite and at least 0, but got {arg}={value!r}.")
    if sce_alpha == 0.0 and sce_beta == 0.0:
        raise ConfigError(
            "`sce_alpha` and `sce_beta` must not both be 0 (the loss would be identically 0), "
            "but got sce_alpha=0.0, sce_beta=0.0."
        )
    if name == "ce":
        return CrossEntropy(num_classes)
    if name == "gce":
        return GeneralizedCrossEntropy(num_classes, gce_q)
    if name == "sce":
        return SymmetricCrossEntropy(num_classes, sce_alpha, sce_beta)
    return MeanAbsoluteError(num_classes)


def _is_real(value: object) -> bool:
    # bool is an int to Python, but `gce_q: true` in a config is a mistake, not 1.0.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
