"""Mean squared error on the CPU (semantics and derivation in tinyalex.kernels.numpy.mse_loss).

Both kernels are one flat parallel loop over the elements: iteration i writes only element i,
so they are race-free. The 'mean'/'sum' reduction is NumPy's pairwise sum of the squared
terms, which does not depend on the thread count.
"""
import numpy as np

from tinyalex.shapes import same_dtype, same_shape
from tinyalex.kernels.numba import buffers
from tinyalex.kernels.numba._checks import float_array
from tinyalex.kernels.numba.parallel_kernel import parallel_kernel, part_range

REDUCTIONS = ("mean", "sum", "none")


@parallel_kernel("{f}[::1], {f}[::1], {f}[::1], {f}[::1]")
def _squared_error(x, t, diff, squared, part, parts, done):
    """diff = x - t and squared = diff^2, flat arrays of one size."""
    first, last = part_range(x.size, part, parts)
    x, t, diff, squared = x[first:last], t[first:last], diff[first:last], squared[first:last]
    for i in range(x.size):                                        # indices from 0: the loop vectorises
        d = x[i] - t[i]
        diff[i] = d
        squared[i] = d * d


@parallel_kernel("{f}[::1], {f}[::1], int64, {f}[::1]")
def _scale(diff, g, g_stride, gx, part, parts, done):
    """gx[i] = diff[i] * g[i * g_stride]: one factor (stride 0) or one per element (1)."""
    first, last = part_range(diff.size, part, parts)
    diff_part, gx_part = diff[first:last], gx[first:last]
    for i in range(diff_part.size):
        gx_part[i] = diff_part[i] * g[(first + i) * g_stride]


def mse_loss_forward(input, target, reduction):
    """loss = reduce((input - target)^2); input, target (any shape, the same) -> loss ()
    for 'mean' and 'sum', input's shape for 'none'.

    Saved for backward: diff = input - target and the reduction, as in the reference.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    shape = input.shape
    x, t = float_array(input, "input").reshape(-1), float_array(target, "target").reshape(-1)
    same_dtype(input, "input", target, "target")
    same_shape(target, "target", shape, "the shape of input")
    diff, squared = buffers.empty_like(x), buffers.empty_like(x)
    _squared_error(x, t, diff, squared)
    if reduction == "none":
        loss = squared.reshape(shape)
    elif reduction == "sum":
        loss = np.asarray(squared.sum(), dtype=x.dtype)
    else:
        loss = np.asarray(squared.sum() / x.size if x.size else np.nan, dtype=x.dtype)
    return loss, (diff.reshape(shape), reduction)


def mse_loss_backward(gloss, cache):
    """ginput = 2 (input - target) * gloss, divided by n for 'mean'.

    Shapes: gloss () for 'mean'/'sum', input's shape for 'none' -> ginput (input's shape).
    """
    diff, reduction = cache
    gloss = np.asarray(gloss, dtype=diff.dtype)
    if reduction == "none":
        same_shape(gloss, "gloss", diff.shape, "the shape of input, reduction 'none'")
        g, g_stride = np.ascontiguousarray(2 * gloss).reshape(-1), 1
    else:
        same_shape(gloss, "gloss", (), f"a scalar, reduction {reduction!r}")
        n = max(diff.size, 1) if reduction == "mean" else 1
        g, g_stride = (2 * gloss / n).astype(diff.dtype).reshape(1), 0
    gx = buffers.empty_like(diff)
    _scale(diff.reshape(-1), g, g_stride, gx.reshape(-1))
    return gx
