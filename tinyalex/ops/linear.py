"""linear as an autograd Function: its GEMMs go through the kernel set's matmul (BLAS on
Numba's pool, numpy.matmul, or cuBLAS)."""
from tinyalex.autograd import Function
from tinyalex.kernels import kernels_for


class Linear(Function):
    """y = x W^T + b.

    Shapes: x (M, in), W (out, in), b (out,), y (M, out) (leading dims are flattened into M
    by the functional layer). Saves x and W: gx = gy W, gW = gy^T x, gb = sum_m gy.
    """

    @staticmethod
    def forward(x, weight, bias=None):
        y = kernels_for(x).matmul(x, weight.T)
        if bias is not None:
            y += bias
        return y, (x, weight)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        x, weight = cache
        matmul = kernels_for(gy).matmul
        gx = matmul(gy, weight) if needs_input_grad[0] else None
        gW = matmul(gy.T, x) if needs_input_grad[1] else None
        if len(needs_input_grad) == 2:
            return gx, gW
        return gx, gW, gy.sum(axis=0)
