"""The numba kernel set on Numba's thread pool: its GEMMs (single-threaded BLAS calls split
over the pool) against numpy for every operand layout, results that are bitwise the same on
one thread as on all of them (disjoint outputs, no atomics), and every parallel kernel's the
same however its loop is cut into parts. Each op's numba kernels are checked against the
numpy reference in tests/ops/test_<op>.py."""
import importlib
import pkgutil
import re

import numba
import numpy as np
import pytest

import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numba.cross_entropy as numba_cross_entropy
from tinyalex.kernels.numba import blas
from tinyalex.kernels.numba import parallel_kernel
from tinyalex.kernels.numba import relu as numba_relu
from tinyalex.kernels.numba.parallel_kernel import ParallelKernel


# --- race-freedom -----------------------------------------------------------------------

def test_results_do_not_depend_on_thread_count(monkeypatch):
    """Disjoint parallel-loop outputs give bitwise the same result on 1 thread as on all of them."""
    monkeypatch.setattr(numba_cross_entropy, "PARALLEL_MIN_ELEMENTS", 0)  # its parallel rows too
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6, 13, 11))
    weight = rng.standard_normal((8, 3, 3, 3))

    def run_all():
        y, conv_cache = numba_kernels.conv2d_forward(x, weight, None, (2, 1), (1, 1), 2)
        gx, gW, _ = numba_kernels.conv2d_backward(np.cos(y), conv_cache)
        p, pool_cache = numba_kernels.max_pool2d_forward(np.round(x), (3, 3), (2, 1), (1, 1))
        gp = numba_kernels.max_pool2d_backward(np.cos(p), pool_cache)
        z, lrn_cache = numba_kernels.lrn_forward(x, 4, 0.5, 0.75, 1.0)
        gz = numba_kernels.lrn_backward(np.cos(z), lrn_cache)
        yd, dilated_cache = numba_kernels.conv2d_forward(x, weight, None, (1, 2), (2, 1), 2, (2, 3))
        gxd, gWd, _ = numba_kernels.conv2d_backward(np.sin(yd), dilated_cache)
        pc, ceil_cache = numba_kernels.max_pool2d_forward(np.round(x), (2, 3), (2, 2), (1, 1), True)
        gpc = numba_kernels.max_pool2d_backward(np.cos(pc), ceil_cache)
        a, avg_cache = numba_kernels.avg_pool2d_forward(x, (3, 2), (1, 2), (1, 1), True, False)
        ga = numba_kernels.avg_pool2d_backward(np.cos(a), avg_cache)
        logits = x.reshape(-1, 11)
        target = np.arange(logits.shape[0]) % 11
        loss, ce_cache = numba_kernels.cross_entropy_forward(logits, target, "none", np.linspace(0.5, 2, 11),
                                                   3, 0.2)
        gl = numba_kernels.cross_entropy_backward(np.cos(loss), ce_cache)
        return y, gx, gW, p, gp, z, gz, yd, gxd, gWd, pc, gpc, a, ga, loss, gl

    everyone = run_all()
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        alone = run_all()
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(everyone, alone):
        np.testing.assert_array_equal(a, b)


def test_winograd_and_gemms_do_not_depend_on_thread_count():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 6, 13, 11)).astype(np.float32)
    w = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    a = rng.standard_normal((3, 40, 70)).astype(np.float32)
    c = rng.standard_normal((3, 70, 50)).astype(np.float32)
    tall = rng.standard_normal((1, 12, 20000)).astype(np.float32)          # K cut in parts
    wide = rng.standard_normal((1, 20000, 30)).astype(np.float32)
    assert blas._split_inner(1, 12, 30, 20000) > 1

    def run_all():
        y, cache = numba_kernels.conv2d_winograd_forward(x, w, None, (1, 1), (2, 1), 2, (1, 1))
        gx, gW, _ = numba_kernels.conv2d_winograd_backward(np.cos(y), cache)
        return (y, gx, gW, blas.gemm(a, c, np.empty((3, 40, 50), np.float32)), numba_kernels.matmul(a[0], c[0]),
                blas.gemm(tall, wide, np.empty((1, 12, 30), np.float32)))

    everyone = run_all()
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        alone = run_all()
    finally:
        numba.set_num_threads(threads)
    for many, one in zip(everyone, alone):
        np.testing.assert_array_equal(many, one)


def parallel_kernels():
    """Every @parallel_kernel of the numba set."""
    found = {}
    for module in pkgutil.iter_modules(numba_kernels.__path__):
        for value in vars(importlib.import_module(f"{numba_kernels.__name__}.{module.name}")).values():
            if isinstance(value, ParallelKernel):
                found[id(value)] = value
    return list(found.values())


def run_every_parallel_kernel(dtype):
    """A call of each parallel kernel of the set (through its op), on random data."""
    rng = np.random.default_rng(4)
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)   # noqa: E731
    x, w3, w5 = r(3, 6, 13, 11), r(8, 3, 3, 3), r(8, 3, 5, 5)
    y, cache = numba_kernels.conv2d_forward(x, w3, r(8), (2, 1), (1, 1), 2)
    out = [y, *numba_kernels.conv2d_backward(r(*y.shape), cache)]
    y, cache = numba_kernels.conv2d_winograd_forward(x, w5, r(8), (1, 1), (2, 1), 2)
    out += [y, *numba_kernels.conv2d_winograd_backward(r(*y.shape), cache)]
    for forward, backward, args in (
            (numba_kernels.max_pool2d_forward, numba_kernels.max_pool2d_backward, ((3, 3), (2, 1), (1, 1))),
            (numba_kernels.avg_pool2d_forward, numba_kernels.avg_pool2d_backward, ((3, 2), (1, 2), (1, 1))),
            (numba_kernels.lrn_forward, numba_kernels.lrn_backward, (4, 0.5, 0.75, 1.0)),
            (numba_kernels.relu_forward, numba_kernels.relu_backward, ()),
            (numba_kernels.dropout_forward, numba_kernels.dropout_backward, (0.4, 77))):
        y, cache = forward(x, *args)
        out += [y, backward(r(*y.shape), cache)]
    logits = x.reshape(-1, 11)
    for target in (np.arange(len(logits)) % 11, np.abs(r(*logits.shape))):
        loss, cache = numba_kernels.cross_entropy_forward(logits, target, "none", None, 3, 0.2)
        out += [loss, numba_kernels.cross_entropy_backward(r(*loss.shape), cache)]
    loss, cache = numba_kernels.mse_loss_forward(x, r(*x.shape), "none")
    out += [loss, numba_kernels.mse_loss_backward(r(*x.shape), cache)]
    param, buf = r(1000), r(1000)
    numba_kernels.sgd_update(param, r(1000), buf, 0.1, 0.9, 5e-4, True, False, 0.1)
    return out + [param, buf, numba_kernels.matmul(r(70, 40), r(40, 90))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_parallel_kernel_gives_the_same_bits_cut_into_any_number_of_parts(monkeypatch, dtype):
    """A call cuts a kernel's loop into NUMBA_NUM_THREADS parts: 1, 2, 3 (uneven shares) and
    7 parts give the same bits; every parallel kernel of the set is called."""
    monkeypatch.setattr(numba_cross_entropy, "PARALLEL_MIN_ELEMENTS", 0)
    results = {}
    for parts in (1, 2, 3, 7):
        monkeypatch.setattr(parallel_kernel, "parts_per_call", lambda parts=parts: parts)
        results[parts] = run_every_parallel_kernel(dtype)
    blas_kernel = blas._tasks_i64 if blas._names and blas._names[4] == 64 else blas._tasks_i32
    unused = [blas._tasks_i32 if blas_kernel is blas._tasks_i64 else blas._tasks_i64]
    not_called = [k.__qualname__ for k in parallel_kernels() if k not in unused and not k.built(dtype)]
    assert not not_called, f"not run by run_every_parallel_kernel: {not_called}"
    for parts in (2, 3, 7):
        for a, b in zip(results[1], results[parts]):
            np.testing.assert_array_equal(a, b)


def test_a_parallel_kernel_refuses_arguments_it_would_misread():
    """The ufunc reads its arrays as the signature says (C-contiguous, that dtype): anything
    else would be read wrongly, or written into a copy. It names the kernel and the argument."""
    from tinyalex.kernels.numba import relu
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    with pytest.raises(TypeError, match=r"_relu_forward: argument 1 expected a C-contiguous float32 array"
                                        r" with 1 dimensions, got float64 array"):
        relu._relu_forward(x.reshape(-1), np.empty(24))
    with pytest.raises(TypeError, match=r"argument 0 expected a C-contiguous float32 array.*strides \(8,\)"):
        relu._relu_forward(x.T.reshape(-1)[::2], np.empty(12, np.float32))
    with pytest.raises(TypeError, match="expected 2 arguments, got 1"):
        relu._relu_forward(x.reshape(-1))


def test_a_parallel_kernel_refuses_an_unaligned_array():
    """NumPy would copy an unaligned input to aligned memory, and the kernel would write there."""
    from tinyalex.kernels.numba import relu
    unaligned = np.zeros(4 * 24 + 1, np.uint8)[1:].view(np.float32)
    assert unaligned.flags.c_contiguous and not unaligned.flags.aligned
    with pytest.raises(TypeError, match="_relu_forward: argument 1 expected a C-contiguous float32 array.*not aligned"):
        relu._relu_forward(np.ones(24, np.float32), unaligned)


def test_the_threaded_loop_calls_the_kernel_instead_of_compiling_it_again():
    """Numba's own loop around a 'parallel' gufunc holds a copy of the kernel's code, compiled
    again in every process (0.1 s a kernel on every run); ours holds only the call. And the
    kernel is compiled with noalias on its arrays, as a prange loop's body is."""
    kernel = ParallelKernel(numba_relu._relu_forward.function, "{f}[::1], {f}[::1]")
    ufunc = kernel.compile("float64", cache=False)
    loop = parallel_kernel._LIBRARIES[-1]
    defined = [f.name for f in loop._final_module.functions if not f.is_declaration]
    assert len(defined) == 1 and defined[0].startswith("tinyalex_threaded_loop_"), defined
    x = np.linspace(-1, 1, 1001)
    y = np.empty_like(x)
    ufunc(x, y, np.arange(3), 3)
    np.testing.assert_array_equal(y, np.maximum(x, 0))

    builder = parallel_kernel._Builder(numba_relu._relu_forward.function, "(n),(n),(),()->()")
    signature = kernel.ufunc_signature("float64")
    builder.add(signature)
    kernel_ir = builder._cres[signature].library.get_llvm_str()
    assert re.search(r"define [^\n]*noalias", kernel_ir), "the kernel's arrays are not noalias"


# --- GEMMs on Numba's pool ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("G, M, K, N", [(1, 5, 7, 3), (16, 33, 17, 9), (1, 300, 40, 700),
                                        (3, 1, 4, 1), (2, 0, 3, 4), (1, 4, 0, 3),
                                        (1, 12, 20000, 30), (2, 8, 30001, 24)])  # K cut in parts
def test_gemm_matches_numpy_for_every_operand_layout(dtype, G, M, K, N):
    rng = np.random.default_rng(G + M + K + N)
    a = rng.standard_normal((G, M, K)).astype(dtype)
    b = rng.standard_normal((G, K, N)).astype(dtype)
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    a_t = np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)   # BLAS-transposed views
    b_t = np.ascontiguousarray(b.transpose(0, 2, 1)).transpose(0, 2, 1)
    for left, right in ((a, b), (a_t, b), (a, b_t), (a_t, b_t), (a[:, ::-1], b)):
        out = blas.gemm(left, right, np.empty((G, M, N), dtype))
        want = expected[:, ::-1] if left.strides[1] < 0 else expected
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol * max(1, K))
    out = np.ones((G, M, N), dtype)
    blas.gemm(a, b, out, accumulate=True)
    np.testing.assert_allclose(out, expected + 1, rtol=tol, atol=tol * max(1, K))


def test_gemm_leaves_blas_thread_count_as_it_was():
    if not blas.ON_NUMBA_POOL:
        pytest.skip("numpy's BLAS is not an OpenBLAS with the cblas symbols: numpy.matmul fallback")
    before = blas._get_threads()
    blas.gemm(np.ones((1, 64, 64)), np.ones((1, 64, 64)), np.empty((1, 64, 64)))
    assert blas._get_threads() == before


def test_gemm_refuses_mismatched_operands():
    with pytest.raises(ValueError, match="do not match"):
        blas.gemm(np.ones((1, 2, 3)), np.ones((1, 4, 2)), np.empty((1, 2, 2)))
    with pytest.raises(TypeError, match="one float dtype"):
        blas.gemm(np.ones((1, 2, 3), np.float32), np.ones((1, 3, 2)), np.empty((1, 2, 2)))


def test_numpy_first_import_gives_the_same_step(tmp_path):
    """numpy imported before tinyalex (as most programs do) runs the same kernels: same loss."""
    import subprocess
    import sys
    script = ("import numpy as np\nimport tinyalex as ta\nimport tinyalex.functional as F\n"
              "x = ta.tensor(np.random.default_rng(0).standard_normal((2, 32, 8, 8)))\n"
              "w = ta.tensor(np.random.default_rng(1).standard_normal((32, 32, 3, 3)))\n"
              "y = F.linear(F.conv2d(x, w, padding=1).reshape(2, -1), ta.tensor(np.ones((3, 2048))))\n"
              "print(repr(float(y.sum().item())))\n")
    runs = []
    for first in ("import numpy\n", "import tinyalex\n"):
        done = subprocess.run([sys.executable, "-c", first + script], capture_output=True, text=True,
                              check=True, env={**__import__("os").environ, "PYTHONPATH": "."})
        runs.append(done.stdout.strip())
    assert runs[0] == runs[1]
