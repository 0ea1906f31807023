"""Exercise: the backward pass of max pooling (AlexNet's overlapping 3x3, stride 2).

Copy this file, write the body of max_pool2d_backward between the markers, and grade it:

    cp docs/exercises/max_pool2d.py mine.py
    tinyalex exercise check mine.py

The file is a kernel set (tinyalex.register_kernels): the contract's max_pool2d_forward,
max_pool2d_backward and max_pool2d_indices (the three share the cache, so a set defines
all of them), with the contract's signatures.

Derivation: docs/ops/max_pool2d.md, section 2.
"""
import numpy as np

from tinyalex.shapes import pool_output_size


def max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False):
    """y[n, c, oh, ow] = max over the window's pixels x[n, c, oh*sh - ph + i, ow*sw - pw + j],
    i < kh, j < kw, padding never counted (it is -inf). (Given.)

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), x's dtype; OH = (H + 2*ph - kh) // sh + 1
    (likewise OW), or torch's ceil size with ceil_mode (tinyalex.shapes.pool_output_size).
    Saved for backward: argmax (N, C, OH, OW) int64, the flat index h*W + w in its input
    plane of each window's FIRST maximum in row-major window order (the pixel PyTorch gives
    the gradient to; a window holding NaN picks its last NaN, as PyTorch), and x's shape.

    One pass per tap (i, j) compares that tap of every window at once; a tap replaces the
    window's best so far only when it is strictly greater, so the first maximum stays.
    """
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = pool_output_size(x.shape, kernel_size, stride, padding, ceil_mode)
    y = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    argmax = np.full((N, C, OH, OW), -1, dtype=np.int64)          # -1: no real pixel seen yet
    for i in range(kh):
        for j in range(kw):
            rows = np.arange(OH) * sh - ph + i                     # (OH,) the input row under tap i
            cols = np.arange(OW) * sw - pw + j                     # (OW,)
            real = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
            value = x[:, :, rows.clip(0, H - 1)][:, :, :, cols.clip(0, W - 1)]  # (N, C, OH, OW)
            take = real & ((value > y) | (argmax < 0) | np.isnan(value))
            y = np.where(take, value, y)
            argmax = np.where(take, rows[:, None] * W + cols[None, :], argmax)
    cache = (argmax, x.shape)
    return y, cache


def max_pool2d_backward(gy, cache):
    """gx = dL/dx for max_pool2d_forward's call, given gy = dL/dy.

    Shapes: gy (N, C, OH, OW) -> gx (N, C, H, W), gy's dtype.
    cache: (argmax, x_shape): argmax (N, C, OH, OW) int64 holds, for each window, h*W + w of
    its maximum in the input plane; x_shape is (N, C, H, W).

    Hints (docs/ops/max_pool2d.md#2-backward-step-by-step):
    - the derivative of a window's max is 1 at its argmax and 0 at the window's other pixels;
    - so each gy[n, c, oh, ow] goes to the one pixel argmax[n, c, oh, ow] of plane (n, c):
      work on gx viewed as (N, C, H*W) and reshape at the end;
    - with stride 2 and kernel 3 the windows overlap, and one pixel can be the maximum of
      two windows: both gradients must ADD. `gx[idx] += v` with a repeated idx keeps only
      one of them; np.add.at(gx, idx, v) adds every one.
    """
    argmax, (N, C, H, W) = cache
    # --- your code here ---
    raise NotImplementedError("exercise: write max_pool2d_backward; see docs/ops/max_pool2d.md#2-backward-step-by-step")
    # --- end of your code ---


def max_pool2d_indices(cache):
    """torch's return_indices: each window's argmax as h*W + w in its input plane,
    (N, C, OH, OW) int64. (Given.)"""
    return cache[0]
