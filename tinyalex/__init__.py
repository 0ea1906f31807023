"""tinyalex: a from-scratch deep-learning engine with explicit forward and backward kernels.

The public API mirrors PyTorch's, so that ``import tinyalex as torch`` runs tutorial code:
``tinyalex.tensor``, ``Tensor.backward``, ``tinyalex.nn`` (``nn.functional`` is
``tinyalex.functional``), ``tinyalex.optim``, ``tinyalex.utils.data``, ``tinyalex.save`` /
``load``, ``tinyalex.device(...)``, ``tinyalex.cuda.is_available()``, and the ``torch.*``
functions of :mod:`tinyalex.torch_compat` (creation, reductions, reshapes, dtype names).
"""
from .distributed import configure_rank_threads
from .threads import shorten_spin_waits

configure_rank_threads()  # first: under mpiexec, cores / local ranks threads per rank
shorten_spin_waits()  # OpenBLAS reads its setting when numpy loads (see threads.py)

from . import device, functional, nn, optim, utils  # noqa: E402
from .autograd import (Function, Tensor, bool_, enable_grad, float32,  # noqa: E402
                       float64, int64, is_grad_enabled, no_grad, tensor)
from .errors import KeyRuntimeError, ValueRuntimeError  # noqa: E402
from .conv_algorithms import conv_algorithm, get_conv_algorithm, set_conv_algorithm  # noqa: E402
from .device import cuda_is_available  # noqa: E402
from .dispatch import use_kernels  # noqa: E402
from .gradcheck import GradcheckError, gradcheck  # noqa: E402
from .ops.basic import matmul  # noqa: E402
from .random import manual_seed  # noqa: E402
from .serialization import load, save  # noqa: E402
from .torch_compat import *  # noqa: E402,F401,F403

__version__ = "0.1.0"


def __getattr__(name):
    """``tinyalex.cuda`` (the CUDA kernel set, which also answers torch.cuda's
    ``is_available()`` and ``device_count()``) is imported on first use, so that
    ``import tinyalex`` needs no CUDA."""
    if name == "cuda":
        import importlib
        return importlib.import_module(".cuda", __name__)
    raise AttributeError(f"module 'tinyalex' has no attribute {name!r}")
