"""max_pool2d as an autograd Function."""
from ..autograd import Function
from ..dispatch import kernels_for


class MaxPool2d(Function):
    """y[n, c, oh, ow] = max over the window at (oh*sh - ph, ow*sw - pw) of size (kh, kw).

    Forward saves the argmax of every window (the first maximum in row-major order, as
    PyTorch does); backward routes each gy to that one input pixel, adding where windows
    overlap. Shapes: x (N, C, H, W), y (N, C, OH, OW), floor((H + 2*ph - kh) / sh) + 1.
    """

    @staticmethod
    def forward(x, *, kernel_size, stride, padding):
        return kernels_for(x).max_pool2d_forward(x, kernel_size, stride, padding)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return (kernels_for(gy).max_pool2d_backward(gy, cache),)
