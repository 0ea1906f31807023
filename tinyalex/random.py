"""The global random state: parameter init draws from one NumPy Generator, and each
dropout call draws a 64-bit seed from it, so `tinyalex.manual_seed` makes a whole run
repeatable on every kernel set.

Data-parallel training (tinyalex.distributed) splits each batch into row slices, one per
rank. Every rank draws the same seeds (same generator, same calls), and
:func:`batch_rows` tells dropout which rows of the whole batch the local tensor holds, so
element i of a rank's tensor gets the mask of element (row offset * row size + i) of the
one-process batch: the same masks for any number of ranks.
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
