"""dropout as an autograd Function."""
from tinyalex.autograd import Function
from tinyalex.kernels import kernels_for


class Dropout(Function):
    """Inverted dropout: y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element.

    The mask is a pure function of (seed, element index) (tinyalex.kernels.counter_uniform),
    so every kernel set draws the same mask for the same seed. Backward reuses it:
    gx = gy * keep / (1 - p). Scaling in training keeps E[y] = x, so eval is the identity.
    """

    @staticmethod
    def forward(x, *, p, seed, offset=0):
        return kernels_for(x).dropout_forward(x, p, seed, offset)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return (kernels_for(gy).dropout_backward(gy, cache),)
