"""Local response normalisation across channels (the reference; AlexNet paper section 3.3).

PyTorch's convention, which tinyalex follows:

    s_c = k + alpha/size * sum_{c' in window(c)} x_{c'}^2
    y_c = x_c * s_c^(-beta)
    window(c) = [c - size//2, c + (size-1)//2] ∩ [0, C)

For an even size the window is asymmetric: size//2 channels before c, (size-1)//2 after.

Mapping the constants. The 2012 paper writes b = a / (k + alpha * sum a^2)^beta with
k=2, n=5, alpha=1e-4, beta=0.75, and does NOT divide alpha by n. PyTorch and Caffe do, so
the paper's layer is  lrn(size=5, alpha=5e-4, beta=0.75, k=2)  here and
torch.nn.functional.local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0) in PyTorch.
"""
import numpy as np


def _channel_window_sum(a, before, after):
    """out[:, c] = sum of a[:, c'] for c' in [c - before, c + after] ∩ [0, C).

    Zero-pads the channel axis and adds before + after + 1 shifted slices: a loop over
    the window, not over pixels. a (N, C, H, W) -> out (N, C, H, W).
    """
    C = a.shape[1]
    a_pad = np.pad(a, ((0, 0), (before, after), (0, 0), (0, 0)))
    out = np.zeros_like(a)
    for d in range(before + after + 1):
        out += a_pad[:, d:d + C]                                   # channel c - before + d
    return out


def lrn_forward(x, size, alpha, beta, k):
    """y_c = x_c * (k + alpha/size * sum_{c' in window(c)} x_{c'}^2)^(-beta)

    Shapes: x (N, C, H, W) -> y (N, C, H, W), same dtype.
    Saved for backward: x and s (the denominator's base), plus the constants. The
    backward needs x (for d s / d x) and s at every channel; s is the expensive part
    (a window sum), so it is kept, and the backward recomputes s^(-beta) from it rather
    than keeping y as well.
    """
    # x (N, C, H, W) -> y (N, C, H, W)
    s = k + alpha / size * _channel_window_sum(x * x, size // 2, (size - 1) // 2)
    y = x * s ** -beta
    cache = (x, s, size, alpha, beta)
    return y, cache


def lrn_backward(gy, cache):
    """gx_j = gy_j s_j^(-beta) - (2 alpha beta / size) x_j sum_{c: j in window(c)} t_c,
    with t_c = gy_c x_c s_c^(-beta-1), from the x and s saved by lrn_forward.

    Derivation. y_c = x_c s_c^(-beta) depends on x_j directly (c == j) and through s_c
    whenever j is in window(c), where d s_c / d x_j = (alpha/size) * 2 x_j. So

        d y_c / d x_j = [c == j] s_c^(-beta)
                        - beta x_c s_c^(-beta-1) (2 alpha/size) x_j [j in window(c)]
        gx_j = sum_c gy_c d y_c / d x_j
             = gy_j s_j^(-beta)
               - (2 alpha beta / size) x_j sum_{c: j in window(c)} gy_c x_c s_c^(-beta-1).

    The last sum runs over the TRANSPOSED window: j in [c - size//2, c + (size-1)//2]
    means c in [j - (size-1)//2, j + size//2]. For odd sizes the two coincide; for even
    sizes using the forward window here is an off-by-one that only a test with a large
    alpha (>= 0.1) and k ~ 1 notices.

    Shapes: gy (N, C, H, W) -> gx (N, C, H, W), same dtype.
    """
    # gy (N, C, H, W) -> gx (N, C, H, W)
    x, s, size, alpha, beta = cache
    s_pow = s ** -beta                                             # s^(-beta)
    t = gy * x * s_pow / s                                         # gy_c x_c s_c^(-beta-1)
    t_sum = _channel_window_sum(t, (size - 1) // 2, size // 2)     # transposed window
    return gy * s_pow - (2 * alpha * beta / size) * x * t_sum
