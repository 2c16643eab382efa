"""Device batch sampling and augmentation: coverage, determinism, exact resumption, correctness."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from reset_tune.data import BatchSampler, DeviceAugmenter
from reset_tune.errors import ConfigError, DataError
from reset_tune.seeding import AUGMENT_STREAM, torch_seed


def draw(sampler: BatchSampler, count: int) -> list[list[int]]:
    return [sampler.next_indices().tolist() for _ in range(count)]


# ----------------------------------------------------------------------------- BatchSampler


def test_every_index_once_per_epoch():
    sampler = BatchSampler(100, 10, seed=0, device="cpu")
    assert sampler.epoch == 0
    for epoch in range(3):
        batches = draw(sampler, 10)
        assert sampler.epoch == epoch  # the epoch the last batch came from
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(100))
    batch = sampler.next_indices()
    assert batch.dtype == torch.int64 and batch.shape == (10,) and sampler.epoch == 3


def test_partial_batch_dropped_and_new_permutation_drawn():
    sampler = BatchSampler(23, 5, seed=1, device="cpu")
    first_epoch = draw(sampler, 4)  # 20 of 23: the last 3 are dropped
    flat = [i for batch in first_epoch for i in batch]
    assert len(set(flat)) == 20 and sampler.epoch == 0
    second_epoch = draw(sampler, 4)
    assert sampler.epoch == 1 and len({i for b in second_epoch for i in b}) == 20
    assert first_epoch != second_epoch
    assert sampler.steps_per_epoch == 4


def test_sampler_determinism():
    a = draw(BatchSampler(50, 8, seed=5, device="cpu"), 20)
    b = draw(BatchSampler(50, 8, seed=5, device="cpu"), 20)
    c = draw(BatchSampler(50, 8, seed=6, device="cpu"), 20)
    assert a == b and a != c


@pytest.mark.parametrize(("before", "after"), [(0, 7), (3, 7), (5, 12)])
def test_sampler_state_round_trip(before, after):
    sampler = BatchSampler(30, 6, seed=2, device="cpu")  # 5 batches per epoch
    draw(sampler, before)
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)  # as a checkpoint would store it
    expected = draw(sampler, after)
    expected_epoch = sampler.epoch
    restored = BatchSampler(30, 6, seed=99, device="cpu")
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert draw(restored, after) == expected and restored.epoch == expected_epoch


def test_sampler_load_checks_before_changing_anything():
    sampler = BatchSampler(30, 6, seed=2, device="cpu")
    reference = BatchSampler(30, 6, seed=2, device="cpu")
    good = BatchSampler(30, 6, seed=7, device="cpu").state_dict()
    broken = dict(good, position=31)
    with pytest.raises(DataError, match="position 31"):
        sampler.load_state_dict(broken)
    not_perm = dict(good, permutation=torch.zeros(30, dtype=torch.int64))
    with pytest.raises(DataError, match="not a permutation"):
        sampler.load_state_dict(not_perm)
    with pytest.raises(DataError, match="missing keys \\['epoch'\\]"):
        sampler.load_state_dict({k: v for k, v in good.items() if k != "epoch"})
    with pytest.raises(ConfigError, match="batch_size=6.*batch_size=5"):
        BatchSampler(30, 5, seed=2, device="cpu").load_state_dict(good)
    assert draw(sampler, 8) == draw(reference, 8)  # failed loads changed nothing


def test_sampler_argument_errors():
    with pytest.raises(ConfigError, match="batch_size=64.*40"):
        BatchSampler(40, 64, seed=0, device="cpu")
    with pytest.raises(ConfigError, match="batch_size"):
        BatchSampler(40, 0, seed=0, device="cpu")
    with pytest.raises(ConfigError, match="seed=-3"):
        BatchSampler(40, 4, seed=-3, device="cpu")


# ----------------------------------------------------------------------------- DeviceAugmenter

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def random_batch(num=16, channels=3, size=8, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, 256, (num, channels, size, size), generator=generator, dtype=torch.uint8
    )


def normalise_reference(x_uint8: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    x = x_uint8.astype(np.float64) / 255.0
    return (x - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]


def crop_flip_reference(image: np.ndarray, dy: int, dx: int, flip: bool, pad: int) -> np.ndarray:
    """One sample, written the obvious way: zero-pad, crop at (dy, dx), mirror left-right."""
    channels, height, width = image.shape
    padded = np.zeros((channels, height + 2 * pad, width + 2 * pad), dtype=image.dtype)
    padded[:, pad : pad + height, pad : pad + width] = image
    crop = padded[:, dy : dy + height, dx : dx + width]
    return crop[:, :, ::-1] if flip else crop


def augmenter(augment="crop-flip", seed=0, pad=4, mean=MEAN, std=STD) -> DeviceAugmenter:
    return DeviceAugmenter(mean=mean, std=std, augment=augment, seed=seed, device="cpu", pad=pad)


def test_eval_batch_normalises():
    x = random_batch()
    out = augmenter().eval_batch(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), normalise_reference(x.numpy()), atol=1e-5)


def test_none_augment_only_normalises():
    x = random_batch()
    aug = augmenter("none")
    assert torch.equal(aug.train_batch(x), aug.eval_batch(x))


def test_crop_flip_matches_per_sample_reference_with_documented_draws():
    pad, x = 4, random_batch(num=12)
    out = augmenter(seed=11, pad=pad).train_batch(x)
    # The documented draw order: dy, dx (each uniform in 0..2*pad), then the flip coin.
    generator = torch.Generator().manual_seed(torch_seed(11, AUGMENT_STREAM))
    dy = torch.randint(0, 2 * pad + 1, (12,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (12,), generator=generator)
    flip = torch.randint(0, 2, (12,), generator=generator).bool()
    expected = np.stack(
        [
            crop_flip_reference(x[k].numpy(), int(dy[k]), int(dx[k]), bool(flip[k]), pad)
            for k in range(12)
        ]
    )
    np.testing.assert_allclose(out.numpy(), normalise_reference(expected), atol=1e-5)


def test_crop_flip_outputs_are_shifted_or_flipped_copies_covering_all_offsets():
    pad, num = 1, 600
    x = random_batch(num=num, channels=1, size=5, seed=3)
    out = augmenter(pad=pad, mean=(0.5,), std=(0.25,)).train_batch(x).numpy()
    seen = set()
    for k in range(num):
        matches = [
            (dy, dx, flip)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for flip in (False, True)
            if np.allclose(
                out[k],
                normalise_reference(
                    crop_flip_reference(x[k].numpy(), dy, dx, flip, pad)[None], (0.5,), (0.25,)
                )[0],
                atol=1e-5,
            )
        ]
        assert len(matches) == 1, k
        seen.add(matches[0])
    assert len(seen) == (2 * pad + 1) ** 2 * 2  # every offset, flipped and not


def test_zero_pad_only_flips():
    x = random_batch(num=64)
    out = augmenter(pad=0).train_batch(x).numpy()
    plain, mirrored = normalise_reference(x.numpy()), normalise_reference(x.flip(-1).numpy())
    is_plain = np.isclose(out, plain, atol=1e-5).all(axis=(1, 2, 3))
    is_mirrored = np.isclose(out, mirrored, atol=1e-5).all(axis=(1, 2, 3))
    assert np.all(is_plain | is_mirrored) and is_plain.any() and is_mirrored.any()


def test_augmenter_determinism_and_state_round_trip():
    x = random_batch()
    first, second = augmenter(seed=4), augmenter(seed=4)
    assert torch.equal(first.train_batch(x), second.train_batch(x))
    assert not torch.equal(first.train_batch(x), augmenter(seed=5).train_batch(x))
    state = first.state_dict()
    expected = [first.train_batch(x) for _ in range(3)]
    restored = augmenter(seed=123)
    restored.load_state_dict(state)
    for batch in expected:
        assert torch.equal(restored.train_batch(x), batch)
    with pytest.raises(ConfigError, match="pad=4"):
        augmenter(pad=2).load_state_dict(state)
    with pytest.raises(DataError, match="missing keys"):
        restored.load_state_dict({"version": 1})


def test_augmenter_argument_errors():
    with pytest.raises(ConfigError, match="augment='auto'"):
        augmenter("auto")
    with pytest.raises(ConfigError, match="std"):
        augmenter(std=(0.2, 0.0, 0.3))
    with pytest.raises(ConfigError, match="3 means and 2 stds"):
        augmenter(std=(0.2, 0.3))
    with pytest.raises(ConfigError, match="pad=-1"):
        augmenter(pad=-1)
    with pytest.raises(ValueError, match="uint8"):
        augmenter().train_batch(random_batch().float())
    with pytest.raises(ValueError, match="\\(N, 3, H, W\\)"):
        augmenter().eval_batch(random_batch(channels=1))
