"""2-D max and average pooling on the GPU (kernels/pool.cu). AlexNet pools with kernel 3, stride 2
(overlapping pooling, paper section 3.4), so one pixel can be the maximum of two windows.

Semantics are tinyalex.kernels.numpy.pool's and PyTorch's: floor or ceil mode, -inf padding,
and the gradient goes to the FIRST maximum among each window's real pixels in row-major
order. Ceil mode changes only OH and OW, which the launcher passes to both kernels. The forward saves
that argmax; the backward is a gather (one thread per input pixel, looping over the
windows that cover it), so overlapping windows add in a fixed order, without atomics.
Average pooling is the same gather with gy / divisor, the divisors (torch's, from
tinyalex.shapes.avg_pool_divisors) computed on the host and passed as an (OH, OW) array.
"""
import numpy as np

from tinyalex.shapes import avg_pool_divisors, pool_output_size, same_shape
from tinyalex.kernels.cupy._checks import check_dtype, float_array, i32
from tinyalex.kernels.cupy.loader import cupy, get_kernel, launch_1d


def _geometry_args(x_shape, kernel_size, stride, padding, OH, OW):
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    return (i32(N), i32(C), i32(H), i32(W), i32(kh), i32(kw), i32(sh), i32(sw),
            i32(ph), i32(pw), i32(OH), i32(OW))


def max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False):
    """y[n, c, oh, ow] = max_{i<kh, j<kw} x_pad[n, c, oh*sh + i, ow*sw + j], x_pad padded with -inf

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), same dtype; OH and OW from
    tinyalex.shapes.pool_output_size (floor or torch's ceil mode).
    Saved for backward: argmax (N, C, OH, OW) int32, the flat index h*W + w into the
    unpadded input plane of each window's first maximum, plus the geometry.
    Requires padding <= kernel_size / 2 (PyTorch's rule), so no window is all padding.
    """
    # x (N, C, H, W) -> y (N, C, OH, OW)
    cp = cupy()
    x = float_array(x, "x", 4)
    N, C, H, W = x.shape
    OH, OW = pool_output_size(x.shape, kernel_size, stride, padding, ceil_mode)
    y = cp.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = cp.empty((N, C, OH, OW), dtype=np.int32)
    kernel = get_kernel("pool.cu", "max_pool2d_forward", x.dtype)
    launch_1d(kernel, y.size, (x, y, argmax) + _geometry_args(x.shape, kernel_size, stride,
                                                              padding, OH, OW))
    cache = (argmax, x.shape, x.dtype, kernel_size, stride, padding)
    return y, cache


def max_pool2d_backward(gy, cache):
    """gx[n, c, h, w] = sum of gy[n, c, oh, ow] over the windows whose argmax is (h, w)

    Shapes: gy (N, C, OH, OW) -> gx (N, C, H, W), same dtype.
    """
    # gy (N, C, OH, OW) -> gx (N, C, H, W)
    argmax, x_shape, x_dtype, kernel_size, stride, padding = cache
    gy = float_array(gy, "gy", 4)
    same_shape(gy, "gy", argmax.shape, "the shape of the pooling output")
    check_dtype(gy, "gy", x_dtype, "the dtype of x")
    gx = cupy().empty(x_shape, dtype=gy.dtype)
    kernel = get_kernel("pool.cu", "max_pool2d_backward", gy.dtype)
    OH, OW = argmax.shape[2:]
    launch_1d(kernel, gx.size, (gy, argmax, gx) + _geometry_args(x_shape, kernel_size, stride,
                                                                 padding, OH, OW))
    return gx


def max_pool2d_indices(cache):
    """torch's return_indices: the saved argmax (h*W + w in the input plane) as int64 (N, C, OH, OW)."""
    return cache[0].astype(np.int64)


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True,
                       divisor_override=None):
    """y[n, c, oh, ow] = sum of the window of x padded with zeros / divisor[oh, ow]

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), same dtype; OH as for max pooling.
    Saved for backward: the divisors (OH, OW) on the device, x's shape and dtype, and the
    geometry (the average is linear: x itself is not needed).
    """
    # x (N, C, H, W) -> y (N, C, OH, OW)
    cp = cupy()
    x = float_array(x, "x", 4)
    N, C = x.shape[:2]
    divisor = cp.asarray(avg_pool_divisors(x.shape, kernel_size, stride, padding, ceil_mode,
                                           count_include_pad, divisor_override).astype(x.dtype))
    OH, OW = divisor.shape
    y = cp.empty((N, C, OH, OW), dtype=x.dtype)
    kernel = get_kernel("pool.cu", "avg_pool2d_forward", x.dtype)
    launch_1d(kernel, y.size, (x, divisor, y) + _geometry_args(x.shape, kernel_size, stride,
                                                               padding, OH, OW))
    return y, (divisor, x.shape, x.dtype, kernel_size, stride, padding)


def avg_pool2d_backward(gy, cache):
    """gx[n, c, h, w] = sum of gy[n, c, oh, ow] / divisor[oh, ow] over the windows covering (h, w)

    Shapes: gy (N, C, OH, OW) -> gx (N, C, H, W), same dtype.
    """
    # gy (N, C, OH, OW) -> gx (N, C, H, W)
    divisor, x_shape, x_dtype, kernel_size, stride, padding = cache
    gy = float_array(gy, "gy", 4)
    OH, OW = divisor.shape
    same_shape(gy, "gy", x_shape[:2] + (OH, OW), "the shape of the pooling output")
    check_dtype(gy, "gy", x_dtype, "the dtype of x")
    gx = cupy().empty(x_shape, dtype=gy.dtype)
    kernel = get_kernel("pool.cu", "avg_pool2d_backward", gy.dtype)
    launch_1d(kernel, gx.size, (gy, divisor, gx) + _geometry_args(x_shape, kernel_size, stride,
                                                                  padding, OH, OW))
    return gx
