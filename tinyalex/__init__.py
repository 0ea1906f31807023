"""tinyalex: a from-scratch deep-learning engine with explicit forward and backward kernels.

The public API mirrors PyTorch's names: ``tinyalex.tensor``, ``Tensor.backward``,
``tinyalex.functional`` (like ``torch.nn.functional``), ``tinyalex.nn``, ``tinyalex.optim``.
"""
from .threads import shorten_spin_waits

shorten_spin_waits()  # first: OpenBLAS reads its setting when numpy loads (see threads.py)

from . import functional, nn, optim  # noqa: E402
from .autograd import (Function, Tensor, bool_, enable_grad, float32, float64, int64,
                       is_grad_enabled, no_grad, tensor)
from .conv_algorithms import conv_algorithm, get_conv_algorithm, set_conv_algorithm  # noqa: E402
from .device import cuda_is_available
from .dispatch import use_kernels
from .gradcheck import GradcheckError, gradcheck
from .ops.basic import matmul
from .random import manual_seed

__version__ = "0.1.0"
