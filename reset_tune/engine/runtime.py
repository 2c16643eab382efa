"""Where and how a run executes: device choice, deterministic kernels, provenance."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import torch

from reset_tune.errors import ConfigError

# The environment variable that fixes cuBLAS's workspace, which its deterministic mode needs.
_CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"


def resolve_device(spec: str) -> torch.device:
    """`auto` picks the first GPU when there is one; an unavailable GPU is a user error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r} was requested but no CUDA GPU is visible; use --device cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {spec!r} does not exist: {torch.cuda.device_count()} GPU(s) visible."
            )
    return device


def configure_kernels(*, deterministic: bool, device: torch.device) -> None:
    """Process-wide kernel settings. Deterministic kernels cost 10–40 % on a GPU (docs/method.md §7)
    but without them identical runs differ by more than the effects we compare.

    These stay set for the rest of the process; the engine applies them through
    `kernel_settings`, which puts the caller's settings back afterwards."""
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; must be set before its first use.
        os.environ.setdefault(_CUBLAS_WORKSPACE_ENV, ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic and device.type == "cuda"
    if device.type == "cuda":
        # TF32 convolutions/matmuls: fast on Ampere+ and deterministic for a fixed algorithm.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def kernel_settings(*, deterministic: bool, device: torch.device) -> Iterator[None]:
    """`configure_kernels` for the duration of a `with` block, then the caller's settings back.

    Restored on return and on an exception: deterministic-algorithms mode (and its warn-only
    flag), cuDNN's deterministic/benchmark/TF32 flags, cuBLAS's TF32 flag and the
    `CUBLAS_WORKSPACE_CONFIG` environment variable (removed again if it was unset). The settings
    are process-wide while the block runs: two threads training at once would see each other's.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    saved_workspace = os.environ.get(_CUBLAS_WORKSPACE_ENV)
    try:
        configure_kernels(deterministic=deterministic, device=device)
        yield
    finally:
        algorithms, warn_only, cudnn_deterministic, benchmark, cudnn_tf32, matmul_tf32 = saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        if saved_workspace is None:
            os.environ.pop(_CUBLAS_WORKSPACE_ENV, None)
        else:
            os.environ[_CUBLAS_WORKSPACE_ENV] = saved_workspace


def memory_format_for(model: torch.nn.Module, device: torch.device) -> torch.memory_format:
    """The memory format a run keeps `model`'s 4-d weights and its input batches in.

    `channels_last` for a model with 2-d convolutions on a CUDA device: cuDNN's fast convolution
    and batch-norm kernels work in NHWC and would otherwise convert every NCHW tensor on the way
    in and out (about 2.6 of 14 ms of a ResNet-18 step at batch 256 on an H100, and 8.9 vs 14.3 ms
    per bare step; benchmarks/README.md, "GPU (H100)"). Everything else, the CPU always, stays
    `contiguous_format`, so CPU runs compute exactly as before.
    """
    if device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return torch.channels_last
    return torch.contiguous_format


def _installed_version(package: str) -> str | None:
    # The distribution's metadata, not the module: importing torchvision costs ~2 s on one CPU,
    # paid by every trial worker that records provenance and needs no torchvision model.
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The checkout's commit when the package runs from a git checkout, else None."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(device: torch.device) -> dict[str, str | None]:
    """Code version, package versions and hardware, recorded with every result."""
    import numpy

    import reset_tune

    return {
        "reset_tune": reset_tune.__version__,
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _installed_version("torchvision"),
        "numpy": numpy.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "host": platform.node(),
    }
