"""relu on every kernel set: the kernels against torch (the gradient at exactly 0), the
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
from op_helpers import DTYPES, SEEDS, assert_close, fd_settings, gradcheck, random_image, torch_vjp


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture) against torch."""

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_relu_matches_torch(self, kernels, dtype):
        rng = np.random.default_rng(6)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.standard_normal((2, 3, 5, 4))
        x.flat[::7] = 0.0  # the gradient at exactly 0 is 0, as in PyTorch
        x = x.astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)

        y, cache = K.relu_forward(dev(x))
        gx = K.relu_backward(dev(gy), cache)

        y_t, (gx_t,) = torch_vjp(TF.relu, [x], gy)
        assert_close(host(y), y_t, dtype)
        assert_close(host(gx), gx_t, dtype)


class TestNumbaKernels:
    """The numba set against the numpy reference, over seeded random shapes (a parallel-loop race
    or an index slip shows up only for some)."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("seed", SEEDS)
    def test_relu_matches_reference(self, seed, dtype):
        rng = np.random.default_rng(400 + seed)
        x = rng.integers(-2, 3, size=random_image(rng)).astype(dtype)      # exact zeros: gradient 0
        y, cache = numba_kernels.relu_forward(x)
        y_ref, cache_ref = numpy_kernels.relu_forward(x)
        np.testing.assert_array_equal(y, y_ref)
        gy = rng.standard_normal(x.shape).astype(dtype)
        np.testing.assert_array_equal(numba_kernels.relu_backward(gy, cache), numpy_kernels.relu_backward(gy, cache_ref))


class TestFunctional:
    """Through the public API, on every kernel set: float64 finite differences and torch parity."""

    @fd_settings
    @given(shape=st.sampled_from([(2, 3, 4, 5), (3, 7), (2, 5, 3)]), seed=st.integers(0, 99))
    def test_relu_finite_differences(self, kernels, shape, seed):
        rng = np.random.default_rng(seed)
        # magnitudes in [0.1, 1]: nothing within reach of the kink at 0
        x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 1.0, shape)
        gradcheck(kernels, F.relu, [x])

    def test_relu_matches_torch(self, kernels):
        x = np.random.default_rng(4).standard_normal((2, 3, 6, 5))
        x[0, 0, 0, :3] = 0.0  # gradient at exactly 0 is 0 in both
        check_parity(kernels, F.relu, TF.relu, [x])
