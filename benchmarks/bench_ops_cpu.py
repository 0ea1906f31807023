"""Every op, forward and backward, on the CPU: numba set vs numpy reference vs PyTorch.

Shapes are the Fashion-MNIST AlexNet's (input 1x224x224); the convolutions at batch 16,
32 and 64 (--batches), the other ops at batch 16:

    conv1 96@11x11 s4 p1 -> 54x54, LRN 5, pool 3/2 -> 26
    conv2 256@5x5 p2 -> 26x26,     LRN 5, pool 3/2 -> 12
    conv3 384@3x3 p1, conv4 384@3x3 p1, conv5 256@3x3 p1 -> 12x12, pool 3/2 -> 5
    relu and dropout(0.5) on fc (16, 4096); cross-entropy on (16, 10)

conv1's backward skips gx, as in training (the image needs no gradient). Every result is
first checked against the numpy reference (check before you time), then the libraries
are timed in interleaved rounds after a warm-up call each (JIT included). PyTorch runs
with as many threads as Numba. Reported: the median over the rounds, in ms.

Convolutions are timed per algorithm of the numba set, beside torch: 'gemm' (im2col +
GEMM), 'winograd' (where it applies: conv2-5) and which one 'auto' picks, with each
one's rate as a percentage of the machine's SGEMM rate, counted on the DIRECT
convolution's FLOPs (2 per multiply-add of the direct sum; backward: gW, plus gx except
for conv1), so an algorithm doing fewer multiplies can pass 100%.

numpy is imported before tinyalex, as most programs do (no spin-wait variables are set):
tinyalex's speed must not depend on import order.

    PYTHONPATH=. python benchmarks/bench_ops_cpu.py [--dtype float32] [--batches 16 32 64]
                                                    [--out FILE]
"""
import argparse
import ctypes
import dataclasses
import datetime
import os
import platform
import statistics
import sys
import time

import numba
import numpy as np
import torch
import torch.nn.functional as F

import tinyalex.kernels.numba as numba_set
import tinyalex.kernels.numpy as numpy_set
from tinyalex.kernels.conv_algorithms import choose, winograd_refusal

BATCH = 16
LIBRARIES = ("numba", "numpy", "torch")
CONV_LIBRARIES = ("gemm", "winograd", "torch")                   # numba's algorithms, then torch
# name: (x shape without the batch, weight shape, stride, padding)
CONVS = {
    "conv1": ((1, 224, 224), (96, 1, 11, 11), 4, 1),
    "conv2": ((96, 26, 26), (256, 96, 5, 5), 1, 2),
    "conv3": ((256, 12, 12), (384, 256, 3, 3), 1, 1),
    "conv4": ((384, 12, 12), (384, 384, 3, 3), 1, 1),
    "conv5": ((384, 12, 12), (256, 384, 3, 3), 1, 1),
}
SGEMM_SIZE, SGEMM_REPEATS = 2048, 10
POOLS = {"pool1": (BATCH, 96, 54, 54), "pool2": (BATCH, 256, 26, 26), "pool3": (BATCH, 256, 12, 12)}
LRNS = {"lrn1": (BATCH, 96, 54, 54), "lrn2": (BATCH, 256, 26, 26)}
LRN_CONSTANTS = (5, 5e-4, 0.75, 2.0)                               # the paper's, in PyTorch's convention
FC_SHAPE = (BATCH, 4096)
LOGITS_SHAPE = (BATCH, 10)
DROPOUT_P = 0.5


@dataclasses.dataclass
class Case:
    """One op in one direction: a zero-argument call per library, each returning its result."""
    op: str
    direction: str
    calls: dict
    torch_checked: bool = True                                      # False where torch's RNG differs
    auto: str = ""                                                  # convs: the algorithm 'auto' picks
    batch: int = BATCH


def as_numpy_tuple(result):
    """A result (array, tensor, or tuple of them, None allowed) as a tuple of numpy arrays."""
    items = result if isinstance(result, tuple) else (result,)
    return tuple(None if r is None else (r.detach().numpy() if torch.is_tensor(r) else np.asarray(r))
                 for r in items)


def check(case, dtype):
    """Each library's result against the numpy reference, before anything is timed."""
    expected = as_numpy_tuple(case.calls["numpy"]())
    others = [k for k in case.calls if k not in ("numpy", "torch")] + (["torch"] if case.torch_checked else [])
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    tolerance *= 10 if "winograd" in case.calls else 1                  # F(2x2, 5x5): docs/ops/conv2d_winograd.md
    for library in others:
        got = as_numpy_tuple(case.calls[library]())
        for a, e in zip(got, expected, strict=True):
            if (a is None) != (e is None):
                raise AssertionError(f"{case.op} {case.direction} {library}: None mismatch")
            if a is None:
                continue
            scale = max(float(np.abs(e).max(initial=0.0)), 1e-30)
            error = float(np.abs(a.astype(np.float64) - e).max(initial=0.0)) / scale
            if error > tolerance:
                raise AssertionError(f"{case.op} {case.direction} {library}: relative error"
                                     f" {error:.3g} > {tolerance:g}")


def interleaved_medians(calls, budget_s):
    """Median wall time in ms of each zero-argument call, timed in interleaved rounds.

    Every call is warmed up once (JIT, caches) and then timed once per round, the
    libraries taking turns, for 5 to 50 rounds: on a shared machine a burst of foreign
    load then slows every library alike instead of whichever was being timed.
    """
    first = {}
    for name, call in calls.items():
        call()
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
    rounds = int(min(50, max(5, budget_s / max(sum(first.values()), 1e-9))))
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


# --- the cases --------------------------------------------------------------------------

def sgemm_gflops(n=SGEMM_SIZE, repeats=SGEMM_REPEATS):
    """GFLOP/s of numpy.matmul on two float32 (n, n) matrices: 2*n^3 flops, median of repeats."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)                                    # warm-up: BLAS threads start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def direct_flops(name, batch, direction):
    """FLOPs of the direct convolution: 2 per multiply-add; backward: gW, and gx but for conv1."""
    (c, h, w), (oc, _, kh, kw), stride, padding = CONVS[name]
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    macs = batch * oh * ow * oc * c * kh * kw
    return 2 * macs * (1 if direction == "forward" else (1 if name == "conv1" else 2))


def conv_cases(name, batch, rng, dtype):
    """Forward and backward of conv `name` at `batch`: numba with each algorithm that applies
    to it, and torch; every result is checked against the numpy reference (gemm)."""
    x_shape, w_shape, stride, padding = CONVS[name]
    need_gx = name != "conv1"
    x = rng.standard_normal((batch, *x_shape)).astype(dtype)
    fan_in = np.prod(w_shape[1:])
    w = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    pairs = dict(stride=(stride, stride), padding=(padding, padding), groups=1, dilation=(1, 1))
    algorithms = [a for a in ("gemm", "winograd")
                  if a == "gemm" or not winograd_refusal(w_shape[2:], pairs["stride"], (1, 1))]
    y, numpy_cache = numpy_set.conv2d_forward(x, w, b, **pairs)
    caches = {a: numba_set.conv2d_forward(x, w, b, **pairs, algorithm=a)[1] for a in algorithms}
    gy = rng.standard_normal(y.shape).astype(dtype)
    xt, wt, bt, gyt = (torch.from_numpy(a) for a in (x, w, b, gy))
    forward = {a: (lambda a=a: numba_set.conv2d_forward(x, w, b, **pairs, algorithm=a)[0])
               for a in algorithms}
    forward["numpy"] = lambda: numpy_set.conv2d_forward(x, w, b, **pairs)[0]
    forward["torch"] = lambda: F.conv2d(xt, wt, bt, stride, padding)
    backward = {a: (lambda a=a: numba_set.conv2d_backward(gy, caches[a], need_gx)) for a in algorithms}
    backward["numpy"] = lambda: numpy_set.conv2d_backward(gy, numpy_cache, need_gx)
    backward["torch"] = lambda: torch.ops.aten.convolution_backward(
        gyt, xt, wt, [w_shape[0]], [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
        [need_gx, True, True])
    auto = choose(w_shape, pairs["stride"], (1, 1), 1, y.shape[2:])
    return [Case(name, "forward", forward, auto=auto, batch=batch),
            Case(name, "backward", backward, auto=auto, batch=batch)]


def pool_cases(name, x_shape, rng, dtype):
    k, s, p = (3, 3), (2, 2), (0, 0)
    x = rng.standard_normal(x_shape).astype(dtype)
    y, numba_cache = numba_set.max_pool2d_forward(x, k, s, p)
    _, numpy_cache = numpy_set.max_pool2d_forward(x, k, s, p)
    gy = rng.standard_normal(y.shape).astype(dtype)
    xt, gyt = torch.from_numpy(x), torch.from_numpy(gy)
    _, indices = torch.ops.aten.max_pool2d_with_indices(xt, k, s, p)
    forward = {                                                     # all three keep the argmax
        "numba": lambda: numba_set.max_pool2d_forward(x, k, s, p)[0],
        "numpy": lambda: numpy_set.max_pool2d_forward(x, k, s, p)[0],
        "torch": lambda: torch.ops.aten.max_pool2d_with_indices(xt, k, s, p)[0],
    }
    backward = {
        "numba": lambda: numba_set.max_pool2d_backward(gy, numba_cache),
        "numpy": lambda: numpy_set.max_pool2d_backward(gy, numpy_cache),
        "torch": lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            gyt, xt, k, s, p, (1, 1), False, indices),
    }
    return [Case(name, "forward", forward), Case(name, "backward", backward)]


def lrn_cases(name, x_shape, rng, dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    _, numba_cache = numba_set.lrn_forward(x, *LRN_CONSTANTS)
    _, numpy_cache = numpy_set.lrn_forward(x, *LRN_CONSTANTS)
    gy = rng.standard_normal(x_shape).astype(dtype)
    xt, gyt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(gy)
    with torch.enable_grad():                                       # torch has no LRN kernel: a graph
        yt = F.local_response_norm(xt, *LRN_CONSTANTS)
    forward = {
        "numba": lambda: numba_set.lrn_forward(x, *LRN_CONSTANTS)[0],
        "numpy": lambda: numpy_set.lrn_forward(x, *LRN_CONSTANTS)[0],
        "torch": lambda: F.local_response_norm(xt, *LRN_CONSTANTS),
    }
    backward = {
        "numba": lambda: numba_set.lrn_backward(gy, numba_cache),
        "numpy": lambda: numpy_set.lrn_backward(gy, numpy_cache),
        "torch": lambda: torch.autograd.grad(yt, xt, gyt, retain_graph=True)[0],
    }
    return [Case(name, "forward", forward), Case(name, "backward", backward)]


def relu_cases(rng, dtype):
    x = rng.standard_normal(FC_SHAPE).astype(dtype)
    _, numba_cache = numba_set.relu_forward(x)
    _, numpy_cache = numpy_set.relu_forward(x)
    gy = rng.standard_normal(FC_SHAPE).astype(dtype)
    xt, gyt = torch.from_numpy(x), torch.from_numpy(gy)
    yt = torch.relu(xt)
    forward = {
        "numba": lambda: numba_set.relu_forward(x)[0],
        "numpy": lambda: numpy_set.relu_forward(x)[0],
        "torch": lambda: torch.relu(xt),
    }
    backward = {
        "numba": lambda: numba_set.relu_backward(gy, numba_cache),
        "numpy": lambda: numpy_set.relu_backward(gy, numpy_cache),
        "torch": lambda: torch.ops.aten.threshold_backward(gyt, yt, 0),
    }
    return [Case("relu fc", "forward", forward), Case("relu fc", "backward", backward)]


def dropout_cases(rng, dtype):
    x = rng.standard_normal(FC_SHAPE).astype(dtype)
    seed = 1234
    _, numba_cache = numba_set.dropout_forward(x, DROPOUT_P, seed)
    _, numpy_cache = numpy_set.dropout_forward(x, DROPOUT_P, seed)
    gy = rng.standard_normal(FC_SHAPE).astype(dtype)
    xt, gyt = torch.from_numpy(x), torch.from_numpy(gy)
    _, mask = torch.ops.aten.native_dropout(xt, DROPOUT_P, True)
    scale = 1 / (1 - DROPOUT_P)
    forward = {
        "numba": lambda: numba_set.dropout_forward(x, DROPOUT_P, seed)[0],
        "numpy": lambda: numpy_set.dropout_forward(x, DROPOUT_P, seed)[0],
        "torch": lambda: torch.ops.aten.native_dropout(xt, DROPOUT_P, True)[0],
    }
    backward = {
        "numba": lambda: numba_set.dropout_backward(gy, numba_cache),
        "numpy": lambda: numpy_set.dropout_backward(gy, numpy_cache),
        "torch": lambda: torch.ops.aten.native_dropout_backward(gyt, mask, scale),
    }
    # torch draws its own mask: its values cannot match the reference's, only its timing.
    return [Case("dropout fc", "forward", forward, torch_checked=False),
            Case("dropout fc", "backward", backward, torch_checked=False)]


def cross_entropy_cases(rng, dtype):
    logits = rng.standard_normal(LOGITS_SHAPE).astype(dtype)
    target = rng.integers(0, LOGITS_SHAPE[1], size=BATCH)
    gloss = np.asarray(1.0, dtype=dtype)
    _, numba_cache = numba_set.cross_entropy_forward(logits, target, "mean")
    _, numpy_cache = numpy_set.cross_entropy_forward(logits, target, "mean")
    logits_t = torch.from_numpy(logits).requires_grad_()
    target_t = torch.from_numpy(target)
    with torch.enable_grad():
        loss_t = F.cross_entropy(logits_t, target_t)
    forward = {
        "numba": lambda: numba_set.cross_entropy_forward(logits, target, "mean")[0],
        "numpy": lambda: numpy_set.cross_entropy_forward(logits, target, "mean")[0],
        "torch": lambda: F.cross_entropy(logits_t, target_t),
    }
    backward = {
        "numba": lambda: numba_set.cross_entropy_backward(gloss, numba_cache),
        "numpy": lambda: numpy_set.cross_entropy_backward(gloss, numpy_cache),
        "torch": lambda: torch.autograd.grad(loss_t, logits_t, retain_graph=True)[0],
    }
    return [Case("cross-entropy", "forward", forward), Case("cross-entropy", "backward", backward)]


def all_cases(dtype, only, batches):
    rng = np.random.default_rng(0)
    cases = []
    for batch in batches:
        for name in CONVS:
            cases += conv_cases(name, batch, rng, dtype)
    for name, shape in LRNS.items():
        cases += lrn_cases(name, shape, rng, dtype)
    for name, shape in POOLS.items():
        cases += pool_cases(name, shape, rng, dtype)
    cases += relu_cases(rng, dtype) + dropout_cases(rng, dtype) + cross_entropy_cases(rng, dtype)
    return [c for c in cases if not only or any(word in c.op for word in only)]


# --- report -----------------------------------------------------------------------------

def blas_threads():
    """OpenBLAS's thread count, asked from the library numpy loaded (None if not found)."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "openblas" in line}
    for path in paths:
        lib = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, symbol):
                return getattr(lib, symbol)()
    return None


def machine_lines():
    model = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- CPU: {model}, {os.cpu_count()} logical cores",
        f"- threads: numba {numba.get_num_threads()} ({numba.threading_layer()} layer),"
        f" torch {torch.get_num_threads()}, BLAS {blas_threads()} ({blas['name']} {blas['version']})",
        f"- spin waits: GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')},"
        f" OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')}",
        f"- versions: python {platform.python_version()}, numpy {np.__version__},"
        f" numba {numba.__version__}, torch {torch.__version__}",
    ]


def table_lines(rows):
    lines = ["| op | direction | ms numba | ms numpy | ms torch | numba / torch |",
             "|---|---|---:|---:|---:|---:|"]
    for op, direction, ms in rows:
        lines.append(f"| {op} | {direction} | {ms['numba']:.3f} | {ms['numpy']:.3f} |"
                     f" {ms['torch']:.3f} | {ms['numba'] / ms['torch']:.2f} |")
    return lines


def conv_table_lines(rows, sgemm):
    """One line per (conv, batch, direction): each algorithm's ms, ratio to torch and % of
    SGEMM on the direct FLOPs; 'auto' shows the algorithm the default picks."""
    lines = ["| conv | batch | direction | auto picks | ms gemm | ms winograd | ms torch"
             " | gemm / torch | winograd / torch | auto / torch | % SGEMM gemm | % SGEMM winograd"
             " | % SGEMM torch |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case, ms in rows:
        flops = direct_flops(case.op, case.batch, case.direction)

        def cell(key, fmt):
            return fmt(ms[key]) if key in ms else "-"

        def pct(key):
            return cell(key, lambda t: f"{100 * flops / (t / 1e3) / 1e9 / sgemm:.0f}%")

        def ratio(key):
            return cell(key, lambda t: f"{t / ms['torch']:.2f}")

        lines.append(f"| {case.op} | {case.batch} | {case.direction} | {case.auto} |"
                     f" {cell('gemm', lambda t: f'{t:.1f}')} | {cell('winograd', lambda t: f'{t:.1f}')} |"
                     f" {ms['torch']:.1f} | {ratio('gemm')} | {ratio('winograd')} | {ratio(case.auto)} |"
                     f" {pct('gemm')} | {pct('winograd')} | {pct('torch')} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64],
                        help="batch sizes of the convolution table")
    parser.add_argument("--out", help="also write the tables, with the machine, to this markdown file")
    parser.add_argument("--only", nargs="*", default=[], help="ops whose name contains one of these words")
    parser.add_argument("--budget", type=float, default=3.0,
                        help="seconds of timing rounds per op, all libraries (5 to 50 rounds)")
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype).type
    load_start = os.getloadavg()
    torch.set_num_threads(numba.get_num_threads())
    torch.set_grad_enabled(False)
    sgemm = sgemm_gflops()

    conv_rows, rows = [], []
    for case in all_cases(dtype, args.only, args.batches):
        check(case, dtype)
        timed = [k for k in case.calls if k != "numpy"] if case.op in CONVS else LIBRARIES
        ms = interleaved_medians({library: case.calls[library] for library in timed}, args.budget)
        if case.op in CONVS:
            conv_rows.append((case, ms))
        else:
            rows.append((case.op, case.direction, ms))
        print(f"{case.op:>14} {case.batch:3d} {case.direction:>8}: "
              + "  ".join(f"{k} {v:9.3f}" for k, v in ms.items()) + " ms", file=sys.stderr, flush=True)

    text = []
    if conv_rows:
        text += [f"## CPU convolutions by algorithm, numba set vs torch, {args.dtype}", "",
                 f"SGEMM (numpy.matmul float32 {SGEMM_SIZE}^3, median of {SGEMM_REPEATS}):"
                 f" {sgemm:.1f} GFLOP/s; '% SGEMM' counts the direct convolution's FLOPs.", ""]
        text += conv_table_lines(conv_rows, sgemm) + [""]
    if rows:
        text += [f"## CPU ops, numba vs numpy vs torch, batch {BATCH}, {args.dtype}", ""]
        text += table_lines(rows)
    print("\n".join(text))
    if args.out:
        load = f"- load average (1, 5, 15 min) at the start: {', '.join(f'{v:.2f}' for v in load_start)};" \
               f" at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
        with open(args.out, "w") as out:
            out.write("\n".join(machine_lines() + [load, ""] + text) + "\n")


if __name__ == "__main__":
    main()
