"""local_response_norm as an autograd Function (derivation in tinyalex.kernels.numpy.lrn)."""
from tinyalex.autograd import Function
from tinyalex.kernels import kernels_for


class LocalResponseNorm(Function):
    """y_c = x_c / (k + alpha/size * sum_{c' = c - size//2}^{c + (size-1)//2} x_{c'}^2)^beta

    across channels, PyTorch's convention (alpha is divided by size). The 2012 paper's
    k=2, n=5, alpha=1e-4, beta=0.75 is size=5, alpha=5e-4, beta=0.75, k=2 here.
    Shapes: x, y (N, C, H, W).
    """

    @staticmethod
    def forward(x, *, size, alpha, beta, k):
        return kernels_for(x).lrn_forward(x, size, alpha, beta, k)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return (kernels_for(gy).lrn_backward(gy, cache),)
