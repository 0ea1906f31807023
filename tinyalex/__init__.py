"""tinyalex: a from-scratch deep-learning engine with explicit forward and backward kernels.

The public API mirrors PyTorch's, so that ``import tinyalex as torch`` runs tutorial code:
``tinyalex.tensor``, ``Tensor.backward``, ``tinyalex.nn`` (``nn.functional`` is
``tinyalex.functional``), ``tinyalex.optim``, ``tinyalex.utils.data``, ``tinyalex.save`` /
``load``, ``tinyalex.device(...)``, ``tinyalex.cuda.is_available()``, and the ``torch.*``
functions of :mod:`tinyalex.torch_compat` (creation, reductions, reshapes, dtype names).

``import tinyalex`` loads the engine only: the training application (tinyalex/train,
the ``tinyalex`` command) and MPI are loaded by the command, never by this import.
"""
from tinyalex.threads import configure_rank_threads, shorten_spin_waits

configure_rank_threads()  # first: under mpiexec, cores / local ranks threads per rank
shorten_spin_waits()  # OpenBLAS reads its setting when numpy loads (see threads.py)

from tinyalex.tensor import Tensor, bool_, float32, float64, int64, tensor  # noqa: E402  (first: the ops need Tensor)
from tinyalex import cuda, device, functional, nn, optim, utils  # noqa: E402
from tinyalex import onnx  # noqa: E402  (tinyalex.onnx.export; the onnx package loads inside it)
from tinyalex.autograd import Function, enable_grad, is_grad_enabled, no_grad  # noqa: E402
from tinyalex.device import cuda_is_available  # noqa: E402
from tinyalex.errors import KeyRuntimeError, ValueRuntimeError  # noqa: E402
from tinyalex.gradcheck import GradcheckError, gradcheck  # noqa: E402
from tinyalex.kernels import register_kernels, use_kernels  # noqa: E402
from tinyalex.kernels.conv_algorithms import conv_algorithm, get_conv_algorithm, set_conv_algorithm  # noqa: E402
from tinyalex.ops.basic import matmul  # noqa: E402
from tinyalex.random import manual_seed  # noqa: E402
from tinyalex.serialization import load, load_safetensors, save, save_safetensors  # noqa: E402
from tinyalex.torch_compat import *  # noqa: E402,F403  (torch's top-level functions)

__version__ = "0.1.0"
