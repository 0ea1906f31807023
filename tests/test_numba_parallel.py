"""The numba kernel set (tinyalex.cpu) against the numpy reference, over many seeds and shapes.

tests/test_kernel_sets.py runs every set through the API contract and torch parity on a
few fixed cases. This file stresses what is specific to the parallel kernels: a `prange`
race (docs/pitfalls.md#prange-races) or an index slip shows up only for some shapes, so every test draws
its geometry from a seeded generator (N >= 2, C >= 2, H != W, stride < kernel, padding,
groups, odd and even LRN sizes with alpha >= 0.1, tied pooling inputs) and compares with
tinyalex.reference: float64 to 1e-10 relative, float32 to 1e-5 of the result's scale
(against the float64 reference on the same float32 inputs). It also checks that results
are bitwise repeatable and do not depend on the number of threads.
"""
import numba
import numpy as np
import pytest
import torch

import tinyalex.cpu as cpu
import tinyalex.cpu.conv as cpu_conv
import tinyalex.cpu.cross_entropy as cpu_cross_entropy
import tinyalex.reference as reference
from tinyalex.dispatch import counter_uniform
from tinyalex.shapes import batch_chunks

SEEDS = range(10)
DTYPES = (np.float64, np.float32)


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


# --- im2col / col2im / conv -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_im2col_and_col2im_match_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    shape = random_image(rng)
    window = random_window(rng, *shape[2:])
    window += (random_dilation(rng, *shape[2:], window[0], window[2]),)
    x = rng.standard_normal(shape).astype(dtype)

    cols = cpu.im2col(x, *window)
    np.testing.assert_array_equal(cols, reference.im2col(x, *window))  # a pure copy: exact

    c = rng.standard_normal(cols.shape).astype(dtype)
    x_back = cpu.col2im(c, shape, *window)
    assert_matches(x_back, reference.col2im(f64(c), shape, *window), dtype)
    np.testing.assert_array_equal(cpu.col2im(c, shape, *window), x_back)  # no atomics


def conv_case(rng, dtype):
    groups = int(rng.integers(1, 4))
    N, C, H, W = random_image(rng, channels_multiple=groups)
    kernel, stride, padding = random_window(rng, H, W)
    out_channels = groups * int(rng.integers(1, 4))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    weight = rng.standard_normal((out_channels, C // groups, *kernel)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype) if rng.random() < 0.7 else None
    dilation = random_dilation(rng, H, W, kernel, padding)
    return x, weight, bias, stride, padding, groups, dilation


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_conv2d_matches_reference(seed, dtype):
    rng = np.random.default_rng(100 + seed)
    x, weight, bias, stride, padding, groups, dilation = conv_case(rng, dtype)

    y, cache = cpu.conv2d_forward(x, weight, bias, stride, padding, groups, dilation)
    y_ref, cache_ref = reference.conv2d_forward(f64(x), f64(weight), f64(bias), stride, padding,
                                                groups, dilation)
    assert_matches(y, y_ref, dtype)

    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gW, gb = cpu.conv2d_backward(gy, cache)
    gx_ref, gW_ref, gb_ref = reference.conv2d_backward(f64(gy), cache_ref)
    assert_matches(gx, gx_ref, dtype)
    assert_matches(gW, gW_ref, dtype)
    if bias is None:
        assert gb is None
    else:
        assert_matches(gb, gb_ref, dtype)

    no_gx, gW_again, _ = cpu.conv2d_backward(gy, cache, need_gx=False)
    assert no_gx is None
    np.testing.assert_array_equal(gW_again, gW)


def test_batch_chunks_are_balanced_and_bounded():
    """The one chunking rule of the numba and cupy conv workspaces (tinyalex.shapes)."""
    assert batch_chunks(16, 100, 1000) == [(0, 8), (8, 16)]         # 10 fit: 8 + 8, not 10 + 6
    assert batch_chunks(5, 400, 1000) == [(0, 2), (2, 4), (4, 5)]
    assert batch_chunks(3, 5000, 1000) == [(0, 1), (1, 2), (2, 3)]  # at least one sample
    assert batch_chunks(4, 1, 1000) == [(0, 4)]
    assert batch_chunks(0, 100, 1000) == [(0, 0)]                   # one empty chunk: loops run once


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_in_batch_chunks_matches_one_chunk(monkeypatch, dtype):
    """A tiny workspace forces one or two samples per chunk: gW must sum over chunks."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 4, 9, 7)).astype(dtype)
    weight = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    bias = rng.standard_normal(6).astype(dtype)
    args = (x, weight, bias, (2, 1), (1, 1), 2)
    y_whole, cache = cpu.conv2d_forward(*args)
    gy = rng.standard_normal(y_whole.shape).astype(dtype)
    grads_whole = cpu.conv2d_backward(gy, cache)

    per_sample = 4 * 3 * 2 * y_whole.shape[2] * y_whole.shape[3] * x.itemsize
    monkeypatch.setattr(cpu_conv, "WORKSPACE_BYTES", 2 * per_sample)   # chunks of 2, 2, 1
    y, cache = cpu.conv2d_forward(*args)
    np.testing.assert_array_equal(y, y_whole)
    for chunked, whole in zip(cpu.conv2d_backward(gy, cache), grads_whole):
        assert_matches(chunked, f64(whole), dtype)


# --- max pooling ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_max_pool2d_matches_reference_with_ties(seed, dtype):
    rng = np.random.default_rng(200 + seed)
    shape = random_image(rng)
    window = random_window(rng, *shape[2:])
    x = rng.integers(-3, 2, size=shape).astype(dtype)                   # many ties, all-negative windows
    x[x == -3] = -np.inf                                               # ties with the padding
    ceil_mode = bool(seed % 2)

    y, cache = cpu.max_pool2d_forward(x, *window, ceil_mode)
    y_ref, cache_ref = reference.max_pool2d_forward(x, *window, ceil_mode)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(cpu.max_pool2d_indices(cache), reference.max_pool2d_indices(cache_ref))

    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = cpu.max_pool2d_backward(gy, cache)
    assert_matches(gx, reference.max_pool2d_backward(f64(gy), cache_ref), dtype)  # same argmax
    np.testing.assert_array_equal(cpu.max_pool2d_backward(gy, cache), gx)


def test_max_pool2d_propagates_nan_like_torch():
    """A NaN wins its window (PyTorch's rule; the kernel redoes such windows off its fast path)."""
    x = np.random.default_rng(11).integers(-2, 2, size=(2, 3, 9, 8)).astype(np.float64)
    x.flat[::7] = np.nan                                               # some windows hold two NaNs
    y, (argmax, *_) = cpu.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1))
    y_t, argmax_t = torch.ops.aten.max_pool2d_with_indices(torch.from_numpy(x), (3, 3), (2, 2), (1, 1))
    np.testing.assert_array_equal(y, y_t.numpy())                      # NaNs compare equal here
    np.testing.assert_array_equal(argmax, argmax_t.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_avg_pool2d_matches_reference(seed, dtype):
    rng = np.random.default_rng(300 + seed)
    shape = random_image(rng)
    window = random_window(rng, *shape[2:])
    options = (bool(seed % 2), bool(seed % 3), [None, 3][seed % 4 == 0])  # ceil, count_include_pad, divisor
    x = rng.standard_normal(shape).astype(dtype)

    y, cache = cpu.avg_pool2d_forward(x, *window, *options)
    y_ref, cache_ref = reference.avg_pool2d_forward(f64(x), *window, *options)
    assert_matches(y, y_ref, dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = cpu.avg_pool2d_backward(gy, cache)
    assert_matches(gx, reference.avg_pool2d_backward(f64(gy), cache_ref), dtype)
    np.testing.assert_array_equal(cpu.avg_pool2d_backward(gy, cache), gx)


# --- LRN --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_lrn_matches_reference(seed, dtype):
    rng = np.random.default_rng(300 + seed)
    N, _, H, W = random_image(rng)
    C = int(rng.integers(2, 9))
    size = int(rng.integers(1, C + 3))                                 # odd, even, wider than C
    alpha = float(rng.uniform(0.1, 2.0))                               # the cross-channel term matters
    beta = 0.75 if seed % 2 else float(rng.uniform(0.3, 1.0))          # the sqrt path and pow
    k = float(rng.uniform(0.5, 2.0))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)

    y, cache = cpu.lrn_forward(x, size, alpha, beta, k)
    y_ref, cache_ref = reference.lrn_forward(f64(x), size, alpha, beta, k)
    assert_matches(y, y_ref, dtype)

    gy = rng.standard_normal(x.shape).astype(dtype)
    assert_matches(cpu.lrn_backward(gy, cache), reference.lrn_backward(f64(gy), cache_ref), dtype)


# --- ReLU, dropout, cross-entropy -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_relu_matches_reference(seed, dtype):
    rng = np.random.default_rng(400 + seed)
    x = rng.integers(-2, 3, size=random_image(rng)).astype(dtype)      # exact zeros: gradient 0
    y, cache = cpu.relu_forward(x)
    y_ref, cache_ref = reference.relu_forward(x)
    np.testing.assert_array_equal(y, y_ref)
    gy = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(cpu.relu_backward(gy, cache), reference.relu_backward(gy, cache_ref))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 7, 2**63 - 1, 2**64 - 1])
def test_dropout_mask_is_bit_identical_to_reference(seed, dtype):
    rng = np.random.default_rng(seed % 1000)
    x = rng.standard_normal((3, 5, 7, 11)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        y, cache = cpu.dropout_forward(x, p, seed)
        y_ref, cache_ref = reference.dropout_forward(x, p, seed)
        keep, _ = cache
        np.testing.assert_array_equal(keep, cache_ref[0])
        np.testing.assert_array_equal(keep.ravel(), counter_uniform(seed, x.size) >= p)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(cpu.dropout_backward(gy, cache),
                                      reference.dropout_backward(gy, cache_ref))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("seed", range(4))
def test_mse_loss_matches_reference(seed, reduction, dtype):
    rng = np.random.default_rng(400 + seed)
    shape = random_image(rng)[: 2 + seed % 3]                          # 2-, 3- and 4-D
    x, t = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    loss, cache = cpu.mse_loss_forward(x, t, reduction)
    loss_ref, cache_ref = reference.mse_loss_forward(f64(x), f64(t), reduction)
    assert_matches(np.asarray(loss), np.asarray(loss_ref), dtype)
    gloss = rng.standard_normal(np.shape(loss)).astype(dtype)
    gx = cpu.mse_loss_backward(gloss, cache)
    assert_matches(gx, reference.mse_loss_backward(f64(gloss), cache_ref), dtype)
    np.testing.assert_array_equal(cpu.mse_loss_backward(gloss, cache), gx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_cross_entropy_matches_reference(monkeypatch, seed, parallel, reduction, dtype):
    """Plain, and with torch's options drawn per seed: weight, ignore_index (also every row
    ignored), label smoothing, class-probability targets."""
    monkeypatch.setattr(cpu_cross_entropy, "PARALLEL_MIN_ELEMENTS", 0 if parallel else 10**9)
    rng = np.random.default_rng(500 + seed)
    N, C = int(rng.integers(2, 20)), int(rng.integers(2, 12))
    logits = (rng.choice([1.0, 1e3]) * rng.standard_normal((N, C))).astype(dtype)  # +-1e3 must not overflow
    target = rng.integers(0, C, size=N)
    options = {} if seed == 0 else dict(
        weight=rng.uniform(0.2, 2.0, C).astype(dtype) if rng.random() < 0.6 else None,
        ignore_index=int(target[0]), label_smoothing=float(rng.choice([0.0, 0.15, 0.5])))
    if seed == 5:
        target[:] = options["ignore_index"]                            # every row ignored: NaN mean
    if seed == 4:
        target = rng.uniform(0.0, 1.0, (N, C)).astype(dtype)           # class probabilities
        options["ignore_index"] = -100

    loss, cache = cpu.cross_entropy_forward(logits, target, reduction, **options)
    options_ref = dict(options, weight=f64(options.get("weight")))
    target_ref = f64(target) if target.dtype.kind == "f" else target
    loss_ref, cache_ref = reference.cross_entropy_forward(f64(logits), target_ref, reduction, **options_ref)
    if seed == 5 and reduction == "mean":
        assert np.isnan(loss) and np.isnan(loss_ref)
    else:
        assert_matches(np.asarray(loss), np.asarray(loss_ref), dtype)

    gloss = rng.standard_normal(N if reduction == "none" else ())
    glogits = cpu.cross_entropy_backward(gloss.astype(dtype), cache)
    assert_matches(glogits, reference.cross_entropy_backward(gloss, cache_ref), dtype)
    np.testing.assert_array_equal(cpu.cross_entropy_backward(gloss.astype(dtype), cache), glogits)


# --- race-freedom -----------------------------------------------------------------------

def test_results_do_not_depend_on_thread_count(monkeypatch):
    """Disjoint prange outputs give bitwise the same result on 1 thread as on all of them."""
    monkeypatch.setattr(cpu_cross_entropy, "PARALLEL_MIN_ELEMENTS", 0)  # its prange rows too
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6, 13, 11))
    weight = rng.standard_normal((8, 3, 3, 3))

    def run_all():
        y, conv_cache = cpu.conv2d_forward(x, weight, None, (2, 1), (1, 1), 2)
        gx, gW, _ = cpu.conv2d_backward(np.cos(y), conv_cache)
        p, pool_cache = cpu.max_pool2d_forward(np.round(x), (3, 3), (2, 1), (1, 1))
        gp = cpu.max_pool2d_backward(np.cos(p), pool_cache)
        z, lrn_cache = cpu.lrn_forward(x, 4, 0.5, 0.75, 1.0)
        gz = cpu.lrn_backward(np.cos(z), lrn_cache)
        yd, dilated_cache = cpu.conv2d_forward(x, weight, None, (1, 2), (2, 1), 2, (2, 3))
        gxd, gWd, _ = cpu.conv2d_backward(np.sin(yd), dilated_cache)
        pc, ceil_cache = cpu.max_pool2d_forward(np.round(x), (2, 3), (2, 2), (1, 1), True)
        gpc = cpu.max_pool2d_backward(np.cos(pc), ceil_cache)
        a, avg_cache = cpu.avg_pool2d_forward(x, (3, 2), (1, 2), (1, 1), True, False)
        ga = cpu.avg_pool2d_backward(np.cos(a), avg_cache)
        logits = x.reshape(-1, 11)
        target = np.arange(logits.shape[0]) % 11
        loss, ce_cache = cpu.cross_entropy_forward(logits, target, "none", np.linspace(0.5, 2, 11),
                                                   3, 0.2)
        gl = cpu.cross_entropy_backward(np.cos(loss), ce_cache)
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


@pytest.mark.parametrize("seed", range(5))
def test_matmul_matches_reference(seed):
    """The numba set's GEMM (single-threaded BLAS calls split over Numba's pool) against the
    reference, on shapes drawn so the split lands on uneven parts."""
    rng = np.random.default_rng(seed)
    M, K, N = (int(v) for v in rng.integers(1, 300, 3))
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((N, K)).astype(np.float32).T            # a transposed view, as W.T
    np.testing.assert_allclose(cpu.matmul(a, b), reference.matmul(a, b), rtol=1e-5, atol=1e-5 * K)
