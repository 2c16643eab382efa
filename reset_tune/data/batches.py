"""The training loop's data path: device-side batch sampling and augmentation, free of host syncs.

Both objects keep everything on the device (the data is already there as uint8, see
`DataSplits`): batch indices are slices of a device-side permutation and augmentation is a single
gather, so a step never waits on the host or a DataLoader. Each object owns a `torch.Generator`
on the device, seeded from the run seed's own stream, and checkpoints it with
`state_dict()` / `load_state_dict()` (which checks structure before changing anything).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from reset_tune.errors import ConfigError, DataError
from reset_tune.names import AUGMENTS
from reset_tune.seeding import AUGMENT_STREAM, BATCH_STREAM, torch_seed

_STATE_VERSION = 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _new_generator(seed: int, stream: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(torch_seed(seed, stream))
    return generator


def _check_state_keys(state: object, expected: set[str], owner: str) -> dict:
    if not isinstance(state, dict):
        raise DataError(f"{owner} state must be a dict, but got {type(state).__name__}")
    missing, extra = expected - state.keys(), state.keys() - expected
    if missing or extra:
        problems = [f"missing keys {sorted(missing)}"] if missing else []
        problems += [f"unexpected keys {sorted(map(str, extra))}"] if extra else []
        raise DataError(
            f"{owner} state has {' and '.join(problems)}; was it saved by another version "
            "or another object?"
        )
    if state["version"] != _STATE_VERSION:
        raise DataError(
            f"{owner} state has version {state['version']!r}, this code reads {_STATE_VERSION}"
        )
    if not isinstance(state["generator"], torch.Tensor) or state["generator"].dtype != torch.uint8:
        raise DataError(f"{owner} state: 'generator' must be a uint8 tensor (Generator.get_state)")
    return state


def _set_generator_state(generator: torch.Generator, state: torch.Tensor, owner: str) -> None:
    try:
        generator.set_state(state.clone())
    except RuntimeError as exc:  # e.g. a CPU generator's state offered to a CUDA generator
        raise DataError(
            f"{owner} state: the saved generator state does not fit this {generator.device} "
            f"generator ({exc}); resume on the same kind of device"
        ) from None


class BatchSampler:
    """Draws minibatch indices from device-side permutations.

    One permutation per epoch, cut into consecutive slices of `batch_size`; the last partial
    slice is dropped and a new permutation is drawn when one is used up.
    """

    def __init__(
        self, num_samples: int, batch_size: int, *, seed: int, device: torch.device | str
    ) -> None:
        if not _is_int(num_samples) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, but got {num_samples!r}")
        if not _is_int(batch_size) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, but got {batch_size!r}")
        if batch_size > num_samples:
            raise ConfigError(
                f"batch_size={batch_size} exceeds the training-set size of {num_samples} "
                f"samples; use a batch_size of at most {num_samples} (or more training data)"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._generator = _new_generator(seed, BATCH_STREAM, self.device)
        self._permutation = self._new_permutation()
        self._position = 0  # index into the current permutation of the next batch's first sample
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """0-based epoch of the most recently drawn batch (0 before the first draw).

        It becomes e+1 at the first batch drawn from a new permutation, so after exactly k full
        epochs of batches it still reads k-1.
        """
        return self._epoch

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def _new_permutation(self) -> torch.Tensor:
        return torch.randperm(
            self.num_samples, generator=self._generator, device=self.device, dtype=torch.int64
        )

    def next_indices(self) -> torch.Tensor:
        """The next batch's sample indices: int64 (batch_size,) on the device."""
        if self._position + self.batch_size > self.num_samples:
            self._permutation = self._new_permutation()
            self._position = 0
            self._epoch += 1
        start = self._position
        self._position += self.batch_size
        return self._permutation[start : self._position]

    def state_dict(self) -> dict:
        """Generator state, current permutation (on the CPU), position and epoch."""
        return {
            "version": _STATE_VERSION,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "generator": self._generator.get_state(),
            "permutation": self._permutation.detach().to("cpu", copy=True),
            "position": self._position,
            "epoch": self._epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores a `state_dict()`; checks every entry before changing anything."""
        keys = {"version", "num_samples", "batch_size", "generator", "permutation"}
        state = _check_state_keys(state, keys | {"position", "epoch"}, "BatchSampler")
        for key, current in (("num_samples", self.num_samples), ("batch_size", self.batch_size)):
            if state[key] != current:
                raise ConfigError(
                    f"BatchSampler state was saved with {key}={state[key]!r}, but this sampler "
                    f"has {key}={current}; resume with the same data and batch size"
                )
        permutation = state["permutation"]
        if (
            not isinstance(permutation, torch.Tensor)
            or permutation.dtype != torch.int64
            or permutation.shape != (self.num_samples,)
        ):
            raise DataError(
                f"BatchSampler state: 'permutation' must be an int64 tensor of shape "
                f"({self.num_samples},)"
            )
        arange = torch.arange(self.num_samples, dtype=torch.int64)
        if not torch.equal(torch.sort(permutation.cpu()).values, arange):
            raise DataError("BatchSampler state: 'permutation' is not a permutation of the samples")
        position, epoch = state["position"], state["epoch"]
        if not _is_int(position) or not 0 <= position <= self.num_samples:
            raise DataError(f"BatchSampler state: position {position!r} is out of range")
        if not _is_int(epoch) or epoch < 0:
            raise DataError(f"BatchSampler state: epoch {epoch!r} is not a non-negative integer")
        _set_generator_state(self._generator, state["generator"], "BatchSampler")
        self._permutation = permutation.to(self.device, copy=True)
        self._position = position
        self._epoch = epoch


class DeviceAugmenter:
    """uint8 batch -> normalised float batch, augmented on the device.

    `memory_format=torch.channels_last` makes every batch it returns channels_last (NHWC in
    memory, the same values): the engine asks for it on CUDA for conv models. The default,
    `contiguous_format`, returns batches exactly as computed (NCHW).
    """

    def __init__(
        self,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: str,
        seed: int,
        device: torch.device | str,
        pad: int = 4,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        if augment not in AUGMENTS:
            raise ConfigError(
                f"augment must be one of {', '.join(AUGMENTS)}, but got augment={augment!r}"
            )
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) == 0 or len(mean) != len(std):
            raise ConfigError(
                f"mean and std need one value per channel, but got {len(mean)} means "
                f"and {len(std)} stds"
            )
        if min(std) <= 0:
            raise ConfigError(f"std values must be positive, but got std={std}")
        if not _is_int(pad) or pad < 0:
            raise ConfigError(f"pad must be a non-negative integer, but got pad={pad!r}")
        if memory_format not in (torch.contiguous_format, torch.channels_last):
            raise ConfigError(
                "memory_format must be torch.contiguous_format or torch.channels_last, but got "
                f"memory_format={memory_format!r}"
            )
        self.augment = augment
        self.pad = pad
        self.memory_format = memory_format
        self.mean, self.std = mean, std
        self.device = torch.device(device)
        self._generator = _new_generator(seed, AUGMENT_STREAM, self.device)
        # x/255 normalised in one fused multiply-add: (x/255 - mean)/std = x*scale + shift.
        std_t = torch.tensor(std, dtype=torch.float64)
        mean_t = torch.tensor(mean, dtype=torch.float64)
        shape = (1, len(mean), 1, 1)
        self._scale = (1.0 / (255.0 * std_t)).to(torch.float32).view(shape).to(self.device)
        self._shift = (-mean_t / std_t).to(torch.float32).view(shape).to(self.device)

    def _check_batch(self, x: torch.Tensor) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != len(self.mean):
            raise ValueError(
                f"expected a uint8 batch of shape (N, {len(self.mean)}, H, W), "
                f"got {x.dtype} of shape {tuple(x.shape)}"
            )

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format == torch.channels_last:
            # Reorder the uint8 batch (a quarter of the float bytes); the elementwise ops below
            # keep its layout, so the float batch comes out channels_last with no further copy.
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self._shift, x.float(), self._scale)

    def _crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        # out[b, c, i, j] = padded[b, c, dy_b + i, dx_b + (W-1-j if flip_b else j)], with
        # dy, dx uniform in 0..2*pad and flip a fair coin, drawn in that order. One gather over
        # each flattened padded plane for the whole batch: no Python loop over samples, no
        # boolean masks (they would sync with the host). Measured 1.6x faster on the CPU than
        # the equivalent 4-tensor advanced indexing.
        num, channels, height, width = x.shape
        pad, gen, dev = self.pad, self._generator, x.device
        dy = torch.randint(0, 2 * pad + 1, (num,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * pad + 1, (num,), generator=gen, device=dev)
        flip = torch.randint(0, 2, (num,), generator=gen, device=dev).bool()
        padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
        cols = torch.arange(width, device=dev)
        cols = torch.where(flip[:, None], cols.flip(0)[None, :], cols[None, :]) + dx[:, None]
        rows = torch.arange(height, device=dev)[None, :] + dy[:, None]
        flat = rows[:, :, None] * (width + 2 * pad) + cols[:, None, :]  # (N, H, W)
        flat = flat.view(num, 1, height * width).expand(num, channels, height * width)
        planes = padded.reshape(num, channels, -1)
        return torch.gather(planes, 2, flat).view(num, channels, height, width)

    def train_batch(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Random crop (zero padding `pad`) and horizontal flip if "crop-flip", then normalise."""
        self._check_batch(x_uint8)
        if self.augment == "crop-flip":
            x_uint8 = self._crop_flip(x_uint8)
        return self._normalise(x_uint8)

    def eval_batch(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Normalise only: (x/255 - mean) / std per channel, float32."""
        self._check_batch(x_uint8)
        return self._normalise(x_uint8)

    def state_dict(self) -> dict:
        return {
            "version": _STATE_VERSION,
            "augment": self.augment,
            "pad": self.pad,
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores a `state_dict()`; checks every entry before changing anything."""
        state = _check_state_keys(
            state, {"version", "augment", "pad", "generator"}, "DeviceAugmenter"
        )
        for key, current in (("augment", self.augment), ("pad", self.pad)):
            if state[key] != current:
                raise ConfigError(
                    f"DeviceAugmenter state was saved with {key}={state[key]!r}, but this "
                    f"augmenter has {key}={current!r}; resume with the same augmentation"
                )
        _set_generator_state(self._generator, state["generator"], "DeviceAugmenter")
