"""Output sizes and operand-agreement checks shared by every kernel set.

The functional layer validates what users pass; these guard what the kernels assume, in
words that name the argument, whatever array module holds the data.
"""
import numpy as np

from tinyalex.errors import TypeRuntimeError, ValueRuntimeError


def conv_output_size(size, kernel, stride, padding, dilation=1):
    """Output length along one axis, floor mode: (size + 2*padding - span) // stride + 1,
    where span = dilation*(kernel - 1) + 1 is the extent of a dilated kernel."""
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span) // stride + 1
    if out < 1:
        kernel_words = (f"kernel_size {kernel} with dilation {dilation}, which spans {span} pixels,"
                        if dilation != 1 else f"kernel_size {kernel}")
        raise ValueRuntimeError(f"kernel_size: expected a kernel that fits the padded input, got"
                                f" {kernel_words} against an input of size {size} with padding"
                                f" {padding} ({size + 2 * padding} pixels)")
    return out


def pool_output_size(x_shape, kernel_size, stride, padding, ceil_mode=False):
    """(OH, OW) of max- or average-pooling x (N, C, H, W), torch's rule. Padding may be at most half the
    kernel, so that no window lies entirely in the -inf padding.

    Floor mode: (H + 2*ph - kh) // sh + 1. ceil_mode: ceil((H + 2*ph - kh) / sh) + 1, less
    one if that last window would start at or past H + ph (inside the bottom padding): each
    window then still holds a real pixel.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueRuntimeError(f"padding: expected at most half the kernel {tuple(kernel_size)},"
                                f" got {tuple(padding)}")
    return tuple(_pool_length(size, k, s, p, ceil_mode)
                 for size, k, s, p in ((x_shape[2], kh, sh, ph), (x_shape[3], kw, sw, pw)))


def avg_pool_divisors(x_shape, kernel_size, stride, padding, ceil_mode=False,
                      count_include_pad=True, divisor_override=None):
    """The divisor of every average-pooling window, torch's rule, as a float64 (OH, OW) array.

    Window (oh, ow) starts at row h0 = oh*sh - ph. Along rows it spans
    [h0, min(h0 + kh, H + ph)) of the zero-padded input (ceil mode's extra rows past the
    padding are not counted), of which [max(h0, 0), min(h0 + kh, H)) are real pixels;
    likewise columns. The divisor is divisor_override if given, else the product of the
    two padded spans (count_include_pad=True) or of the two real spans (False). Being a
    product of one length per row and one per column, it is an outer product.
    """
    OH, OW = pool_output_size(x_shape, kernel_size, stride, padding, ceil_mode)
    if divisor_override is not None:
        return np.full((OH, OW), float(divisor_override))
    spans = []
    for size, k, s, p, out in ((x_shape[2], kernel_size[0], stride[0], padding[0], OH),
                               (x_shape[3], kernel_size[1], stride[1], padding[1], OW)):
        start = np.arange(out) * s - p
        stop = np.minimum(start + k, size + p)
        spans.append(stop - start if count_include_pad
                     else np.minimum(stop, size) - np.maximum(start, 0))
    return np.multiply.outer(spans[0], spans[1]).astype(np.float64)


def _pool_length(size, kernel, stride, padding, ceil_mode):
    out = conv_output_size(size, kernel, stride, padding)          # floor mode; checks the fit
    if ceil_mode:
        out = (size + 2 * padding - kernel + stride - 1) // stride + 1
        if (out - 1) * stride >= size + padding:                   # the last window would start in the padding
            out -= 1
    return out


def batch_chunks(n, bytes_per_sample, budget):
    """Split range(n) into balanced (start, stop) chunks of whole samples whose per-sample
    bytes fit `budget`, at least one sample per chunk (the conv workspaces of the numba and
    cupy sets). Balanced: 16 samples of which 10 fit give 8 + 8, not 10 + 6.

    An empty batch is one empty chunk [(0, 0)], so a loop over the chunks still runs once
    and writes what its first chunk writes (zero weight gradients, for conv).
    """
    if n == 0:
        return [(0, 0)]
    most = max(1, budget // max(1, bytes_per_sample))
    count = -(-n // most)                                          # ceil(n / most)
    size = -(-n // count)
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def same_dtype(a, a_name, b, b_name):
    if a.dtype != b.dtype:
        raise TypeRuntimeError(f"{b_name}: expected dtype {a.dtype} (the dtype of {a_name}), got {b.dtype}")


def same_shape(a, a_name, shape, what):
    if a.shape != tuple(shape):
        raise ValueRuntimeError(f"{a_name}: expected shape {tuple(shape)} ({what}), got {a.shape}")


def check_conv_operands(x, weight, bias, groups):
    """x (N, C, H, W), weight (OC, C/groups, kh, kw) and bias (OC,) or None agree in dtype and
    shape (the arrays are already the kernel set's float arrays)."""
    same_dtype(x, "x", weight, "weight")
    C, (OC, Cg) = x.shape[1], weight.shape[:2]
    if groups < 1 or C != Cg * groups or OC % groups:
        raise ValueRuntimeError(f"weight: expected shape (OC, C/groups, kh, kw) with OC divisible by"
                                f" groups={groups} and C={C}, got {weight.shape}")
    if bias is not None:
        same_dtype(x, "x", bias, "bias")
        same_shape(bias, "bias", (OC,), "one per output channel")
