"""The baseline of the speed benchmarks: the method's reference implementation's loop style.

What this re-creates. docs/method.md §9 ("The reference implementation's loop") describes how the
method's reference implementation trains, per step:

* it builds a **new iterator** over a shuffled ``torch.utils.data.DataLoader`` (no workers) of a
  Dataset returning **PIL images transformed by torchvision transforms**, to draw ONE batch;
* it runs with **autograd anomaly detection** on;
* it calls ``gc.collect()`` and empties the CUDA cache;
* it computes the **full weight norm with a host sync** (``.item()``);
* it **validates on the whole validation set every 10 steps** and **tests on every new best**;
* a reset (docs/method.md §9) is ``load_state_dict`` of deep-copied model and optimizer state,
  after a Bernoulli(r) draw.

This file was written here from that description (not copied from the reference code). It is the
*baseline* the engine is compared against in ``engine_speed.py``, so it must be honest in both
directions: it does everything the description says, and nothing slower or faster. Where the
description is silent, the choice is the plain one a PyTorch user would write, and is the same
as the engine's: the same model (``reset_tune.models.build_model``), optimizer, schedule, loss,
batch size, evaluation cadence (``config.eval_every``) and evaluation batch size
(``config.eval_batch_size``), on the same splits (copied to the host as uint8 arrays, the way
torchvision's CIFAR-10 dataset holds them). Training loss is summed on the device, as the
engine does; the best model is chosen by validation accuracy and triggers the test pass.

Each step is one small method (``_next_batch``, ``_forward_backward``, ``_free_memory``,
``_weight_norm``, ``_maybe_reset``, ``_validate``, ``_test``) so that a profile of the loop
reads as a breakdown by phase. On a GPU the forward/backward work is asynchronous: its time lands
in the first host sync after it (``_weight_norm``'s ``.item()``).

Randomness follows the reference style: the DataLoader's shuffling and torchvision's random
transforms draw from torch's global RNG, seeded from ``config.seed`` at construction; reset draws
come from their own numpy generator.
"""

from __future__ import annotations

import argparse
import copy
import gc
import time
import warnings
from dataclasses import dataclass, field

import benchlib  # noqa: F401  (makes the repository root importable when run as a script)
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from reset_tune import names
from reset_tune.config import TrainConfig
from reset_tune.data import DataSplits
from reset_tune.engine.optim import build_optimizer, build_scheduler
from reset_tune.engine.runtime import configure_kernels, resolve_device
from reset_tune.losses import build_loss
from reset_tune.models import build_model

CIFAR_PADDING = 4  # pixels of zero padding before RandomCrop, as in the usual CIFAR recipe


class PILImageDataset(Dataset):
    """uint8 images held like torchvision's CIFAR10/MNIST; each item is a PIL image, transformed.

    `images` is (N, C, H, W) uint8; it is stored channels-last (N, H, W, C), or (N, H, W) for one
    channel, and every access builds a ``PIL.Image`` (mode RGB or L) and applies `transform`.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected images (N, C, H, W) and labels (N,), got {images.shape} and "
                f"{labels.shape}"
            )
        channels_last = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        self.images = channels_last[..., 0] if images.shape[1] == 1 else channels_last
        self.labels = [int(label) for label in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        return self.transform(image), self.labels[index]


def reference_transforms(splits: DataSplits) -> tuple[transforms.Compose, transforms.Compose]:
    """(train, eval) torchvision pipelines: crop+flip+ToTensor+Normalize for CIFAR-like data,
    ToTensor+Normalize for grayscale digits-like data (no augmentation)."""
    normalize = transforms.Normalize(splits.mean, splits.std)
    if splits.augment == "crop-flip":
        train = transforms.Compose(
            [
                transforms.RandomCrop(splits.image_size, padding=CIFAR_PADDING),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
    else:
        train = transforms.Compose([transforms.ToTensor(), normalize])
    return train, transforms.Compose([transforms.ToTensor(), normalize])


@dataclass
class ReferenceCounters:
    """What the loop did, for reports: steps, passes over each split, resets."""

    steps: int = 0
    validations: int = 0
    test_passes: int = 0
    resets: int = 0
    reset_steps: list[int] = field(default_factory=list)


class ReferenceLoop:
    """The reference loop style, on `splits`, for the settings in `config` (see module doc)."""

    def __init__(self, config: TrainConfig, splits: DataSplits) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        configure_kernels(deterministic=config.deterministic, device=self.device)
        torch.manual_seed(config.seed)  # global RNG: shuffling and torchvision transforms

        def host(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().cpu().numpy()

        train_tf, eval_tf = reference_transforms(splits)
        train_set = PILImageDataset(host(splits.train_x), host(splits.train_y), train_tf)
        val_set = PILImageDataset(host(splits.val_x), host(splits.val_y), eval_tf)
        test_set = PILImageDataset(host(splits.test_x), host(splits.test_y), eval_tf)
        self.train_loader = DataLoader(
            train_set, batch_size=config.batch_size, shuffle=True, num_workers=0
        )
        self.val_loader = DataLoader(
            val_set, batch_size=config.eval_batch_size, shuffle=False, num_workers=0
        )
        self.test_loader = DataLoader(
            test_set, batch_size=config.eval_batch_size, shuffle=False, num_workers=0
        )

        self.model = build_model(
            config.model,
            in_channels=splits.in_channels,
            num_classes=splits.num_classes,
            image_size=splits.image_size,
        ).to(self.device)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.loss_fn = build_loss(
            config.loss,
            num_classes=splits.num_classes,
            gce_q=config.gce_q,
            sce_alpha=config.sce_alpha,
            sce_beta=config.sce_beta,
        )
        self.reset_rng = np.random.default_rng(config.resolved_reset_seed)

        self.counters = ReferenceCounters()
        self.history: list[dict[str, float]] = []
        self.weight_norm = float("nan")
        self.best_val_acc = -1.0
        self.best_step: int | None = None
        self.best_test_acc = float("nan")
        self.armed = False
        self._best_state: tuple[dict, dict] | None = None  # deep copies: (model, optimizer)
        self._checkpoint: tuple[dict, dict] | None = None  # θc: what a reset loads
        self._train_loss_sum = torch.zeros((), device=self.device)
        self._steps_since_eval = 0
        self.model.train()

    # -- the loop ---------------------------------------------------------------------------------
    def train_steps(self, count: int) -> None:
        """Run `count` more steps (with the validations and tests that fall among them)."""
        with torch.autograd.set_detect_anomaly(True):
            for _ in range(count):
                self._step()

    def _step(self) -> None:
        images, labels = self._next_batch()
        self._forward_backward(images, labels)
        self._free_memory()
        self._weight_norm()
        self._maybe_reset()
        self.counters.steps += 1
        if self.counters.steps % self.config.eval_every == 0:
            self._validate()

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # A fresh iterator every step: a new shuffled permutation, one batch of PIL transforms.
        images, labels = next(iter(self.train_loader))
        return images.to(self.device), labels.to(self.device)

    def _forward_backward(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        logits = self.model(images)
        loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self._train_loss_sum += loss.detach()
        self._steps_since_eval += 1

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _weight_norm(self) -> None:
        with torch.no_grad():
            squares = sum(p.detach().pow(2).sum() for p in self.model.parameters())
            self.weight_norm = float(torch.sqrt(squares).item())  # the per-step host sync

    def _maybe_reset(self) -> None:
        if not self.armed or self.config.reset_prob <= 0.0:
            return
        if self.reset_rng.random() < self.config.reset_prob:
            assert self._checkpoint is not None  # armed implies a checkpoint exists
            model_state, optimizer_state = self._checkpoint
            self.model.load_state_dict(model_state)
            # Optimizer.load_state_dict keeps the given tensors (no copy): copy again, or the
            # checkpoint's momentum would be updated in place by later steps.
            self.optimizer.load_state_dict(copy.deepcopy(optimizer_state))
            self.counters.resets += 1
            self.counters.reset_steps.append(self.counters.steps)

    @torch.no_grad()
    def _evaluate(self, loader: DataLoader) -> tuple[float, float]:
        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in loader:
            images, labels = images.to(self.device), labels.to(self.device)
            logits = self.model(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == labels).sum().item())
            seen += labels.shape[0]
        self.model.train()
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    def _validate(self) -> None:
        config, step = self.config, self.counters.steps
        val_loss, val_acc = self._evaluate(self.val_loader)
        self.counters.validations += 1
        train_loss = float(self._train_loss_sum.item()) / max(self._steps_since_eval, 1)
        self._train_loss_sum.zero_()
        self._steps_since_eval = 0
        if val_acc > self.best_val_acc:
            self.best_val_acc, self.best_step = val_acc, step
            self._best_state = (
                copy.deepcopy(self.model.state_dict()),
                copy.deepcopy(self.optimizer.state_dict()),
            )
            if self.armed and config.adaptive:
                self._checkpoint = self._best_state
            self._test()
        if (
            not self.armed
            and self.best_step is not None
            and step >= config.warmup
            and step - self.best_step >= config.patience
        ):
            self.armed = True
            self._checkpoint = self._best_state
        self.history.append(
            {
                names.STEP: float(step),
                names.TRAIN_LOSS: train_loss,
                names.VAL_LOSS: val_loss,
                names.VAL_ACC: val_acc,
                "weight_norm": self.weight_norm,
                names.RESET_COUNT: float(self.counters.resets),
            }
        )

    def _test(self) -> None:
        _, self.best_test_acc = self._evaluate(self.test_loader)
        self.counters.test_passes += 1


def main(argv: list[str] | None = None) -> int:
    """Run the reference loop alone and print its steps/s (engine_speed.py compares)."""
    parser = argparse.ArgumentParser(
        prog="reference_loop.py",
        description="Run the reference loop style alone (see the module docstring) and print "
        "its steps/s; benchmarks/engine_speed.py times it side by side with the engine.",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--dataset", default="synthetic-cifar", choices=benchlib.DATASETS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--reset-prob", type=float, default=0.0)
    parser.add_argument("--patience", type=int, default=0, help="steps without a new best")
    benchlib.add_threads_option(parser)
    args = parser.parse_args(argv)
    device = benchlib.resolve_device(args.device)
    benchlib.apply_threads(args.threads, device)
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
    sizes = benchlib.SyntheticSizes(train=5000, val=250, test=250)
    splits, keys = benchlib.load_splits(
        args.dataset, noise="none", seed=0, device=device, sizes=sizes
    )
    config = TrainConfig(
        **keys,
        model=args.model,
        batch_size=args.batch_size,
        steps=args.warmup + args.steps,
        eval_every=args.eval_every,
        reset_prob=args.reset_prob,
        patience=args.patience,
        device=str(device),
    )
    loop = ReferenceLoop(config, splits)
    loop.train_steps(args.warmup)
    benchlib.synchronize(device)
    started = time.perf_counter()
    loop.train_steps(args.steps)
    benchlib.synchronize(device)
    seconds = time.perf_counter() - started
    c = loop.counters
    print(
        f"reference loop, {args.model} batch {args.batch_size} on {device}: "
        f"{args.steps / seconds:.2f} steps/s over {args.steps} steps after {args.warmup}; "
        f"{c.validations} validations, {c.test_passes} test passes, {c.resets} resets; "
        f"best val acc {loop.best_val_acc:.3f}, weight norm {loop.weight_norm:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
