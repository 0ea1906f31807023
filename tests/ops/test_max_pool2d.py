"""max_pool2d on every kernel set: the kernels against torch (ties, ceil mode, indices, -inf
windows), the numba set against the reference, and the public API."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinyalex as ta
import tinyalex.functional as F
import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numpy as numpy_kernels

from helpers import check_parity, ta_tensors
from op_helpers import (DTYPES, SEEDS, assert_close, assert_matches, f64, fd_settings, gradcheck,
                        random_image, random_window, torch_vjp)


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture) against torch."""

    # x values, kernel_size, stride, padding. Small integers tie inside windows; zeros next to
    # the padding catch zero-padding (or a mask), and all-negative inputs catch zero padding.
    POOL_CASES = [
        ((-2, 1), (3, 3), (2, 2), (1, 1)),
        ((-3, 0), (3, 2), (1, 1), (1, 1)),
        ((0, 2), (2, 3), (2, 1), (0, 1)),
    ]

    @pytest.mark.parametrize("ceil_mode", [False, True])
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("value_range, kernel_size, stride, padding", POOL_CASES)
    def test_max_pool2d_matches_torch_with_ties(self, kernels, value_range, kernel_size, stride, padding,
                                                dtype, ceil_mode):
        rng = np.random.default_rng(3)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.integers(*value_range, size=(2, 3, 8, 5)).astype(dtype)

        y, cache = K.max_pool2d_forward(dev(x), kernel_size, stride, padding, ceil_mode)
        gy = rng.standard_normal(host(y).shape).astype(dtype)
        gx = K.max_pool2d_backward(dev(gy), cache)
        indices = host(K.max_pool2d_indices(cache))

        def pool(x):
            return TF.max_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode)

        y_t, (gx_t,) = torch_vjp(pool, [x], gy)
        assert_close(host(y), y_t, dtype)
        assert_close(host(gx), gx_t, dtype)
        np.testing.assert_array_equal(host(K.max_pool2d_backward(dev(gy), cache)), host(gx))
        _, indices_t = TF.max_pool2d(torch.from_numpy(x), kernel_size, stride, padding,
                                    ceil_mode=ceil_mode, return_indices=True)
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(indices, indices_t.numpy())

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", [(2, 2, 9, 55), (1, 1, 3, 9000)])
    def test_max_pool2d_of_wide_rows_matches_torch(self, kernels, shape, dtype):
        """AlexNet's 3/2 pooling on 55-wide rows (kernels/pool.cu stages them in shared
        memory), and on rows too wide for its stages, which read global memory directly."""
        rng = np.random.default_rng(5)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.integers(-3, 4, size=shape).astype(dtype)                  # ties
        y, cache = K.max_pool2d_forward(dev(x), (3, 3), (2, 2), (0, 0))
        gy = rng.standard_normal(host(y).shape).astype(dtype)
        y_t, (gx_t,) = torch_vjp(lambda x: TF.max_pool2d(x, 3, 2), [x], gy)
        assert_close(host(y), y_t, dtype)
        assert_close(host(K.max_pool2d_backward(dev(gy), cache)), gx_t, dtype)
        _, indices_t = TF.max_pool2d(torch.from_numpy(x), 3, 2, return_indices=True)
        np.testing.assert_array_equal(host(K.max_pool2d_indices(cache)), indices_t.numpy())

    # (H, W, kernel_size, stride, padding): ceil mode adds a last window that runs past the
    # bottom/right padding (torch's rule drops one that would start inside the padding).
    CEIL_CASES = [
        (7, 6, (2, 2), (2, 2), (0, 0)),          # 7 rows: a last window of one real row
        (8, 5, (3, 3), (2, 2), (1, 1)),          # 8+2-3 = 7, odd: ceil adds a window
        (6, 9, (3, 2), (3, 2), (1, 1)),          # the rule: (OH-1)*sh >= H + ph drops a window
        (5, 7, (4, 3), (3, 2), (2, 1)),
    ]

    @pytest.mark.parametrize("H, W, kernel_size, stride, padding", CEIL_CASES)
    def test_max_pool2d_ceil_mode_sizes_and_indices_match_torch(self, kernels, H, W, kernel_size, stride,
                                                                padding):
        rng = np.random.default_rng(13)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.integers(-2, 2, size=(2, 3, H, W)).astype(np.float64)      # ties
        y, cache = K.max_pool2d_forward(dev(x), kernel_size, stride, padding, True)
        gy = rng.standard_normal(host(y).shape)
        y_t, (gx_t,) = torch_vjp(lambda x: TF.max_pool2d(x, kernel_size, stride, padding,
                                                        ceil_mode=True), [x], gy)
        assert host(y).shape == y_t.shape
        assert_close(host(y), y_t, np.float64)
        assert_close(host(K.max_pool2d_backward(dev(gy), cache)), gx_t, np.float64)
        _, indices_t = TF.max_pool2d(torch.from_numpy(x), kernel_size, stride, padding,
                                    ceil_mode=True, return_indices=True)
        np.testing.assert_array_equal(host(K.max_pool2d_indices(cache)), indices_t.numpy())

    @pytest.mark.parametrize("ceil_mode", [False, True])
    def test_max_pool2d_never_routes_to_padding_in_windows_of_minus_inf(self, kernels, ceil_mode):
        """A window whose real pixels are all -inf ties with the -inf padding: torch's index (and
        gradient) goes to the first real pixel, on every set."""
        rng = np.random.default_rng(14)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.standard_normal((2, 2, 7, 6))
        x[:, :, :3, :] = -np.inf                                           # whole top windows
        x[1, 1] = -np.inf                                                  # a whole plane
        x[0, 1, :, :2] = -np.inf                                           # left windows
        y, cache = K.max_pool2d_forward(dev(x), (3, 3), (2, 2), (1, 1), ceil_mode)
        gy = rng.standard_normal(host(y).shape)
        y_t, (gx_t,) = torch_vjp(lambda x: TF.max_pool2d(x, 3, 2, 1, ceil_mode=ceil_mode), [x], gy)
        np.testing.assert_array_equal(host(y), y_t)
        np.testing.assert_allclose(host(K.max_pool2d_backward(dev(gy), cache)), gx_t, rtol=1e-12)
        _, indices_t = TF.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=ceil_mode,
                                    return_indices=True)
        np.testing.assert_array_equal(host(K.max_pool2d_indices(cache)), indices_t.numpy())


class TestNumbaKernels:
    """The numba set against the numpy reference, over seeded random shapes (a parallel-loop race
    or an index slip shows up only for some)."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("seed", SEEDS)
    def test_max_pool2d_matches_reference_with_ties(self, seed, dtype):
        rng = np.random.default_rng(200 + seed)
        shape = random_image(rng)
        window = random_window(rng, *shape[2:])
        x = rng.integers(-3, 2, size=shape).astype(dtype)                   # many ties, all-negative windows
        x[x == -3] = -np.inf                                               # ties with the padding
        ceil_mode = bool(seed % 2)

        y, cache = numba_kernels.max_pool2d_forward(x, *window, ceil_mode)
        y_ref, cache_ref = numpy_kernels.max_pool2d_forward(x, *window, ceil_mode)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(numba_kernels.max_pool2d_indices(cache), numpy_kernels.max_pool2d_indices(cache_ref))

        gy = rng.standard_normal(y.shape).astype(dtype)
        gx = numba_kernels.max_pool2d_backward(gy, cache)
        assert_matches(gx, numpy_kernels.max_pool2d_backward(f64(gy), cache_ref), dtype)  # same argmax
        np.testing.assert_array_equal(numba_kernels.max_pool2d_backward(gy, cache), gx)

    def test_max_pool2d_propagates_nan_like_torch(self):
        """A NaN wins its window (PyTorch's rule; the kernel redoes such windows off its fast path)."""
        x = np.random.default_rng(11).integers(-2, 2, size=(2, 3, 9, 8)).astype(np.float64)
        x.flat[::7] = np.nan                                               # some windows hold two NaNs
        y, (argmax, *_) = numba_kernels.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1))
        y_t, argmax_t = torch.ops.aten.max_pool2d_with_indices(torch.from_numpy(x), (3, 3), (2, 2), (1, 1))
        np.testing.assert_array_equal(y, y_t.numpy())                      # NaNs compare equal here
        np.testing.assert_array_equal(argmax, argmax_t.numpy())


class TestFunctional:
    """Through the public API, on every kernel set: float64 finite differences and torch parity."""

    @fd_settings
    @given(n=st.integers(2, 3), c=st.integers(2, 3), h=st.integers(4, 8), w=st.integers(4, 8),
           kernel=st.integers(2, 3), stride=st.integers(1, 3), padding=st.integers(0, 1),
           ceil_mode=st.booleans(), seed=st.integers(0, 99))
    def test_max_pool2d_finite_differences(self, kernels, n, c, h, w, kernel, stride, padding, ceil_mode,
                                           seed):
        if h == w:
            w += 1
        rng = np.random.default_rng(seed)
        # distinct values 0.1 apart: no ties within the finite-difference step
        x = rng.permutation(n * c * h * w).reshape(n, c, h, w) * 0.1
        gradcheck(kernels, lambda x: F.max_pool2d(x, kernel, stride, min(padding, kernel // 2),
                                                  ceil_mode=ceil_mode), [x])

    @pytest.mark.parametrize("ceil_mode", [False, True])
    @pytest.mark.parametrize("shape, kernel, stride, padding", [
        ((2, 3, 9, 7), 3, 2, 1),          # overlapping 3/2 pooling with padding
        ((2, 2, 8, 11), 2, 2, 0),         # ceil mode: a last column window of one real pixel
        ((2, 3, 13, 11), 3, 1, 0),        # stride 1: every pixel in up to 9 windows
        ((2, 2, 10, 7), (3, 2), (3, 2), (1, 1)),   # ceil mode's rule drops a window in the padding
    ])
    def test_max_pool2d_matches_torch_with_ties(self, kernels, shape, kernel, stride, padding, ceil_mode):
        # small integers: many ties; the first maximum in row-major order takes the gradient
        x = np.random.default_rng(2).integers(-2, 3, shape).astype(np.float64)
        check_parity(kernels, lambda x: F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode),
                     lambda x: TF.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode), [x])

    @pytest.mark.parametrize("unbatched", [False, True])
    @pytest.mark.parametrize("ceil_mode", [False, True])
    def test_max_pool2d_return_indices_match_torch(self, kernels, ceil_mode, unbatched):
        shape = (3, 9, 8) if unbatched else (2, 3, 9, 8)
        x = np.random.default_rng(15).integers(-2, 3, shape).astype(np.float64)
        x[..., :2, :] = -np.inf                                            # windows of -inf and padding
        (ours,) = ta_tensors(kernels, [x])
        y, indices = F.max_pool2d(ours, 3, 2, 1, ceil_mode=ceil_mode, return_indices=True)
        y_t, indices_t = TF.max_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=ceil_mode,
                                       return_indices=True)
        assert indices.dtype == np.int64 and not indices.requires_grad
        assert indices.shape == tuple(indices_t.shape) and y.shape == tuple(y_t.shape)
        np.testing.assert_array_equal(kernels.to_numpy(indices.array), indices_t.numpy())
        np.testing.assert_array_equal(kernels.to_numpy(y.array), y_t.numpy())
        layer = ta.nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=ceil_mode)
        np.testing.assert_array_equal(kernels.to_numpy(layer(ours)[1].array), indices_t.numpy())

    def test_max_pool2d_routes_nan_windows_like_torch(self, kernels):
        x = np.random.default_rng(11).standard_normal((2, 2, 5, 6))
        x[0, 0, 0, 0] = x[0, 0, 1, 1] = x[1, 1, 3, 4] = np.nan   # two NaNs share a window
        gy = np.random.default_rng(12).standard_normal((2, 2, 2, 3))
        (ours,) = ta_tensors(kernels, [x])
        y = F.max_pool2d(ours, 2)
        y.backward(kernels.to_device(gy))
        ref = torch.tensor(x, requires_grad=True)
        y_ref = TF.max_pool2d(ref, 2)
        y_ref.backward(torch.tensor(gy))
        np.testing.assert_array_equal(np.isnan(kernels.to_numpy(y.array)), np.isnan(y_ref.detach().numpy()))
        np.testing.assert_allclose(kernels.to_numpy(ours.grad.array), ref.grad.numpy(), rtol=1e-12)
