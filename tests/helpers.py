"""Shared test helpers: run one lambda on tinyalex and on torch, and compare."""
import numpy as np
import torch

import tinyalex as ta


def ta_tensors(kernels, arrays, requires_grad=True, dtype=None):
    """tinyalex tensors on the kernel set's device (float arrays require grad)."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        if dtype is not None and a.dtype.kind == "f":
            a = a.astype(dtype)
        out.append(ta.tensor(kernels.to_device(a), requires_grad=requires_grad and a.dtype.kind == "f"))
    return out


def torch_tensors(arrays, dtype=torch.float64):
    return [torch.tensor(np.asarray(a), dtype=dtype if np.asarray(a).dtype.kind == "f" else None,
                         requires_grad=np.asarray(a).dtype.kind == "f") for a in arrays]


def assert_close(actual, expected, rtol, what):
    """Max-abs error relative to the largest magnitude of `expected` (scale-aware for float32)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    err = np.abs(actual - expected).max(initial=0.0) / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"


def check_parity(kernels, ta_fn, torch_fn, arrays, dtype=np.float32, rtol=None, seed=0):
    """Run the same op in tinyalex (dtype, on the kernel set) and torch (float64, the truth),
    forward and backward with a random upstream gradient; compare outputs and gradients."""
    rtol = rtol if rtol is not None else (2e-5 if dtype == np.float32 else 1e-11)
    ours = ta_tensors(kernels, arrays, dtype=dtype)
    ref = torch_tensors(arrays)
    y, y_ref = ta_fn(*ours), torch_fn(*ref)
    assert y.dtype == np.dtype(dtype), f"output dtype {y.dtype} != {np.dtype(dtype)}"
    assert_close(kernels.to_numpy(y.array), y_ref.detach().numpy(), rtol, "forward")
    gy = np.random.default_rng(seed).standard_normal(y_ref.shape)
    y.backward(kernels.to_device(gy.astype(dtype)))
    y_ref.backward(torch.tensor(gy))
    for i, (a, r) in enumerate(zip(ours, ref)):
        if r.requires_grad:
            assert a.grad is not None, f"input {i}: no gradient"
            assert a.grad.dtype == np.dtype(dtype), f"input {i}: grad dtype {a.grad.dtype}"
            assert_close(kernels.to_numpy(a.grad.array), r.grad.numpy(), rtol, f"grad of input {i}")
