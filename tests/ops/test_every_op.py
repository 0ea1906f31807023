"""Checks that span every op at once, on every kernel set: N = 0 and shape () against
torch's shapes and values, 0-d and empty arrays through the kernels, and a bitwise
deterministic backward through a stack of ops."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tinyalex as ta
import tinyalex.functional as F

from helpers import ta_tensors


class _Lib:
    """The same names on both libraries: lib.F (functional), lib.nn (layers)."""

    def __init__(self, functional, nn):
        self.F, self.nn = functional, nn


TINYALEX, TORCH = _Lib(F, ta.nn), _Lib(TF, torch.nn)


def _empty_target(n):
    return np.zeros(n, dtype=np.int64)


# name -> (call(lib, *tensors), input arrays); every input float array gets a gradient.
EDGE_CASES = {
    "conv2d N=0": (lambda lib, x, w, b: lib.F.conv2d(x, w, b, 1, 1),
                   [np.zeros((0, 3, 5, 6)), np.ones((4, 3, 3, 3)), np.ones(4)]),
    "conv2d N=0 dilated same": (lambda lib, x, w: lib.F.conv2d(x, w, padding="same", dilation=2),
                                [np.zeros((0, 2, 5, 6)), np.ones((4, 2, 2, 3))]),
    "max_pool2d N=0": (lambda lib, x: lib.F.max_pool2d(x, 3, 2, 1), [np.zeros((0, 3, 7, 6))]),
    "max_pool2d N=0 ceil": (lambda lib, x: lib.F.max_pool2d(x, 2, 2, ceil_mode=True),
                            [np.zeros((0, 3, 7, 6))]),
    "avg_pool2d N=0 ceil": (lambda lib, x: lib.F.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                                             count_include_pad=False),
                            [np.zeros((0, 3, 7, 6))]),
    "local_response_norm N=0": (lambda lib, x: lib.F.local_response_norm(x, 3, 0.5),
                                [np.zeros((0, 4, 3, 5))]),
    "relu N=0": (lambda lib, x: lib.F.relu(x), [np.zeros((0, 3))]),
    "relu ()": (lambda lib, x: lib.F.relu(x), [np.array(1.5)]),
    "relu () negative": (lambda lib, x: lib.F.relu(x), [np.array(-0.5)]),
    "dropout eval ()": (lambda lib, x: lib.F.dropout(x, 0.5, training=False), [np.array(1.5)]),
    "linear N=0": (lambda lib, x, w, b: lib.F.linear(x, w, b),
                   [np.zeros((0, 7)), np.ones((5, 7)), np.ones(5)]),
    "linear (0,) @ (8, 0)": (lambda lib, x, w: lib.F.linear(x, w), [np.zeros(0), np.ones((8, 0))]),
    "linear 3-D N=0": (lambda lib, x, w: lib.F.linear(x, w), [np.zeros((2, 0, 7)), np.ones((5, 7))]),
    "cross_entropy N=0 mean": (lambda lib, z, t: lib.F.cross_entropy(z, t),
                               [np.zeros((0, 4)), _empty_target(0)]),
    "cross_entropy N=0 sum": (lambda lib, z, t: lib.F.cross_entropy(z, t, reduction="sum"),
                              [np.zeros((0, 4)), _empty_target(0)]),
    "cross_entropy N=0 none": (lambda lib, z, t: lib.F.cross_entropy(z, t, reduction="none"),
                               [np.zeros((0, 4)), _empty_target(0)]),
    "cross_entropy unbatched ()": (lambda lib, z, t: lib.F.cross_entropy(z, t),
                                   [np.array([0.5, -1.0, 2.0]), np.array(2)]),
    "cross_entropy unbatched () none": (lambda lib, z, t: lib.F.cross_entropy(z, t, reduction="none"),
                                        [np.array([0.5, -1.0, 2.0]), np.array(0)]),
    "cross_entropy N=0 probabilities": (lambda lib, z: lib.F.cross_entropy(z, z.detach() * 0.0),
                                        [np.zeros((0, 4))]),
    "Flatten N=0": (lambda lib, x: lib.nn.Flatten()(x), [np.zeros((0, 3, 2))]),
    "sum then relu": (lambda lib, x: x.relu().sum().relu(), [np.array([1.0, -2.0, 3.0])]),
    "mean then relu": (lambda lib, x: x.relu().mean().relu(), [np.array([[1.0, -2.0], [3.0, 0.5]])]),
    "mean of N=0": (lambda lib, x: x.mean(), [np.zeros((0, 3))]),
    "sum of N=0": (lambda lib, x: x.sum(), [np.zeros((0, 3))]),
    "sum of ()": (lambda lib, x: (x * 2.0).sum().relu(), [np.array(-1.5)]),
    "elementwise of () then relu": (lambda lib, x: (x.sum() * 2.0).relu(), [np.array([0.5, 1.25])]),
}


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture)."""

    @pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2)])
    def test_elementwise_kernels_keep_0d_and_empty_shapes(self, kernels, shape):
        """relu and dropout on a 0-d or empty array return that shape (not (1,)), forward and back."""
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x, gy = np.full(shape, 1.5), np.full(shape, -0.5)
        for forward, backward, args in ((K.relu_forward, K.relu_backward, ()),
                                        (K.dropout_forward, K.dropout_backward, (0.5, 7))):
            y, cache = forward(dev(x), *args)
            gx = backward(dev(gy), cache)
            assert host(y).shape == shape and host(gx).shape == shape
            assert host(y).dtype == np.float64 and host(gx).dtype == np.float64

    @pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "avg_pool2d", "lrn"])
    def test_spatial_kernels_accept_an_empty_batch(self, kernels, op):
        """N = 0: outputs and gradients of torch's shapes, zero weight gradients."""
        rng = np.random.default_rng(19)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        x = np.zeros((0, 4, 7, 6))
        if op == "conv2d":
            weight, bias = rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)
            y, cache = K.conv2d_forward(dev(x), dev(weight), dev(bias), (2, 1), (1, 1), 2, (2, 1))
            gx, gW, gb = K.conv2d_backward(dev(np.zeros(host(y).shape)), cache)
            y_t = TF.conv2d(torch.from_numpy(x), torch.from_numpy(weight), None, (2, 1), 1, (2, 1), 2)
            np.testing.assert_array_equal(host(gW), np.zeros_like(weight))
            np.testing.assert_array_equal(host(gb), np.zeros(6))
        elif op == "max_pool2d":
            y, cache = K.max_pool2d_forward(dev(x), (3, 3), (2, 2), (1, 1), True)
            gx = K.max_pool2d_backward(dev(np.zeros(host(y).shape)), cache)
            assert host(K.max_pool2d_indices(cache)).shape == host(y).shape
            y_t = TF.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True)
        elif op == "avg_pool2d":
            y, cache = K.avg_pool2d_forward(dev(x), (3, 3), (2, 2), (1, 1), True, False)
            gx = K.avg_pool2d_backward(dev(np.zeros(host(y).shape)), cache)
            y_t = TF.avg_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True, count_include_pad=False)
        else:
            y, cache = K.lrn_forward(dev(x), 3, 0.5, 0.75, 1.0)
            gx = K.lrn_backward(dev(np.zeros(x.shape)), cache)
            y_t = TF.local_response_norm(torch.from_numpy(x), 3, 0.5, 0.75, 1.0)
        assert host(y).shape == tuple(y_t.shape) and host(gx).shape == x.shape


class TestFunctional:
    """Through the public API, on every kernel set, against torch."""

    @pytest.mark.parametrize("dtype", [np.float64, np.float32])
    @pytest.mark.parametrize("name", list(EDGE_CASES))
    def test_empty_batch_and_0d_match_torch(self, kernels, name, dtype):
        """Output shape, dtype and values (NaN where torch gives NaN), and every input gradient
        (shape and values) for a random upstream gradient, against torch."""
        call, arrays = EDGE_CASES[name]
        ours = ta_tensors(kernels, arrays, dtype=dtype)
        torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
        theirs = [torch.tensor(a, dtype=torch_dtype if a.dtype.kind == "f" else None,
                               requires_grad=a.dtype.kind == "f") for a in arrays]
        y, y_t = call(TINYALEX, *ours), call(TORCH, *theirs)
        assert y.shape == tuple(y_t.shape), f"shape {y.shape}, torch {tuple(y_t.shape)}"
        assert y.dtype == np.dtype(dtype)
        y_np = kernels.to_numpy(y.array)
        assert isinstance(y.array, type(kernels.to_device(np.zeros(1)))), "a scalar, not an array"
        np.testing.assert_allclose(y_np, y_t.detach().numpy(), rtol=1e-6, atol=1e-7, equal_nan=True)

        gy = np.random.default_rng(0).uniform(0.5, 1.5, y.shape)         # never all ones
        y.backward(kernels.to_device(gy.astype(dtype)))
        y_t.backward(torch.tensor(gy, dtype=torch_dtype))
        for i, (a, t) in enumerate(zip(ours, theirs)):
            if t.requires_grad:
                assert a.grad is not None and a.grad.shape == tuple(t.grad.shape), f"grad {i} shape"
                np.testing.assert_allclose(kernels.to_numpy(a.grad.array), t.grad.numpy(), rtol=1e-6,
                                           atol=1e-7, equal_nan=True, err_msg=f"grad of input {i}")

    def test_backward_is_bitwise_deterministic(self, kernels):
        rng = np.random.default_rng(10)
        x, w = rng.standard_normal((2, 4, 11, 9)), rng.standard_normal((6, 4, 3, 3))
        gy = None
        grads = []
        for _ in range(2):
            xt, wt = ta_tensors(kernels, [x, w], dtype=np.float32)
            y = F.max_pool2d(F.local_response_norm(F.relu(F.conv2d(xt, wt, stride=1, padding=1)), 5, 0.5), 3, 1)
            y = F.avg_pool2d(y, 3, 1, 1)                                   # overlapping: a gather on every set
            gy = rng.standard_normal(y.shape).astype(np.float32) if gy is None else gy
            y.backward(kernels.to_device(gy))
            grads.append((kernels.to_numpy(xt.grad.array), kernels.to_numpy(wt.grad.array)))
        for a, b in zip(*grads):
            assert np.array_equal(a, b)
