"""The linear layer's matrix product (the reference): numpy.matmul.

y = x @ W^T + b (tinyalex.ops.linear) needs three GEMMs per step: x @ W^T, gy @ W and
gy^T @ x. The autograd Function calls them through the kernel set, so that each set can
run them on its own threads (the numba set: tinyalex.kernels.numba.blas).
"""
import numpy as np


def matmul(a, b):
    """a @ b for 2-D float arrays: (M, K) @ (K, N) -> (M, N)."""
    return np.matmul(a, b)
