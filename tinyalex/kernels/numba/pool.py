"""2-D max and average pooling on the CPU: parallel Numba kernels over (n, c) planes.

Semantics as in tinyalex.kernels.numpy.pool (floor or ceil mode; max: -inf padding, the argmax
is the first maximum among the window's real pixels in row-major order, like PyTorch;
average: zero padding, torch's divisors from tinyalex.shapes.avg_pool_divisors). Every
kernel runs one (n, c) plane per iteration of its parallel loop: pooling never mixes planes, so
iterations share nothing.
"""
import numpy as np
from numba import njit

from tinyalex.shapes import avg_pool_divisors, pool_output_size, same_shape
from tinyalex.kernels.numba import buffers
from tinyalex.kernels.numba._checks import float_array
from tinyalex.kernels.numba.parallel_kernel import parallel_kernel, part_range


@njit(cache=True)
def _window_max_nan_aware(plane, W, h0, h1, w0, w1):
    """(max, h*W + w of the first max) of plane's window [h0, h1) x [w0, w1), PyTorch's rule.

    The update test is PyTorch's, `v > best or v is NaN`: a strict `>` keeps the first
    of tied maxima, and a NaN wins (the last NaN, then, as in PyTorch).
    """
    best_at = h0 * W + w0
    best = plane[best_at]
    for h in range(h0, h1):
        for at in range(h * W + w0, h * W + w1):
            v = plane[at]
            if v > best or v != v:
                best, best_at = v, at
    return best, best_at


@parallel_kernel("{f}[:, ::1], int64, int64, int64, int64, int64, int64, int64, int64, int64, "
                 "int64, {f}[:, ::1], int32[:, ::1]")
def _max_pool_forward(x, H, W, kh, kw, sh, sw, ph, pw, OH, OW, y, argmax, part, parts, done):
    """y[p, oh*OW + ow] = max of the window, argmax[p, oh*OW + ow] = h*W + w of its first maximum.

    x (P, H*W), y and argmax (P, OH*OW): the N*C planes flattened. Parallel over the
    planes (disjoint outputs). The window is clipped to the image, which is what -inf
    padding amounts to (padding <= kernel/2, and ceil mode's rule that the last window
    starts inside the image or the top/left padding, leave every window a real pixel), and
    the scan starts from the first real pixel, so padding is never the argmax, even in a
    window of -inf. OH and OW come from the caller, so ceil mode needs nothing more here.

    The scan keeps the best so far with selects, not a branch (on real data the branch
    mispredicts often), and a strict `>`: the first of tied maxima wins. A plane holding a
    NaN (counted first, in one vectorised pass) is scanned by _window_max_nan_aware
    instead, so the common scan carries no NaN test (benchmarks/results/cpu_design_notes.md).
    """
    first, last = part_range(x.shape[0], part, parts)
    for p in range(first, last):
        plane, y_plane, arg_plane = x[p], y[p], argmax[p]
        nans = 0
        for at in range(H * W):
            nans += plane[at] != plane[at]
        for oh in range(OH):
            h0, h1 = max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)
            for ow in range(OW):
                w0, w1 = max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)
                if nans:                                           # rare: PyTorch's NaN rule
                    best, best_at = _window_max_nan_aware(plane, W, h0, h1, w0, w1)
                else:
                    best_at = h0 * W + w0
                    best = plane[best_at]
                    for h in range(h0, h1):
                        for at in range(h * W + w0, h * W + w1):
                            v = plane[at]
                            take = v > best
                            best = v if take else best
                            best_at = at if take else best_at
                y_plane[oh * OW + ow] = best
                arg_plane[oh * OW + ow] = best_at


@parallel_kernel("{f}[:, ::1], int32[:, ::1], {f}[:, ::1]")
def _max_pool_backward(gy, argmax, gx, part, parts, done):
    """gx[p, argmax[p, o]] += gy[p, o] for every output o; all (P, ...) flattened planes.

    Parallel over the planes: each iteration zeroes and fills its own plane of gx, so two
    windows that picked the same pixel add within one iteration (no race, and a fixed
    order: bitwise repeatable).
    """
    first, last = part_range(gx.shape[0], part, parts)
    for p in range(first, last):
        gx_plane, gy_plane, arg_plane = gx[p], gy[p], argmax[p]
        gx_plane[:] = 0
        for o in range(gy_plane.size):
            gx_plane[arg_plane[o]] += gy_plane[o]


def max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False):
    """y = max over each (kh, kw) window; x (N, C, H, W) -> y (N, C, OH, OW), floor or ceil mode.

    Saved for backward: the argmax of every window as an int32 index h*W + w into its
    (n, c) plane (a plane-local index needs half the bytes of PyTorch's int64), and x's shape.
    """
    x = float_array(x, "x", 4)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = pool_output_size(x.shape, kernel_size, stride, padding, ceil_mode)
    if H * W >= 2**31:
        raise ValueError(f"x: a plane of {H}x{W} pixels overflows the int32 argmax")
    y = buffers.empty((N, C, OH, OW), x.dtype)
    argmax = buffers.empty((N, C, OH, OW), np.int32)
    _max_pool_forward(x.reshape(N * C, H * W), H, W, kh, kw, sh, sw, ph, pw, OH, OW,
                      y.reshape(N * C, OH * OW), argmax.reshape(N * C, OH * OW))
    return y, (argmax, x.shape, x.dtype)


def max_pool2d_backward(gy, cache):
    """gx: each gy goes to its window's argmax; gy (N, C, OH, OW) -> gx (N, C, H, W)."""
    argmax, x_shape, dtype = cache
    gy = float_array(gy, "gy", 4)
    same_shape(gy, "gy", argmax.shape, "the shape of y")
    if gy.dtype != dtype:
        raise TypeError(f"gy: expected dtype {np.dtype(dtype)} (the dtype of x), got {gy.dtype}")
    N, C, H, W = x_shape
    gx = buffers.empty(x_shape, gy.dtype)
    L = argmax.shape[2] * argmax.shape[3]                          # explicit: -1 fails when N*C == 0
    _max_pool_backward(gy.reshape(N * C, L), argmax.reshape(N * C, L), gx.reshape(N * C, H * W))
    return gx


def max_pool2d_indices(cache):
    """torch's return_indices: the saved argmax (h*W + w in the input plane) as int64 (N, C, OH, OW)."""
    return cache[0].astype(np.int64)


@parallel_kernel("{f}[:, ::1], int64, int64, int64, int64, int64, int64, int64, int64, {f}[:, "
                 "::1], {f}[:, :, ::1]")
def _avg_pool_forward(x, H, W, kh, kw, sh, sw, ph, pw, divisor, y, part, parts, done):
    """y[p, oh, ow] = (sum of the window's real pixels) / divisor[oh, ow]; x (P, H*W), y (P, OH, OW).

    Zero padding adds nothing, so the window is clipped to the image. The sum runs in
    float64 whatever the dtype. Parallel over the planes (disjoint outputs).
    """
    OH, OW = divisor.shape
    first, last = part_range(x.shape[0], part, parts)
    for p in range(first, last):
        plane = x[p]
        for oh in range(OH):
            h0, h1 = max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)
            for ow in range(OW):
                w0, w1 = max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)
                total = 0.0
                for h in range(h0, h1):
                    for at in range(h * W + w0, h * W + w1):
                        total += plane[at]
                y[p, oh, ow] = total / divisor[oh, ow]


@parallel_kernel("{f}[:, :, ::1], int64, int64, int64, int64, int64, int64, int64, int64, {f}[:, ::1]")
def _avg_pool_backward(share, H, W, kh, kw, sh, sw, ph, pw, gx, part, parts, done):
    """gx[p, h*W + w] = sum of share[p, oh, ow] over the windows covering (h, w).

    share = gy / divisor (P, OH, OW). A gather: each input pixel loops over the windows
    that cover it, window oh covering padded rows [oh*sh, oh*sh + kh), so every gx element
    is written once, in a fixed order. Parallel over the planes.
    """
    OH, OW = share.shape[1], share.shape[2]
    first, last = part_range(gx.shape[0], part, parts)
    for p in range(first, last):
        for h in range(H):
            hp = h + ph                                            # padded coordinates
            oh_lo = 0 if hp < kh else (hp - kh) // sh + 1
            oh_hi = min(hp // sh + 1, OH)
            for w in range(W):
                wp = w + pw
                ow_lo = 0 if wp < kw else (wp - kw) // sw + 1
                ow_hi = min(wp // sw + 1, OW)
                total = 0.0
                for oh in range(oh_lo, oh_hi):
                    for ow in range(ow_lo, ow_hi):
                        total += share[p, oh, ow]
                gx[p, h * W + w] = total


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True,
                       divisor_override=None):
    """y = mean over each (kh, kw) window with torch's divisor; x (N, C, H, W) -> y (N, C, OH, OW).

    Saved for backward: the divisors (OH, OW) in x's dtype, x's shape and the geometry.
    """
    x = float_array(x, "x", 4)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    divisor = avg_pool_divisors(x.shape, kernel_size, stride, padding, ceil_mode,
                                count_include_pad, divisor_override).astype(x.dtype)
    OH, OW = divisor.shape
    y = buffers.empty((N, C, OH, OW), x.dtype)
    _avg_pool_forward(x.reshape(N * C, H * W), H, W, kh, kw, sh, sw, ph, pw, divisor,
                      y.reshape(N * C, OH, OW))
    return y, (divisor, x.shape, kernel_size, stride, padding)


def avg_pool2d_backward(gy, cache):
    """gx: each window sends gy / divisor to every pixel it covers; gy (N, C, OH, OW) -> gx (N, C, H, W)."""
    divisor, x_shape, (kh, kw), (sh, sw), (ph, pw) = cache
    gy = float_array(gy, "gy", 4)
    N, C, H, W = x_shape
    OH, OW = divisor.shape
    same_shape(gy, "gy", (N, C, OH, OW), "the shape of y")
    if gy.dtype != divisor.dtype:
        raise TypeError(f"gy: expected dtype {divisor.dtype} (the dtype of x), got {gy.dtype}")
    gx = buffers.empty(x_shape, gy.dtype)
    share = (gy / divisor).reshape(N * C, OH, OW)
    _avg_pool_backward(share, H, W, kh, kw, sh, sw, ph, pw, gx.reshape(N * C, H * W))
    return gx
