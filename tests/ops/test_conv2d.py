"""conv2d, with im2col and col2im, on every kernel set: the kernels against the loop
definition and torch, the numba set against the reference, the public API (finite
differences, torch parity), and the conv algorithm switch ('auto' | 'gemm' | 'winograd')
with Winograd in the numpy and numba sets.

Every algorithm passes the same checks: torch parity (float64 tight, float32 within the
suite's tolerance), float64 finite differences, numba against the reference over many
seeds (and results that do not depend on the thread count: tests/kernels/test_numba_pool.py).
The accuracy bounds tested here are the ones docs/ops/conv2d_winograd.md states.
"""
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinyalex as ta
import tinyalex.functional as F
import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numba.conv as numba_conv
import tinyalex.kernels.numpy as numpy_kernels
from tinyalex import nn
from tinyalex.kernels import conv_algorithms
from tinyalex.kernels.conv_algorithms import choose, resolve, winograd_refusal
from tinyalex.kernels.numpy.conv_winograd import POINTS, winograd_matrices
from tinyalex.shapes import batch_chunks

from helpers import check_parity
from op_helpers import (DTYPES, SEEDS, assert_close, assert_matches, f64, fd_settings, gradcheck,
                        random_dilation, random_image, random_window, torch_vjp)

X_SHAPE = (2, 3, 7, 6)  # N, C, H, W


def output_size(size, kernel, stride, padding, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def im2col_by_loops(x, kernel_size, stride, padding, dilation):
    """The definition of im2col, one element at a time."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = output_size(H, kh, sh, ph, dh), output_size(W, kw, sw, pw, dw)
    cols = np.zeros((N, C * kh * kw, OH * OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    for oh in range(OH):
                        for ow in range(OW):
                            h, w = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                            if 0 <= h < H and 0 <= w < W:
                                cols[n, c * kh * kw + i * kw + j, oh * OW + ow] = x[n, c, h, w]
    return cols


def covering_window_count(H, W, kernel_size, stride, padding, dilation):
    """count[h, w] = the number of window taps that read pixel (h, w), by brute force."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    count = np.zeros((H, W))
    for oh in range(output_size(H, kh, sh, ph, dh)):
        for ow in range(output_size(W, kw, sw, pw, dw)):
            for i in range(kh):
                for j in range(kw):
                    h, w = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                    if 0 <= h < H and 0 <= w < W:
                        count[h, w] += 1
    return count


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


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 2]))
    c, oc = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 1)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = draw(st.integers(max(span[0], 3), 8))
    w = draw(st.integers(max(span[1], 3), 8).filter(lambda w: w != h))
    if draw(st.booleans()):                                       # torch's string paddings
        padding = draw(st.sampled_from(["same", "valid"]))
        stride = (1, 1) if padding == "same" else stride
    return dict(n=draw(st.integers(2, 3)), c=c, oc=oc, h=h, w=w, kh=kh, kw=kw, stride=stride,
                padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans()),
                seed=draw(st.integers(0, 99)))


ALGORITHMS = ("gemm", "winograd")
CPU_SETS = {"numpy": numpy_kernels, "numba": numba_kernels}


def _arrays(x_shape, w_shape, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(x_shape).astype(dtype),
            (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype),
            rng.standard_normal(w_shape[0]).astype(dtype)]


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


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture) against torch."""

    # (kernel_size, stride, padding, dilation): overlapping windows, padding, non-square,
    # dilation with stride and padding; H != W (X_SHAPE).
    GEOMETRIES = [
        ((3, 3), (2, 2), (1, 1), (1, 1)),
        ((3, 2), (1, 2), (1, 0), (1, 1)),
        ((2, 3), (1, 1), (1, 1), (1, 1)),
        ((3, 2), (2, 1), (2, 1), (2, 3)),
        ((2, 2), (1, 2), (0, 1), (3, 2)),
    ]

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("kernel_size, stride, padding, dilation", GEOMETRIES)
    def test_im2col_matches_loop_definition(self, kernels, kernel_size, stride, padding, dilation, dtype):
        x = np.random.default_rng(0).standard_normal(X_SHAPE).astype(dtype)
        cols = kernels.module.im2col(kernels.to_device(x), kernel_size, stride, padding, dilation)
        cols = kernels.to_numpy(cols)
        assert cols.dtype == dtype
        np.testing.assert_array_equal(cols, im2col_by_loops(x, kernel_size, stride, padding, dilation))

    # (x shape, kernel_size, stride, padding): conv1's 11x11 stride 4 on 227-wide rows, a
    # block of outputs over two planes; and rows too wide for kernels/im2col.cu's shared
    # stage (40 KB), which reads x directly (conv1's rows too, in float64).
    WIDE_CASES = [
        ((2, 1, 19, 227), (11, 11), (4, 4), (0, 0)),
        ((1, 1, 3, 11000), (3, 3), (2, 2), (1, 1)),
    ]

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("x_shape, kernel_size, stride, padding", WIDE_CASES)
    def test_im2col_of_wide_rows_matches_loop_definition(self, kernels, x_shape, kernel_size, stride,
                                                         padding, dtype):
        x = np.random.default_rng(4).standard_normal(x_shape).astype(dtype)
        cols = kernels.to_numpy(kernels.module.im2col(kernels.to_device(x), kernel_size, stride, padding))
        np.testing.assert_array_equal(cols, im2col_by_loops(x, kernel_size, stride, padding, (1, 1)))

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("kernel_size, stride, padding, dilation", GEOMETRIES)
    def test_col2im_of_ones_counts_covering_windows(self, kernels, kernel_size, stride, padding, dilation,
                                                    dtype):
        K = kernels.module
        ones = kernels.to_device(np.ones(X_SHAPE, dtype=dtype))
        x = kernels.to_numpy(K.col2im(K.im2col(ones, kernel_size, stride, padding, dilation),
                                      X_SHAPE, kernel_size, stride, padding, dilation))
        count = covering_window_count(*X_SHAPE[2:], kernel_size, stride, padding, dilation)
        assert x.dtype == dtype
        np.testing.assert_array_equal(x, np.broadcast_to(count, X_SHAPE))

    @pytest.mark.parametrize("kernel_size, stride, padding, dilation", GEOMETRIES)
    def test_col2im_is_adjoint_of_im2col(self, kernels, kernel_size, stride, padding, dilation):
        rng = np.random.default_rng(1)
        K = kernels.module
        x = rng.standard_normal(X_SHAPE)
        cols = kernels.to_numpy(K.im2col(kernels.to_device(x), kernel_size, stride, padding, dilation))
        c = rng.standard_normal(cols.shape)
        x_back = K.col2im(kernels.to_device(c), X_SHAPE, kernel_size, stride, padding, dilation)
        x_back = kernels.to_numpy(x_back)
        np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, x_back), rtol=1e-12)

    # x_shape, weight_shape (OC, C/groups, kh, kw), stride, padding, groups, has_bias, dilation
    CONV_CASES = [
        ((2, 4, 7, 6), (6, 2, 3, 3), (2, 1), (1, 1), 2, True, (1, 1)),
        ((3, 3, 9, 8), (4, 3, 5, 3), (2, 2), (2, 1), 1, False, (1, 1)),
        ((2, 4, 5, 7), (4, 2, 2, 3), (1, 1), (0, 1), 2, True, (1, 1)),
        ((2, 4, 11, 9), (6, 2, 3, 2), (2, 1), (2, 1), 2, True, (2, 3)),    # dilation, stride, padding, groups
        ((3, 2, 8, 10), (4, 2, 2, 3), (1, 2), (0, 2), 1, False, (3, 2)),   # even kernel, odd dilation
    ]

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, has_bias, dilation", CONV_CASES)
    def test_conv2d_matches_torch(self, kernels, x_shape, w_shape, stride, padding, groups, has_bias,
                                  dilation, dtype):
        rng = np.random.default_rng(2)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
        if has_bias:
            arrays.append(rng.standard_normal(w_shape[0]))
        arrays = [a.astype(dtype) for a in arrays]
        x, weight = arrays[:2]
        bias = arrays[2] if has_bias else None

        y, cache = K.conv2d_forward(dev(x), dev(weight), None if bias is None else dev(bias),
                                    stride, padding, groups, dilation)
        gy = rng.standard_normal(host(y).shape).astype(dtype)
        gx, gW, gb = K.conv2d_backward(dev(gy), cache)

        def conv(x, weight, bias=None):
            return TF.conv2d(x, weight, bias, stride, padding, dilation, groups)

        y_t, grads_t = torch_vjp(conv, arrays, gy)
        assert_close(host(y), y_t, dtype)
        assert_close(host(gx), grads_t[0], dtype)
        assert_close(host(gW), grads_t[1], dtype)
        if has_bias:
            assert_close(host(gb), grads_t[2], dtype)
        else:
            assert gb is None

        # Without gx the other gradients are unchanged; a second backward is bitwise equal.
        no_gx, gW_again, _ = K.conv2d_backward(dev(gy), cache, need_gx=False)
        assert no_gx is None
        np.testing.assert_array_equal(host(gW_again), host(gW))
        np.testing.assert_array_equal(host(K.conv2d_backward(dev(gy), cache)[0]), host(gx))


class TestNumbaKernels:
    """The numba set against the numpy reference, over seeded random shapes (a parallel-loop race
    or an index slip shows up only for some)."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("seed", SEEDS)
    def test_im2col_and_col2im_match_reference(self, seed, dtype):
        rng = np.random.default_rng(seed)
        shape = random_image(rng)
        window = random_window(rng, *shape[2:])
        window += (random_dilation(rng, *shape[2:], window[0], window[2]),)
        x = rng.standard_normal(shape).astype(dtype)

        cols = numba_kernels.im2col(x, *window)
        np.testing.assert_array_equal(cols, numpy_kernels.im2col(x, *window))  # a pure copy: exact

        c = rng.standard_normal(cols.shape).astype(dtype)
        x_back = numba_kernels.col2im(c, shape, *window)
        assert_matches(x_back, numpy_kernels.col2im(f64(c), shape, *window), dtype)
        np.testing.assert_array_equal(numba_kernels.col2im(c, shape, *window), x_back)  # no atomics

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("seed", SEEDS)
    def test_conv2d_matches_reference(self, seed, dtype):
        rng = np.random.default_rng(100 + seed)
        x, weight, bias, stride, padding, groups, dilation = conv_case(rng, dtype)

        y, cache = numba_kernels.conv2d_forward(x, weight, bias, stride, padding, groups, dilation)
        y_ref, cache_ref = numpy_kernels.conv2d_forward(f64(x), f64(weight), f64(bias), stride, padding,
                                                    groups, dilation)
        assert_matches(y, y_ref, dtype)

        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, gW, gb = numba_kernels.conv2d_backward(gy, cache)
        gx_ref, gW_ref, gb_ref = numpy_kernels.conv2d_backward(f64(gy), cache_ref)
        assert_matches(gx, gx_ref, dtype)
        assert_matches(gW, gW_ref, dtype)
        if bias is None:
            assert gb is None
        else:
            assert_matches(gb, gb_ref, dtype)

        no_gx, gW_again, _ = numba_kernels.conv2d_backward(gy, cache, need_gx=False)
        assert no_gx is None
        np.testing.assert_array_equal(gW_again, gW)

    def test_batch_chunks_are_balanced_and_bounded(self):
        """The one chunking rule of the numba and cupy conv workspaces (tinyalex.shapes)."""
        assert batch_chunks(16, 100, 1000) == [(0, 8), (8, 16)]         # 10 fit: 8 + 8, not 10 + 6
        assert batch_chunks(5, 400, 1000) == [(0, 2), (2, 4), (4, 5)]
        assert batch_chunks(3, 5000, 1000) == [(0, 1), (1, 2), (2, 3)]  # at least one sample
        assert batch_chunks(4, 1, 1000) == [(0, 4)]
        assert batch_chunks(0, 100, 1000) == [(0, 0)]                   # one empty chunk: loops run once

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_conv2d_in_batch_chunks_matches_one_chunk(self, monkeypatch, dtype):
        """A tiny workspace forces one or two samples per chunk: gW must sum over chunks."""
        rng = np.random.default_rng(7)
        x = rng.standard_normal((5, 4, 9, 7)).astype(dtype)
        weight = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
        bias = rng.standard_normal(6).astype(dtype)
        args = (x, weight, bias, (2, 1), (1, 1), 2)
        y_whole, cache = numba_kernels.conv2d_forward(*args)
        gy = rng.standard_normal(y_whole.shape).astype(dtype)
        grads_whole = numba_kernels.conv2d_backward(gy, cache)

        per_sample = 4 * 3 * 2 * y_whole.shape[2] * y_whole.shape[3] * x.itemsize
        monkeypatch.setattr(numba_conv, "WORKSPACE_BYTES", 2 * per_sample)   # chunks of 2, 2, 1
        y, cache = numba_kernels.conv2d_forward(*args)
        np.testing.assert_array_equal(y, y_whole)
        for chunked, whole in zip(numba_kernels.conv2d_backward(gy, cache), grads_whole):
            assert_matches(chunked, f64(whole), dtype)


class TestFunctional:
    """Through the public API, on every kernel set: float64 finite differences and torch parity."""

    @fd_settings
    @given(case=conv_cases())
    def test_conv2d_finite_differences(self, kernels, case):
        rng = np.random.default_rng(case["seed"])
        arrays = [rng.standard_normal((case["n"], case["c"], case["h"], case["w"])),
                  rng.standard_normal((case["oc"], case["c"] // case["groups"], case["kh"], case["kw"]))]
        if case["bias"]:
            arrays.append(rng.standard_normal(case["oc"]))
        gradcheck(kernels, lambda x, w, b=None: F.conv2d(x, w, b, case["stride"], case["padding"],
                                                          case["dilation"], case["groups"]), arrays)

    CONV_CASES = [  # (x shape, weight shape, stride, padding, groups, bias, dilation)
        ((2, 3, 9, 7), (4, 3, 3, 3), 1, 1, 1, True, 1),
        ((2, 4, 10, 8), (6, 2, 3, 2), (2, 1), (1, 0), 2, True, 1),
        ((3, 2, 23, 19), (5, 2, 11, 11), 4, 2, 1, False, 1),        # conv1-like: 11x11 stride 4
        ((2, 6, 8, 11), (4, 3, 5, 5), 1, 2, 2, True, 1),            # conv2-like: 5x5, groups=2
        ((2, 4, 13, 10), (6, 2, 3, 2), (2, 1), (2, 1), 2, True, (2, 3)),  # dilation, stride, pad, groups
        ((2, 3, 9, 7), (4, 3, 3, 3), 1, "same", 1, True, 2),        # 'same', symmetric
        ((2, 3, 9, 8), (4, 3, 2, 4), 1, "same", 1, True, 1),        # even kernels: one extra row/column
        ((2, 4, 9, 8), (4, 2, 2, 3), 1, "same", 2, False, (3, 1)),  # even kernel, odd dilation, groups
        ((2, 4, 10, 9), (4, 2, 4, 2), 1, "same", 2, True, (2, 3)),  # even kernel, even dilation: symmetric
        ((2, 3, 9, 8), (4, 3, 2, 3), (2, 1), "valid", 1, True, 2),  # 'valid' is padding 0
    ]

    @pytest.mark.parametrize("xs, ws, stride, padding, groups, bias, dilation", CONV_CASES)
    def test_conv2d_matches_torch(self, kernels, xs, ws, stride, padding, groups, bias, dilation):
        rng = np.random.default_rng(1)
        arrays = [rng.standard_normal(xs), rng.standard_normal(ws)]
        arrays += [rng.standard_normal(ws[0])] if bias else []
        check_parity(kernels, lambda x, w, b=None: F.conv2d(x, w, b, stride, padding, dilation, groups),
                     lambda x, w, b=None: TF.conv2d(x, w, b, stride, padding, dilation, groups), arrays)

    @pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (2, 1), ((4, 3), (1, 2)), ((2, 2), 3)])
    def test_conv2d_layer_same_padding_keeps_the_size_like_torch(self, kernels, kernel_size, dilation):
        rng = np.random.default_rng(16)
        ours = ta.nn.Conv2d(3, 4, kernel_size, padding="same", dilation=dilation).double()
        theirs = torch.nn.Conv2d(3, 4, kernel_size, padding="same", dilation=dilation).double()
        theirs.load_state_dict({k: torch.tensor(v.array) for k, v in ours.state_dict().items()})
        ours.to(kernels.device)
        x = rng.standard_normal((2, 3, 7, 6))
        y = ours(ta.tensor(kernels.to_device(x)))
        y_t = theirs(torch.tensor(x))
        assert y.shape == (2, 4, 7, 6) == tuple(y_t.shape)
        np.testing.assert_allclose(kernels.to_numpy(y.array), y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
        assert "padding=same" in repr(ours)
        with pytest.raises(ValueError, match="strided"):
            ta.nn.Conv2d(3, 4, 3, stride=2, padding="same")

    def test_unbatched_conv_and_pool_match_torch(self, kernels):
        rng = np.random.default_rng(7)
        x, w = rng.standard_normal((3, 8, 7)), rng.standard_normal((2, 3, 3, 3))
        check_parity(kernels, lambda x, w: F.max_pool2d(F.conv2d(x, w, padding=1), 2),
                     lambda x, w: TF.max_pool2d(TF.conv2d(x, w, padding=1), 2), [x, w])


class TestAlgorithms:
    """The conv algorithm switch and Winograd (docs/ops/conv2d_winograd.md)."""

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

    # --- the transforms

    def test_f23_matrices_are_lavin_and_grays(self):
        AT, G, BT = winograd_matrices(2, 3)
        np.testing.assert_array_equal(AT, [[1, 1, 1, 0], [0, 1, -1, 1]])
        np.testing.assert_array_equal(G, [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
        np.testing.assert_array_equal(BT, [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])

    @pytest.mark.parametrize("m, r", [(2, 3), (2, 5), (4, 3), (3, 3), (2, 2)])
    def test_one_dimensional_identity_is_exact(self, m, r):
        """y = AT [(G g) * (BT d)] is the correlation y_i = sum_k d_{i+k} g_k, in exact fractions."""
        AT, G, BT = (np.array([[Fraction(v).limit_denominator(64) for v in row] for row in M])
                     for M in winograd_matrices(m, r))
        rng = np.random.default_rng(m * 10 + r)
        d = [Fraction(int(v)) for v in rng.integers(-9, 10, m + r - 1)]
        g = [Fraction(int(v)) for v in rng.integers(-9, 10, r)]
        y = AT.dot(G.dot(g) * BT.dot(d))
        assert list(y) == [sum(d[i + k] * g[k] for k in range(r)) for i in range(m)]

    def test_too_many_points_is_refused(self):
        with pytest.raises(ValueError, match="finite points"):
            winograd_matrices(8, 5)
        assert len(POINTS) == 9

    # --- torch parity and finite differences, over the algorithm

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    @pytest.mark.parametrize("x_shape, w_shape, padding, groups", GEOMETRIES)
    @pytest.mark.parametrize("dtype", [np.float64, np.float32])
    def test_conv2d_algorithms_match_torch(self, kernels, algorithm, x_shape, w_shape, padding, groups, dtype):
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
    def test_conv2d_algorithms_finite_differences(self, kernel_set, algorithm, x_shape, w_shape, padding, groups):
        x, w, b = (ta.tensor(a, requires_grad=True) for a in _arrays(x_shape, w_shape, seed=4))
        with ta.use_kernels(kernel_set):
            assert ta.gradcheck(lambda x, w, b: F.conv2d(x, w, b, 1, padding, 1, groups,
                                                         algorithm=algorithm), (x, w, b))

    def test_need_gx_false_and_repeatable_backward(self):
        x, w, b = _arrays((2, 4, 9, 7), (6, 2, 3, 3), seed=5)
        for K in CPU_SETS.values():
            y, cache = K.conv2d_winograd_forward(x, w, b, (1, 1), (1, 1), 2, (1, 1))
            gy = np.cos(y)
            gx, gW, gb = K.conv2d_winograd_backward(gy, cache)
            no_gx, gW_again, gb_again = K.conv2d_winograd_backward(gy, cache, need_gx=False)
            assert no_gx is None
            np.testing.assert_array_equal(gW_again, gW)
            np.testing.assert_array_equal(gb_again, gb)
            np.testing.assert_array_equal(K.conv2d_winograd_backward(gy, cache)[0], gx)

    # --- numba against the reference

    @pytest.mark.parametrize("seed", range(12))
    def test_numba_winograd_matches_reference_over_seeds(self, seed):
        rng = np.random.default_rng(100 + seed)
        r = (3, 5)[seed % 2]
        groups = 1 + seed % 3
        C, OC = groups * int(rng.integers(1, 5)), groups * int(rng.integers(1, 5))
        x_shape = (int(rng.integers(2, 4)), C, int(rng.integers(r, 13)), int(rng.integers(r, 13)))
        padding = (int(rng.integers(0, r + 1)), int(rng.integers(0, r + 1)))
        x, w, b = _arrays(x_shape, (OC, C // groups, r, r), seed)
        y_ref, cache_ref = numpy_kernels.conv2d_winograd_forward(x, w, b, (1, 1), padding, groups, (1, 1))
        y, cache = numba_kernels.conv2d_winograd_forward(x, w, b, (1, 1), padding, groups, (1, 1))
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12 * np.abs(y_ref).max())
        gy = rng.standard_normal(y.shape)
        for ours, theirs in zip(numba_kernels.conv2d_winograd_backward(gy, cache), numpy_kernels.conv2d_winograd_backward(gy, cache_ref)):
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12 * np.abs(theirs).max())

    # --- stated accuracy (docs/ops/conv2d_winograd.md#accuracy)

    @pytest.mark.parametrize("r, channels, bound", [(3, 16, 1e-5), (3, 256, 3e-5), (5, 16, 2e-5),
                                                    (5, 256, 5e-5)])
    def test_float32_winograd_error_stays_within_the_stated_bound(self, r, channels, bound):
        """Max |y32 - y64| / max |y64|, y64 the float64 reference, unit-variance inputs and
        weights scaled by 1/sqrt(C r r): the bounds are ~3x the figures the page states."""
        x, w, _ = _arrays((4, channels, 14, 14), (32, channels, r, r), seed=7)
        y64, _ = numpy_kernels.conv2d_forward(x, w, None, (1, 1), (r // 2, r // 2), 1)
        y32, _ = numba_kernels.conv2d_winograd_forward(x.astype(np.float32), w.astype(np.float32), None, (1, 1),
                                             (r // 2, r // 2), 1, (1, 1))
        error = np.abs(y32 - y64).max() / np.abs(y64).max()
        assert error <= bound
        assert error > 0                                               # float32 really ran

    # --- the switch: per call, per module, globally; 'auto'; refusals

    def test_call_module_and_global_settings(self, chosen):
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
    def test_auto_rule(self, weight_shape, stride, dilation, groups, out_size, expected):
        assert choose(weight_shape, stride, dilation, groups, out_size) == expected
        assert choose(weight_shape, stride, dilation, groups, out_size, ("gemm",)) == "gemm"

    @pytest.mark.parametrize("stride, dilation, kernel, message", [
        ((2, 2), (1, 1), (3, 3), r"needs stride 1, got stride \(2, 2\)"),
        ((1, 1), (2, 1), (3, 3), r"needs dilation 1, got dilation \(2, 1\)"),
        ((1, 1), (1, 1), (11, 11), r"supports square kernels of size \[3, 5\], got kernel size \(11, 11\)"),
        ((1, 1), (1, 1), (3, 5), r"supports square kernels of size \[3, 5\], got kernel size \(3, 5\)"),
    ])
    def test_winograd_refuses_what_it_cannot_do(self, stride, dilation, kernel, message):
        x = ta.tensor(np.zeros((2, 4, 16, 16)))
        w = ta.tensor(np.zeros((4, 4) + kernel))
        with pytest.raises(ValueError, match=r"conv2d: algorithm='winograd' " + message):
            F.conv2d(x, w, None, stride, 1, dilation, algorithm="winograd")
        assert winograd_refusal(kernel, stride, dilation) is not None
        for K in CPU_SETS.values():                                    # the kernels refuse too
            with pytest.raises(ValueError, match="conv2d_winograd_forward: " + message):
                K.conv2d_winograd_forward(x.array, w.array, None, stride, (1, 1), 1, dilation)

    def test_unknown_names_are_refused(self):
        x, w = ta.tensor(np.zeros((1, 2, 5, 5))), ta.tensor(np.zeros((2, 2, 3, 3)))
        with pytest.raises(ValueError, match=r"conv2d: algorithm: expected one of \('auto', 'gemm',"
                                             r" 'winograd'\), got 'fft'"):
            F.conv2d(x, w, algorithm="fft")
        with pytest.raises(ValueError, match="set_conv_algorithm: algorithm"):
            ta.set_conv_algorithm("Winograd")
        with pytest.raises(ValueError, match="Conv2d: algorithm"):
            nn.Conv2d(2, 2, 3, algorithm="direct")

    def test_the_cupy_set_keeps_gemm_and_refuses_winograd_cleanly(self):
        import tinyalex.kernels.cupy as cuda_set                       # importing needs no GPU
        assert cuda_set.CONV2D_ALGORITHMS == ("gemm",)
        assert resolve("conv2d", "auto", (256, 256, 3, 3), (1, 1), (1, 1), 1, (12, 12),
                       cuda_set.CONV2D_ALGORITHMS, "cupy") == "gemm"
        with pytest.raises(ValueError, match=r"algorithm='winograd' is not available in the 'cupy'"
                                             r" kernel set \(it has \('gemm',\)\)"):
            resolve("conv2d", "winograd", (256, 256, 3, 3), (1, 1), (1, 1), 1, (12, 12),
                    cuda_set.CONV2D_ALGORITHMS, "cupy")
        assert not hasattr(cuda_set, "conv2d_winograd_forward")

    def test_torch_parity_of_a_winograd_training_step(self):
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
