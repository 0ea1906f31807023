"""The checks behind ``tinyalex gradcheck``: one case per op, run on a chosen kernel set.

float64: the analytical gradient against central finite differences (tinyalex.gradcheck).
float32: forward and backward against the same op in float64 on the numpy reference, with a
tolerance that grows with the op's reduction length. With torch installed, each case also
runs the same call through torch.nn.functional in float64 and compares.
"""
import dataclasses

import numpy as np

from tinyalex import device as _device
from tinyalex.kernels import use_kernels
from tinyalex import functional as F
from tinyalex.tensor import tensor
from tinyalex.gradcheck import compare_with_finite_differences
from tinyalex.random import counter_uniform, manual_seed, next_seed


@dataclasses.dataclass
class Case:
    op: str
    call: object            # (F, *tensors) -> tensor: the same code for tinyalex and torch
    make_inputs: object     # rng -> list of arrays (floats get gradients)
    reduction_length: int   # the longest sum in the op: scales the float32 tolerance


def _distinct(rng, shape):
    """Values 0.1 apart, shuffled: max-pool has no ties within a finite-difference step."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1


def _dropout(lib, x):
    """Dropout with a fixed mask (seeded), written so torch can replay the very same mask."""
    manual_seed(1234)
    if lib is F:
        return F.dropout(x, 0.5, training=True)
    import torch
    keep = counter_uniform(next_seed(), x.numel()).reshape(x.shape) >= 0.5
    return x * torch.tensor(keep, dtype=x.dtype) * 2.0


CASES = [
    Case("conv2d", lambda lib, x, w, b: lib.conv2d(x, w, b, (2, 1), 1, 1, 2),
         lambda rng: [rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3)),
                      rng.standard_normal(6)], 2 * 3 * 3),
    Case("max_pool2d", lambda lib, x: lib.max_pool2d(x, 3, 2, 1),
         lambda rng: [_distinct(rng, (2, 3, 7, 9))], 1),
    Case("avg_pool2d", lambda lib, x: lib.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                                       count_include_pad=False),
         lambda rng: [rng.standard_normal((2, 3, 8, 5))], 9),
    Case("local_response_norm", lambda lib, x: lib.local_response_norm(x, 4, 0.5, 0.75, 1.0),
         lambda rng: [rng.standard_normal((2, 6, 3, 5))], 4),
    Case("relu", lambda lib, x: lib.relu(x),
         lambda rng: [rng.choice([-1.0, 1.0], (2, 3, 4, 5)) * rng.uniform(0.1, 1.0, (2, 3, 4, 5))], 1),
    Case("mse_loss", lambda lib, x, t: lib.mse_loss(x, t),
         lambda rng: [rng.standard_normal((4, 10)), rng.standard_normal((4, 10))], 40),
    Case("dropout", lambda lib, x: _dropout(lib, x),
         lambda rng: [rng.standard_normal((2, 3, 4, 5))], 1),
    Case("linear", lambda lib, x, w, b: lib.linear(x, w, b),
         lambda rng: [rng.standard_normal((3, 7)), rng.standard_normal((5, 7)), rng.standard_normal(5)], 7),
    Case("cross_entropy", lambda lib, z, t: lib.cross_entropy(z, t),
         lambda rng: [rng.standard_normal((5, 10)) * 20, rng.integers(0, 10, 5)], 10),
]


@dataclasses.dataclass
class Result:
    op: str
    check: str
    max_abs_error: float
    max_rel_error: float
    tolerance: str
    passed: bool


def _to_tensors(arrays, dtype, device, requires_grad=True):
    return [tensor(_device.to_device(a.astype(dtype) if a.dtype.kind == "f" else a, device),
                   requires_grad=requires_grad and a.dtype.kind == "f") for a in arrays]


def _forward_backward(case, arrays, dtype, device, gy=None):
    """Output and input gradients (as float64 NumPy arrays) of one case; a random upstream
    gradient gy unless one is given."""
    inputs = _to_tensors(arrays, dtype, device)
    y = case.call(F, *inputs)
    gy = np.random.default_rng(7).standard_normal(y.shape) if gy is None else gy
    y.backward(_device.to_device(gy.astype(dtype), device))
    grads = [_device.to_device(t.grad.array, "cpu").astype(np.float64) for t in inputs if t.requires_grad]
    return _device.to_device(y.array, "cpu").astype(np.float64), grads, gy


def _errors(pairs):
    abs_err = max(float(np.abs(a - b).max(initial=0.0)) for a, b in pairs)
    rel_err = max(float(np.abs(a - b).max(initial=0.0) / max(np.abs(b).max(initial=0.0), 1e-30))
                  for a, b in pairs)
    return abs_err, rel_err


def check_case(case, kernels, dtype, seed=0):
    """Run one case on kernel set `kernels` ('numpy', 'numba' or 'cupy'); list of Results."""
    device = "cuda" if kernels == "cupy" else "cpu"
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a) for a in case.make_inputs(rng)]
    results = []

    def run(fn):
        if device == "cuda":
            return fn()
        with use_kernels(kernels):
            return fn()

    if dtype == np.float64:
        inputs = _to_tensors(arrays, np.float64, device)
        comparisons = run(lambda: compare_with_finite_differences(lambda *t: case.call(F, *t), inputs))
        atol, rtol = 1e-5, 1e-3
        abs_err = max(abs(c.analytical - c.numerical) for c in comparisons)
        rel_err = abs_err / max(max(abs(c.numerical) for c in comparisons), 1e-30)
        passed = all(abs(c.analytical - c.numerical) <= atol + rtol * abs(c.numerical) for c in comparisons)
        results.append(Result(case.op, "finite differences", abs_err, rel_err,
                              f"{atol:g} + {rtol:g}*|n|", passed))
        y, grads, gy = run(lambda: _forward_backward(case, arrays, np.float64, device))
        torch_rtol = 1e-10
    else:
        y, grads, gy = run(lambda: _forward_backward(case, arrays, np.float32, device))
        with use_kernels("numpy"):
            y64, grads64, _ = _forward_backward(case, arrays, np.float64, "cpu", gy)
        tolerance = 1e-6 * np.sqrt(case.reduction_length) * 10
        abs_err, rel_err = _errors([(y, y64)] + list(zip(grads, grads64)))
        results.append(Result(case.op, "float32 vs float64 reference", abs_err, rel_err,
                              f"rel {tolerance:.1g}", rel_err <= tolerance))
        torch_rtol = tolerance
    torch_result = _check_torch(case, arrays, y, grads, gy, torch_rtol)
    if torch_result is not None:
        results.append(torch_result)
    return results


def _check_torch(case, arrays, y, grads, gy, rtol):
    try:
        import torch
        import torch.nn.functional as TF
    except ImportError:
        return None
    inputs = [torch.tensor(a, dtype=torch.float64 if a.dtype.kind == "f" else None,
                           requires_grad=a.dtype.kind == "f") for a in arrays]
    y_ref = case.call(TF, *inputs)
    y_ref.backward(torch.tensor(gy))
    refs = [y_ref.detach().numpy()] + [t.grad.numpy() for t in inputs if t.requires_grad]
    abs_err, rel_err = _errors(list(zip([y] + grads, refs)))
    return Result(case.op, "torch (float64)", abs_err, rel_err, f"rel {rtol:.1g}", rel_err <= rtol)


def run_checks(kernels, dtype, ops=None):
    """Results for every case (or those named in `ops`)."""
    known = [c.op for c in CASES]
    for op in ops or []:
        if op not in known:
            raise ValueError(f"op: expected one of {known}, got {op!r}")
    dtype = np.dtype(dtype)
    return [r for case in CASES if not ops or case.op in ops for r in check_case(case, kernels, dtype)]


def format_table(results):
    rows = [("op", "check", "max abs err", "max rel err", "tolerance", "result")]
    rows += [(r.op, r.check, f"{r.max_abs_error:.2e}", f"{r.max_rel_error:.2e}", r.tolerance,
              "pass" if r.passed else "FAIL") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
