"""dropout on every kernel set: one counter-based mask on every set (and for every row
slice), the numba set bit-identical to the reference, and the public API."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyalex as ta
import tinyalex.functional as F
import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numpy as numpy_kernels
from tinyalex.random import counter_uniform

from helpers import ta_tensors
from op_helpers import DTYPES, fd_settings, gradcheck


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture)."""

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_dropout_mask_matches_reference_and_scales(self, kernels, dtype):
        rng = np.random.default_rng(8)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        p, seed = 0.3, 2**40 + 12345
        x = rng.uniform(0.5, 1.5, size=(4, 3, 5, 7)).astype(dtype)  # nonzero: y != 0 marks the kept
        gy = rng.standard_normal(x.shape).astype(dtype)

        y, cache = K.dropout_forward(dev(x), p, seed)
        gx = K.dropout_backward(dev(gy), cache)
        y, gx = host(y), host(gx)

        keep = y != 0
        y_ref, _ = numpy_kernels.dropout_forward(x, p, seed)
        np.testing.assert_array_equal(keep, y_ref != 0)  # the same mask on every set
        np.testing.assert_array_equal(keep, counter_uniform(seed, x.size).reshape(x.shape) >= p)
        assert 0 < keep.mean() < 1
        assert y.dtype == dtype and gx.dtype == dtype
        rtol = 1e-12 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(y, x * keep / (1 - p), rtol=rtol)
        np.testing.assert_allclose(gx, gy * keep / (1 - p), rtol=rtol)  # backward reuses the mask

        other_seed = host(K.dropout_forward(dev(x), p, seed + 1)[0]) != 0
        assert (other_seed != keep).any()

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_dropout_row_slices_draw_the_whole_batch_masks(self, kernels, dtype):
        """A data-parallel rank holding rows [r0, r1) of a batch passes offset = r0 * row size and
        gets exactly those rows of the whole batch's mask, in forward and backward."""
        rng = np.random.default_rng(10)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        p, seed = 0.5, 2**50 + 7
        x = rng.uniform(0.5, 1.5, size=(7, 3, 11)).astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)
        y_whole, cache = K.dropout_forward(dev(x), p, seed)
        gx_whole = host(K.dropout_backward(dev(gy), cache))
        row = x[0].size
        for r0, r1 in ((0, 3), (3, 4), (4, 7)):
            y, cache = K.dropout_forward(dev(x[r0:r1]), p, seed, r0 * row)
            np.testing.assert_array_equal(host(y), host(y_whole)[r0:r1])
            np.testing.assert_array_equal(host(K.dropout_backward(dev(gy[r0:r1]), cache)), gx_whole[r0:r1])
        y_shifted = host(K.dropout_forward(dev(x[3:4]), p, seed, 0)[0])   # no offset: row 0's mask
        assert (y_shifted != 0).tolist() != (host(y_whole)[3:4] != 0).tolist()

    @pytest.mark.parametrize("p", [0.2, 0.5])
    def test_dropout_keep_rate(self, kernels, p):
        x = np.ones((10, 10, 40, 100))
        y = kernels.to_numpy(kernels.module.dropout_forward(kernels.to_device(x), p, 99)[0])
        standard_error = np.sqrt(p * (1 - p) / x.size)
        assert abs((y != 0).mean() - (1 - p)) < 4 * standard_error
        assert abs(y.mean() - 1) < 4 * standard_error / (1 - p)  # inverted: E[y] = x

    def test_dropout_p0_is_identity_and_p1_is_zeros(self, kernels):
        rng = np.random.default_rng(9)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.standard_normal((2, 3, 4, 5))
        gy = rng.standard_normal(x.shape)

        y, cache = K.dropout_forward(dev(x), 0.0, 1)
        np.testing.assert_array_equal(host(y), x)
        np.testing.assert_array_equal(host(K.dropout_backward(dev(gy), cache)), gy)

        y, cache = K.dropout_forward(dev(x), 1.0, 1)
        np.testing.assert_array_equal(host(y), np.zeros_like(x))
        np.testing.assert_array_equal(host(K.dropout_backward(dev(gy), cache)), np.zeros_like(gy))


class TestNumbaKernels:
    """The numba set against the numpy reference: the same mask, bit for bit."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 7, 2**63 - 1, 2**64 - 1])
    def test_dropout_mask_is_bit_identical_to_reference(self, seed, dtype):
        rng = np.random.default_rng(seed % 1000)
        x = rng.standard_normal((3, 5, 7, 11)).astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)
        for p in (0.0, 0.1, 0.5, 0.9, 1.0):
            y, cache = numba_kernels.dropout_forward(x, p, seed)
            y_ref, cache_ref = numpy_kernels.dropout_forward(x, p, seed)
            keep, _ = cache
            np.testing.assert_array_equal(keep, cache_ref[0])
            np.testing.assert_array_equal(keep.ravel(), counter_uniform(seed, x.size) >= p)
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_array_equal(numba_kernels.dropout_backward(gy, cache),
                                          numpy_kernels.dropout_backward(gy, cache_ref))


class TestFunctional:
    """Through the public API, on every kernel set."""

    @fd_settings
    @given(p=st.sampled_from([0.1, 0.5, 0.8]), seed=st.integers(0, 99))
    def test_dropout_finite_differences(self, kernels, p, seed):
        x = np.random.default_rng(seed).standard_normal((2, 3, 5, 4))

        def fn(x):
            ta.manual_seed(seed)  # the same mask on every evaluation
            return F.dropout(x, p, training=True)

        gradcheck(kernels, fn, [x])

    def test_dropout_is_inverted_and_reuses_its_mask(self, kernels):
        x = np.random.default_rng(8).standard_normal((64, 128)) + 3.0
        (xt,) = ta_tensors(kernels, [x], dtype=np.float32)
        y = F.dropout(xt, 0.5, training=True)
        y_np = kernels.to_numpy(y.array)
        keep = y_np != 0
        assert abs(keep.mean() - 0.5) < 4 * np.sqrt(0.25 / keep.size)
        np.testing.assert_allclose(y_np[keep], 2 * x.astype(np.float32)[keep], rtol=1e-6)
        gy = np.random.default_rng(9).standard_normal(x.shape).astype(np.float32)
        y.backward(kernels.to_device(gy))
        np.testing.assert_allclose(kernels.to_numpy(xt.grad.array), np.where(keep, 2 * gy, 0), rtol=1e-6)
        assert F.dropout(xt, 0.5, training=False) is xt

    @pytest.mark.parametrize("shape", [(), (0,), (0, 3), (2, 0, 4)])
    def test_dropout_in_training_keeps_shape_and_mask_at_0d_and_empty(self, kernels, shape):
        x = np.full(shape, 1.5)
        (xt,) = ta_tensors(kernels, [x])
        ta.manual_seed(3)
        y = F.dropout(xt, 0.5, training=True)
        assert y.shape == shape
        y_np = kernels.to_numpy(y.array)
        assert np.all((y_np == 0) | (y_np == 3.0))                         # dropped, or scaled by 2
        gy = np.random.default_rng(1).uniform(0.5, 1.5, shape)
        y.backward(kernels.to_device(gy))
        assert xt.grad.shape == shape
        np.testing.assert_array_equal(kernels.to_numpy(xt.grad.array), np.where(y_np != 0, 2 * gy, 0))
