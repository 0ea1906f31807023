"""Exercise: the backward pass of local response normalisation across channels (AlexNet's LRN).

Copy this file, write the body of lrn_backward between the markers, and grade it:

    cp docs/exercises/local_response_norm.py mine.py
    tinyalex exercise check mine.py

The file is a kernel set (tinyalex.register_kernels): the contract's lrn_forward and
lrn_backward, with the contract's signatures. PyTorch's convention, which tinyalex follows:

    s_c = k + alpha/size * sum_{c' in window(c)} x_{c'}^2,   y_c = x_c * s_c^(-beta)
    window(c) = [c - size//2, c + (size-1)//2] ∩ [0, C)

The check's gradcheck uses size 4 (an even size: the window is asymmetric) and alpha 0.5,
where every mistake in the cross-channel term shows.

Derivation: docs/ops/local_response_norm.md, section 2.
"""
import numpy as np


def _channel_window_sum(a, before, after):
    """out[:, c] = sum of a[:, c'] for c' in [c - before, c + after] ∩ [0, C). (Given.)

    Zero-pads the channel axis and adds before + after + 1 shifted slices.
    a (N, C, H, W) -> out (N, C, H, W).
    """
    C = a.shape[1]
    a_pad = np.pad(a, ((0, 0), (before, after), (0, 0), (0, 0)))
    out = np.zeros_like(a)
    for d in range(before + after + 1):
        out += a_pad[:, d:d + C]                                   # channel c - before + d
    return out


def lrn_forward(x, size, alpha, beta, k):
    """y_c = x_c * (k + alpha/size * sum_{c' in window(c)} x_{c'}^2)^(-beta). (Given.)

    Shapes: x (N, C, H, W) -> y (N, C, H, W), x's dtype.
    Saved for backward: x, s (the denominator's base, (N, C, H, W)) and the constants.
    """
    s = k + alpha / size * _channel_window_sum(x * x, size // 2, (size - 1) // 2)
    y = x * s ** -beta
    cache = (x, s, size, alpha, beta)
    return y, cache


def lrn_backward(gy, cache):
    """gx = dL/dx for lrn_forward's call, given gy = dL/dy.

    Shapes: gy (N, C, H, W) -> gx (N, C, H, W), gy's dtype.
    cache: (x, s, size, alpha, beta): x and s (N, C, H, W) as lrn_forward computed them.

    Hints (docs/ops/local_response_norm.md#2-backward-step-by-step):
    - x_j reaches y_c two ways: directly (c == j), and through s_c for every c whose
      window holds j (d s_c / d x_j = (alpha/size) * 2 x_j);
    - the chain rule then sums over those c: gx_j = (a direct term) - (a cross-channel
      term that is x_j times a window sum of gy_c x_c s_c^(-beta-1));
    - "j in window(c)" is a window around j too, but mirrored: count which channels lie
      before and after j (section 2, step 4). _channel_window_sum(a, before, after) sums it.
    """
    x, s, size, alpha, beta = cache
    # --- your code here ---
    raise NotImplementedError("exercise: write lrn_backward; see docs/ops/local_response_norm.md#2-backward-step-by-step")
    # --- end of your code ---
