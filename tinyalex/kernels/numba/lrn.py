"""Local response normalisation on the CPU: fused, parallel Numba kernels.

Formula, constants (PyTorch's convention, alpha divided by size; asymmetric window for
even sizes) and the backward derivation are in tinyalex.kernels.numpy.lrn. With
a = size//2 and b = (size-1)//2:

    s_c  = k + alpha/size * sum_{c' in [c-a, c+b]} x_{c'}^2,    y_c = x_c * s_c^(-beta)
    gx_c = gy_c s_c^(-beta) - (2 alpha beta/size) x_c * sum_{c' in [c-b, c+a]} gy_{c'} x_{c'} s_{c'}^(-beta-1)

Where the reference makes one pass over the whole tensor per window position, these
kernels make one pass in total: each iteration of the parallel loop takes one image row (n, h) and
walks down the channels with a SLIDING window sum (add the channel entering, subtract the
one leaving), so each x_c^2 is added and removed once whatever the size. The innermost
loop runs along the row (w), which is contiguous and vectorises. Rows (n, h) never share
an output element, so the iterations are race-free. Running sums are kept in float64,
even for float32 data: the sliding add/subtract then errs by ~1e-16 of the row's largest
window sum, invisible in float32 and, since s >= k, negligible in float64.
"""
import numpy as np
from numba import njit

from tinyalex.shapes import same_dtype, same_shape
from tinyalex.kernels.numba import buffers
from tinyalex.kernels.numba._checks import float_array
from tinyalex.kernels.numba.parallel_kernel import parallel_kernel, part_range


@njit(cache=True)
def _pow_row(s, beta, out):
    """out[w] = s[w] ** beta for one row, in the rows' dtype (float32 math for float32 data).

    AlexNet's beta = 0.75 takes two square roots, s^0.75 = sqrt(s * sqrt(s)) (a few ulps,
    and the loop vectorises), instead of pow, a libm call per element."""
    if beta == 0.75:
        for w in range(s.size):
            out[w] = np.sqrt(s[w] * np.sqrt(s[w]))
    else:
        for w in range(s.size):
            out[w] = s[w] ** beta


@njit(cache=True)
def _add_squares(x_row, sign, window):
    """window += sign * x_row**2, squared in float64."""
    for w in range(x_row.size):
        v = float(x_row[w])
        window[w] += sign * (v * v)


@njit(cache=True)
def _add_row(row, sign, window):
    """window += sign * row."""
    for w in range(row.size):
        window[w] += sign * row[w]


@parallel_kernel("{f}[:, :, :, ::1], int64, float64, float64, float64, {f}[:, :, :, ::1], "
                 "{f}[:, :, :, ::1]")
def _lrn_forward(x, size, alpha, beta, k, y, scale, part, parts, done):
    """y = x / s^beta and s (saved for backward), one (n, h) row per iteration."""
    N, C, H, W = x.shape
    before, after = size // 2, (size - 1) // 2                     # window [c - before, c + after]
    coef = alpha / size
    first, last = part_range(N * H, part, parts)
    for nh in range(first, last):
        n, h = nh // H, nh % H
        window = np.zeros(W)                                       # sum of x^2 over the window, float64
        s_beta = np.empty_like(x[n, 0, h])
        for c in range(min(after, C)):                             # c = 0's window but its last channel
            _add_squares(x[n, c, h], 1.0, window)
        for c in range(C):
            if c + after < C:                                      # channel c + after enters
                _add_squares(x[n, c + after, h], 1.0, window)
            x_row, y_row, scale_row = x[n, c, h], y[n, c, h], scale[n, c, h]
            for w in range(W):
                scale_row[w] = k + coef * window[w]
            _pow_row(scale_row, beta, s_beta)
            for w in range(W):
                y_row[w] = x_row[w] / s_beta[w]
            if c - before >= 0:                                    # channel c - before leaves
                _add_squares(x[n, c - before, h], -1.0, window)


@parallel_kernel("{f}[:, :, :, ::1], {f}[:, :, :, ::1], {f}[:, :, :, ::1], int64, float64, "
                 "float64, {f}[:, :, :, ::1]")
def _lrn_backward(gy, x, scale, size, alpha, beta, gx, part, parts, done):
    """gx of LRN, one (n, h) row per iteration, the transposed window slid down the channels.

    Per row, a first pass stores the direct term gy_c s_c^(-beta) and t_c = gy_c x_c
    s_c^(-beta-1) (float64 scratch, C x W); the second slides the window sum of t.
    """
    N, C, H, W = x.shape
    before, after = (size - 1) // 2, size // 2                     # transposed window [c - before, c + after]
    coef = 2.0 * alpha * beta / size
    first, last = part_range(N * H, part, parts)
    for nh in range(first, last):
        n, h = nh // H, nh % H
        direct = np.empty((C, W))
        t = np.empty((C, W))
        s_beta = np.empty_like(x[n, 0, h])
        for c in range(C):
            gy_row, x_row, scale_row = gy[n, c, h], x[n, c, h], scale[n, c, h]
            _pow_row(scale_row, beta, s_beta)
            for w in range(W):
                g = gy_row[w] / s_beta[w]                          # gy s^(-beta)
                direct[c, w] = g
                t[c, w] = g * x_row[w] / scale_row[w]
        window = np.zeros(W)                                       # sum of t over the window
        for c in range(min(after, C)):
            _add_row(t[c], 1.0, window)
        for c in range(C):
            if c + after < C:
                _add_row(t[c + after], 1.0, window)
            x_row, gx_row = x[n, c, h], gx[n, c, h]
            for w in range(W):
                gx_row[w] = direct[c, w] - coef * x_row[w] * window[w]
            if c - before >= 0:
                _add_row(t[c - before], -1.0, window)


def lrn_forward(x, size, alpha, beta, k):
    """y = x * (k + alpha/size * window sum of x^2)^(-beta); x (N, C, H, W) -> y, same dtype.

    Saved for backward: x and s = k + alpha/size * (window sum), plus size, alpha, beta.
    s is the costly part; s^(-beta) is recomputed in backward rather than stored.
    """
    x = float_array(x, "x", 4)
    if size < 1:
        raise ValueError(f"size: expected a positive window size, got {size}")
    y = buffers.empty_like(x)
    scale = buffers.empty_like(x)
    _lrn_forward(x, int(size), float(alpha), float(beta), float(k), y, scale)
    return y, (x, scale, int(size), float(alpha), float(beta))


def lrn_backward(gy, cache):
    """gx of LRN; gy (N, C, H, W) -> gx, same dtype."""
    x, scale, size, alpha, beta = cache
    gy = float_array(gy, "gy", 4)
    same_shape(gy, "gy", x.shape, "the shape of x")
    same_dtype(x, "x", gy, "gy")
    gx = buffers.empty_like(x)
    _lrn_backward(gy, x, scale, size, alpha, beta, gx)
    return gx
