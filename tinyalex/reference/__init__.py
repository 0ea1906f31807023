"""The numpy kernel set: the readable reference, and the oracle the tests trust.

One module per op, each an explicit forward/backward pair in the style of cs231n and
llm.c: `*_forward(...) -> (y, cache)` computes the output and saves what the backward
needs, `*_backward(gy, cache) -> gx` consumes it. Every docstring gives the formula, the
shapes, the derivation of the backward and what is saved and why. Vectorised NumPy only:
the Python loops run over kernel offsets or the LRN window, never over samples or pixels.

The functions and their signatures are the contract in tinyalex.dispatch.KERNEL_API; the
numba (tinyalex.cpu) and cupy (tinyalex.cuda) sets implement the same names and are
tested against these.
"""
from ..dispatch import KERNEL_API
from .conv import CONV2D_ALGORITHMS, col2im, conv2d_backward, conv2d_forward, im2col
from .cross_entropy import cross_entropy_backward, cross_entropy_forward
from .dropout import dropout_backward, dropout_forward
from .linear import matmul
from .lrn import lrn_backward, lrn_forward
from .mse_loss import mse_loss_backward, mse_loss_forward
from .pool import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,
                   max_pool2d_forward, max_pool2d_indices)
from .relu import relu_backward, relu_forward

from .sgd import sgd_update
__all__ = list(KERNEL_API) + ["sgd_update"]  # the contract, plus the SGD step optim.SGD calls
