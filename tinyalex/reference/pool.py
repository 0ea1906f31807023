"""2-D max pooling (the reference). AlexNet uses overlapping pooling: kernel 3, stride 2
(paper section 3.4), so one pixel can be the maximum of two windows."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..shapes import conv_output_size


def max_pool2d_forward(x, kernel_size, stride, padding):
    """y[n, c, oh, ow] = max_{i<kh, j<kw} x_pad[n, c, oh*sh + i, ow*sw + j]

    x_pad is x padded with -inf, so padding never wins a window (zero padding would beat
    an all-negative window). Floor mode: OH = (H + 2*ph - kh) // sh + 1 (likewise OW).

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), same dtype.
    Saved for backward: the argmax of each window, as a flat index i*kw + j into it, plus
    the shapes. It is the FIRST maximum in row-major window order (np.argmax returns the
    first), which is the pixel PyTorch gives the gradient to. A mask `x == y` would
    instead give the gradient to every tied maximum. A window holding NaN outputs NaN
    and, as in PyTorch, routes its gradient to its LAST NaN.
    """
    # x (N, C, H, W) -> y (N, C, OH, OW)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    # Every kh x kw window as a view, then every stride-th one: (N, C, OH, OW, kh, kw).
    windows = sliding_window_view(x_pad, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    windows = windows.reshape(N, C, OH, OW, kh * kw)               # row-major within a window
    argmax = windows.argmax(axis=-1)                               # (N, C, OH, OW)
    nan = np.isnan(windows)
    last_nan = kh * kw - 1 - nan[..., ::-1].argmax(axis=-1)
    argmax = np.where(nan.any(axis=-1), last_nan, argmax)
    y = windows.max(axis=-1)
    cache = (argmax, x.shape, kernel_size, stride, padding)
    return y, cache


def max_pool2d_backward(gy, cache):
    """gx: each gy[n, c, oh, ow] goes to the pixel that was its window's (first) maximum.

    The argmax a of window (oh, ow) is the padded pixel (oh*sh + a // kw, ow*sw + a % kw).
    With stride < kernel two windows can pick the same pixel, and both gradients must add:
    np.add.at accumulates repeated indices (plain fancy-index `+=` would keep only one).
    The padding is cropped at the end; it never holds a maximum unless a window is all
    padding, which PyTorch's rule padding <= kernel/2 (checked by the caller) rules out.

    Shapes: gy (N, C, OH, OW) -> gx (N, C, H, W), same dtype as gy.
    """
    # gy (N, C, OH, OW) -> gx (N, C, H, W)
    argmax, (N, C, H, W), (kh, kw), (sh, sw), (ph, pw) = cache
    OH, OW = gy.shape[2:]
    h_pad = np.arange(OH)[:, None] * sh + argmax // kw             # (N, C, OH, OW) padded row
    w_pad = np.arange(OW)[None, :] * sw + argmax % kw              # (N, C, OH, OW) padded column
    n = np.arange(N)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    gx_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=gy.dtype)
    np.add.at(gx_pad, (n, c, h_pad, w_pad), gy)
    return np.ascontiguousarray(gx_pad[:, :, ph:ph + H, pw:pw + W])
