"""Mean squared error on the GPU (semantics and derivation in tinyalex.kernels.numpy.mse_loss).

An elementwise op and one reduction, written as CuPy array expressions rather than a
kernel in kernels/: a hand-written .cu file would do the same two passes over memory. The
reduction is CuPy's sum, as in cross_entropy's 'mean'.
"""
from tinyalex.shapes import same_dtype, same_shape
from tinyalex.kernels.cupy._checks import float_array
from tinyalex.kernels.cupy.loader import cupy

REDUCTIONS = ("mean", "sum", "none")


def mse_loss_forward(input, target, reduction):
    """loss = reduce((input - target)^2); input, target (any shape, the same) -> loss ()
    for 'mean' and 'sum', input's shape for 'none'. The mean of no elements is NaN.

    Saved for backward: diff = input - target and the reduction, as in the reference.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    cp = cupy()
    x, t = float_array(input, "input"), float_array(target, "target")
    same_dtype(x, "input", t, "target")
    same_shape(t, "target", x.shape, "the shape of input")
    diff = x - t
    squared = diff * diff
    if reduction == "none":
        loss = squared
    elif reduction == "sum":
        loss = squared.sum()
    else:
        loss = squared.sum() / x.size if x.size else cp.asarray(cp.nan, dtype=x.dtype)
    return loss.astype(x.dtype, copy=False), (diff, reduction)


def mse_loss_backward(gloss, cache):
    """ginput = 2 (input - target) * gloss, divided by n for 'mean'.

    Shapes: gloss () for 'mean'/'sum', input's shape for 'none' -> ginput (input's shape).
    """
    cp = cupy()
    diff, reduction = cache
    gloss = cp.asarray(gloss, dtype=diff.dtype)
    if reduction == "none":
        same_shape(gloss, "gloss", diff.shape, "the shape of input, reduction 'none'")
    else:
        same_shape(gloss, "gloss", (), f"a scalar, reduction {reduction!r}")
    n = max(diff.size, 1) if reduction == "mean" else 1
    return diff * (2 * gloss / n)
