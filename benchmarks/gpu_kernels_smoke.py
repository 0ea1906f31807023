"""Launch every kernel of the cupy set once, at small shapes, and check it against numpy.

The driver the GPU check (benchmarks/gpu_check.py) runs under compute-sanitizer's
memcheck, racecheck, initcheck and synccheck: every function of
tinyalex.kernels.contract.KERNEL_API plus the fused SGD step (tinyalex.kernels.cupy.sgd_update), in
float32 and float64, forward and backward. Shapes are small, so a run under a sanitizer
takes seconds, and chosen to reach the kernels' edge cases: N >= 2, odd channel counts,
H != W, stride < kernel with padding, groups=2, pooling ties, an even LRN size, element
counts that are not a multiple of the block size (the tail of a grid-stride loop), and
cross-entropy rows of 37 and of 1000 classes (one warp, and the multi-warp reduction
through shared memory).

Every result is compared with the numpy reference set (tinyalex.kernels.numpy) run on the
same inputs, and sgd_update with the update rule written out in NumPy below, so the run
also says whether the kernels computed the right thing, not only whether they touched
the right memory.

On the cupy set, CuPy's memory pool is switched off (cupy.cuda.set_allocator(None)):
each array then gets its own cudaMalloc, so memcheck sees the real bounds of every
buffer instead of one large pool block, and initcheck sees buffers that were never
written.

    PYTHONPATH=. python benchmarks/gpu_kernels_smoke.py                  # the cupy set (GPU)
    PYTHONPATH=. python benchmarks/gpu_kernels_smoke.py --kernels numpy  # the driver itself, on the CPU

The last line is "SMOKE OK: ..." or "SMOKE FAILED: ..."; the exit status is 0 or 1.
"""
import argparse
import contextlib
import dataclasses
import sys

import numpy as np

from tinyalex import device as _device
from tinyalex.kernels.contract import KERNEL_API
from tinyalex.kernels import load_kernel_set

#: What the smoke run must call: the kernel-set contract plus the fused SGD step.
SMOKE_FUNCTIONS = tuple(KERNEL_API) + ("sgd_update",)
DTYPES = (np.float32, np.float64)
#: Relative to the reference result's largest magnitude (scale-aware for float32 sums).
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


# --- the kernel set under test, with a record of what was called --------------------------

class RecordingKernels:
    """A kernel set (module) whose functions record their names when called, so the run can
    prove it reached every function of the contract instead of assuming it did."""

    def __init__(self, module):
        self._module = module
        self.called = set()

    def __getattr__(self, name):
        function = getattr(self._module, name)

        def call(*args, **kwargs):
            self.called.add(name)
            return function(*args, **kwargs)
        return call


@dataclasses.dataclass
class Placement:
    """Moves arrays to the set's device and back (numpy on the CPU, CuPy on the GPU)."""
    device: str

    def put(self, array):
        return _device.to_device(np.array(array, order="C"), self.device)   # keeps 0-d arrays 0-d

    def get(self, array):
        return None if array is None else np.asarray(_device.to_device(array, "cpu"))


# --- the cases: each runs forward and backward and returns the arrays to compare ----------

def im2col_case(K, at, dtype, rng):
    geometry = ((3, 2), (2, 1), (1, 0))                     # kernel, stride, padding
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    cols = K.im2col(at.put(x), *geometry)
    upstream = rng.standard_normal(at.get(cols).shape).astype(dtype)
    return {"cols": at.get(cols), "col2im": at.get(K.col2im(at.put(upstream), x.shape, *geometry))}


def conv_case(K, at, dtype, rng):
    """groups=2 with a bias and every gradient; then no bias and no input gradient."""
    out = {}
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y, cache = K.conv2d_forward(at.put(x), at.put(w), at.put(b), (2, 1), (1, 1), 2)
    gy = rng.standard_normal(at.get(y).shape).astype(dtype)
    gx, gw, gb = K.conv2d_backward(at.put(gy), cache, True)
    out.update(y=at.get(y), gx=at.get(gx), gW=at.get(gw), gb=at.get(gb))
    x = rng.standard_normal((3, 3, 9, 8)).astype(dtype)
    w = rng.standard_normal((5, 3, 5, 3)).astype(dtype)
    y, cache = K.conv2d_forward(at.put(x), at.put(w), None, (2, 2), (2, 1), 1)
    gy = rng.standard_normal(at.get(y).shape).astype(dtype)
    gx, gw, gb = K.conv2d_backward(at.put(gy), cache, False)
    assert gx is None and gb is None, "conv2d_backward: expected no gx (need_gx=False) and no gb (no bias)"
    out.update(y_nobias=at.get(y), gW_nobias=at.get(gw))
    return out


def pool_case(K, at, dtype, rng):
    """Integer-valued inputs, so windows tie and the first-maximum rule is exercised; floor
    and ceil mode, with the saved indices (return_indices)."""
    x = rng.integers(-2, 3, (2, 3, 7, 6)).astype(dtype)
    out = {}
    for ceil_mode in (False, True):
        y, cache = K.max_pool2d_forward(at.put(x), (3, 3), (2, 2), (1, 1), ceil_mode)
        gy = rng.standard_normal(at.get(y).shape).astype(dtype)
        out[f"y ceil={ceil_mode}"] = at.get(y)
        out[f"indices ceil={ceil_mode}"] = at.get(K.max_pool2d_indices(cache))
        out[f"gx ceil={ceil_mode}"] = at.get(K.max_pool2d_backward(at.put(gy), cache))
    return out


def avg_pool_case(K, at, dtype, rng):
    """Overlapping windows with padding, in ceil mode, with each divisor rule."""
    x = rng.standard_normal((2, 3, 8, 5)).astype(dtype)
    out = {}
    for count_include_pad, divisor_override in ((True, None), (False, None), (True, 5)):
        label = f"include_pad={count_include_pad} divisor={divisor_override}"
        y, cache = K.avg_pool2d_forward(at.put(x), (3, 3), (2, 2), (1, 1), True,
                                        count_include_pad, divisor_override)
        gy = rng.standard_normal(at.get(y).shape).astype(dtype)
        out[f"y {label}"] = at.get(y)
        out[f"gx {label}"] = at.get(K.avg_pool2d_backward(at.put(gy), cache))
    return out


def lrn_case(K, at, dtype, rng):
    x = rng.standard_normal((2, 5, 4, 3)).astype(dtype)
    y, cache = K.lrn_forward(at.put(x), 4, 0.5, 0.75, 1.0)
    gy = rng.standard_normal(x.shape).astype(dtype)
    return {"y": at.get(y), "gx": at.get(K.lrn_backward(at.put(gy), cache))}


def relu_case(K, at, dtype, rng):
    x = rng.standard_normal((3, 5, 67)).astype(dtype)      # 1005 elements: 4 blocks, the last partial
    y, cache = K.relu_forward(at.put(x))
    gy = rng.standard_normal(x.shape).astype(dtype)
    return {"y": at.get(y), "gx": at.get(K.relu_backward(at.put(gy), cache))}


def dropout_case(K, at, dtype, rng):
    x = rng.standard_normal((3, 5, 67)).astype(dtype)
    y, cache = K.dropout_forward(at.put(x), 0.3, 7)
    gy = rng.standard_normal(x.shape).astype(dtype)
    return {"y": at.get(y), "gx": at.get(K.dropout_backward(at.put(gy), cache))}


def cross_entropy_case(K, at, dtype, rng):
    """Every reduction; 37 classes (one warp per row) and 1000 (AlexNet's, several warps)."""
    out = {}
    for classes in (37, 1000):
        logits = (rng.standard_normal((5, classes)) * 30).astype(dtype)
        target = rng.integers(0, classes, 5).astype(np.int64)
        for reduction in ("mean", "sum", "none"):
            loss, cache = K.cross_entropy_forward(at.put(logits), at.put(target), reduction)
            gloss = rng.standard_normal(at.get(loss).shape).astype(dtype)
            glogits = K.cross_entropy_backward(at.put(gloss), cache)
            out[f"loss {classes} {reduction}"] = at.get(loss)
            out[f"glogits {classes} {reduction}"] = at.get(glogits)
    # torch's options: class weights, an ignored class, label smoothing, and probabilities.
    logits = rng.standard_normal((6, 37)).astype(dtype)
    target = rng.integers(0, 37, 6).astype(np.int64)
    target[1] = 5
    weight = rng.uniform(0.5, 2.0, 37).astype(dtype)
    probabilities = rng.dirichlet(np.ones(37), 6).astype(dtype)
    for name, tgt, options in (
            ("weight+ignore+smoothing", target, dict(weight=at.put(weight), ignore_index=5,
                                                    label_smoothing=0.1)),
            ("probabilities", probabilities, dict(weight=at.put(weight)))):
        loss, cache = K.cross_entropy_forward(at.put(logits), at.put(tgt), "mean", **options)
        glogits = K.cross_entropy_backward(at.put(np.asarray(0.7, dtype=dtype)), cache)
        out[f"loss {name}"], out[f"glogits {name}"] = at.get(loss), at.get(glogits)
    return out


def matmul_case(K, at, dtype, rng):
    """The linear layer's three products: x @ W.T, gy @ W, gy.T @ x (transposed views)."""
    x = rng.standard_normal((5, 37)).astype(dtype)
    w = rng.standard_normal((11, 37)).astype(dtype)
    gy = rng.standard_normal((5, 11)).astype(dtype)
    X, Wd, GY = at.put(x), at.put(w), at.put(gy)
    return {"y": at.get(K.matmul(X, Wd.T)), "gx": at.get(K.matmul(GY, Wd)),
            "gW": at.get(K.matmul(GY.T, X))}


def sgd_case(K, at, dtype, rng):
    """A first step into a buffer that was never written (its contents must not be read),
    a second plain step, then a Nesterov step."""
    param = rng.standard_normal(1005).astype(dtype)
    p, buf = at.put(param), at.put(np.zeros_like(param))
    if at.device == "cuda":
        buf = _device.cupy_module().empty(param.shape, dtype=param.dtype)   # uninitialised on purpose
    for first_step, nesterov in ((True, False), (False, False), (False, True)):
        grad = rng.standard_normal(param.shape).astype(dtype)
        K.sgd_update(p, at.put(grad), buf, 0.05, 0.9, 5e-4, nesterov, first_step)
    return {"param": at.get(p), "buf": at.get(buf)}


def mse_loss_case(K, at, dtype, rng):
    """Every reduction on an odd-sized 3-D input."""
    out = {}
    x, t = (rng.standard_normal((3, 5, 7)).astype(dtype) for _ in range(2))
    for reduction in ("mean", "sum", "none"):
        loss, cache = K.mse_loss_forward(at.put(x), at.put(t), reduction)
        gloss = rng.standard_normal(at.get(loss).shape).astype(dtype)
        out[f"loss {reduction}"] = at.get(loss)
        out[f"ginput {reduction}"] = at.get(K.mse_loss_backward(at.put(gloss), cache))
    return out


#: case name -> (function, the smoke functions it calls)
CASES = {
    "im2col": (im2col_case, ("im2col", "col2im")),
    "conv2d": (conv_case, ("conv2d_forward", "conv2d_backward")),
    "max_pool2d": (pool_case, ("max_pool2d_forward", "max_pool2d_backward", "max_pool2d_indices")),
    "avg_pool2d": (avg_pool_case, ("avg_pool2d_forward", "avg_pool2d_backward")),
    "lrn": (lrn_case, ("lrn_forward", "lrn_backward")),
    "relu": (relu_case, ("relu_forward", "relu_backward")),
    "dropout": (dropout_case, ("dropout_forward", "dropout_backward")),
    "cross_entropy": (cross_entropy_case, ("cross_entropy_forward", "cross_entropy_backward")),
    "mse_loss": (mse_loss_case, ("mse_loss_forward", "mse_loss_backward")),
    "sgd_update": (sgd_case, ("sgd_update",)),
    "matmul": (matmul_case, ("matmul",)),
}


# --- running and comparing ----------------------------------------------------------------

def relative_error(actual, expected):
    """max |actual - expected| / max |expected| (inf if the shapes differ)."""
    if actual.shape != expected.shape:
        return float("inf")
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


@dataclasses.dataclass
class CaseResult:
    case: str
    dtype: str
    error: float = 0.0                      # worst relative error against the reference
    problem: str = ""                       # why it failed, if it did

    @property
    def passed(self):
        return not self.problem


def run_case(name, kernels, placement, dtype, seed=0):
    """Run case `name` on `kernels` and on the reference with the same inputs; compare."""
    function, _ = CASES[name]
    dtype = np.dtype(dtype)
    result = CaseResult(name, dtype.name)
    try:
        ours = function(kernels, placement, dtype, np.random.default_rng(seed))
    except Exception as exc:                # report it and go on: the other kernels still run
        result.problem = f"raised {type(exc).__name__}: {exc}"
        return result
    expected = function(load_kernel_set("numpy"), Placement("cpu"), dtype, np.random.default_rng(seed))
    for label, reference in expected.items():
        actual = ours[label]
        if actual.dtype != reference.dtype:
            result.problem = f"{label}: expected dtype {reference.dtype}, got {actual.dtype}"
            return result
        error = relative_error(actual, reference)
        result.error = max(result.error, error)
        if not error <= TOLERANCE[dtype]:
            result.problem = (f"{label}: relative error {error:.2e} against the numpy reference,"
                              f" expected <= {TOLERANCE[dtype]:g}")
            return result
    return result


@contextlib.contextmanager
def kernel_requests(log=None):
    """Record which compiled kernels (name, dtype) the cupy launchers ask the loader for.

    Every launcher in tinyalex.kernels.cupy imports get_kernel from the loader and calls it right
    before its launch; this wraps those references for the duration of the block. `log`, if
    given, is a list that also gets every request's kernel name in order: one per launch.
    """
    import importlib
    import pkgutil

    import tinyalex.kernels.cupy
    from tinyalex.kernels.cupy import loader
    original, requested = loader.get_kernel, set()

    def recording_get_kernel(file, name, dtype):
        requested.add((name, np.dtype(dtype).name))
        if log is not None:
            log.append(name)
        return original(file, name, dtype)
    modules = [importlib.import_module(f"tinyalex.kernels.cupy.{m.name}")
               for m in pkgutil.iter_modules(tinyalex.kernels.cupy.__path__)]
    patched = [m for m in modules if getattr(m, "get_kernel", None) is original]
    for module in patched:
        module.get_kernel = recording_get_kernel
    try:
        yield requested
    finally:
        for module in patched:
            module.get_kernel = original


def expected_kernel_requests():
    """Every kernel of kernels/*.cu in both dtypes, as (name, dtype name) pairs."""
    from tinyalex.kernels.cupy.loader import KERNEL_FILES
    return {(name, np.dtype(d).name) for names in KERNEL_FILES.values() for name in names for d in DTYPES}


def run_smoke(module, device="cpu", log=print):
    """Run every case in both dtypes on the kernel set `module` (its arrays on `device`), each
    compared with the reference; returns (problems, the names of the functions called)."""
    kernels = RecordingKernels(module)
    placement = Placement(device)
    problems = []
    for name in CASES:
        for dtype in DTYPES:
            result = run_case(name, kernels, placement, dtype)
            log(f"{'ok' if result.passed else 'FAILED'} {name} {result.dtype}"
                + (f" (max relative error {result.error:.1e})" if result.passed else f": {result.problem}"))
            if not result.passed:
                problems.append(f"{name} {result.dtype}: {result.problem}")
    return problems, kernels.called


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default="cupy", choices=["cupy", "numpy", "numba"],
                        help="the kernel set to run (default cupy; the CPU sets test the driver itself)")
    args = parser.parse_args(argv)
    if args.kernels == "cupy":
        _device.cupy_module().cuda.set_allocator(None)      # one cudaMalloc per array, see above
        with kernel_requests() as requested:
            problems, called = run_smoke(load_kernel_set("cupy"), "cuda")
        missing = sorted(expected_kernel_requests() - requested)
        if missing:
            problems.append("compiled kernels never asked for: " + ", ".join(f"{n}<{d}>" for n, d in missing))
        _device.cupy_module().cuda.Device().synchronize()   # surface any asynchronous launch error here
    else:
        problems, called = run_smoke(load_kernel_set(args.kernels))
    expected = set(SMOKE_FUNCTIONS)
    if expected - called:
        problems.append("functions never called: " + ", ".join(sorted(expected - called)))
    if problems:
        print(f"SMOKE FAILED: {len(problems)} problem(s): " + "; ".join(problems))
        return 1
    print(f"SMOKE OK: {len(called)} functions of the {args.kernels} set, float32 and float64,"
          " agree with the numpy reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
