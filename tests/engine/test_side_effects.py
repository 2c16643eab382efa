"""A library call leaves the process as it found it: kernel settings and their environment."""

from __future__ import annotations

import os

import pytest
import torch

from reset_tune.config import TrainConfig
from reset_tune.engine import Callback, train
from reset_tune.engine.runtime import kernel_settings

TINY = dict(
    dataset="digits",
    model="mlp",
    steps=10,
    eval_every=5,
    batch_size=32,
    noise="symmetric:0.4",
    train_subset=300,
    device="cpu",
    deterministic=True,
)


def _kernel_state() -> tuple[object, ...]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )


@pytest.fixture
def caller_settings(monkeypatch):
    """Settings a caller might hold, each the opposite of what a deterministic run sets."""
    before = _kernel_state()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True
    yield _kernel_state()
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic = before[2]
    torch.backends.cudnn.benchmark = before[3]


class _SeesSettings(Callback):
    """Records the settings in force during the run; optionally fails at the first evaluation."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.during: tuple[object, ...] | None = None

    def on_evaluation(self, run, metrics) -> None:
        self.during = _kernel_state()
        if self.fail:
            raise RuntimeError("callback failed")


def test_train_restores_kernel_settings_when_it_returns(caller_settings):
    seen = _SeesSettings()
    train(TrainConfig(**TINY), callbacks=[seen])
    assert seen.during is not None and seen.during[0] is True  # deterministic while training
    assert seen.during[6] == ":4096:8"
    assert _kernel_state() == caller_settings


def test_train_restores_kernel_settings_when_it_raises(caller_settings):
    seen = _SeesSettings(fail=True)
    with pytest.raises(RuntimeError, match="callback failed"):
        train(TrainConfig(**TINY), callbacks=[seen])
    assert seen.during is not None and seen.during[0] is True
    assert _kernel_state() == caller_settings


def test_kernel_settings_keep_a_callers_workspace_and_warn_only_mode(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    before = _kernel_state()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        outer = _kernel_state()
        with kernel_settings(deterministic=False, device=torch.device("cpu")):
            assert torch.are_deterministic_algorithms_enabled() is False
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # never overwritten
        assert _kernel_state() == outer
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
