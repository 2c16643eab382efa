"""Independent random streams derived from one run seed (noise, split, batches, augmentation,
initialisation, probes).

Each consumer mixes the run seed with its own fixed stream id through numpy's SeedSequence, so
the streams are statistically independent of each other and of a model initialised with
`torch.manual_seed(seed)`, and adding a consumer never shifts another's stream.
"""

from __future__ import annotations

import numpy as np

from reset_tune.errors import ConfigError

# Fixed stream ids: changing one changes every run's data for that purpose.
NOISE_STREAM = 1
SPLIT_STREAM = 2
BATCH_STREAM = 3
AUGMENT_STREAM = 4
INIT_STREAM = 5
MEMORISATION_STREAM = 6


def check_seed(seed: int) -> int:
    """Returns `seed` as an int, or raises `ConfigError` unless it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, but got seed={seed!r}")
    return int(seed)


def numpy_generator(seed: int, stream: int) -> np.random.Generator:
    """A numpy Generator for `stream` of run `seed`."""
    return np.random.default_rng(np.random.SeedSequence([check_seed(seed), stream]))


def torch_seed(seed: int, stream: int) -> int:
    """A 63-bit integer to `manual_seed` a torch.Generator for `stream` of run `seed`."""
    state = np.random.SeedSequence([check_seed(seed), stream]).generate_state(1, np.uint64)[0]
    return int(state) >> 1
