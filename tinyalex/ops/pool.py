"""max_pool2d and avg_pool2d as autograd Functions."""
from tinyalex.autograd import Function
from tinyalex.kernels import kernels_for


class MaxPool2d(Function):
    """y[n, c, oh, ow] = max over the window at (oh*sh - ph, ow*sw - pw) of size (kh, kw).

    Forward saves the argmax of every window (the first maximum among its real pixels in
    row-major order, as PyTorch does); backward routes each gy to that one input pixel,
    adding where windows overlap. Shapes: x (N, C, H, W), y (N, C, OH, OW), the sizes of
    tinyalex.shapes.pool_output_size (floor, or torch's ceil mode).

    return_indices: a Function gives one output, so when `indices` is a list the forward
    appends the argmax to it as torch's int64 indices (h*W + w in the input plane), taken
    from the same pass (kernel API max_pool2d_indices); they carry no gradient.
    """

    @staticmethod
    def forward(x, *, kernel_size, stride, padding, ceil_mode=False, indices=None):
        kernels = kernels_for(x)
        y, cache = kernels.max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode)
        if indices is not None:
            indices.append(kernels.max_pool2d_indices(cache))
        return y, cache

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return (kernels_for(gy).max_pool2d_backward(gy, cache),)


class AvgPool2d(Function):
    """y[n, c, oh, ow] = sum of the (kh, kw) window at (oh*sh - ph, ow*sw - pw) / divisor[oh, ow].

    Zero padding; divisor is torch's (kh*kw, or the window's real pixels with
    count_include_pad=False, or divisor_override; tinyalex.shapes.avg_pool_divisors).
    Forward saves the divisors and x's shape, not x: the op is linear. Backward sends
    gy / divisor to every pixel of the window, adding where windows overlap.
    Shapes: x (N, C, H, W), y (N, C, OH, OW), OH and OW as for MaxPool2d.
    """

    @staticmethod
    def forward(x, *, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        return kernels_for(x).avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode,
                                                 count_include_pad, divisor_override)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return (kernels_for(gy).avg_pool2d_backward(gy, cache),)
