"""avg_pool2d (and AdaptiveAvgPool2d) on every kernel set: the kernels against torch with
every divisor rule, the numba set against the reference, and the public API."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinyalex as ta
import tinyalex.functional as F
from tinyalex.errors import ValueRuntimeError
import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numpy as numpy_kernels

from helpers import check_parity
from op_helpers import (DTYPES, SEEDS, assert_close, assert_matches, f64, fd_settings, gradcheck,
                        random_image, random_window, torch_vjp)


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture) against torch."""

    # (H, W, kernel_size, stride, padding, ceil_mode): overlapping windows with padding, a
    # non-square kernel, ceil mode's last window past the padding (torch counts only the
    # padded input it covers), and non-overlapping blocks (AdaptiveAvgPool2d's case).
    AVG_POOL_CASES = [
        (8, 5, (3, 3), (2, 2), (1, 1), False),
        (8, 5, (3, 3), (2, 2), (1, 1), True),
        (7, 6, (3, 2), (1, 2), (1, 1), True),
        (6, 9, (3, 2), (3, 2), (1, 1), True),
        (6, 9, (2, 3), (2, 3), (0, 0), False),
    ]

    # (count_include_pad, divisor_override)
    AVG_POOL_DIVISORS = [(True, None), (False, None), (True, 5), (False, -3)]

    @pytest.mark.parametrize("count_include_pad, divisor_override", AVG_POOL_DIVISORS)
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("H, W, kernel_size, stride, padding, ceil_mode", AVG_POOL_CASES)
    def test_avg_pool2d_matches_torch(self, kernels, H, W, kernel_size, stride, padding, ceil_mode, dtype,
                                      count_include_pad, divisor_override):
        rng = np.random.default_rng(17)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.standard_normal((2, 3, H, W)).astype(dtype)
        options = (ceil_mode, count_include_pad, divisor_override)
        y, cache = K.avg_pool2d_forward(dev(x), kernel_size, stride, padding, *options)
        gy = rng.standard_normal(host(y).shape).astype(dtype)
        gx = K.avg_pool2d_backward(dev(gy), cache)

        def pool(x):
            return TF.avg_pool2d(x, kernel_size, stride, padding, *options)

        y_t, (gx_t,) = torch_vjp(pool, [x], gy)
        assert_close(host(y), y_t, dtype)
        assert_close(host(gx), gx_t, dtype)
        np.testing.assert_array_equal(host(K.avg_pool2d_backward(dev(gy), cache)), host(gx))


    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", [(2, 2, 9, 55), (1, 1, 3, 9000)])
    def test_avg_pool2d_of_wide_rows_matches_torch(self, kernels, shape, dtype):
        """55-wide rows, which kernels/pool.cu stages in shared memory, and rows too wide for
        its stages, which read global memory directly."""
        rng = np.random.default_rng(5)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = rng.standard_normal(shape).astype(dtype)
        y, cache = K.avg_pool2d_forward(dev(x), (3, 3), (2, 2), (1, 1), False, False, None)
        gy = rng.standard_normal(host(y).shape).astype(dtype)
        y_t, (gx_t,) = torch_vjp(lambda x: TF.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [x], gy)
        assert_close(host(y), y_t, dtype)
        assert_close(host(K.avg_pool2d_backward(dev(gy), cache)), gx_t, dtype)


class TestNumbaKernels:
    """The numba set against the numpy reference, over seeded random shapes (a parallel-loop race
    or an index slip shows up only for some)."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("seed", SEEDS)
    def test_avg_pool2d_matches_reference(self, seed, dtype):
        rng = np.random.default_rng(300 + seed)
        shape = random_image(rng)
        window = random_window(rng, *shape[2:])
        options = (bool(seed % 2), bool(seed % 3), [None, 3][seed % 4 == 0])  # ceil, count_include_pad, divisor
        x = rng.standard_normal(shape).astype(dtype)

        y, cache = numba_kernels.avg_pool2d_forward(x, *window, *options)
        y_ref, cache_ref = numpy_kernels.avg_pool2d_forward(f64(x), *window, *options)
        assert_matches(y, y_ref, dtype)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx = numba_kernels.avg_pool2d_backward(gy, cache)
        assert_matches(gx, numpy_kernels.avg_pool2d_backward(f64(gy), cache_ref), dtype)
        np.testing.assert_array_equal(numba_kernels.avg_pool2d_backward(gy, cache), gx)


class TestFunctional:
    """Through the public API, on every kernel set: float64 finite differences and torch parity."""

    @fd_settings
    @given(n=st.integers(2, 3), c=st.integers(2, 3), h=st.integers(4, 8), w=st.integers(4, 8),
           kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)), stride=st.integers(1, 3),
           padding=st.integers(0, 1), ceil_mode=st.booleans(), count_include_pad=st.booleans(),
           divisor_override=st.sampled_from([None, 4]), seed=st.integers(0, 99))
    def test_avg_pool2d_finite_differences(self, kernels, n, c, h, w, kernel, stride, padding, ceil_mode,
                                           count_include_pad, divisor_override, seed):
        if h == w:
            w += 1
        padding = (min(padding, kernel[0] // 2), min(padding, kernel[1] // 2))
        x = np.random.default_rng(seed).standard_normal((n, c, h, w))
        gradcheck(kernels, lambda x: F.avg_pool2d(x, kernel, stride, padding, ceil_mode,
                                                  count_include_pad, divisor_override), [x])

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("options", [dict(), dict(ceil_mode=True),
                                         dict(ceil_mode=True, count_include_pad=False),
                                         dict(divisor_override=7)])
    @pytest.mark.parametrize("shape, kernel, stride, padding", [
        ((2, 3, 9, 7), 3, 2, 1),                  # overlapping 3/2 windows with padding
        ((2, 2, 10, 7), (3, 2), (3, 2), (1, 1)),  # non-square; ceil mode's last window past the padding
        ((2, 2, 12, 18), (2, 3), None, 0),        # stride defaults to the kernel: blocks
    ])
    def test_avg_pool2d_matches_torch(self, kernels, shape, kernel, stride, padding, options, dtype):
        x = np.random.default_rng(4).standard_normal(shape)
        check_parity(kernels, lambda x: F.avg_pool2d(x, kernel, stride, padding, **options),
                     lambda x: TF.avg_pool2d(x, kernel, stride, padding, **options), [x], dtype=dtype)

    @pytest.mark.parametrize("output_size", [(6, 6), 3, (None, 2), (4, 9)])
    def test_adaptive_avg_pool2d_layer_matches_torch(self, kernels, output_size):
        """torch's adaptive windows [floor(i*H/OH), ceil((i+1)*H/OH)) are avg_pool2d's blocks
        when the sizes divide; unbatched input as well."""
        x = np.random.default_rng(5).standard_normal((2, 3, 12, 18))
        check_parity(kernels, lambda x: ta.nn.AdaptiveAvgPool2d(output_size)(x),
                     lambda x: torch.nn.AdaptiveAvgPool2d(output_size)(x), [x])
        check_parity(kernels, lambda x: ta.nn.AdaptiveAvgPool2d(output_size)(x),
                     lambda x: torch.nn.AdaptiveAvgPool2d(output_size)(x), [x[0]])

    def test_avg_pool2d_layer_and_refusals(self):
        x = ta.tensor(np.random.default_rng(6).standard_normal((2, 3, 8, 6)))
        layer = ta.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        expected = TF.avg_pool2d(torch.tensor(x.numpy()), 3, 2, 1, True, False)
        np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), rtol=1e-12)
        with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size: only sizes that divide"):
            ta.nn.AdaptiveAvgPool2d(5)(x)
        with pytest.raises(ValueError, match="avg_pool2d: divisor_override: expected None or a nonzero int"):
            F.avg_pool2d(x, 2, divisor_override=0)
        with pytest.raises(ValueError, match="avg_pool2d: padding: expected at most half the kernel"):
            F.avg_pool2d(x, 2, padding=2)
        with pytest.raises(ValueRuntimeError, match="avg_pool2d: kernel_size: .* got kernel_size 9"):
            F.avg_pool2d(x, 9)
