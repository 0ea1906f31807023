"""ReLU, max(0, x), on the GPU (kernels/relu.cu); AlexNet paper section 3.1."""
from tinyalex.shapes import same_dtype, same_shape
from tinyalex.kernels.cupy._checks import float_array, i64
from tinyalex.kernels.cupy.loader import cupy, get_kernel, launch_1d


def relu_forward(x):
    """y = max(0, x); a NaN passes through, as in np.maximum and PyTorch.

    Shapes: x (any) -> y (same shape and dtype).
    Saved for backward: y itself. y > 0 exactly where x > 0, so the output, which exists
    anyway, replaces the reference's boolean mask and the forward writes nothing extra.
    """
    # x (...) -> y (...)
    x = float_array(x, "x")
    y = cupy().empty_like(x)
    launch_1d(get_kernel("relu.cu", "relu_forward", x.dtype), x.size, (x, y, i64(x.size)))
    return y, y


def relu_backward(gy, cache):
    """gx = gy where x > 0, else 0 (the gradient at x == 0 is 0, as in PyTorch).

    Shapes: gy (any) -> gx (same shape and dtype).
    """
    # gy (...) -> gx (...)
    y = cache
    gy = float_array(gy, "gy")
    same_dtype(y, "x", gy, "gy")
    same_shape(gy, "gy", y.shape, "the shape of x")
    gx = cupy().empty_like(gy)
    launch_1d(get_kernel("relu.cu", "relu_backward", gy.dtype), gy.size,
              (gy, y, gx, i64(gy.size)))
    return gx
