"""linear (the matmul kernel) on every kernel set: the GEMMs with transposed operands, the
numba set against the reference, and the public API."""
import numpy as np
import pytest
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinyalex.functional as F
import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numpy as numpy_kernels

from helpers import check_parity
from op_helpers import DTYPES, assert_close, fd_settings, gradcheck


class TestKernels:
    """Kernel level: each kernel set's matmul (the `kernels` fixture) against numpy."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("M, inner, N", [(5, 7, 3), (33, 17, 9), (4, 0, 3), (0, 3, 2)])
    def test_matmul_matches_numpy_with_transposed_operands(self, kernels, M, inner, N, dtype):
        """The linear layer's GEMMs: y = x @ W.T, gx = gy @ W, gW = gy.T @ x, so each operand
        may arrive as a transposed view."""
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        rng = np.random.default_rng(M + inner + N)
        a, b = rng.standard_normal((M, inner)), rng.standard_normal((inner, N))
        expected = a @ b
        for left, right in ((a, b), (a.T.copy().T, b), (a, b.T.copy().T)):
            left_d = dev(np.ascontiguousarray(left).astype(dtype))
            right_d = dev(np.ascontiguousarray(right).astype(dtype))
            if not left.flags.c_contiguous:                    # keep the transposed-view layout
                left_d = dev(np.ascontiguousarray(left.T).astype(dtype)).T
            if not right.flags.c_contiguous:
                right_d = dev(np.ascontiguousarray(right.T).astype(dtype)).T
            y = host(K.matmul(left_d, right_d))
            assert y.shape == (M, N)
            assert_close(y, expected, dtype)


class TestNumbaKernels:
    """The numba set against the numpy reference."""

    @pytest.mark.parametrize("seed", range(5))
    def test_matmul_matches_reference(self, seed):
        """The numba set's GEMM (single-threaded BLAS calls split over Numba's pool) against the
        reference, on shapes drawn so the split lands on uneven parts."""
        rng = np.random.default_rng(seed)
        M, K, N = (int(v) for v in rng.integers(1, 300, 3))
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((N, K)).astype(np.float32).T            # a transposed view, as W.T
        np.testing.assert_allclose(numba_kernels.matmul(a, b), numpy_kernels.matmul(a, b), rtol=1e-5, atol=1e-5 * K)


class TestFunctional:
    """Through the public API, on every kernel set: float64 finite differences and torch parity."""

    @fd_settings
    @given(m=st.integers(2, 5), k=st.integers(1, 6), n=st.integers(1, 5), bias=st.booleans(),
           batch3d=st.booleans(), seed=st.integers(0, 99))
    def test_linear_finite_differences(self, kernels, m, k, n, bias, batch3d, seed):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((2, m, k) if batch3d else (m, k))
        arrays = [x, rng.standard_normal((n, k))] + ([rng.standard_normal(n)] if bias else [])
        gradcheck(kernels, lambda x, w, b=None: F.linear(x, w, b), arrays)

    @pytest.mark.parametrize("x_shape, bias", [((4, 7), True), ((2, 3, 7), False)])
    def test_linear_matches_torch(self, kernels, x_shape, bias):
        rng = np.random.default_rng(5)
        arrays = [rng.standard_normal(x_shape), rng.standard_normal((5, 7))]
        arrays += [rng.standard_normal(5)] if bias else []
        check_parity(kernels, lambda x, w, b=None: F.linear(x, w, b),
                     lambda x, w, b=None: TF.linear(x, w, b), arrays)
