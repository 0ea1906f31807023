"""mse_loss on every kernel set: the raw kernels against torch, the numba set against the
reference, finite differences through the public API, nn.MSELoss against torch.nn.MSELoss,
and its argument checks."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyalex as ta
import tinyalex.functional as F
import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numpy as numpy_kernels
import tinyalex.nn as nn

from helpers import check_parity, ta_tensors
from op_helpers import DTYPES, assert_matches, f64, random_image


REDUCTIONS = ("mean", "sum", "none")


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture) against torch."""

    @pytest.mark.parametrize("dtype", (np.float64, np.float32))
    @pytest.mark.parametrize("shape", [(4, 10), (2, 3, 5), (), (0, 3)])
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_mse_kernels_match_torch(self, kernels, reduction, shape, dtype):
        rng = np.random.default_rng(3)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x, t = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
        gloss = rng.standard_normal(shape if reduction == "none" else ()).astype(dtype)

        loss, cache = K.mse_loss_forward(dev(x), dev(t), reduction)
        gx = K.mse_loss_backward(dev(gloss), cache)

        xt, tt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, t))
        loss_t = TF.mse_loss(xt, tt, reduction=reduction)
        loss_t.backward(torch.tensor(gloss, dtype=torch.float64))
        loss, gx = host(loss), host(gx)
        assert loss.dtype == dtype and gx.dtype == dtype and loss.shape == tuple(loss_t.shape)
        rtol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=rtol, equal_nan=True)
        np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(-gx, tt.grad.numpy(), rtol=rtol, atol=rtol)


class TestNumbaKernels:
    """The numba set against the numpy reference, over seeds."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("seed", range(4))
    def test_mse_loss_matches_reference(self, seed, reduction, dtype):
        rng = np.random.default_rng(400 + seed)
        shape = random_image(rng)[: 2 + seed % 3]                          # 2-, 3- and 4-D
        x, t = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
        loss, cache = numba_kernels.mse_loss_forward(x, t, reduction)
        loss_ref, cache_ref = numpy_kernels.mse_loss_forward(f64(x), f64(t), reduction)
        assert_matches(np.asarray(loss), np.asarray(loss_ref), dtype)
        gloss = rng.standard_normal(np.shape(loss)).astype(dtype)
        gx = numba_kernels.mse_loss_backward(gloss, cache)
        assert_matches(gx, numpy_kernels.mse_loss_backward(f64(gloss), cache_ref), dtype)
        np.testing.assert_array_equal(numba_kernels.mse_loss_backward(gloss, cache), gx)


class TestFunctional:
    """Through the public API, on every kernel set: finite differences, torch parity, refusals."""

    @settings(max_examples=10, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(shape=st.sampled_from([(5,), (3, 4), (2, 3, 2)]), reduction=st.sampled_from(REDUCTIONS),
           seed=st.integers(0, 99))
    def test_mse_loss_finite_differences(self, kernels, shape, reduction, seed):
        rng = np.random.default_rng(seed)
        inputs = ta_tensors(kernels, [rng.standard_normal(shape), rng.standard_normal(shape)],
                            dtype=np.float64)
        assert ta.gradcheck(lambda x, t: F.mse_loss(x, t, reduction=reduction), inputs)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_mse_loss_and_module_match_torch(self, kernels, reduction):
        rng = np.random.default_rng(4)
        arrays = [rng.standard_normal((6, 10)), rng.standard_normal((6, 10))]
        check_parity(kernels, lambda x, t: F.mse_loss(x, t, reduction=reduction),
                     lambda x, t: TF.mse_loss(x, t, reduction=reduction), arrays)
        check_parity(kernels, lambda x, t: nn.MSELoss(reduction=reduction)(x, t),
                     lambda x, t: torch.nn.MSELoss(reduction=reduction)(x, t), arrays)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_weighted_mse_loss_matches_torch(self, kernels, reduction):
        rng = np.random.default_rng(5)
        arrays = [rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.uniform(0.1, 2, (4, 3))]
        check_parity(kernels, lambda x, t, w: F.mse_loss(x, t, reduction=reduction, weight=w),
                     lambda x, t, w: TF.mse_loss(x, t, reduction=reduction, weight=w), arrays)

    @pytest.mark.parametrize("size_average, reduce", [(None, False), (False, None), (True, True),
                                                      (False, True), (None, True)])
    def test_legacy_reduction_arguments_match_torch(self, size_average, reduce):
        x, t = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
        ours = F.mse_loss(ta.tensor(x), ta.tensor(t), size_average, reduce)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = TF.mse_loss(torch.tensor(x), torch.tensor(t), size_average, reduce)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy())

    def test_mse_loss_refuses_bad_arguments(self):
        x = ta.zeros(2, 3)
        with pytest.raises(ValueError, match=r"mse_loss: target: expected shape \(2, 3\).*got \(3,\)"):
            F.mse_loss(x, ta.zeros(3))
        with pytest.raises(TypeError, match="mse_loss: target: expected dtype float32"):
            F.mse_loss(x, ta.zeros(2, 3, dtype=ta.float64))
        with pytest.raises(TypeError, match="mse_loss: target: expected float32 or float64"):
            F.mse_loss(x, ta.zeros(2, 3, dtype=ta.int64))
        with pytest.raises(ValueError, match="reduction"):
            nn.MSELoss(reduction="avg")(x, x)
        with pytest.raises(ValueError, match="weight: expected shape"):
            F.mse_loss(x, x, weight=ta.ones(3))
