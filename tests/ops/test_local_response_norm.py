"""local_response_norm (the lrn kernels) on every kernel set: the kernels against torch and
the paper's formula, the numba set against the reference, and the public API."""
import numpy as np
import pytest
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinyalex.functional as F
import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numpy as numpy_kernels

from helpers import check_parity
from op_helpers import (DTYPES, SEEDS, assert_close, assert_matches, f64, fd_settings, gradcheck,
                        random_image, torch_vjp)


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture) against torch."""

    # size, alpha, beta, k: even and odd sizes, one wider than C; alpha large enough that
    # the cross-channel term of the backward matters (docs/pitfalls.md#lrn-backward-alpha).
    LRN_CASES = [
        (2, 0.5, 0.75, 1.0),
        (3, 1.0, 0.75, 1.0),
        (4, 0.5, 0.6, 1.5),
        (5, 2.0, 0.75, 1.0),
        (8, 0.5, 0.75, 1.0),
    ]

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("size, alpha, beta, k", LRN_CASES)
    def test_lrn_matches_torch(self, kernels, size, alpha, beta, k, dtype):
        rng = np.random.default_rng(4)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.standard_normal((2, 6, 3, 4)).astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)

        y, cache = K.lrn_forward(dev(x), size, alpha, beta, k)
        gx = K.lrn_backward(dev(gy), cache)

        y_t, (gx_t,) = torch_vjp(lambda x: TF.local_response_norm(x, size, alpha, beta, k), [x], gy)
        assert_close(host(y), y_t, dtype)
        assert_close(host(gx), gx_t, dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("size", [5, 50])
    def test_lrn_across_tiles_and_slabs(self, kernels, size, dtype):
        """More channels and pixels than one tile of kernels/lrn.cu (32 x 32) holds, and a
        window wider than its shared-memory slab (40 channels), against the numpy reference."""
        rng = np.random.default_rng(6)
        x = rng.standard_normal((2, 70, 5, 9)).astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy

        y, cache = K.lrn_forward(dev(x), size, 0.8, 0.75, 1.0)
        y_ref, cache_ref = numpy_kernels.lrn_forward(f64(x), size, 0.8, 0.75, 1.0)
        assert_matches(host(y), y_ref, dtype)
        gx = K.lrn_backward(dev(gy), cache)
        assert_matches(host(gx), numpy_kernels.lrn_backward(f64(gy), cache_ref), dtype)

    def test_lrn_paper_constants(self, kernels):
        """The paper's k=2, n=5, alpha=1e-4, beta=0.75 is size=5, alpha=5e-4 in our convention."""
        x = 10 * np.random.default_rng(5).standard_normal((2, 7, 3, 4))  # large enough to matter
        C = x.shape[1]
        paper = np.empty_like(x)
        for c in range(C):
            window = x[:, max(0, c - 2):min(C, c + 3)]
            paper[:, c] = x[:, c] / (2 + 1e-4 * (window ** 2).sum(axis=1)) ** 0.75
        y, _ = kernels.module.lrn_forward(kernels.to_device(x), 5, 5e-4, 0.75, 2.0)
        np.testing.assert_allclose(kernels.to_numpy(y), paper, rtol=1e-12)


class TestNumbaKernels:
    """The numba set against the numpy reference, over seeded random shapes (a parallel-loop race
    or an index slip shows up only for some)."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("seed", SEEDS)
    def test_lrn_matches_reference(self, seed, dtype):
        rng = np.random.default_rng(300 + seed)
        N, _, H, W = random_image(rng)
        C = int(rng.integers(2, 9))
        size = int(rng.integers(1, C + 3))                                 # odd, even, wider than C
        alpha = float(rng.uniform(0.1, 2.0))                               # the cross-channel term matters
        beta = 0.75 if seed % 2 else float(rng.uniform(0.3, 1.0))          # the sqrt path and pow
        k = float(rng.uniform(0.5, 2.0))
        x = rng.standard_normal((N, C, H, W)).astype(dtype)

        y, cache = numba_kernels.lrn_forward(x, size, alpha, beta, k)
        y_ref, cache_ref = numpy_kernels.lrn_forward(f64(x), size, alpha, beta, k)
        assert_matches(y, y_ref, dtype)

        gy = rng.standard_normal(x.shape).astype(dtype)
        assert_matches(numba_kernels.lrn_backward(gy, cache), numpy_kernels.lrn_backward(f64(gy), cache_ref), dtype)


class TestFunctional:
    """Through the public API, on every kernel set: float64 finite differences and torch parity."""

    @fd_settings
    @given(c=st.integers(2, 7), size=st.integers(1, 6), alpha=st.floats(0.1, 1.0),
           beta=st.floats(0.5, 1.0), k=st.floats(0.5, 2.0), seed=st.integers(0, 99))
    def test_local_response_norm_finite_differences(self, kernels, c, size, alpha, beta, k, seed):
        x = np.random.default_rng(seed).standard_normal((2, c, 3, 4))
        gradcheck(kernels, lambda x: F.local_response_norm(x, size, alpha, beta, k), [x])

    @pytest.mark.parametrize("size, alpha, beta, k", [
        (5, 5e-4, 0.75, 2.0),   # the 2012 paper's constants in PyTorch's convention
        (5, 0.5, 0.75, 1.0),
        (4, 0.3, 0.6, 1.2),     # even size: asymmetric window
        (2, 1.0, 0.9, 1.0),
        (9, 0.2, 0.75, 1.0),    # window wider than the channels
    ])
    def test_local_response_norm_matches_torch(self, kernels, size, alpha, beta, k):
        x = np.random.default_rng(3).standard_normal((2, 7, 5, 6))
        check_parity(kernels, lambda x: F.local_response_norm(x, size, alpha, beta, k),
                     lambda x: TF.local_response_norm(x, size, alpha, beta, k), [x])
