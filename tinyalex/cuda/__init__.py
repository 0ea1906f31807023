"""The cupy kernel set: CUDA C kernels from kernels/*.cu, GEMMs on cuBLAS.

The third implementation of tinyalex.dispatch.KERNEL_API, next to the numpy reference
(tinyalex.reference, which documents the math of every op) and the numba set
(tinyalex.cpu): the same function names, signatures and semantics, on CuPy arrays.

- loader.py compiles each .cu file with NVRTC on first use (cupy.RawModule, templates
  instantiated for float and double), caches it per device, and is the one place that
  picks cuBLAS's float32 mode: strict fp32, or TF32 with TINYALEX_TF32=1.
- conv.py, pool.py, lrn.py, relu.py, dropout.py and cross_entropy.py are thin launchers:
  they check what the kernels assume, allocate the outputs and launch.
- sgd.py adds the fused optimiser step (sgd_update), which is not part of KERNEL_API;
  optim.SGD.step uses it for parameters on CUDA.

Every backward is a gather, one thread per output element looping over its inputs, so
gradients are bitwise repeatable: no float atomics (docs/pitfalls.md#deterministic-backward).

Importing this package needs no GPU; the first kernel call asks tinyalex.device for
CuPy and raises its RuntimeError, which says why, where CUDA cannot be used.
`import tinyalex` never imports this package: tinyalex.dispatch loads it on demand, and
so does the first use of ``tinyalex.cuda``, which answers torch.cuda's questions too:
``is_available()`` and ``device_count()``.
"""
from ..device import cuda_is_available as is_available
from ..device import device_count
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

__all__ = list(KERNEL_API) + ["sgd_update"]  # the contract, plus the fused SGD step
