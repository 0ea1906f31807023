"""The numpy kernel set: the readable reference, and the oracle the tests trust.

One module per op, each an explicit forward/backward pair in the style of cs231n and
llm.c: `*_forward(...) -> (y, cache)` computes the output and saves what the backward
needs, `*_backward(gy, cache) -> gx` consumes it. Every docstring gives the formula, the
shapes, the derivation of the backward and what is saved and why. Vectorised NumPy only:
the Python loops run over kernel offsets or the LRN window, never over samples or pixels.

The functions and their signatures are the contract (tinyalex/kernels/contract.py); the
numba and cupy sets implement the same names and are tested against these. conv.py is
plain im2col + GEMM; conv_winograd.py, a second algorithm for 3x3 and 5x5 kernels, builds
on it and is read after it.
"""
from tinyalex.kernels.contract import SET_API
from tinyalex.kernels.numpy.conv import col2im, conv2d_backward, conv2d_forward, im2col
from tinyalex.kernels.numpy.cross_entropy import cross_entropy_backward, cross_entropy_forward
from tinyalex.kernels.numpy.dropout import dropout_backward, dropout_forward
from tinyalex.kernels.numpy.linear import matmul
from tinyalex.kernels.numpy.lrn import lrn_backward, lrn_forward
from tinyalex.kernels.numpy.mse_loss import mse_loss_backward, mse_loss_forward
from tinyalex.kernels.numpy.pool import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,
                                         max_pool2d_forward, max_pool2d_indices)
from tinyalex.kernels.numpy.relu import relu_backward, relu_forward
from tinyalex.kernels.numpy.sgd import sgd_update
from tinyalex.kernels.numpy.conv_winograd import conv2d_winograd_backward, conv2d_winograd_forward

#: The convolution algorithms this set implements (tinyalex/kernels/conv_algorithms.py).
CONV2D_ALGORITHMS = ("gemm", "winograd")

__all__ = list(SET_API) + ["conv2d_winograd_forward", "conv2d_winograd_backward", "CONV2D_ALGORITHMS"]
