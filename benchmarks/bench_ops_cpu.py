"""Every op, forward and backward, on the CPU: numba set vs numpy reference vs PyTorch.

Shapes are the Fashion-MNIST AlexNet's at batch 16 (input 1x224x224):

    conv1 96@11x11 s4 p1 -> 54x54, LRN 5, pool 3/2 -> 26
    conv2 256@5x5 p2 -> 26x26,     LRN 5, pool 3/2 -> 12
    conv3 384@3x3 p1, conv4 384@3x3 p1, conv5 256@3x3 p1 -> 12x12, pool 3/2 -> 5
    relu and dropout(0.5) on fc (16, 4096); cross-entropy on (16, 10)

conv1's backward skips gx, as in training (the image needs no gradient). Every result is
first checked against the numpy reference (check before you time), then the
three libraries are timed in interleaved rounds after a warm-up call each (JIT
included). PyTorch runs with as many threads as Numba; BLAS keeps its default (one per
core): it never runs at the same time as Numba's threads. Reported: the median over the
rounds, in ms.

    PYTHONPATH=. python benchmarks/bench_ops_cpu.py [--dtype float32] [--out FILE]
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

# The thread runtimes read their spin-wait settings when loaded, so these must come before
# numpy (OpenBLAS) and torch (libgomp, shared with Numba) are imported: the values of
# tinyalex/threads.py, which explains them. torch's timings do not move with them.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import tinyalex.cpu as numba_set  # noqa: E402
import tinyalex.reference as numpy_set  # noqa: E402

BATCH = 16
LIBRARIES = ("numba", "numpy", "torch")
# name: (x shape, weight shape, stride, padding)
CONVS = {
    "conv1": ((BATCH, 1, 224, 224), (96, 1, 11, 11), 4, 1),
    "conv2": ((BATCH, 96, 26, 26), (256, 96, 5, 5), 1, 2),
    "conv3": ((BATCH, 256, 12, 12), (384, 256, 3, 3), 1, 1),
    "conv4": ((BATCH, 384, 12, 12), (384, 384, 3, 3), 1, 1),
    "conv5": ((BATCH, 384, 12, 12), (256, 384, 3, 3), 1, 1),
}
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


def as_numpy_tuple(result):
    """A result (array, tensor, or tuple of them, None allowed) as a tuple of numpy arrays."""
    items = result if isinstance(result, tuple) else (result,)
    return tuple(None if r is None else (r.detach().numpy() if torch.is_tensor(r) else np.asarray(r))
                 for r in items)


def check(case, dtype):
    """Each library's result against the numpy reference, before anything is timed."""
    expected = as_numpy_tuple(case.calls["numpy"]())
    others = ["numba"] + (["torch"] if case.torch_checked else [])
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
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

def conv_cases(name, x_shape, w_shape, stride, padding, rng, dtype):
    need_gx = name != "conv1"
    x = rng.standard_normal(x_shape).astype(dtype)
    fan_in = np.prod(w_shape[1:])
    w = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    pairs = dict(stride=(stride, stride), padding=(padding, padding))
    y, numba_cache = numba_set.conv2d_forward(x, w, b, groups=1, **pairs)
    _, numpy_cache = numpy_set.conv2d_forward(x, w, b, groups=1, **pairs)
    gy = rng.standard_normal(y.shape).astype(dtype)
    xt, wt, bt, gyt = (torch.from_numpy(a) for a in (x, w, b, gy))
    forward = {
        "numba": lambda: numba_set.conv2d_forward(x, w, b, groups=1, **pairs)[0],
        "numpy": lambda: numpy_set.conv2d_forward(x, w, b, groups=1, **pairs)[0],
        "torch": lambda: F.conv2d(xt, wt, bt, stride, padding),
    }
    backward = {
        "numba": lambda: numba_set.conv2d_backward(gy, numba_cache, need_gx),
        "numpy": lambda: numpy_set.conv2d_backward(gy, numpy_cache, need_gx),
        "torch": lambda: torch.ops.aten.convolution_backward(
            gyt, xt, wt, [w_shape[0]], [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
            [need_gx, True, True]),
    }
    return [Case(name, "forward", forward), Case(name, "backward", backward)]


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


def all_cases(dtype, only):
    rng = np.random.default_rng(0)
    cases = []
    for name, (x_shape, w_shape, stride, padding) in CONVS.items():
        cases += conv_cases(name, x_shape, w_shape, stride, padding, rng, dtype)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--out", help="also write the table, with the machine, to this markdown file")
    parser.add_argument("--only", nargs="*", default=[], help="ops whose name contains one of these words")
    parser.add_argument("--budget", type=float, default=3.0,
                        help="seconds of timing rounds per op, all libraries (5 to 50 rounds)")
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype).type
    torch.set_num_threads(numba.get_num_threads())
    torch.set_grad_enabled(False)

    rows = []
    for case in all_cases(dtype, args.only):
        check(case, dtype)
        ms = interleaved_medians({library: case.calls[library] for library in LIBRARIES}, args.budget)
        rows.append((case.op, case.direction, ms))
        print(f"{case.op:>14} {case.direction:>8}: numba {ms['numba']:9.3f}  numpy {ms['numpy']:9.3f}"
              f"  torch {ms['torch']:9.3f} ms", file=sys.stderr, flush=True)

    title = f"## CPU ops, numba vs numpy vs torch, batch {BATCH}, {args.dtype}"
    print("\n".join([title, ""] + table_lines(rows)))
    if args.out:
        with open(args.out, "w") as out:
            out.write("\n".join([title, ""] + machine_lines() + [""] + table_lines(rows)) + "\n")


if __name__ == "__main__":
    main()
