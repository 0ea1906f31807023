"""The numba kernel set: the fast CPU default (TINYALEX_CPU=numba).

Same functions and signatures as the numpy set (tinyalex/kernels/contract.py), which holds
the formulas and derivations; the docstrings here say how each kernel is parallelised and
why it is race-free.

- Every loop kernel is `@parallel_kernel` (parallel_kernel.py): a loop whose parts Numba's
  thread pool shares, compiled once per float type (float32 and float64 both work) as a
  generalized ufunc on Numba's 'parallel' target, its machine code cached on disk, so
  importing this package compiles nothing; precompile.py compiles a run's kernels ahead,
  in worker processes.
- A parallel loop runs over DISJOINT outputs only (rows of cols, planes of an image, image
  rows, elements): no two iterations write the same element, so there are no races and no
  float atomics, and every result is bitwise repeatable, whatever the thread count.
- Every GEMM (convolutions, the linear layer's matmul) runs on Numba's own pool, one
  single-threaded BLAS call per task inside a parallel loop (blas.py): BLAS never starts
  its own threads, so no idle pool spins against the other, whatever the user imported
  first (docs/pitfalls.md#oversubscription).
- conv.py is im2col + GEMM; conv_winograd.py is Winograd, built on conv.py's workspace.
- Outputs, saved caches and gradients of 1 MiB or more come from buffers.py: one region
  reused from step to step, so steady steps fault in no new pages
  (docs/pitfalls.md#fresh-pages).
"""
from tinyalex.threads import shorten_spin_waits

# Before Numba loads libgomp, when tinyalex/__init__.py came too late (see threads.py).
shorten_spin_waits()

from tinyalex.kernels.contract import SET_API  # noqa: E402
from tinyalex.kernels.numba.conv import col2im, conv2d_backward, conv2d_forward, im2col  # noqa: E402
from tinyalex.kernels.numba.cross_entropy import cross_entropy_backward, cross_entropy_forward  # noqa: E402
from tinyalex.kernels.numba.dropout import dropout_backward, dropout_forward  # noqa: E402
from tinyalex.kernels.numba.blas import matmul  # noqa: E402
from tinyalex.kernels.numba.lrn import lrn_backward, lrn_forward  # noqa: E402
from tinyalex.kernels.numba.mse_loss import mse_loss_backward, mse_loss_forward  # noqa: E402
from tinyalex.kernels.numba.pool import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,  # noqa: E402
                                         max_pool2d_forward, max_pool2d_indices)
from tinyalex.kernels.numba.relu import relu_backward, relu_forward  # noqa: E402
from tinyalex.kernels.numba.sgd import sgd_update  # noqa: E402
from tinyalex.kernels.numba.conv_winograd import conv2d_winograd_backward, conv2d_winograd_forward  # noqa: E402

#: The convolution algorithms this set implements (tinyalex/kernels/conv_algorithms.py).
CONV2D_ALGORITHMS = ("gemm", "winograd")

__all__ = list(SET_API) + ["conv2d_winograd_forward", "conv2d_winograd_backward", "CONV2D_ALGORITHMS"]
