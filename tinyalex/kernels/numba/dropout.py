"""Inverted dropout on the CPU: the counter RNG and the mask fused in one Numba kernel.

Semantics in tinyalex.kernels.numpy.dropout. The mask is keep_i = uniform(seed, i) >= p with
uniform from tinyalex.kernels.counter_uniform, re-implemented here in uint64 arithmetic
(splitmix64 of seed + (i+1) * golden, top 24 bits), so this set draws bit for bit the
same mask as every other set. Because uniform(seed, i) is a pure function of i, the flat
parallel loop over elements needs no RNG state: iteration i writes only element i (race-free,
and the mask does not depend on the thread count).
"""
import numpy as np
from numba import njit

from tinyalex.random import SPLITMIX_GOLDEN, SPLITMIX_MUL1, SPLITMIX_MUL2
from tinyalex.shapes import same_shape
from tinyalex.kernels.numba import buffers
from tinyalex.kernels.numba._checks import float_array
from tinyalex.kernels.numba.parallel_kernel import parallel_kernel, part_range

_GOLDEN = np.uint64(SPLITMIX_GOLDEN)
_MUL1 = np.uint64(SPLITMIX_MUL1)
_MUL2 = np.uint64(SPLITMIX_MUL2)
_UNIT = 1.0 / (1 << 24)


@njit(cache=True)
def _uniform(seed, i):
    """counter_uniform(seed, ...)[i]: splitmix64, every operand uint64 so products wrap mod 2**64."""
    z = seed + (np.uint64(i) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(40)) * _UNIT


@parallel_kernel("{f}[::1], float64, uint64, uint64, {f}, {f}[::1], boolean[::1]")
def _dropout_forward(x, p, seed, offset, scale, y, keep, part, parts, done):
    """keep_i = uniform(seed, offset + i) >= p; y_i = x_i * scale if kept else 0 (flat arrays)."""
    zero = x.dtype.type(0)                                         # a literal 0 would be an int64
    first, last = part_range(x.size, part, parts)
    x_part, y_part, keep_part = x[first:last], y[first:last], keep[first:last]
    for i in range(x_part.size):                                   # indices from 0: no wraparound test
        kept = _uniform(seed, offset + np.uint64(first + i)) >= p
        keep_part[i] = kept
        y_part[i] = x_part[i] * scale if kept else zero


@parallel_kernel("{f}[::1], boolean[::1], {f}, {f}[::1]")
def _dropout_backward(gy, keep, scale, gx, part, parts, done):
    """gx_i = gy_i * scale if kept else 0 (flat arrays)."""
    zero = gy.dtype.type(0)
    first, last = part_range(gy.size, part, parts)
    gy_part, keep_part, gx_part = gy[first:last], keep[first:last], gx[first:last]
    for i in range(gy_part.size):
        gx_part[i] = gy_part[i] * scale if keep_part[i] else zero


def dropout_forward(x, p, seed, offset=0):
    """y = x * keep / (1 - p), keep from the shared counter RNG; x (any) -> y, same dtype.

    offset: the flat index of x's first element in the whole batch (see the reference).

    p == 1 keeps nothing and gives zeros (scale 0, not inf). Saved for backward: the mask
    (one byte per element) and the scale.
    """
    x = float_array(x, "x")
    if not 0 <= p <= 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    if not isinstance(offset, (int, np.integer)) or not 0 <= offset < 2**63:
        raise ValueError(f"offset: expected an int in [0, 2**63), got {offset!r}")
    scale = 1.0 / (1.0 - p) if p < 1 else 0.0
    y = buffers.empty_like(x)
    keep = buffers.empty(x.shape, np.bool_)
    # The scale is cast to x's dtype so float32 data is multiplied in float32, like the reference.
    _dropout_forward(x.reshape(-1), float(p), np.uint64(seed), np.uint64(offset), x.dtype.type(scale),
                     y.reshape(-1), keep.reshape(-1))
    return y, (keep, scale)


def dropout_backward(gy, cache):
    """gx = gy * keep * scale, the forward's mask; gy (any) -> gx, same dtype."""
    keep, scale = cache
    gy = float_array(gy, "gy")
    same_shape(gy, "gy", keep.shape, "the shape of x")
    gx = buffers.empty_like(gy)
    _dropout_backward(gy.reshape(-1), keep.reshape(-1), gy.dtype.type(scale), gx.reshape(-1))
    return gx
