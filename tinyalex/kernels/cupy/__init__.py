"""The cupy kernel set: CUDA C kernels from kernels/*.cu, GEMMs on cuBLAS.

The third implementation of the contract (tinyalex/kernels/contract.py), next to the numpy
reference (which documents the math of every op) and the numba set: the same function
names, signatures and semantics, on CuPy arrays.

- loader.py compiles each .cu file with NVRTC on first use (cupy.RawModule, templates
  instantiated for float and double), caches it per device, and is the one place that
  picks cuBLAS's float32 mode: strict fp32, or TF32 with TINYALEX_TF32=1.
- The other modules are thin launchers: they check what the kernels assume, allocate the
  outputs and launch.

Every backward is a gather, one thread per output element looping over its inputs, so
gradients are bitwise repeatable: no float atomics (docs/pitfalls.md#deterministic-backward).

Importing this package needs no GPU; the first kernel call asks tinyalex.device for
CuPy and raises its RuntimeError, which says why, where CUDA cannot be used.
"""
from tinyalex.kernels.contract import SET_API
from tinyalex.kernels.cupy.conv import col2im, conv2d_backward, conv2d_forward, im2col
from tinyalex.kernels.cupy.cross_entropy import cross_entropy_backward, cross_entropy_forward
from tinyalex.kernels.cupy.dropout import dropout_backward, dropout_forward
from tinyalex.kernels.cupy.linear import matmul
from tinyalex.kernels.cupy.lrn import lrn_backward, lrn_forward
from tinyalex.kernels.cupy.mse_loss import mse_loss_backward, mse_loss_forward
from tinyalex.kernels.cupy.pool import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,
                                        max_pool2d_forward, max_pool2d_indices)
from tinyalex.kernels.cupy.relu import relu_backward, relu_forward
from tinyalex.kernels.cupy.sgd import sgd_update

#: The convolution algorithms this set implements (tinyalex/kernels/conv_algorithms.py): Winograd
#: is not written for the GPU, so 'auto' means 'gemm' here and 'winograd' is refused.
CONV2D_ALGORITHMS = ("gemm",)

__all__ = list(SET_API) + ["CONV2D_ALGORITHMS"]
