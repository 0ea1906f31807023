"""Inverted dropout on the GPU (kernels/dropout.cu); AlexNet paper section 4.2.

keep_i = uniform(seed, i) >= p with uniform = tinyalex.kernels.counter_uniform, computed
bit for bit in the kernel, so the mask equals the numpy and numba sets' for the same seed.
Because the mask is a pure function of (seed, i), it is never stored: the backward runs
the same kernel on gy with the same seed and redraws it.
"""
import numpy as np

from tinyalex.shapes import same_shape
from tinyalex.kernels.cupy._checks import check_dtype, float_array, i64
from tinyalex.kernels.cupy.loader import cupy, get_kernel, launch_1d


def _apply(a, seed, p, scale, offset):
    """out_i = a_i * keep_i * scale, keep_i = uniform(seed, offset + i) >= p."""
    out = cupy().empty_like(a)
    kernel = get_kernel("dropout.cu", "dropout", a.dtype)
    launch_1d(kernel, a.size, (a, out, i64(a.size), np.uint64(seed), i64(offset), np.float64(p),
                               a.dtype.type(scale)))
    return out


def dropout_forward(x, p, seed, offset=0):
    """y = x * keep * scale,  keep_i = uniform(seed, offset + i) >= p,  scale = 1/(1-p)

    offset: the flat index of x's first element in the whole batch (see the reference).

    For p == 1 nothing is kept and scale is 0, so y is all zeros (like PyTorch), not NaN.
    Shapes: x (any) -> y (same shape and dtype).
    Saved for backward: seed, p, scale and the shape (a few bytes instead of a mask).
    """
    # x (...) -> y (...)
    x = float_array(x, "x")
    if not 0 <= p <= 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
    if int(seed) != seed or not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    if int(offset) != offset or not 0 <= offset < 2**63:
        raise ValueError(f"offset: expected an int in [0, 2**63), got {offset!r}")
    scale = 1.0 / (1.0 - p) if p < 1 else 0.0
    y = _apply(x, int(seed), float(p), scale, int(offset))
    cache = (int(seed), float(p), scale, x.shape, x.dtype, int(offset))
    return y, cache


def dropout_backward(gy, cache):
    """gx = gy * keep * scale, with the mask redrawn from the forward's seed.

    Shapes: gy (any) -> gx (same shape and dtype).
    """
    # gy (...) -> gx (...)
    seed, p, scale, x_shape, x_dtype, offset = cache
    gy = float_array(gy, "gy")
    same_shape(gy, "gy", x_shape, "the shape of x")
    check_dtype(gy, "gy", x_dtype, "the dtype of x")
    return _apply(gy, seed, p, scale, offset)
