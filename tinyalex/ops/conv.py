"""conv2d as an autograd Function; the kernels (im2col + GEMM) live in each kernel set."""
from tinyalex.autograd import Function
from tinyalex.kernels import KERNEL_SETS, conv_algorithms, kernels_for
from tinyalex.shapes import conv_output_size

_SET_NAMES = {module: name for name, module in KERNEL_SETS.items()}


class Conv2d(Function):
    """y[n, o] = b[o] + sum_{c in group(o), i, j} W[o, c, i, j] x_pad[n, c, s*oh + d*i, s*ow + d*j].

    Shapes: x (N, C, H, W), W (OC, C/groups, kh, kw), b (OC,), y (N, OC, OH, OW) with
    OH = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1; d = (dh, dw) is the dilation. The padding
    is symmetric (torch's asymmetric 'same' padding adds a ZeroPad2d in front, see
    tinyalex.functional.conv2d). The kernel set decides what to save; the reference saves x
    and W and rebuilds the columns in backward (see tinyalex.kernels.numpy.conv).

    algorithm: 'auto', 'gemm', 'winograd' or None (the global setting); resolved here, per
    call, against what the kernel set of x implements (tinyalex.kernels.conv_algorithms.resolve).
    'gemm' runs the set's conv2d_forward, 'winograd' its conv2d_winograd_forward; the cache
    remembers which, for the matching backward.
    """

    @staticmethod
    def forward(x, weight, bias=None, *, stride, padding, groups, dilation=(1, 1), algorithm=None):
        kernels = kernels_for(x)
        out_size = tuple(conv_output_size(x.shape[2 + i], weight.shape[2 + i], stride[i], padding[i],
                                          dilation[i]) for i in range(2))
        name = conv_algorithms.resolve("conv2d", algorithm, weight.shape, stride, dilation, groups,
                                       out_size, kernels.CONV2D_ALGORITHMS,
                                       _SET_NAMES.get(kernels.__name__, kernels.__name__))
        forward = kernels.conv2d_winograd_forward if name == "winograd" else kernels.conv2d_forward
        y, cache = forward(x, weight, bias, stride, padding, groups, dilation)
        return y, (name, cache)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        name, cache = cache
        kernels = kernels_for(gy)
        backward = kernels.conv2d_winograd_backward if name == "winograd" else kernels.conv2d_backward
        gx, gW, gb = backward(gy, cache, need_gx=needs_input_grad[0])
        return (gx, gW) if gb is None else (gx, gW, gb)
