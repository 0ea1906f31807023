"""GEMMs on Numba's thread pool: single-threaded BLAS calls inside one parallel loop.

Why not numpy.matmul? It runs OpenBLAS's own thread pool, whose idle workers busy-wait
for up to 2**OPENBLAS_THREAD_TIMEOUT cycles after every call (~0.1 s by default). On a
2-core machine a spinning BLAS worker takes a core from the Numba kernel that runs
next (docs/pitfalls.md#oversubscription). OpenBLAS reads that timeout only when it is
loaded, i.e. when numpy is first imported, so a program that ran `import numpy` before
`import tinyalex` kept the long spins and its training step ran ~30% slower (1.01-1.17 s
against 0.79-0.83 s at batch 16). No run-time call shortens the spin.

So the numba kernel set never lets BLAS start its own threads. Every GEMM it does goes
through `gemm()`, which

- cuts the product into tasks (the independent matrices of a batch, or blocks of rows or
  columns of one big product), each writing its own block of `out`: no races;
- runs the tasks in a parallel loop (parallel_kernel.py), each task ONE call of the BLAS sgemm/dgemm on the
  calling thread (OpenBLAS is set to one thread for the duration of the call, then given
  back the count it had, so the user's own numpy code is untouched);
- therefore uses one pool, Numba's, for both the loops and the GEMMs: nothing spins
  against anything, whatever was imported first.

The BLAS is the one numpy itself links (its `cblas_?gemm`, found among the loaded shared
libraries and registered with LLVM under a fixed name, so the kernels stay cacheable).
Where numpy's BLAS is not an OpenBLAS with those symbols (MKL, Accelerate), `gemm()`
falls back to numpy.matmul: correct, with that library's own threading.
"""
import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
from numba import types

from tinyalex.kernels.numba.parallel_kernel import copy_function, parallel_kernel, part_range

from tinyalex.kernels.numba import buffers

#: cblas symbol names by integer width: numpy's wheels ship OpenBLAS with 64-bit integers
#: and a 'scipy_' prefix and '64_' suffix; a distribution's OpenBLAS has the plain names.
_CANDIDATES = (
    # (sgemm, dgemm, set_num_threads, get_num_threads, integer width)
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_openblas_set_num_threads64_",
     "scipy_openblas_get_num_threads64_", 64),
    ("cblas_sgemm64_", "cblas_dgemm64_", "openblas_set_num_threads64_",
     "openblas_get_num_threads64_", 64),
    ("cblas_sgemm", "cblas_dgemm", "openblas_set_num_threads", "openblas_get_num_threads", 32),
)
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112                     # CBLAS enum values


def _numpy_blas():
    """(ctypes library, names) of the BLAS numpy loaded, or (None, None)."""
    np.ones((2, 2)) @ np.ones((2, 2))                             # make sure it is loaded
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps
                            if "blas" in line.lower() and ".so" in line})
    except OSError:
        return None, None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for names in _CANDIDATES:
            if all(hasattr(library, name) for name in names[:4]):
                return library, names
    return None, None


_library, _names = _numpy_blas()
_set_threads = _get_threads = None
if _library is not None:
    _sgemm, _dgemm, _set, _get, _width = _names
    for alias, symbol in (("tinyalex_sgemm_i%d" % _width, _sgemm), ("tinyalex_dgemm_i%d" % _width, _dgemm)):
        llvm.add_symbol(alias, ctypes.cast(getattr(_library, symbol), ctypes.c_void_p).value)
    _set_threads, _get_threads = getattr(_library, _set), getattr(_library, _get)
    _set_threads.argtypes = [ctypes.c_int]
    _get_threads.restype = ctypes.c_int

#: True when gemm() runs on Numba's pool; False when it falls back to numpy.matmul.
ON_NUMBA_POOL = _library is not None


def _cblas(name, real, width):
    """The cblas_?gemm prototype with pointers passed as integers (same ABI on x86-64/arm64)."""
    i = types.int64 if width == 64 else types.int32
    p, e = types.intp, types.int32
    return types.ExternalFunction(name, types.void(e, e, e, i, i, i, real, p, i, p, i, real, p, i))


_sgemm_i64 = _cblas("tinyalex_sgemm_i64", types.float32, 64)
_dgemm_i64 = _cblas("tinyalex_dgemm_i64", types.float64, 64)
_sgemm_i32 = _cblas("tinyalex_sgemm_i32", types.float32, 32)
_dgemm_i32 = _cblas("tinyalex_dgemm_i32", types.float64, 32)


#: _gemm_tasks' arguments, in parallel_kernel's notation.
_TASKS_SIGNATURE = ("{f}[::1], {f}[::1], {f}[::1], boolean, boolean, int64, int64, int64, float64,"
                    " int64, int64, int64, int64, int64[::1], int64[::1], int64[::1], int64[::1], boolean")


def _gemm_tasks(a, b, c, ta, tb, lda, ldb, ldc, beta, parts_m, parts_n, M, N, Ks, sa, sb, sc, double,
                part, parts, done):
    """Task t of G*parts_m*parts_n: block (rows m0:m1, columns n0:n1) of c[g] = a[g] @ b[g].

    a, b, c are 1-D views starting at the first element of each operand; sa, sb, sc
    the element offsets of the G matrices, Ks their inner dimensions; c's rows are ldc
    apart. The blocks of c are disjoint, so the tasks never write the same element.
    sgemm and dgemm are not names of this module: _tasks_for() compiles a copy of this
    function whose globals hold the cblas ?gemm of one integer width.
    """
    size = 8 if double else 4
    per_g = parts_m * parts_n
    first, last = part_range(sa.shape[0] * per_g, part, parts)
    for t in range(first, last):
        g, r = t // per_g, t % per_g
        m0, m1 = (r // parts_n) * M // parts_m, (r // parts_n + 1) * M // parts_m
        n0, n1 = (r % parts_n) * N // parts_n, (r % parts_n + 1) * N // parts_n
        K = Ks[g]
        if m1 == m0 or n1 == n0:
            continue
        a_first = sa[g] + (m0 if ta else m0 * lda)                # row m0 of op(a)
        b_first = sb[g] + (n0 * ldb if tb else n0)                # column n0 of op(b)
        c_first = sc[g] + m0 * ldc + n0
        pa = a.ctypes.data + a_first * size
        pb = b.ctypes.data + b_first * size
        pc = c.ctypes.data + c_first * size
        if double:
            dgemm(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS,  # noqa: F821
                  m1 - m0, n1 - n0, K, 1.0, pa, lda, pb, ldb, beta, pc, ldc)
        else:
            sgemm(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS,  # noqa: F821
                  m1 - m0, n1 - n0, K, 1.0, pa, lda, pb, ldb, beta, pc, ldc)


def _tasks_for(width, sgemm, dgemm):
    """The task kernel calling the cblas ?gemm that take `width`-bit integers. They are the
    globals of a copy, not a closure: Numba's cache key hashes a closure's contents, and an
    ExternalFunction pickles under a new random class name in every process, so a closure
    missed the disk cache on every run (recompiled, and one more cache file each time)."""
    tasks = copy_function(_gemm_tasks, f"_i{width}", sgemm=sgemm, dgemm=dgemm)
    return parallel_kernel(_TASKS_SIGNATURE)(tasks)


_tasks_i64 = _tasks_for(64, _sgemm_i64, _dgemm_i64)
_tasks_i32 = _tasks_for(32, _sgemm_i32, _dgemm_i32)


def _operand(a, rows, cols):
    """(transposed, leading dimension) of a (G, rows, cols) view whose matrices are
    row-major (or their transposes), else None (the caller copies)."""
    item = a.itemsize
    s_row, s_col = a.strides[1], a.strides[2]
    if s_col == item and s_row % item == 0 and s_row // item >= max(1, cols):
        return False, max(1, s_row // item)
    if s_row == item and s_col % item == 0 and s_col // item >= max(1, rows):
        return True, max(1, s_col // item)
    return None


#: How many tasks a batch of GEMMs is cut into at least. It depends on the machine, never on
#: numba.get_num_threads(): where the cuts fall can change the last bit of a result (BLAS's
#: edge kernels), and results must not depend on the thread count
#: (docs/pitfalls.md#deterministic-backward). Each cut re-packs the uncut operand, so
#: there are no more cuts than that.
MIN_TASKS = max(4, os.cpu_count() or 1)
#: No task smaller than this (multiply-adds): below it a BLAS call costs more than it saves.
MIN_TASK_MACS = 1 << 20


def _split(G, M, N, K):
    """(parts_m, parts_n): cut each of the G products, along its longer side, so that there
    are at least MIN_TASKS tasks in all, none below MIN_TASK_MACS; shapes decide, not threads."""
    if G >= MIN_TASKS:
        return 1, 1
    parts = min(-(-MIN_TASKS // G), max(1, M * N * K // MIN_TASK_MACS))
    return (min(parts, max(1, M // 8)), 1) if M > N else (1, min(parts, max(1, N // 8)))


def _split_inner(G, M, N, K):
    """How many parts to cut the inner dimension K into: > 1 only for a few products with a
    long K and a small result (conv1's weight gradient, 96 x 121 summed over B*54*54), where
    cutting M or N would re-pack the long operand in every task. The partial products are
    summed after, in a fixed order (shapes decide, not threads)."""
    if G >= MIN_TASKS or K < 8 * max(M, N) or M * N * K < MIN_TASKS * MIN_TASK_MACS:
        return 1
    return max(1, min(-(-MIN_TASKS // G), K // 256))


def gemm(a, b, out, accumulate=False):
    """out[g] = a[g] @ b[g] (or out[g] += ... with accumulate), on Numba's pool.

    Shapes: a (G, M, K), b (G, K, N), out (G, M, N); 2-D operands are one matrix (G = 1).
    a and b may be transposed views (W.T, cols.transpose(0, 2, 1)) of row-major arrays:
    BLAS transposes them while it reads; out may be a block of a larger array whose rows
    are contiguous (M[:, :, columns]). One dtype, float32 or float64.
    Returns out.
    """
    squeeze = out.ndim == 2
    if squeeze:
        a, b, out = a[None], b[None], out[None]
    G, M, N = out.shape
    K = a.shape[2]
    item = out.itemsize
    rows_contiguous = out.size == 0 or (out.strides[2] == item and out.strides[1] % item == 0
                                        and out.strides[1] >= N * item)
    if a.shape != (G, M, K) or b.shape != (G, K, N) or not rows_contiguous:
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {out.shape} do not match"
                         " (or the rows of out are not contiguous)")
    if not (a.dtype == b.dtype == out.dtype) or out.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemm: expected one float dtype, got {a.dtype}, {b.dtype}, {out.dtype}")
    if not ON_NUMBA_POOL or min(G, M, N) == 0 or K == 0:
        if accumulate:
            out += np.matmul(a, b)
        else:
            np.matmul(a, b, out=out) if K else out.fill(0)
        return out[0] if squeeze else out
    layout_a, layout_b = _operand(a, M, K), _operand(b, K, N)
    if layout_a is None:
        a = np.ascontiguousarray(a)
        layout_a = (False, max(1, K))
    if layout_b is None:
        b = np.ascontiguousarray(b)
        layout_b = (False, max(1, N))
    starts = [np.arange(G, dtype=np.int64) * (m.strides[0] // item) for m in (a, b, out)]
    flat = [np.lib.stride_tricks.as_strided(m, shape=(1,), strides=(item,)) for m in (a, b, out)]
    (ta, lda), (tb, ldb) = layout_a, layout_b
    kernel = _tasks_i64 if _names[4] == 64 else _tasks_i32
    double = out.dtype == np.float64
    parts_k = _split_inner(G, M, N, K)
    previous = _get_threads()
    _set_threads(1)                        # BLAS computes on the calling Numba thread only
    try:
        if parts_k == 1:
            parts_m, parts_n = _split(G, M, N, K)
            kernel(flat[0], flat[1], flat[2], ta, tb, lda, ldb, max(1, out.strides[1] // item),
                   1.0 if accumulate else 0.0, parts_m, parts_n, M, N, np.full(G, K, np.int64),
                   starts[0], starts[1], starts[2], double)
        else:                              # K cut in parts_k: partial products, then their sum
            cuts = np.arange(parts_k + 1) * K // parts_k
            k0, sizes = cuts[:-1], np.diff(cuts)
            partial = np.empty((G, parts_k, M, N), dtype=out.dtype)
            sa = (starts[0][:, None] + k0 * (1 if not ta else lda)).ravel()
            sb = (starts[1][:, None] + k0 * (ldb if not tb else 1)).ravel()
            sc = np.arange(G * parts_k, dtype=np.int64) * M * N
            kernel(flat[0], flat[1], partial.reshape(-1), ta, tb, lda, ldb, N, 0.0, 1, 1, M, N,
                   np.tile(sizes, G).astype(np.int64), sa, sb, sc, double)
            total = partial.sum(axis=1)    # a fixed order: the parts depend on shapes only
            if accumulate:
                out += total
            else:
                out[...] = total
    finally:
        _set_threads(previous)
    return out[0] if squeeze else out


#: At most this many rows in a, a @ W.T (the linear layer's forward) runs as (W @ a.T).T:
#: OpenBLAS packs the large W faster untransposed (benchmarks/results/cpu_design_notes.md).
FEW_ROWS = 64


def matmul(a, b):
    """a @ b for 2-D float arrays on Numba's pool (the linear layer's GEMMs)."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul: expected 2-D operands, got shapes {a.shape} and {b.shape}")
    out = buffers.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    if a.shape[0] <= FEW_ROWS and b.T.flags.c_contiguous and b.shape[1] > a.shape[0]:
        out_t = buffers.empty(out.shape[::-1], out.dtype)
        out[...] = gemm(b.T, a.T, out_t).T
    else:
        gemm(a, b, out)
    return out                             # itself, not a view: autograd keeps it as a gradient without a copy
