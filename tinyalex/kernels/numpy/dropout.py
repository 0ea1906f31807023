"""Inverted dropout (the reference; AlexNet paper section 4.2, p = 0.5 in the first two
fully connected layers).

"Inverted" means the survivors are scaled by 1/(1-p) during training, so the expected
output equals x and evaluation is the identity (the paper instead halves the outputs at
test time; the two are equivalent in expectation).

The mask comes from tinyalex.kernels.counter_uniform, a pure function of (seed, i), so
every kernel set draws exactly the same mask for the same seed.
"""
import numpy as np

from tinyalex.random import counter_uniform


def dropout_forward(x, p, seed, offset=0):
    """y = x * keep * scale,  keep_i = uniform(seed, offset + i) >= p,  scale = 1/(1-p)

    offset: the flat index of x's first element in the whole batch (0 in one process; a
    data-parallel rank passes its first row times the elements per row).

    For p == 1 nothing is kept and scale is 0, so y is all zeros (like PyTorch), not NaN.
    Shapes: x (any) -> y (same shape and dtype).
    Saved for backward: the boolean mask keep (one byte per element) and scale.
    """
    # x (...) -> y (...)
    keep = (counter_uniform(seed, x.size, offset=offset) >= p).reshape(x.shape)
    scale = 1.0 / (1.0 - p) if p < 1 else 0.0
    y = np.asarray(x * keep * scale)                               # a Python float keeps x's dtype;
                                                                   # asarray: a 0-d x stays an array
    cache = (keep, scale)
    return y, cache


def dropout_backward(gy, cache):
    """gx = gy * keep * scale: the same mask and scale as the forward.

    Shapes: gy (any) -> gx (same shape and dtype).
    """
    # gy (...) -> gx (...)
    keep, scale = cache
    return np.asarray(gy * keep * scale)
