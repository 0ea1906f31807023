"""The global random state: parameter init draws from one NumPy Generator, and each
dropout call draws a 64-bit seed from it, so `tinyalex.manual_seed` makes a whole run
repeatable on every kernel set."""
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
