"""2-D max and average pooling (the reference). AlexNet uses overlapping max pooling:
kernel 3, stride 2 (paper section 3.4), so one pixel can be the maximum of two windows.
torchvision's AlexNet ends its features with average pooling (AdaptiveAvgPool2d).

The output size, the padding limit and ceil mode are shared by both ops and every kernel
set: tinyalex.shapes.pool_output_size; the average's divisors: tinyalex.shapes.avg_pool_divisors."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tinyalex.shapes import avg_pool_divisors, pool_output_size


def max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False):
    """y[n, c, oh, ow] = max_{i<kh, j<kw} x_pad[n, c, oh*sh + i, ow*sw + j]

    x_pad is x padded with -inf, so padding never wins a window (zero padding would beat
    an all-negative window). Floor mode: OH = (H + 2*ph - kh) // sh + 1 (likewise OW).
    ceil_mode (torch's): OH = ceil((H + 2*ph - kh) / sh) + 1, less one if the last window
    would start at or past H + ph, i.e. wholly in the bottom padding; the last window may
    then run past the bottom padding, and those extra rows are -inf too.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), same dtype.
    Saved for backward: argmax (N, C, OH, OW) int64, the flat index h*W + w into the input
    plane of each window's FIRST maximum in row-major window order among its REAL pixels
    (torch's return_indices). First: np.argmax returns the first True, which is the pixel
    PyTorch gives the gradient to; a mask `x == y` would give it to every tied maximum.
    Real pixels only: in a window whose pixels are all -inf, the padding ties with them and
    must not be picked (torch's index is never padding). A window holding NaN outputs NaN
    and, as in PyTorch, routes its gradient to its LAST NaN.
    """
    # x (N, C, H, W) -> y (N, C, OH, OW)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = pool_output_size(x.shape, kernel_size, stride, padding, ceil_mode)
    below = ph + max(0, (OH - 1) * sh + kh - (H + 2 * ph))         # ceil mode: rows past the padding
    right = pw + max(0, (OW - 1) * sw + kw - (W + 2 * pw))
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, below), (pw, right)), constant_values=-np.inf)
    # Every kh x kw window as a view, then every stride-th one: (N, C, OH, OW, kh, kw).
    windows = sliding_window_view(x_pad, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :OH, :OW]
    windows = windows.reshape(N, C, OH, OW, kh * kw)               # row-major within a window
    # The input pixel under tap (i, j) of window (oh, ow), and whether it is real.
    rows = np.arange(OH)[:, None] * sh - ph + np.arange(kh)        # (OH, kh)
    cols = np.arange(OW)[:, None] * sw - pw + np.arange(kw)        # (OW, kw)
    real = (((rows >= 0) & (rows < H))[:, None, :, None]
            & ((cols >= 0) & (cols < W))[None, :, None, :]).reshape(OH, OW, kh * kw)
    plane_index = (rows[:, None, :, None] * W + cols[None, :, None, :]).reshape(OH, OW, kh * kw)

    y = windows.max(axis=-1)                                       # NaN propagates
    tap = ((windows == y[..., None]) & real).argmax(axis=-1)       # first real maximum
    nan = np.isnan(windows)
    last_nan = kh * kw - 1 - nan[..., ::-1].argmax(axis=-1)
    tap = np.where(nan.any(axis=-1), last_nan, tap)                # (N, C, OH, OW)
    argmax = np.take_along_axis(np.broadcast_to(plane_index, (N, C, OH, OW, kh * kw)),
                                tap[..., None], axis=-1)[..., 0].astype(np.int64)
    cache = (argmax, x.shape)
    return y, cache


def max_pool2d_backward(gy, cache):
    """gx: each gy[n, c, oh, ow] goes to the pixel that was its window's (first) maximum.

    gx[n, c].flat[argmax[n, c, oh, ow]] += gy[n, c, oh, ow] for every window. With stride <
    kernel two windows can pick the same pixel, and both gradients must add: np.add.at
    accumulates repeated indices (plain fancy-index `+=` would keep only one). The argmax
    is never padding, so nothing needs cropping.

    Shapes: gy (N, C, OH, OW) -> gx (N, C, H, W), same dtype as gy.
    """
    # gy (N, C, OH, OW) -> gx (N, C, H, W)
    argmax, (N, C, H, W) = cache
    n = np.arange(N)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    gx = np.zeros((N, C, H * W), dtype=gy.dtype)
    np.add.at(gx, (n, c, argmax), gy)
    return gx.reshape(N, C, H, W)


def max_pool2d_indices(cache):
    """torch's return_indices: the argmax of each window as h*W + w in its input plane.

    Shapes: -> (N, C, OH, OW) int64.
    """
    return cache[0]


def _pool_windows(x_pad, kernel_size, stride, out_hw):
    """Every pooling window of x_pad as a view (N, C, OH, OW, kh, kw)."""
    (kh, kw), (sh, sw), (OH, OW) = kernel_size, stride, out_hw
    return sliding_window_view(x_pad, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :OH, :OW]


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True,
                       divisor_override=None):
    """y[n, c, oh, ow] = sum_{i<kh, j<kw} x_pad[n, c, oh*sh + i, ow*sw + j] / divisor[oh, ow]

    x_pad is x padded with zeros (ph rows above, ph below, plus ceil mode's rows past the
    padding; likewise columns), so padding adds nothing to a sum. divisor (OH, OW) is
    torch's (tinyalex.shapes.avg_pool_divisors): kh*kw for an inner window, fewer where
    count_include_pad=False or the window runs past the padding, or divisor_override.
    OH, OW as for max pooling (floor or torch's ceil mode).

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), same dtype.
    Saved for backward: the divisors (in x's dtype), x's shape and the geometry. Not x:
    the average is linear, so its gradient does not depend on x.
    """
    # x (N, C, H, W) -> y (N, C, OH, OW)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = pool_output_size(x.shape, kernel_size, stride, padding, ceil_mode)
    divisor = avg_pool_divisors(x.shape, kernel_size, stride, padding, ceil_mode,
                                count_include_pad, divisor_override).astype(x.dtype)
    below = ph + max(0, (OH - 1) * sh + kh - (H + 2 * ph))         # ceil mode: rows past the padding
    right = pw + max(0, (OW - 1) * sw + kw - (W + 2 * pw))
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, below), (pw, right)))
    y = _pool_windows(x_pad, kernel_size, stride, (OH, OW)).sum(axis=(-2, -1)) / divisor
    cache = (divisor, x.shape, kernel_size, stride, padding)
    return y, cache


def avg_pool2d_backward(gy, cache):
    """gx[n, c, h, w] = sum over the windows (oh, ow) covering (h, w) of gy[n, c, oh, ow] / divisor[oh, ow]

    Derivation: dy[oh, ow] / dx_pad[oh*sh + i, ow*sw + j] = 1 / divisor[oh, ow] for every
    tap (i, j) of the window, so each tap of x_pad receives gy / divisor, and a pixel under
    several windows (stride < kernel) sums what each sends. The loop runs over the kh*kw
    taps: for one tap (i, j) the windows hit distinct pixels (rows i, i + sh, ...), so a
    strided slice `+=` never repeats an index. The padding's share is cropped.

    Shapes: gy (N, C, OH, OW) -> gx (N, C, H, W), same dtype as gy.
    """
    # gy (N, C, OH, OW) -> gx (N, C, H, W)
    divisor, (N, C, H, W), (kh, kw), (sh, sw), (ph, pw) = cache
    OH, OW = divisor.shape
    share = gy / divisor                                           # what each tap of a window gets
    rows = max(H + 2 * ph, (OH - 1) * sh + kh)                     # the padded input, ceil mode's rows too
    cols = max(W + 2 * pw, (OW - 1) * sw + kw)
    gx_pad = np.zeros((N, C, rows, cols), dtype=gy.dtype)
    for i in range(kh):
        for j in range(kw):
            gx_pad[:, :, i:i + (OH - 1) * sh + 1:sh, j:j + (OW - 1) * sw + 1:sw] += share
    return np.ascontiguousarray(gx_pad[:, :, ph:ph + H, pw:pw + W])
