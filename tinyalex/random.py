"""The global random state: parameter init draws from one NumPy Generator, and each
dropout call draws a 64-bit seed from it, so `tinyalex.manual_seed` makes a whole run
repeatable on every kernel set.

Data-parallel training (tinyalex.train.parallel.distributed) splits each batch into row slices, one per
rank. Every rank draws the same seeds (same generator, same calls), and
:func:`batch_rows` tells dropout which rows of the whole batch the local tensor holds, so
element i of a rank's tensor gets the mask of element (row offset * row size + i) of the
one-process batch: the same masks for any number of ranks.

Counter-based streams: a random value that is a pure function of (seed, index) is the same
on every kernel set, thread, rank and worker process. :func:`counter_uniform` gives
dropout's masks (every kernel set computes the same function), :class:`SampleRNG` the
data augmentation's per-sample draws. Both are splitmix64 of seed + (index + 1) * golden.
"""
import contextlib

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed tinyalex's global generator (like torch.manual_seed)."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))


def generator():
    return _generator


def next_seed():
    """A fresh 63-bit seed for a counter-based kernel RNG (dropout)."""
    return int(_generator.integers(0, 2**63 - 1))


def get_rng_state():
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state


_row_offset = 0


def batch_row_offset():
    """The row of the whole batch that the local batch's row 0 is (0 outside batch_rows)."""
    return _row_offset


@contextlib.contextmanager
def batch_rows(first_row):
    """Inside the block, the tensors that carry a batch hold its rows from `first_row` on
    (a data-parallel rank's slice), so per-element randomness is keyed by the global row."""
    global _row_offset
    if isinstance(first_row, bool) or not isinstance(first_row, (int, np.integer)) or first_row < 0:
        raise ValueError(f"first_row: expected an int >= 0, got {first_row!r}")
    previous, _row_offset = _row_offset, int(first_row)
    try:
        yield
    finally:
        _row_offset = previous


# --- counter-based streams --------------------------------------------------------------
SPLITMIX_GOLDEN = 0x9E3779B97F4A7C15
SPLITMIX_MUL1 = 0xBF58476D1CE4E5B9
SPLITMIX_MUL2 = 0x94D049BB133111EB


def splitmix64(z, xp=np):
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic), NumPy or CuPy."""
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(SPLITMIX_MUL1)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(SPLITMIX_MUL2)
    return z ^ (z >> xp.uint64(31))


def counter_uniform(seed, count, xp=None, offset=0):
    """uniform(seed, i) for i in range(offset, offset + count), as float64 in [0, 1), 24 bits
    of resolution: the top 24 bits of splitmix64(seed + (i + 1) * golden). Dropout's mask
    on every kernel set."""
    xp = xp or np
    index = xp.arange(count, dtype=xp.uint64) + xp.uint64(offset)
    z = splitmix64(xp.uint64(seed) + (index + xp.uint64(1)) * xp.uint64(SPLITMIX_GOLDEN), xp)
    return (z >> xp.uint64(40)).astype(xp.float64) * (1.0 / (1 << 24))


class SampleRNG:
    """Random numbers drawn per sample, keyed by the sample's global position.

    The k-th draw (k counts this object's calls) for the sample at position g of the epoch
    is splitmix64 of key(seed, epoch, k) + (g * m + j + 1) * golden, j < m values per
    sample: a pure function of (seed, epoch, k, g). Two loaders that hand the same sample
    to different batches, ranks or worker processes therefore augment it identically, as
    long as they apply the same transforms in the same order.

    It offers the three calls of ``np.random.Generator`` that the transforms use, with
    ``size`` whose first dimension is the number of samples: ``integers``, ``random`` and
    ``normal``. Values are 53-bit uniforms (``integers`` takes the 64-bit value modulo the
    range: a bias below 2**-50 for ranges under 2**14).
    """

    def __init__(self, seed, epoch, positions):
        self.positions = np.asarray(positions, dtype=np.uint64).reshape(-1)
        self.key = [int(seed), int(epoch)]
        self.calls = 0

    def __len__(self):
        return len(self.positions)

    def _bits(self, size):
        """uint64 (n, m) for `size` = n or (n, ...), the next call's stream."""
        shape = (size,) if np.ndim(size) == 0 else tuple(size)
        if not shape or shape[0] != len(self.positions):
            raise ValueError(f"size: expected the number of samples ({len(self.positions)}) "
                             f"first, got {size!r}")
        per_sample = int(np.prod(shape[1:], dtype=np.int64))
        key = np.random.SeedSequence(self.key + [self.calls]).generate_state(1, np.uint64)[0]
        self.calls += 1
        index = self.positions[:, None] * np.uint64(per_sample) + np.arange(per_sample, dtype=np.uint64)
        return splitmix64(key + (index + np.uint64(1)) * np.uint64(SPLITMIX_GOLDEN)).reshape(shape)

    def random(self, size):
        """Uniform floats in [0, 1), per sample."""
        return (self._bits(size) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)

    def integers(self, low, high, size):
        """Integers in [low, high), per sample."""
        if high <= low:
            raise ValueError(f"high: expected more than low={low}, got {high}")
        return (low + (self._bits(size) % np.uint64(high - low))).astype(np.int64)

    def normal(self, loc, scale, size):
        """Normal values (Box-Muller from two uniforms each), per sample."""
        shape = (size,) if np.ndim(size) == 0 else tuple(size)
        u = self.random(shape + (2,))
        radius = np.sqrt(-2.0 * np.log1p(-u[..., 0]))                 # 1 - u > 0: finite
        return loc + scale * radius * np.cos(2.0 * np.pi * u[..., 1])
