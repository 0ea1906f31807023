"""Every op, forward and backward, on the GPU: the cupy kernel set vs PyTorch with cuDNN.

Shapes are the 2012 AlexNet's at batch 128 (input 3x227x227):

    conv1 96@11x11 s4 -> 55x55, relu, LRN(5, 5e-4, 0.75, 2), pool 3/2 -> 27
    conv2 256@5x5 p2 groups=2 -> 27x27, relu, LRN, pool 3/2 -> 13
    conv3 384@3x3 p1, conv4 384@3x3 p1 g2, conv5 256@3x3 p1 g2 -> 13x13, pool 3/2 -> 6
    fc6 9216 -> 4096, fc7 4096 -> 4096 (each with relu and dropout 0.5), fc8 4096 -> 1000,
    cross-entropy on (128, 1000), one SGD step over all 61M parameters,
    and im2col/col2im at conv2's geometry against torch's unfold/fold.

conv1's backward skips gx, as in training (the image needs no gradient). The fc layers
are timed as tinyalex runs them on the GPU: cuBLAS GEMMs (tinyalex.kernels.cupy.loader.matmul).

Method (docs/pitfalls.md#fair-cudnn to #compile-cost, llm.c's "check before you time"):
- every case is first checked against PyTorch's result (dropout against the shared
  counter RNG, since torch's random stream differs); a mismatch is flagged in the table
  and makes the script exit with status 1, but the timings are still taken;
- the GEMM cases (conv, fc) run twice: strict fp32 on both sides
  (torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False,
  TINYALEX_TF32=0) and TF32 on both (True, True, TINYALEX_TF32=1); the other ops do no
  GEMM and run once;
- torch.backends.cudnn.benchmark is off, so no autotuning lands in (or before) the timings;
- each library is warmed up (NVRTC compilation, cuDNN/cuBLAS heuristics) outside the
  timed region, L2 is flushed before every repeat, and each repeat is timed with CUDA
  events on the stream both libraries use; the median is reported;
- rates: TFLOP/s for conv and fc (2 flops per multiply-add), GB/s for the memory-bound
  ops from nominal bytes: the op's inputs read once and its outputs written once, the
  same count for both libraries, so the ratio of rates is the ratio of times.
The ratio column is tinyalex time / torch time: below 1, tinyalex is faster.

    PYTHONPATH=. python benchmarks/bench_cuda.py [--batch 128] [--repeat 20] [--only conv]
                                                 [--out benchmarks/results]
    PYTHONPATH=. python benchmarks/bench_cuda.py --dry-run     # the plan; no GPU needed
"""
import argparse
import dataclasses
import datetime
import math
import os
import statistics
import sys

import numpy as np

LRN_CONSTANTS = (5, 5e-4, 0.75, 2.0)        # the paper's k=2, n=5, alpha=1e-4, beta=0.75, in PyTorch's convention
DROPOUT_P = 0.5
POOL = ((3, 3), (2, 2), (0, 0))             # overlapping pooling, paper section 3.4
MODES = ("fp32", "tf32")
L2_FLUSH_BYTES = 256 * 2**20                # five times an H100's 50 MB L2


# --- the plan: pure data, no GPU ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One op at one AlexNet layer. `gemm` cases are timed in fp32 and in TF32."""
    name: str
    op: str
    shape: tuple                             # the op's input shape
    params: tuple = ()                       # op-specific, see the builders below
    gemm: bool = False

    def work(self, direction):
        """(amount, unit) of work in `direction`: flops for GEMMs, nominal bytes otherwise."""
        return WORK[self.op](self, direction)


def alexnet_cases(batch):
    """The planned cases, in network order."""
    n = batch
    conv = [  # name, x shape, weight shape, stride, padding, groups
        ("conv1", (n, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1),
        ("conv2", (n, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2),
        ("conv3", (n, 256, 13, 13), (384, 256, 3, 3), 1, 1, 1),
        ("conv4", (n, 384, 13, 13), (384, 192, 3, 3), 1, 1, 2),
        ("conv5", (n, 384, 13, 13), (256, 192, 3, 3), 1, 1, 2),
    ]
    cases = [Case(name, "conv", x, (w, s, p, g, name != "conv1"), gemm=True)
             for name, x, w, s, p, g in conv]
    cases += [
        Case("conv2 cols", "im2col", (n, 96, 27, 27), ((5, 5), (1, 1), (2, 2))),
        Case("relu1", "relu", (n, 96, 55, 55)),
        Case("lrn1", "lrn", (n, 96, 55, 55), LRN_CONSTANTS),
        Case("pool1", "pool", (n, 96, 55, 55), POOL),
        Case("relu2", "relu", (n, 256, 27, 27)),
        Case("lrn2", "lrn", (n, 256, 27, 27), LRN_CONSTANTS),
        Case("pool2", "pool", (n, 256, 27, 27), POOL),
        Case("relu3-5", "relu", (n, 384, 13, 13)),
        Case("pool5", "pool", (n, 256, 13, 13), POOL),
        Case("fc6", "linear", (n, 9216), (4096,), gemm=True),
        Case("relu6/7", "relu", (n, 4096)),
        Case("dropout6/7", "dropout", (n, 4096), (DROPOUT_P,)),
        Case("fc7", "linear", (n, 4096), (4096,), gemm=True),
        Case("fc8", "linear", (n, 4096), (1000,), gemm=True),
        Case("cross-entropy", "cross_entropy", (n, 1000)),
        Case("sgd", "sgd", (alexnet_parameter_count(),), (0.01, 0.9, 5e-4)),
    ]
    return cases


def alexnet_parameter_shapes():
    """The 2012 AlexNet's 16 parameter arrays (weights and biases of 5 convs and 3 fcs)."""
    layers = [(96, 3, 11, 11), (256, 48, 5, 5), (384, 256, 3, 3), (384, 192, 3, 3),
              (256, 192, 3, 3), (4096, 9216), (4096, 4096), (1000, 4096)]
    return [shape for w in layers for shape in (w, (w[0],))]


def alexnet_parameter_count():
    return sum(math.prod(s) for s in alexnet_parameter_shapes())


def conv_output_shape(case):
    (N, _, H, W), ((OC, _, kh, kw), s, p, _, _) = case.shape, case.params
    return (N, OC, (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1)


def pool_output_shape(case):
    N, C, H, W = case.shape
    (kh, kw), (sh, sw), (ph, pw) = case.params
    return (N, C, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)


def _conv_work(case, direction):
    (N, OC, OH, OW), (w, _, _, _, need_gx) = conv_output_shape(case), case.params
    forward = 2 * N * OC * OH * OW * math.prod(w[1:])
    return (forward if direction == "forward" else forward * (2 if need_gx else 1)), "flop"


def _linear_work(case, direction):
    (M, K), (out,) = case.shape, case.params
    return 2 * M * K * out * (1 if direction == "forward" else 2), "flop"


def _elementwise_bytes(case, direction):
    """x -> y forward; gy (+ the saved input) -> gx backward."""
    n = math.prod(case.shape)
    return 4 * n * (2 if direction == "forward" else 3), "byte"


def _dropout_bytes(case, direction):
    return 4 * math.prod(case.shape) * 2, "byte"                # x -> y, gy -> gx


def _pool_bytes(case, direction):
    return 4 * (math.prod(case.shape) + math.prod(pool_output_shape(case))), "byte"


def _im2col_bytes(case, direction):
    (N, C, H, W), ((kh, kw), (sh, sw), (ph, pw)) = case.shape, case.params
    L = ((H + 2 * ph - kh) // sh + 1) * ((W + 2 * pw - kw) // sw + 1)
    return 4 * (N * C * H * W + N * C * kh * kw * L), "byte"    # x <-> cols, either way


def _cross_entropy_bytes(case, direction):
    N, C = case.shape
    return (4 * N * C + 8 * N + 4 * N if direction == "forward" else 8 * N * C), "byte"


def _sgd_bytes(case, direction):
    return 4 * case.shape[0] * 5, "byte"                        # read p, g, buf; write p, buf


WORK = {"conv": _conv_work, "linear": _linear_work, "relu": _elementwise_bytes,
        "lrn": _elementwise_bytes, "dropout": _dropout_bytes, "pool": _pool_bytes,
        "im2col": _im2col_bytes, "cross_entropy": _cross_entropy_bytes, "sgd": _sgd_bytes}

DIRECTIONS = {"sgd": ("step",), "im2col": ("im2col", "col2im")}


def directions(case):
    return DIRECTIONS.get(case.op, ("forward", "backward"))


def planned_runs(cases, modes):
    """(case, mode) pairs: GEMM cases in every mode, the others in the first mode only."""
    return [(case, mode) for mode in modes for case in cases if case.gemm or mode == modes[0]]


# --- the runners: build data, check, and return the four timed calls -----------------------

@dataclasses.dataclass
class Runner:
    """Zero-argument calls per (library, direction), and the check against torch."""
    calls: dict                              # (library, direction) -> callable
    checks: list                             # (label, ours, reference) arrays to compare


def to_torch(a):
    """A torch view of a CuPy array (DLPack: same memory, no copy)."""
    import torch
    return torch.from_dlpack(a)


def random_array(shape, rng, scale=1.0):
    import cupy
    return cupy.asarray((rng.standard_normal(shape) * scale).astype(np.float32))


def conv_runner(case, rng):
    import torch
    import tinyalex.kernels.cupy as ours
    w_shape, s, p, g, need_gx = case.params
    x = random_array(case.shape, rng)
    w = random_array(w_shape, rng, 1 / math.sqrt(math.prod(w_shape[1:])))
    b = random_array(w_shape[:1], rng)
    stride, padding = (s, s), (p, p)
    y, cache = ours.conv2d_forward(x, w, b, stride, padding, g)
    gy = random_array(y.shape, rng)
    xt, wt, bt, gyt = (to_torch(a) for a in (x, w, b, gy))

    def torch_backward():
        return torch.ops.aten.convolution_backward(gyt, xt, wt, [w_shape[0]], [s, s], [p, p], [1, 1],
                                                   False, [0, 0], g, [need_gx, True, True])
    gx, gW, gb = ours.conv2d_backward(gy, cache, need_gx)
    tgx, tgW, tgb = torch_backward()
    checks = [("y", y, torch.nn.functional.conv2d(xt, wt, bt, stride, padding, 1, g)),
              ("gW", gW, tgW), ("gb", gb, tgb)] + ([("gx", gx, tgx)] if need_gx else [])
    return Runner({
        ("tinyalex", "forward"): lambda: ours.conv2d_forward(x, w, b, stride, padding, g),
        ("torch", "forward"): lambda: torch.nn.functional.conv2d(xt, wt, bt, stride, padding, 1, g),
        ("tinyalex", "backward"): lambda: ours.conv2d_backward(gy, cache, need_gx),
        ("torch", "backward"): torch_backward,
    }, checks)


def linear_runner(case, rng):
    import torch
    from tinyalex.kernels.cupy.loader import matmul
    (M, K), (out,) = case.shape, case.params
    x = random_array((M, K), rng)
    w = random_array((out, K), rng, 1 / math.sqrt(K))
    b = random_array((out,), rng)
    gy = random_array((M, out), rng)

    def forward():                           # tinyalex.ops.linear on the GPU, one GEMM
        y = matmul(x, w.T)
        y += b
        return y

    def backward():
        return matmul(gy, w), matmul(gy.T, x), gy.sum(axis=0)
    xt, wt, bt = (to_torch(a).requires_grad_() for a in (x, w, b))
    gyt = to_torch(gy)
    yt = torch.nn.functional.linear(xt, wt, bt)

    def torch_backward():
        return torch.autograd.grad(yt, (xt, wt, bt), gyt, retain_graph=True)
    tgx, tgW, tgb = torch_backward()
    gx, gW, gb = backward()
    checks = [("y", forward(), yt), ("gx", gx, tgx), ("gW", gW, tgW), ("gb", gb, tgb)]
    return Runner({
        ("tinyalex", "forward"): forward,
        ("torch", "forward"): lambda: torch.nn.functional.linear(xt, wt, bt),
        ("tinyalex", "backward"): backward,
        ("torch", "backward"): torch_backward,
    }, checks)


def autograd_runner(case, rng, ours_forward, ours_backward, torch_fn):
    """An op whose torch side is timed through autograd: forward, then grad of the graph."""
    import torch
    x = random_array(case.shape, rng)
    y, cache = ours_forward(x)
    gy = random_array(y.shape, rng)
    xt = to_torch(x).detach().requires_grad_()
    yt = torch_fn(xt)
    gyt = to_torch(gy)

    def torch_backward():
        return torch.autograd.grad(yt, xt, gyt, retain_graph=True)[0]
    checks = [("y", y, yt), ("gx", ours_backward(gy, cache), torch_backward())]
    return Runner({
        ("tinyalex", "forward"): lambda: ours_forward(x),
        ("torch", "forward"): lambda: torch_fn(xt),
        ("tinyalex", "backward"): lambda: ours_backward(gy, cache),
        ("torch", "backward"): torch_backward,
    }, checks)


def relu_runner(case, rng):
    import torch
    import tinyalex.kernels.cupy as ours
    return autograd_runner(case, rng, ours.relu_forward, ours.relu_backward, torch.relu)


def lrn_runner(case, rng):
    import torch
    import tinyalex.kernels.cupy as ours
    size, alpha, beta, k = case.params
    return autograd_runner(case, rng, lambda x: ours.lrn_forward(x, size, alpha, beta, k),
                           ours.lrn_backward,
                           lambda xt: torch.nn.functional.local_response_norm(xt, size, alpha, beta, k))


def pool_runner(case, rng):
    import torch
    import tinyalex.kernels.cupy as ours
    k, s, p = case.params
    x = random_array(case.shape, rng)
    y, cache = ours.max_pool2d_forward(x, k, s, p)
    gy = random_array(y.shape, rng)
    xt, gyt = to_torch(x), to_torch(gy)
    yt, indices = torch.ops.aten.max_pool2d_with_indices(xt, k, s, p)

    def torch_backward():
        return torch.ops.aten.max_pool2d_with_indices_backward(gyt, xt, k, s, p, (1, 1), False, indices)
    checks = [("y", y, yt), ("gx", ours.max_pool2d_backward(gy, cache), torch_backward())]
    return Runner({
        ("tinyalex", "forward"): lambda: ours.max_pool2d_forward(x, k, s, p),
        ("torch", "forward"): lambda: torch.ops.aten.max_pool2d_with_indices(xt, k, s, p),
        ("tinyalex", "backward"): lambda: ours.max_pool2d_backward(gy, cache),
        ("torch", "backward"): torch_backward,
    }, checks)


def dropout_runner(case, rng):
    """torch draws another mask, so ours is checked against the shared counter RNG instead."""
    import cupy
    import torch
    import tinyalex.kernels.cupy as ours
    from tinyalex.random import counter_uniform
    (p,), seed = case.params, 12345
    x, gy = random_array(case.shape, rng), random_array(case.shape, rng)
    y, cache = ours.dropout_forward(x, p, seed)
    keep = (counter_uniform(seed, x.size, xp=cupy) >= p).reshape(x.shape)
    xt, gyt = to_torch(x).detach().requires_grad_(), to_torch(gy)
    yt = torch.nn.functional.dropout(xt, p, training=True)

    def torch_backward():
        return torch.autograd.grad(yt, xt, gyt, retain_graph=True)[0]
    checks = [("y", y, x * keep * (1 / (1 - p))),
              ("gx", ours.dropout_backward(gy, cache), gy * keep * (1 / (1 - p)))]
    return Runner({
        ("tinyalex", "forward"): lambda: ours.dropout_forward(x, p, seed),
        ("torch", "forward"): lambda: torch.nn.functional.dropout(xt, p, training=True),
        ("tinyalex", "backward"): lambda: ours.dropout_backward(gy, cache),
        ("torch", "backward"): torch_backward,
    }, checks)


def cross_entropy_runner(case, rng):
    import cupy
    import torch
    import tinyalex.kernels.cupy as ours
    N, C = case.shape
    logits = random_array((N, C), rng, 10.0)
    target = cupy.asarray(rng.integers(0, C, N))
    loss, cache = ours.cross_entropy_forward(logits, target, "mean")
    gloss = cupy.asarray(np.float32(1.0))
    zt, tt = to_torch(logits).detach().requires_grad_(), to_torch(target)
    lt = torch.nn.functional.cross_entropy(zt, tt)

    def torch_backward():
        return torch.autograd.grad(lt, zt, retain_graph=True)[0]
    checks = [("loss", loss, lt), ("glogits", ours.cross_entropy_backward(gloss, cache), torch_backward())]
    return Runner({
        ("tinyalex", "forward"): lambda: ours.cross_entropy_forward(logits, target, "mean"),
        ("torch", "forward"): lambda: torch.nn.functional.cross_entropy(zt, tt),
        ("tinyalex", "backward"): lambda: ours.cross_entropy_backward(gloss, cache),
        ("torch", "backward"): torch_backward,
    }, checks)


def im2col_runner(case, rng):
    import torch
    import tinyalex.kernels.cupy as ours
    k, s, p = case.params
    x = random_array(case.shape, rng)
    cols = random_array(ours.im2col(x, k, s, p).shape, rng)
    xt, colst = to_torch(x), to_torch(cols)
    hw = case.shape[2:]
    checks = [("cols", ours.im2col(x, k, s, p), torch.nn.functional.unfold(xt, k, 1, p, s)),
              ("x", ours.col2im(cols, x.shape, k, s, p), torch.nn.functional.fold(colst, hw, k, 1, p, s))]
    return Runner({
        ("tinyalex", "im2col"): lambda: ours.im2col(x, k, s, p),
        ("torch", "im2col"): lambda: torch.nn.functional.unfold(xt, k, 1, p, s),
        ("tinyalex", "col2im"): lambda: ours.col2im(cols, x.shape, k, s, p),
        ("torch", "col2im"): lambda: torch.nn.functional.fold(colst, hw, k, 1, p, s),
    }, checks)


def sgd_runner(case, rng):
    """One step over every AlexNet parameter: sgd_update per array vs torch.optim.SGD
    (its default on CUDA, the foreach implementation), both from the same momentum buffers."""
    import torch
    import tinyalex.kernels.cupy as ours
    lr, momentum, weight_decay = case.params
    shapes = alexnet_parameter_shapes()
    params, grads, bufs = ([random_array(s, rng, 0.01) for s in shapes] for _ in range(3))
    tparams = [torch.nn.Parameter(to_torch(p.copy())) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = to_torch(g)
    optimizer = torch.optim.SGD(tparams, lr=lr, momentum=momentum, weight_decay=weight_decay)
    optimizer.step()                          # creates torch's momentum buffers; then undo it
    for tp, p, b in zip(tparams, params, bufs):
        tp.data.copy_(to_torch(p))
        optimizer.state[tp]["momentum_buffer"].copy_(to_torch(b))

    def step():
        for p, g, b in zip(params, grads, bufs):
            ours.sgd_update(p, g, b, lr, momentum, weight_decay, False, False)
    step()
    optimizer.step()
    checks = [(f"param {i}", p, tp.detach()) for i, (p, tp) in enumerate(zip(params, tparams))]
    return Runner({("tinyalex", "step"): step, ("torch", "step"): optimizer.step}, checks)


RUNNERS = {"conv": conv_runner, "linear": linear_runner, "relu": relu_runner, "lrn": lrn_runner,
           "pool": pool_runner, "dropout": dropout_runner, "cross_entropy": cross_entropy_runner,
           "im2col": im2col_runner, "sgd": sgd_runner}


# --- checking and timing ---------------------------------------------------------------------

def relative_error(ours, reference):
    """max |ours - reference| / max |reference|, both as float64 on the host."""
    import torch
    ours = np.asarray(ours.get() if hasattr(ours, "get") else ours, dtype=np.float64)
    reference = reference.detach().cpu().double().numpy() if torch.is_tensor(reference) else \
        np.asarray(reference.get() if hasattr(reference, "get") else reference, dtype=np.float64)
    if ours.shape != reference.shape:
        return math.inf
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-30)
    return float(np.abs(ours - reference).max(initial=0.0)) / scale


def tolerance(mode):
    """Relative to the result's largest magnitude: fp32 rounding, or TF32's 10-bit mantissa."""
    return 1e-3 if mode == "fp32" else 2e-2


def set_mode(mode):
    """Strict fp32 or TF32 on both sides; cuDNN autotuning off in either."""
    import torch
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = False
    os.environ["TINYALEX_TF32"] = "1" if tf32 else "0"


class Timer:
    """Median milliseconds of a call, by CUDA events, after warm-up, with L2 flushed each repeat."""

    def __init__(self, warmup, repeat):
        import cupy
        self.cupy, self.warmup, self.repeat = cupy, warmup, repeat
        self.flush_buffer = cupy.empty(L2_FLUSH_BYTES // 4, dtype=np.float32)

    def median_ms(self, call):
        cupy = self.cupy
        for _ in range(self.warmup):
            call()
        times = []
        for _ in range(self.repeat):
            self.flush_buffer.fill(0)         # evict the previous repeat's data from L2
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end))
        return statistics.median(times)


@dataclasses.dataclass
class Result:
    case: Case
    mode: str
    direction: str
    ms: dict                                  # library -> median ms
    error: float                              # worst relative error of the case's checks
    passed: bool

    def rate(self, library):
        """(value, unit): TFLOP/s or GB/s."""
        amount, unit = self.case.work(self.direction)
        per_second = amount / (self.ms[library] * 1e-3)
        return (per_second / 1e12, "TFLOP/s") if unit == "flop" else (per_second / 1e9, "GB/s")

    @property
    def ratio(self):
        return self.ms["tinyalex"] / self.ms["torch"]


def run_case(case, mode, timer, rng):
    """Check `case` against torch, then time every direction for both libraries."""
    import cupy
    import torch
    set_mode(mode)
    runner = RUNNERS[case.op](case, rng)
    errors = [(label, relative_error(ours, ref)) for label, ours, ref in runner.checks]
    error = max(e for _, e in errors)
    passed = error <= tolerance(mode)
    if not passed:
        print(f"MISMATCH {case.name} {mode}: " + ", ".join(f"{l} {e:.2e}" for l, e in errors),
              file=sys.stderr)
    results = []
    for direction in directions(case):
        ms = {library: timer.median_ms(runner.calls[(library, direction)])
              for library in ("tinyalex", "torch")}
        results.append(Result(case, mode, direction, ms, error, passed))
    del runner
    cupy.get_default_memory_pool().free_all_blocks()
    torch.cuda.empty_cache()
    return results


# --- report -----------------------------------------------------------------------------------

def plan_lines(runs):
    lines = ["| case | op | input shape | mode | direction | work |", "|---|---|---|---|---|---:|"]
    for case, mode in runs:
        for direction in directions(case):
            amount, unit = case.work(direction)
            work = f"{amount / 1e9:.2f} GFLOP" if unit == "flop" else f"{amount / 2**20:.1f} MiB"
            lines.append(f"| {case.name} | {case.op} | {case.shape} | {mode} | {direction} | {work} |")
    return lines


def table_lines(results):
    lines = ["| case | direction | tinyalex ms | torch ms | tinyalex rate | torch rate |"
             " tinyalex / torch | check |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        (ours, unit), (theirs, _) = r.rate("tinyalex"), r.rate("torch")
        check = f"ok ({r.error:.1e})" if r.passed else f"**MISMATCH** ({r.error:.1e})"
        lines.append(f"| {r.case.name} | {r.direction} | {r.ms['tinyalex']:.3f} | {r.ms['torch']:.3f} |"
                     f" {ours:.2f} {unit} | {theirs:.2f} {unit} | {r.ratio:.2f} | {check} |")
    return lines


def environment_lines():
    import cupy
    import torch
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]

    def version(v):
        return f"{v // 1000}.{v % 1000 // 10}"
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- GPU: {name} (compute capability {props['major']}.{props['minor']},"
        f" {props['totalGlobalMem'] / 2**30:.0f} GiB)",
        f"- CUDA: runtime {version(cupy.cuda.runtime.runtimeGetVersion())},"
        f" driver {version(cupy.cuda.runtime.driverGetVersion())}",
        f"- CuPy {cupy.__version__}; PyTorch {torch.__version__} (CUDA {torch.version.cuda},"
        f" cuDNN {torch.backends.cudnn.version()})",
    ]


def write_chart(results, path):
    """Horizontal bars of tinyalex time / torch time per case and direction, one colour per mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r.case.name} {r.direction} ({r.mode})" for r in results]
    colours = ["tab:blue" if r.mode == "fp32" else "tab:orange" for r in results]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(results) + 1.5))
    ax.barh(range(len(results)), [r.ratio for r in results], color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(results)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("tinyalex time / PyTorch time (log scale; < 1: tinyalex faster)")
    ax.set_title("tinyalex's cupy kernel set vs PyTorch + cuDNN, AlexNet layers\n"
                 "(blue: strict fp32, orange: TF32)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results, args, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"# GPU ops: tinyalex's cupy kernel set vs PyTorch + cuDNN, batch {args.batch}", ""]
    lines += environment_lines()
    lines += [f"- method: median of {args.repeat} repeats after {args.warmup} warm-up calls,"
              " CUDA events, L2 flushed before each repeat, cudnn.benchmark off;"
              " see benchmarks/bench_cuda.py", ""]
    for mode in MODES:
        rows = [r for r in results if r.mode == mode]
        if rows:
            title = {"fp32": "Strict fp32 (TF32 off on both sides)",
                     "tf32": "TF32 on both sides (GEMM cases only)"}[mode]
            lines += [f"## {title}", ""] + table_lines(rows) + [""]
    lines += ["![tinyalex / torch time per case](cuda.png)", ""]
    with open(os.path.join(out_dir, "cuda.md"), "w") as out:
        out.write("\n".join(lines))
    write_chart(results, os.path.join(out_dir, "cuda.png"))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=20, help="timed repeats per call (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before the repeats")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--only", nargs="*", default=[], help="cases whose name contains one of these words")
    parser.add_argument("--out", help="write cuda.md and cuda.png into this folder")
    parser.add_argument("--dry-run", action="store_true", help="print the planned cases and exit (no GPU)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--batch and --repeat must be >= 1, --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    cases = [c for c in alexnet_cases(args.batch) if not args.only or any(w in c.name for w in args.only)]
    runs = planned_runs(cases, args.modes)
    if args.dry_run:
        print("\n".join(plan_lines(runs)))
        return 0
    timer = Timer(args.warmup, args.repeat)
    rng = np.random.default_rng(0)
    results = []
    for case, mode in runs:
        for r in run_case(case, mode, timer, rng):
            results.append(r)
            print(f"{case.name:>20} {r.direction:>8} {mode}: tinyalex {r.ms['tinyalex']:8.3f} ms"
                  f"  torch {r.ms['torch']:8.3f} ms  ratio {r.ratio:5.2f}"
                  f"  {'ok' if r.passed else 'MISMATCH'}", file=sys.stderr, flush=True)
    print("\n".join(table_lines(results)))
    if args.out:
        write_report(results, args, args.out)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
