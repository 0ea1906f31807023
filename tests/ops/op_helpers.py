"""Helpers shared by the op files of tests/ops/ (`from op_helpers import ...`; tests/ops/ is
on sys.path for its own test files only, so only they import it).

- kernel level (each op's TestKernels): `torch_vjp`, the float64 torch result and gradients,
  and `assert_close`, a kernel's output against it. Float kernels are checked against
  torch.nn.functional in float64, and in float32 against that same float64 result, always
  with random upstream gradients (with gy = 1 the gradient of a softmax-like op is zero and
  the test checks nothing). The inputs are chosen to catch the bugs in docs/pitfalls.md:
  N >= 2, C >= 2, H != W, stride < kernel with padding, groups=2, integer-valued pooling
  inputs with ties, even LRN sizes with a large alpha and k ~ 1, logits of +-1e3.
- numba against the reference (each op's TestNumbaKernels): a parallel-loop race
  (docs/pitfalls.md#prange-races) or an index slip shows up only for some shapes, so every
  test draws its geometry from a seeded generator (`random_image`, `random_window`,
  `random_dilation`) and compares with tinyalex.kernels.numpy (`assert_matches`): float64
  to 1e-10 relative, float32 to 1e-5 of the result's scale (against the float64 reference
  on the same float32 inputs).
- API level (each op's TestFunctional): `gradcheck` in float64 on hypothesis-drawn shapes,
  with `fd_settings`.
"""
import numpy as np
import torch
from hypothesis import HealthCheck, settings

import tinyalex as ta
from helpers import ta_tensors

DTYPES = (np.float64, np.float32)


# --- kernel level: against torch -------------------------------------------------------


def torch_vjp(fn, arrays, gy):
    """y = fn(*arrays) in float64 torch, and the gradient of sum(y * gy) w.r.t. each array."""
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    y = fn(*tensors)
    grads = torch.autograd.grad(y, tensors, torch.tensor(gy, dtype=torch.float64))
    return y.detach().numpy(), [g.numpy() for g in grads]


def assert_close(actual, expected, dtype):
    """Our kernel's output (in `dtype`) against a float64 torch result.

    float32 is compared with float64 to a tolerance relative to the result's scale, since
    a reduction's rounding error grows with the size of its terms, not of its sum.
    """
    assert actual.dtype == dtype, f"expected dtype {np.dtype(dtype)}, got {actual.dtype}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    if dtype == np.float64:
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12 * scale)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


# --- numba against the numpy reference --------------------------------------------------

SEEDS = range(10)


def assert_matches(actual, expected, dtype):
    """`actual` (in dtype) against a float64 reference, relative to the reference's scale."""
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-300)
    error = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0)) / scale
    tolerance = 1e-10 if dtype == np.float64 else 1e-5
    assert error <= tolerance, f"relative error {error:.3g} > {tolerance:g}"


def f64(a):
    return None if a is None else a.astype(np.float64)


def random_window(rng, H, W):
    """kernel, stride and padding pairs: stride often < kernel, padding <= kernel // 2."""
    kernel = (int(rng.integers(1, min(H, 5) + 1)), int(rng.integers(1, min(W, 5) + 1)))
    stride = tuple(int(rng.integers(1, k + 1)) for k in kernel)
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    return kernel, stride, padding


def random_dilation(rng, H, W, kernel, padding):
    """(dh, dw) in 1..3 such that the dilated kernel still fits the padded input."""
    def one(size, k, p):
        most = (size + 2 * p - 1) // (k - 1) if k > 1 else 3
        return int(rng.integers(1, min(3, most) + 1))
    return one(H, kernel[0], padding[0]), one(W, kernel[1], padding[1])


def random_image(rng, channels_multiple=1):
    """(N, C, H, W) with N >= 2, C >= 2 a multiple of channels_multiple, and H != W."""
    N = int(rng.integers(2, 4))
    C = channels_multiple * int(rng.integers(max(1, 2 // channels_multiple), 4))
    H = int(rng.integers(3, 12))
    W = H + int(rng.integers(1, 4)) * int(rng.choice([-1, 1]))
    return N, C, H, max(W, 2)


# --- API level: float64 finite differences ---------------------------------------------

# The kernels fixture is set up once per test and reused across examples on purpose.
fd_settings = settings(max_examples=12, deadline=None, derandomize=True,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])


def gradcheck(kernels, fn, arrays, **kwargs):
    assert ta.gradcheck(fn, ta_tensors(kernels, arrays, dtype=np.float64), **kwargs)
