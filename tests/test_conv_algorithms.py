"""The conv algorithm switch ('auto' | 'gemm' | 'winograd'), Winograd in the numpy and numba
sets, the numba set's GEMMs on its own pool, and the fused SGD step.

Every algorithm passes the same checks: torch parity (float64 tight, float32 within the
suite's tolerance), float64 finite differences, numba against the reference over many
seeds, and results that do not depend on the thread count. The accuracy bounds tested
here are the ones docs/ops/conv2d_winograd.md states.
"""
from fractions import Fraction

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tinyalex as ta
import tinyalex.functional as F
from tinyalex import conv_algorithms, cpu, nn, optim, reference
from tinyalex.conv_algorithms import choose, resolve, winograd_refusal
from tinyalex.cpu import blas
from tinyalex.reference.conv_winograd import POINTS, winograd_matrices

from helpers import check_parity

ALGORITHMS = ("gemm", "winograd")
CPU_SETS = {"numpy": reference, "numba": cpu}

# x_shape, weight_shape (OC, C/groups, r, r), padding, groups: stride 1, every one legal for
# Winograd. Odd channels, H != W, N >= 2, padding 0 / r//2 / r - 1 / more than r - 1 (the
# input gradient then crops), odd output sizes (the last tile hangs over the edge).
GEOMETRIES = [
    ((2, 3, 7, 9), (5, 3, 3, 3), (1, 1), 1),
    ((3, 6, 8, 5), (4, 3, 3, 3), (0, 2), 2),
    ((2, 5, 9, 11), (3, 5, 5, 5), (2, 2), 1),
    ((2, 4, 10, 7), (6, 2, 5, 5), (4, 1), 2),
    ((2, 2, 6, 6), (3, 2, 3, 3), (3, 0), 1),
]


def _arrays(x_shape, w_shape, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(x_shape).astype(dtype),
            (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype),
            rng.standard_normal(w_shape[0]).astype(dtype)]


# --- the transforms -------------------------------------------------------------------

def test_f23_matrices_are_lavin_and_grays():
    AT, G, BT = winograd_matrices(2, 3)
    np.testing.assert_array_equal(AT, [[1, 1, 1, 0], [0, 1, -1, 1]])
    np.testing.assert_array_equal(G, [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
    np.testing.assert_array_equal(BT, [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])


@pytest.mark.parametrize("m, r", [(2, 3), (2, 5), (4, 3), (3, 3), (2, 2)])
def test_one_dimensional_identity_is_exact(m, r):
    """y = AT [(G g) * (BT d)] is the correlation y_i = sum_k d_{i+k} g_k, in exact fractions."""
    AT, G, BT = (np.array([[Fraction(v).limit_denominator(64) for v in row] for row in M])
                 for M in winograd_matrices(m, r))
    rng = np.random.default_rng(m * 10 + r)
    d = [Fraction(int(v)) for v in rng.integers(-9, 10, m + r - 1)]
    g = [Fraction(int(v)) for v in rng.integers(-9, 10, r)]
    y = AT.dot(G.dot(g) * BT.dot(d))
    assert list(y) == [sum(d[i + k] * g[k] for k in range(r)) for i in range(m)]


def test_too_many_points_is_refused():
    with pytest.raises(ValueError, match="finite points"):
        winograd_matrices(8, 5)
    assert len(POINTS) == 9


# --- torch parity and finite differences, over the algorithm -----------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("x_shape, w_shape, padding, groups", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv2d_algorithms_match_torch(kernels, algorithm, x_shape, w_shape, padding, groups, dtype):
    if algorithm not in kernels.module.CONV2D_ALGORITHMS:
        pytest.skip(f"the {kernels.name} set has no {algorithm}")
    rtol = 1e-11 if dtype == np.float64 else 2e-5 * (10 if w_shape[2] == 5 else 1)
    check_parity(kernels,
                 lambda x, w, b: F.conv2d(x, w, b, 1, padding, 1, groups, algorithm=algorithm),
                 lambda x, w, b: TF.conv2d(x, w, b, 1, padding, 1, groups),
                 _arrays(x_shape, w_shape, seed=3), dtype=dtype, rtol=rtol)


@pytest.mark.parametrize("kernel_set", CPU_SETS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("x_shape, w_shape, padding, groups", GEOMETRIES[1:4])
def test_conv2d_algorithms_finite_differences(kernel_set, algorithm, x_shape, w_shape, padding, groups):
    x, w, b = (ta.tensor(a, requires_grad=True) for a in _arrays(x_shape, w_shape, seed=4))
    with ta.use_kernels(kernel_set):
        assert ta.gradcheck(lambda x, w, b: F.conv2d(x, w, b, 1, padding, 1, groups,
                                                     algorithm=algorithm), (x, w, b))


def test_need_gx_false_and_repeatable_backward():
    x, w, b = _arrays((2, 4, 9, 7), (6, 2, 3, 3), seed=5)
    for K in CPU_SETS.values():
        y, cache = K.conv2d_forward(x, w, b, (1, 1), (1, 1), 2, (1, 1), "winograd")
        gy = np.cos(y)
        gx, gW, gb = K.conv2d_backward(gy, cache)
        no_gx, gW_again, gb_again = K.conv2d_backward(gy, cache, need_gx=False)
        assert no_gx is None
        np.testing.assert_array_equal(gW_again, gW)
        np.testing.assert_array_equal(gb_again, gb)
        np.testing.assert_array_equal(K.conv2d_backward(gy, cache)[0], gx)


# --- numba against the reference, and race freedom ----------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_numba_winograd_matches_reference_over_seeds(seed):
    rng = np.random.default_rng(100 + seed)
    r = (3, 5)[seed % 2]
    groups = 1 + seed % 3
    C, OC = groups * int(rng.integers(1, 5)), groups * int(rng.integers(1, 5))
    x_shape = (int(rng.integers(2, 4)), C, int(rng.integers(r, 13)), int(rng.integers(r, 13)))
    padding = (int(rng.integers(0, r + 1)), int(rng.integers(0, r + 1)))
    x, w, b = _arrays(x_shape, (OC, C // groups, r, r), seed)
    y_ref, cache_ref = reference.conv2d_forward(x, w, b, (1, 1), padding, groups, (1, 1), "winograd")
    y, cache = cpu.conv2d_forward(x, w, b, (1, 1), padding, groups, (1, 1), "winograd")
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12 * np.abs(y_ref).max())
    gy = rng.standard_normal(y.shape)
    for ours, theirs in zip(cpu.conv2d_backward(gy, cache), reference.conv2d_backward(gy, cache_ref)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12 * np.abs(theirs).max())


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
        y, cache = cpu.conv2d_forward(x, w, None, (1, 1), (2, 1), 2, (1, 1), "winograd")
        gx, gW, _ = cpu.conv2d_backward(np.cos(y), cache)
        return (y, gx, gW, blas.gemm(a, c, np.empty((3, 40, 50), np.float32)), cpu.matmul(a[0], c[0]),
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


# --- stated accuracy (docs/ops/conv2d_winograd.md#accuracy) --------------------------------

@pytest.mark.parametrize("r, channels, bound", [(3, 16, 1e-5), (3, 256, 3e-5), (5, 16, 2e-5),
                                                (5, 256, 5e-5)])
def test_float32_winograd_error_stays_within_the_stated_bound(r, channels, bound):
    """Max |y32 - y64| / max |y64|, y64 the float64 reference, unit-variance inputs and
    weights scaled by 1/sqrt(C r r): the bounds are ~3x the figures the page states."""
    x, w, _ = _arrays((4, channels, 14, 14), (32, channels, r, r), seed=7)
    y64, _ = reference.conv2d_forward(x, w, None, (1, 1), (r // 2, r // 2), 1)
    y32, _ = cpu.conv2d_forward(x.astype(np.float32), w.astype(np.float32), None, (1, 1),
                                (r // 2, r // 2), 1, (1, 1), "winograd")
    error = np.abs(y32 - y64).max() / np.abs(y64).max()
    assert error <= bound
    assert error > 0                                               # float32 really ran


# --- the switch: per call, per module, globally; 'auto'; refusals ----------------------------

@pytest.fixture
def chosen(monkeypatch):
    """The algorithm names resolve() hands to the kernel sets, call by call."""
    names = []
    original = conv_algorithms.resolve

    def spy(*args, **kwargs):
        names.append(original(*args, **kwargs))
        return names[-1]

    monkeypatch.setattr(conv_algorithms, "resolve", spy)
    return names


def test_call_module_and_global_settings(chosen):
    x = ta.tensor(np.random.default_rng(8).standard_normal((2, 64, 12, 12)).astype(np.float32))
    conv = nn.Conv2d(64, 64, 3, padding=1)
    assert ta.get_conv_algorithm() == "auto"
    conv(x)                                                        # auto: wide 3x3 -> winograd
    with ta.conv_algorithm("gemm"):
        conv(x)                                                    # global
        F.conv2d(x, conv.weight, padding=1, algorithm="winograd")  # the call wins
        conv.algorithm = "winograd"
        conv(x)                                                    # the module wins
    assert ta.get_conv_algorithm() == "auto"                       # the block restored it
    ta.set_conv_algorithm("gemm")
    try:
        F.conv2d(x, conv.weight, padding=1)
        assert nn.Conv2d(3, 4, 3, algorithm="gemm").algorithm == "gemm"
        assert "algorithm='gemm'" in repr(nn.Conv2d(3, 4, 3, algorithm="gemm"))
    finally:
        ta.set_conv_algorithm("auto")
    assert chosen == ["winograd", "gemm", "winograd", "winograd", "gemm"]


@pytest.mark.parametrize("weight_shape, stride, dilation, groups, out_size, expected", [
    ((384, 256, 3, 3), (1, 1), (1, 1), 1, (12, 12), "winograd"),  # AlexNet conv3
    ((256, 96, 5, 5), (1, 1), (1, 1), 1, (26, 26), "winograd"),   # conv2
    ((96, 1, 11, 11), (4, 4), (1, 1), 1, (54, 54), "gemm"),       # conv1: stride 4, 11x11
    ((64, 3, 3, 3), (1, 1), (1, 1), 1, (32, 32), "gemm"),         # 3 input channels: narrow
    ((64, 16, 3, 3), (1, 1), (1, 1), 4, (32, 32), "gemm"),        # 16 per group: narrow
    ((256, 64, 3, 3), (1, 1), (1, 1), 2, (32, 32), "winograd"),   # 64 and 128 per group
    ((256, 256, 3, 3), (1, 1), (1, 1), 1, (4, 4), "gemm"),        # small planes
    ((256, 256, 3, 3), (1, 1), (1, 1), 1, (6, 7), "winograd"),
    ((256, 256, 3, 3), (1, 1), (1, 1), 1, (12, 5), "gemm"),
    ((64, 32, 3, 3), (1, 1), (1, 1), 1, (26, 26), "gemm"),        # 32 input channels: narrow
    ((256, 256, 3, 3), (2, 2), (1, 1), 1, (16, 16), "gemm"),      # stride 2
    ((256, 256, 3, 3), (1, 1), (2, 2), 1, (16, 16), "gemm"),      # dilated
    ((256, 256, 3, 1), (1, 1), (1, 1), 1, (16, 16), "gemm"),      # not square
])
def test_auto_rule(weight_shape, stride, dilation, groups, out_size, expected):
    assert choose(weight_shape, stride, dilation, groups, out_size) == expected
    assert choose(weight_shape, stride, dilation, groups, out_size, ("gemm",)) == "gemm"


@pytest.mark.parametrize("stride, dilation, kernel, message", [
    ((2, 2), (1, 1), (3, 3), r"needs stride 1, got stride \(2, 2\)"),
    ((1, 1), (2, 1), (3, 3), r"needs dilation 1, got dilation \(2, 1\)"),
    ((1, 1), (1, 1), (11, 11), r"supports square kernels of size \[3, 5\], got kernel size \(11, 11\)"),
    ((1, 1), (1, 1), (3, 5), r"supports square kernels of size \[3, 5\], got kernel size \(3, 5\)"),
])
def test_winograd_refuses_what_it_cannot_do(stride, dilation, kernel, message):
    x = ta.tensor(np.zeros((2, 4, 16, 16)))
    w = ta.tensor(np.zeros((4, 4) + kernel))
    with pytest.raises(ValueError, match=r"conv2d: algorithm='winograd' " + message):
        F.conv2d(x, w, None, stride, 1, dilation, algorithm="winograd")
    assert winograd_refusal(kernel, stride, dilation) is not None
    for K in CPU_SETS.values():                                    # the kernels refuse too
        with pytest.raises(ValueError, match="algorithm='winograd'"):
            K.conv2d_forward(x.array, w.array, None, stride, (1, 1), 1, dilation, "winograd")


def test_unknown_names_are_refused():
    x, w = ta.tensor(np.zeros((1, 2, 5, 5))), ta.tensor(np.zeros((2, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: algorithm: expected one of \('auto', 'gemm',"
                                         r" 'winograd'\), got 'fft'"):
        F.conv2d(x, w, algorithm="fft")
    with pytest.raises(ValueError, match="set_conv_algorithm: algorithm"):
        ta.set_conv_algorithm("Winograd")
    with pytest.raises(ValueError, match="Conv2d: algorithm"):
        nn.Conv2d(2, 2, 3, algorithm="direct")
    for K in CPU_SETS.values():                                    # 'auto' is resolved before
        with pytest.raises(ValueError, match="resolve 'auto'"):
            K.conv2d_forward(x.array, w.array, None, (1, 1), (0, 0), 1, (1, 1), "auto")


def test_the_cupy_set_keeps_gemm_and_refuses_winograd_cleanly():
    import tinyalex.cuda as cuda_set                               # importing needs no GPU
    assert cuda_set.CONV2D_ALGORITHMS == ("gemm",)
    assert resolve("conv2d", "auto", (256, 256, 3, 3), (1, 1), (1, 1), 1, (12, 12),
                   cuda_set.CONV2D_ALGORITHMS, "cupy") == "gemm"
    with pytest.raises(ValueError, match=r"algorithm='winograd' is not available in the 'cupy'"
                                         r" kernel set \(it has \('gemm',\)\)"):
        resolve("conv2d", "winograd", (256, 256, 3, 3), (1, 1), (1, 1), 1, (12, 12),
                cuda_set.CONV2D_ALGORITHMS, "cupy")
    with pytest.raises(ValueError, match="not available in the 'cupy' kernel set"):
        cuda_set.conv2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((2, 2, 3, 3)), None, (1, 1),
                                (1, 1), 1, (1, 1), "winograd")


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


# --- the fused SGD step of the numba set ---------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("settings", [dict(momentum=0.9, weight_decay=5e-4),
                                      dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
                                      dict(momentum=0.5, dampening=0.3), dict(), dict(weight_decay=0.1)])
def test_fused_sgd_gives_the_bits_of_the_array_expressions(dtype, settings):
    start = np.random.default_rng(10).standard_normal((37, 5)).astype(dtype)
    results = []
    for kernel_set in ("numpy", "numba"):                          # array expressions, then fused
        with ta.use_kernels(kernel_set):
            p = ta.tensor(start.copy(), requires_grad=True)
            opt = optim.SGD([p], lr=0.1, **settings)
            grads = np.random.default_rng(11)
            for _ in range(4):
                p.grad = ta.tensor(grads.standard_normal((37, 5)).astype(dtype))
                opt.step()
            results.append(p.detach().numpy())
    assert not np.array_equal(results[0], start)
    np.testing.assert_array_equal(results[1], results[0])


def test_torch_parity_of_a_winograd_training_step():
    """Winograd conv layers inside a model: one SGD step, float32, against torch."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 3, 10, 9)).astype(np.float32)
    ta.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 40, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(40, 40, 5, padding=2, algorithm="winograd"))
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 40, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(40, 40, 5, padding=2))
    twin.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in model.state_dict().items()})
    y = model(ta.tensor(x))
    ours = (y * y).sum()
    ours.backward()
    y_t = twin(torch.from_numpy(x))
    theirs = (y_t * y_t).sum()
    theirs.backward()
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-5)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=2e-4,
                                   atol=2e-4 * np.abs(q.grad.numpy()).max())
