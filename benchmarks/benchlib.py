"""Shared helpers of the benchmark scripts: data, timed engine runs, statistics, machine facts.

Importing this module makes the repository root importable, so the scripts run from a checkout
as ``.venv/bin/python benchmarks/<script>.py`` without installing the package.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reset_tune.config import TrainConfig  # noqa: E402
from reset_tune.data import ArrayDataset, DataSplits, LoadedDataset, build_splits  # noqa: E402
from reset_tune.engine import Callback, TrainingRun, data_settings, prepare_data  # noqa: E402
from reset_tune.engine.runtime import provenance  # noqa: E402

DATASETS = ("synthetic-cifar", "digits")
SYNTHETIC_SEED = 20_250_101  # fixed: every run of every script sees the same synthetic images
SYNTHETIC_IMAGE_SIZE = 32  # CIFAR-shaped: 3 x 32 x 32 uint8, 10 classes
SYNTHETIC_CLASSES = 10


# ----------------------------------------------------------------------------- data


def synthetic_cifar(*, num_train: int, num_test: int, seed: int = SYNTHETIC_SEED) -> LoadedDataset:
    """CIFAR-shaped uint8 images (N, 3, 32, 32) with 10 learnable classes, from a fixed seed.

    Each class has a smooth random colour template (an 8x8 pattern upsampled 4x); an image is
    its class template at a random contrast plus per-pixel noise, so the loops actually learn
    and validation accuracy improves the way it would on real data (which matters for the
    reference loop: it tests on every new best). `num_train` includes the validation part.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed]))
    size, classes = SYNTHETIC_IMAGE_SIZE, SYNTHETIC_CLASSES
    coarse = rng.normal(0.0, 1.0, size=(classes, 3, size // 4, size // 4))
    templates = np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3)  # (K, 3, 32, 32)

    def draw(count: int) -> ArrayDataset:
        labels = rng.integers(0, classes, size=count)
        contrast = rng.uniform(0.5, 1.5, size=(count, 1, 1, 1))
        noise = rng.normal(0.0, 1.0, size=(count, 3, size, size))
        pixels = 128.0 + 40.0 * (contrast * templates[labels] + noise)
        images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return ArrayDataset(images=images, labels=labels.astype(np.int64))

    return LoadedDataset(
        name="synthetic-cifar",
        train=draw(num_train),
        test=draw(num_test),
        num_classes=classes,
        class_names=[f"class{k}" for k in range(classes)],
        default_augment="crop-flip",  # as for CIFAR: both loops random-crop (pad 4) and flip
        human_labels=None,
        source=f"synthetic (numpy seed {seed})",
    )


@dataclass(frozen=True)
class SyntheticSizes:
    """Split sizes of the synthetic set: train (after carving validation), validation, test."""

    train: int
    val: int
    test: int


def load_splits(
    dataset: str,
    *,
    noise: str,
    seed: int,
    device: torch.device,
    sizes: SyntheticSizes,
) -> tuple[DataSplits, dict]:
    """Device-resident splits through the engine's real data path, and the config keys for them.

    The returned dict holds the `TrainConfig` fields that describe the data (dataset name, noise,
    val_fraction), so engine and reference runs built from it agree on the data.
    """
    if dataset == "digits":
        keys = {"dataset": "digits", "noise": noise, "val_fraction": 0.1, "seed": seed}
        return prepare_data(TrainConfig(**keys), device), keys
    if dataset != "synthetic-cifar":
        raise SystemExit(f"error: --dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    pool = sizes.train + sizes.val
    loaded = synthetic_cifar(num_train=pool, num_test=sizes.test)
    val_fraction = sizes.val / pool
    splits = build_splits(
        loaded, noise=noise, seed=seed, val_fraction=val_fraction, augment="auto", device=device
    )
    keys = {
        "dataset": "synthetic-cifar",
        "noise": noise,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    # Record what produced the splits, as `prepare_data` does, so that runs accept them.
    splits.settings = data_settings(TrainConfig(**keys))
    return splits, keys


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read afterwards covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class WindowTimer(Callback):
    """Times the engine between the evaluation at `start_step` and the one at `end_step`.

    Both ends sit right after an evaluation, so the window holds exactly
    ``(end_step - start_step)`` training steps and ``(end_step - start_step) / eval_every``
    evaluations; construction, warm-up and the end-of-run test passes fall outside it.
    """

    def __init__(self, start_step: int, end_step: int, *, profiler=None) -> None:
        self.start_step, self.end_step = start_step, end_step
        self.profiler = profiler
        self.started: float | None = None
        self.seconds: float | None = None

    def on_evaluation(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        if run.step == self.start_step:
            synchronize(run.device)
            self.started = time.perf_counter()
            if self.profiler is not None:
                self.profiler.enable()
        elif run.step == self.end_step and self.started is not None:
            synchronize(run.device)
            self.seconds = time.perf_counter() - self.started
            if self.profiler is not None:
                self.profiler.disable()


def time_engine(
    config: TrainConfig, splits: DataSplits, *, warmup: int, steps: int, profiler=None
) -> tuple[float, TrainingRun]:
    """Run the engine for ``warmup + steps`` steps; return steps/s over the last `steps`.

    `config.steps` must equal ``warmup + steps`` and both must be multiples of `eval_every`.
    """
    if config.steps != warmup + steps:
        raise ValueError(f"config.steps={config.steps} must equal warmup+steps={warmup + steps}")
    timer = WindowTimer(warmup, warmup + steps, profiler=profiler)
    run = TrainingRun(config, data=splits)
    if warmup == 0:
        # No evaluation precedes step 1: open the window before the loop starts.
        synchronize(run.device)
        timer.started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
    run.run([timer])
    if timer.seconds is None:
        raise RuntimeError("the timing window never closed; check warmup/steps/eval_every")
    return steps / timer.seconds, run


def check_window(*, warmup: int, steps: int, eval_every: int) -> None:
    """Exit with one clear line unless the timed window is aligned with evaluations."""
    if steps < eval_every or steps % eval_every or warmup % eval_every:
        raise SystemExit(
            f"error: --steps ({steps}) and --warmup ({warmup}) must be multiples of eval_every "
            f"({eval_every}), with --steps at least {eval_every}, so that every timed window "
            "holds the same number of evaluations"
        )


# ----------------------------------------------------------------------------- statistics


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt_mean_sd(values: Sequence[float], digits: int = 2) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


# ----------------------------------------------------------------------------- provenance


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo states it (or what the platform module says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(device: torch.device) -> dict[str, object]:
    """What a figure was measured on: device, CPU, core count, thread count, versions, load."""
    import torchvision

    facts: dict[str, object] = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    facts["commit"] = provenance(device).get("commit")
    try:
        facts["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return facts


def describe_machine(facts: dict[str, object]) -> str:
    where = facts.get("gpu") or f"{facts['cpu']} ({facts['cpu_count']} cores)"
    return (
        f"{where}; torch {facts['torch']}, torchvision {facts['torchvision']}, "
        f"{facts['torch_threads']} torch threads, load average {facts.get('load_average_1min')}"
    )


def write_json(path: str, payload: dict) -> None:
    """Write `payload` whole or not at all (temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(temporary, target)


DEFAULT_CPU_THREADS = 1


def add_threads_option(parser) -> None:
    """`--threads`: intra-op threads of torch; the default suits a shared 2-core machine."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help=f"torch intra-op threads (default {DEFAULT_CPU_THREADS} on CPU, torch's own on "
        "CUDA; 0 = torch's own). On a shared 2-core machine, 2 threads make every parallel op "
        "wait for whichever thread another process has preempted: one cnn step went from 27 ms "
        "to 650 ms while another job held one core; with 1 thread it stayed near 50 ms",
    )


def apply_threads(requested: int | None, device: torch.device) -> None:
    """Set torch's intra-op thread count as `--threads` asks (see `add_threads_option`)."""
    if requested is None:
        requested = DEFAULT_CPU_THREADS if device.type == "cpu" else 0
    if requested < 0:
        raise SystemExit(f"error: --threads must be 0 (torch's own) or more, got {requested}")
    if requested > 0:
        torch.set_num_threads(requested)


def resolve_device(spec: str) -> torch.device:
    """`auto` = the GPU when there is one; an unavailable GPU ends the script with one line."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {spec} was requested but no CUDA GPU is visible")
    return device
