"""Kernel-level tests, run once per kernel set by the `kernels` fixture (conftest.py).

Float kernels are checked against torch.nn.functional in float64, and in float32 against
that same float64 result, always with random upstream gradients (with gy = 1 the
gradient of a softmax-like op is zero and the test checks nothing). The inputs are
chosen to catch the bugs in docs/pitfalls.md: N >= 2, C >= 2, H != W, stride < kernel with
padding, groups=2, integer-valued pooling inputs with ties, even LRN sizes with a large
alpha and k ~ 1, logits of +-1e3.
"""
import inspect
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinyalex.reference as reference
from tinyalex.dispatch import KERNEL_API, KERNEL_SETS, counter_uniform, load_kernel_set

DTYPES = (np.float64, np.float32)

# (kernel_size, stride, padding, dilation): overlapping windows, padding, non-square,
# dilation with stride and padding; H != W below.
GEOMETRIES = [
    ((3, 3), (2, 2), (1, 1), (1, 1)),
    ((3, 2), (1, 2), (1, 0), (1, 1)),
    ((2, 3), (1, 1), (1, 1), (1, 1)),
    ((3, 2), (2, 1), (2, 1), (2, 3)),
    ((2, 2), (1, 2), (0, 1), (3, 2)),
]
X_SHAPE = (2, 3, 7, 6)  # N, C, H, W


# --- helpers --------------------------------------------------------------------------

def torch_vjp(fn, arrays, gy):
    """y = fn(*arrays) in float64 torch, and the gradient of sum(y * gy) w.r.t. each array."""
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    y = fn(*tensors)
    grads = torch.autograd.grad(y, tensors, torch.tensor(gy, dtype=torch.float64))
    return y.detach().numpy(), [g.numpy() for g in grads]


def assert_close(actual, expected, dtype):
    """Our kernel's output (in `dtype`) against a float64 torch result.

    float32 is compared with float64 to a tolerance relative to the result's scale, since
    a reduction's rounding error grows with the size of its terms, not of its sum.
    """
    assert actual.dtype == dtype, f"expected dtype {np.dtype(dtype)}, got {actual.dtype}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    if dtype == np.float64:
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12 * scale)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


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


def contract_parameters(name):
    """The parameters of `name` as KERNEL_API writes them: ['gy', 'cache', 'need_gx=True']."""
    match = re.match(rf"{name}\(((?:[^()]|\([^()]*\))*)\)", KERNEL_API[name])  # (1, 1) defaults
    return [p.strip() for p in re.split(r",(?![^()]*\))", match.group(1))]


# --- the API contract -----------------------------------------------------------------

@pytest.mark.parametrize("set_name", list(KERNEL_SETS))
def test_kernel_set_exposes_kernel_api(set_name):
    module = load_kernel_set(set_name)  # a missing set fails here (cupy imports without a GPU)
    for name in KERNEL_API:
        fn = getattr(module, name, None)
        assert callable(fn), f"kernel set {set_name!r} lacks {name}"
        parameters = [str(p) for p in inspect.signature(fn).parameters.values()]
        assert parameters == contract_parameters(name), f"{set_name}.{name} signature"


# --- im2col / col2im ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_size, stride, padding, dilation", GEOMETRIES)
def test_im2col_matches_loop_definition(kernels, kernel_size, stride, padding, dilation, dtype):
    x = np.random.default_rng(0).standard_normal(X_SHAPE).astype(dtype)
    cols = kernels.module.im2col(kernels.to_device(x), kernel_size, stride, padding, dilation)
    cols = kernels.to_numpy(cols)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, im2col_by_loops(x, kernel_size, stride, padding, dilation))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_size, stride, padding, dilation", GEOMETRIES)
def test_col2im_of_ones_counts_covering_windows(kernels, kernel_size, stride, padding, dilation,
                                                dtype):
    K = kernels.module
    ones = kernels.to_device(np.ones(X_SHAPE, dtype=dtype))
    x = kernels.to_numpy(K.col2im(K.im2col(ones, kernel_size, stride, padding, dilation),
                                  X_SHAPE, kernel_size, stride, padding, dilation))
    count = covering_window_count(*X_SHAPE[2:], kernel_size, stride, padding, dilation)
    assert x.dtype == dtype
    np.testing.assert_array_equal(x, np.broadcast_to(count, X_SHAPE))


@pytest.mark.parametrize("kernel_size, stride, padding, dilation", GEOMETRIES)
def test_col2im_is_adjoint_of_im2col(kernels, kernel_size, stride, padding, dilation):
    rng = np.random.default_rng(1)
    K = kernels.module
    x = rng.standard_normal(X_SHAPE)
    cols = kernels.to_numpy(K.im2col(kernels.to_device(x), kernel_size, stride, padding, dilation))
    c = rng.standard_normal(cols.shape)
    x_back = K.col2im(kernels.to_device(c), X_SHAPE, kernel_size, stride, padding, dilation)
    x_back = kernels.to_numpy(x_back)
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, x_back), rtol=1e-12)


# --- conv2d ---------------------------------------------------------------------------

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
def test_conv2d_matches_torch(kernels, x_shape, w_shape, stride, padding, groups, has_bias,
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
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

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


# --- max_pool2d -----------------------------------------------------------------------

# x values, kernel_size, stride, padding. Small integers tie inside windows; zeros next to
# the padding catch zero-padding (or a mask), and all-negative inputs catch zero padding.
POOL_CASES = [
    ((-2, 1), (3, 3), (2, 2), (1, 1)),
    ((-3, 0), (3, 2), (1, 1), (1, 1)),
    ((0, 2), (2, 3), (2, 1), (0, 1)),
]


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value_range, kernel_size, stride, padding", POOL_CASES)
def test_max_pool2d_matches_torch_with_ties(kernels, value_range, kernel_size, stride, padding,
                                            dtype, ceil_mode):
    rng = np.random.default_rng(3)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x = rng.integers(*value_range, size=(2, 3, 8, 5)).astype(dtype)

    y, cache = K.max_pool2d_forward(dev(x), kernel_size, stride, padding, ceil_mode)
    gy = rng.standard_normal(host(y).shape).astype(dtype)
    gx = K.max_pool2d_backward(dev(gy), cache)
    indices = host(K.max_pool2d_indices(cache))

    def pool(x):
        return F.max_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode)

    y_t, (gx_t,) = torch_vjp(pool, [x], gy)
    assert_close(host(y), y_t, dtype)
    assert_close(host(gx), gx_t, dtype)
    np.testing.assert_array_equal(host(K.max_pool2d_backward(dev(gy), cache)), host(gx))
    _, indices_t = F.max_pool2d(torch.from_numpy(x), kernel_size, stride, padding,
                                ceil_mode=ceil_mode, return_indices=True)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, indices_t.numpy())


# (H, W, kernel_size, stride, padding): ceil mode adds a last window that runs past the
# bottom/right padding (torch's rule drops one that would start inside the padding).
CEIL_CASES = [
    (7, 6, (2, 2), (2, 2), (0, 0)),          # 7 rows: a last window of one real row
    (8, 5, (3, 3), (2, 2), (1, 1)),          # 8+2-3 = 7, odd: ceil adds a window
    (6, 9, (3, 2), (3, 2), (1, 1)),          # the rule: (OH-1)*sh >= H + ph drops a window
    (5, 7, (4, 3), (3, 2), (2, 1)),
]


@pytest.mark.parametrize("H, W, kernel_size, stride, padding", CEIL_CASES)
def test_max_pool2d_ceil_mode_sizes_and_indices_match_torch(kernels, H, W, kernel_size, stride,
                                                            padding):
    rng = np.random.default_rng(13)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x = rng.integers(-2, 2, size=(2, 3, H, W)).astype(np.float64)      # ties
    y, cache = K.max_pool2d_forward(dev(x), kernel_size, stride, padding, True)
    gy = rng.standard_normal(host(y).shape)
    y_t, (gx_t,) = torch_vjp(lambda x: F.max_pool2d(x, kernel_size, stride, padding,
                                                    ceil_mode=True), [x], gy)
    assert host(y).shape == y_t.shape
    assert_close(host(y), y_t, np.float64)
    assert_close(host(K.max_pool2d_backward(dev(gy), cache)), gx_t, np.float64)
    _, indices_t = F.max_pool2d(torch.from_numpy(x), kernel_size, stride, padding,
                                ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(host(K.max_pool2d_indices(cache)), indices_t.numpy())


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool2d_never_routes_to_padding_in_windows_of_minus_inf(kernels, ceil_mode):
    """A window whose real pixels are all -inf ties with the -inf padding: torch's index (and
    gradient) goes to the first real pixel, on every set."""
    rng = np.random.default_rng(14)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x = rng.standard_normal((2, 2, 7, 6))
    x[:, :, :3, :] = -np.inf                                           # whole top windows
    x[1, 1] = -np.inf                                                  # a whole plane
    x[0, 1, :, :2] = -np.inf                                           # left windows
    y, cache = K.max_pool2d_forward(dev(x), (3, 3), (2, 2), (1, 1), ceil_mode)
    gy = rng.standard_normal(host(y).shape)
    y_t, (gx_t,) = torch_vjp(lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=ceil_mode), [x], gy)
    np.testing.assert_array_equal(host(y), y_t)
    np.testing.assert_allclose(host(K.max_pool2d_backward(dev(gy), cache)), gx_t, rtol=1e-12)
    _, indices_t = F.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=ceil_mode,
                                return_indices=True)
    np.testing.assert_array_equal(host(K.max_pool2d_indices(cache)), indices_t.numpy())


# --- avg_pool2d -----------------------------------------------------------------------

# (H, W, kernel_size, stride, padding, ceil_mode): overlapping windows with padding, a
# non-square kernel, ceil mode's last window past the padding (torch counts only the
# padded input it covers), and non-overlapping blocks (AdaptiveAvgPool2d's case).
AVG_POOL_CASES = [
    (8, 5, (3, 3), (2, 2), (1, 1), False),
    (8, 5, (3, 3), (2, 2), (1, 1), True),
    (7, 6, (3, 2), (1, 2), (1, 1), True),
    (6, 9, (3, 2), (3, 2), (1, 1), True),
    (6, 9, (2, 3), (2, 3), (0, 0), False),
]
# (count_include_pad, divisor_override)
AVG_POOL_DIVISORS = [(True, None), (False, None), (True, 5), (False, -3)]


@pytest.mark.parametrize("count_include_pad, divisor_override", AVG_POOL_DIVISORS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H, W, kernel_size, stride, padding, ceil_mode", AVG_POOL_CASES)
def test_avg_pool2d_matches_torch(kernels, H, W, kernel_size, stride, padding, ceil_mode, dtype,
                                  count_include_pad, divisor_override):
    rng = np.random.default_rng(17)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x = rng.standard_normal((2, 3, H, W)).astype(dtype)
    options = (ceil_mode, count_include_pad, divisor_override)
    y, cache = K.avg_pool2d_forward(dev(x), kernel_size, stride, padding, *options)
    gy = rng.standard_normal(host(y).shape).astype(dtype)
    gx = K.avg_pool2d_backward(dev(gy), cache)

    def pool(x):
        return F.avg_pool2d(x, kernel_size, stride, padding, *options)

    y_t, (gx_t,) = torch_vjp(pool, [x], gy)
    assert_close(host(y), y_t, dtype)
    assert_close(host(gx), gx_t, dtype)
    np.testing.assert_array_equal(host(K.avg_pool2d_backward(dev(gy), cache)), host(gx))


# --- LRN ------------------------------------------------------------------------------

# size, alpha, beta, k: even and odd sizes, one wider than C; alpha large enough that
# the cross-channel term of the backward matters (docs/pitfalls.md#lrn-backward-alpha).
LRN_CASES = [
    (2, 0.5, 0.75, 1.0),
    (3, 1.0, 0.75, 1.0),
    (4, 0.5, 0.6, 1.5),
    (5, 2.0, 0.75, 1.0),
    (8, 0.5, 0.75, 1.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size, alpha, beta, k", LRN_CASES)
def test_lrn_matches_torch(kernels, size, alpha, beta, k, dtype):
    rng = np.random.default_rng(4)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x = rng.standard_normal((2, 6, 3, 4)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)

    y, cache = K.lrn_forward(dev(x), size, alpha, beta, k)
    gx = K.lrn_backward(dev(gy), cache)

    y_t, (gx_t,) = torch_vjp(lambda x: F.local_response_norm(x, size, alpha, beta, k), [x], gy)
    assert_close(host(y), y_t, dtype)
    assert_close(host(gx), gx_t, dtype)


def test_lrn_paper_constants(kernels):
    """The paper's k=2, n=5, alpha=1e-4, beta=0.75 is size=5, alpha=5e-4 in our convention."""
    x = 10 * np.random.default_rng(5).standard_normal((2, 7, 3, 4))  # large enough to matter
    C = x.shape[1]
    paper = np.empty_like(x)
    for c in range(C):
        window = x[:, max(0, c - 2):min(C, c + 3)]
        paper[:, c] = x[:, c] / (2 + 1e-4 * (window ** 2).sum(axis=1)) ** 0.75
    y, _ = kernels.module.lrn_forward(kernels.to_device(x), 5, 5e-4, 0.75, 2.0)
    np.testing.assert_allclose(kernels.to_numpy(y), paper, rtol=1e-12)


# --- ReLU -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_matches_torch(kernels, dtype):
    rng = np.random.default_rng(6)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x = rng.standard_normal((2, 3, 5, 4))
    x.flat[::7] = 0.0  # the gradient at exactly 0 is 0, as in PyTorch
    x = x.astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)

    y, cache = K.relu_forward(dev(x))
    gx = K.relu_backward(dev(gy), cache)

    y_t, (gx_t,) = torch_vjp(F.relu, [x], gy)
    assert_close(host(y), y_t, dtype)
    assert_close(host(gx), gx_t, dtype)


# --- cross-entropy --------------------------------------------------------------------

# 5 classes: one warp per row on CUDA; 70: three warps, so the block reduction's shared
# partials and barriers are exercised.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("C", [5, 70])
def test_cross_entropy_matches_torch(kernels, C, reduction, scale, dtype):
    rng = np.random.default_rng(7)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    N = 6
    logits = (scale * rng.standard_normal((N, C))).astype(dtype)
    target = rng.integers(0, C, size=N)  # int64, with repeated classes
    gloss = rng.standard_normal(N if reduction == "none" else ()).astype(dtype)

    loss, cache = K.cross_entropy_forward(dev(logits), dev(target), reduction)
    glogits = K.cross_entropy_backward(dev(gloss), cache)

    def cross_entropy(logits):
        return F.cross_entropy(logits, torch.from_numpy(target), reduction=reduction)

    loss_t, (glogits_t,) = torch_vjp(cross_entropy, [logits], gloss)
    loss, glogits = host(loss), host(glogits)
    assert loss.shape == loss_t.shape
    assert np.isfinite(loss).all() and np.isfinite(glogits).all()
    assert_close(loss, loss_t, dtype)
    assert_close(glogits, glogits_t, dtype)


# --- dropout --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_matches_reference_and_scales(kernels, dtype):
    rng = np.random.default_rng(8)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    p, seed = 0.3, 2**40 + 12345
    x = rng.uniform(0.5, 1.5, size=(4, 3, 5, 7)).astype(dtype)  # nonzero: y != 0 marks the kept
    gy = rng.standard_normal(x.shape).astype(dtype)

    y, cache = K.dropout_forward(dev(x), p, seed)
    gx = K.dropout_backward(dev(gy), cache)
    y, gx = host(y), host(gx)

    keep = y != 0
    y_ref, _ = reference.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(keep, y_ref != 0)  # the same mask on every set
    np.testing.assert_array_equal(keep, counter_uniform(seed, x.size).reshape(x.shape) >= p)
    assert 0 < keep.mean() < 1
    assert y.dtype == dtype and gx.dtype == dtype
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y, x * keep / (1 - p), rtol=rtol)
    np.testing.assert_allclose(gx, gy * keep / (1 - p), rtol=rtol)  # backward reuses the mask

    other_seed = host(K.dropout_forward(dev(x), p, seed + 1)[0]) != 0
    assert (other_seed != keep).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_row_slices_draw_the_whole_batch_masks(kernels, dtype):
    """A data-parallel rank holding rows [r0, r1) of a batch passes offset = r0 * row size and
    gets exactly those rows of the whole batch's mask, in forward and backward."""
    rng = np.random.default_rng(10)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    p, seed = 0.5, 2**50 + 7
    x = rng.uniform(0.5, 1.5, size=(7, 3, 11)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    y_whole, cache = K.dropout_forward(dev(x), p, seed)
    gx_whole = host(K.dropout_backward(dev(gy), cache))
    row = x[0].size
    for r0, r1 in ((0, 3), (3, 4), (4, 7)):
        y, cache = K.dropout_forward(dev(x[r0:r1]), p, seed, r0 * row)
        np.testing.assert_array_equal(host(y), host(y_whole)[r0:r1])
        np.testing.assert_array_equal(host(K.dropout_backward(dev(gy[r0:r1]), cache)), gx_whole[r0:r1])
    y_shifted = host(K.dropout_forward(dev(x[3:4]), p, seed, 0)[0])   # no offset: row 0's mask
    assert (y_shifted != 0).tolist() != (host(y_whole)[3:4] != 0).tolist()


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_keep_rate(kernels, p):
    x = np.ones((10, 10, 40, 100))
    y = kernels.to_numpy(kernels.module.dropout_forward(kernels.to_device(x), p, 99)[0])
    standard_error = np.sqrt(p * (1 - p) / x.size)
    assert abs((y != 0).mean() - (1 - p)) < 4 * standard_error
    assert abs(y.mean() - 1) < 4 * standard_error / (1 - p)  # inverted: E[y] = x


def test_dropout_p0_is_identity_and_p1_is_zeros(kernels):
    rng = np.random.default_rng(9)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x = rng.standard_normal((2, 3, 4, 5))
    gy = rng.standard_normal(x.shape)

    y, cache = K.dropout_forward(dev(x), 0.0, 1)
    np.testing.assert_array_equal(host(y), x)
    np.testing.assert_array_equal(host(K.dropout_backward(dev(gy), cache)), gy)

    y, cache = K.dropout_forward(dev(x), 1.0, 1)
    np.testing.assert_array_equal(host(y), np.zeros_like(x))
    np.testing.assert_array_equal(host(K.dropout_backward(dev(gy), cache)), np.zeros_like(gy))


# --- cross-entropy options --------------------------------------------------------------

# weight, ignore_index (None: no row ignored), label_smoothing, probability targets
CE_OPTIONS = {
    "weight": dict(weight=True),
    "ignore_index": dict(ignore_index=2),
    "ignore_index valid class -100": dict(ignore_index=-100, ignore_rows=True),
    "label_smoothing": dict(label_smoothing=0.3),
    "weight, ignore_index and smoothing": dict(weight=True, ignore_index=1, label_smoothing=0.2),
    "probabilities": dict(probabilities=True),
    "probabilities, weight and smoothing": dict(probabilities=True, weight=True, label_smoothing=0.25),
}


def ce_case(rng, N, C, dtype, options, scale=1.0):
    """logits, target, weight and the kernel keywords of one option set."""
    logits = (scale * rng.standard_normal((N, C))).astype(dtype)
    weight = rng.uniform(0.2, 2.0, C).astype(dtype) if options.get("weight") else None
    ignore_index = options.get("ignore_index", -100)
    if options.get("probabilities"):
        target = rng.uniform(0.0, 1.0, (N, C))
        target = (target / target.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        target = rng.integers(0, C, size=N)
        if "ignore_index" in options:
            target[::3] = ignore_index                                 # some rows ignored
    keywords = dict(weight=weight, ignore_index=ignore_index,
                    label_smoothing=options.get("label_smoothing", 0.0))
    return logits, target, keywords


def torch_cross_entropy(target, reduction, weight, ignore_index, label_smoothing):
    t = torch.from_numpy(target.astype(np.float64) if target.dtype.kind == "f" else target)
    w = None if weight is None else torch.from_numpy(weight.astype(np.float64))
    return lambda z: F.cross_entropy(z, t, w, ignore_index=ignore_index, reduction=reduction,
                                     label_smoothing=label_smoothing)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", list(CE_OPTIONS))
def test_cross_entropy_options_match_torch(kernels, options, reduction, scale, dtype):
    rng = np.random.default_rng(17)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    logits, target, keywords = ce_case(rng, 7, 5, dtype, CE_OPTIONS[options], scale)
    gloss = rng.standard_normal(7 if reduction == "none" else ()).astype(dtype)
    weight = keywords["weight"]
    loss, cache = K.cross_entropy_forward(dev(logits), dev(target), reduction,
                                          None if weight is None else dev(weight),
                                          keywords["ignore_index"], keywords["label_smoothing"])
    glogits = K.cross_entropy_backward(dev(gloss), cache)
    loss_t, (glogits_t,) = torch_vjp(torch_cross_entropy(target, reduction, **keywords), [logits], gloss)
    loss, glogits = host(loss), host(glogits)
    assert loss.shape == loss_t.shape
    assert np.isfinite(loss).all() and np.isfinite(glogits).all()
    assert_close(loss, loss_t, dtype)
    assert_close(glogits, glogits_t, dtype)
    np.testing.assert_array_equal(host(K.cross_entropy_backward(dev(gloss), cache)), glogits)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.4])
def test_cross_entropy_all_rows_ignored_is_nan_like_torch(kernels, reduction, label_smoothing):
    """'mean' over no counted row is 0/0 = NaN in torch; the gradient is still exactly 0."""
    rng = np.random.default_rng(18)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    logits, target = rng.standard_normal((4, 3)), np.full(4, 1)
    weight = rng.uniform(0.5, 1.5, 3)
    gloss = rng.standard_normal(4 if reduction == "none" else ())
    loss, cache = K.cross_entropy_forward(dev(logits), dev(target), reduction, dev(weight), 1,
                                          label_smoothing)
    glogits = host(K.cross_entropy_backward(dev(gloss), cache))
    loss_t, (glogits_t,) = torch_vjp(torch_cross_entropy(target, reduction, weight, 1,
                                                         label_smoothing), [logits], gloss)
    np.testing.assert_array_equal(host(loss), loss_t)                 # NaN for 'mean'; 0 otherwise
    assert (np.isnan(host(loss)).all() if reduction == "mean" else not host(loss).any())
    np.testing.assert_array_equal(glogits, glogits_t)
    assert not glogits.any()


@pytest.mark.parametrize("probabilities", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_of_an_empty_batch_is_torchs(kernels, reduction, probabilities):
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    logits = np.zeros((0, 4))
    target = np.zeros((0, 4)) if probabilities else np.zeros(0, dtype=np.int64)
    loss, cache = K.cross_entropy_forward(dev(logits), dev(target), reduction)
    gloss = np.zeros(0) if reduction == "none" else np.array(0.7)
    glogits = host(K.cross_entropy_backward(dev(gloss), cache))
    loss_t, (glogits_t,) = torch_vjp(torch_cross_entropy(target, reduction, None, -100, 0.0),
                                     [logits], gloss)
    assert host(loss).shape == loss_t.shape and glogits.shape == (0, 4)
    np.testing.assert_array_equal(host(loss), loss_t)                 # nan, 0 and (0,)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2)])
def test_elementwise_kernels_keep_0d_and_empty_shapes(kernels, shape):
    """relu and dropout on a 0-d or empty array return that shape (not (1,)), forward and back."""
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x, gy = np.full(shape, 1.5), np.full(shape, -0.5)
    for forward, backward, args in ((K.relu_forward, K.relu_backward, ()),
                                    (K.dropout_forward, K.dropout_backward, (0.5, 7))):
        y, cache = forward(dev(x), *args)
        gx = backward(dev(gy), cache)
        assert host(y).shape == shape and host(gx).shape == shape
        assert host(y).dtype == np.float64 and host(gx).dtype == np.float64


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "avg_pool2d", "lrn"])
def test_spatial_kernels_accept_an_empty_batch(kernels, op):
    """N = 0: outputs and gradients of torch's shapes, zero weight gradients."""
    rng = np.random.default_rng(19)
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    x = np.zeros((0, 4, 7, 6))
    if op == "conv2d":
        weight, bias = rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)
        y, cache = K.conv2d_forward(dev(x), dev(weight), dev(bias), (2, 1), (1, 1), 2, (2, 1))
        gx, gW, gb = K.conv2d_backward(dev(np.zeros(host(y).shape)), cache)
        y_t = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), None, (2, 1), 1, (2, 1), 2)
        np.testing.assert_array_equal(host(gW), np.zeros_like(weight))
        np.testing.assert_array_equal(host(gb), np.zeros(6))
    elif op == "max_pool2d":
        y, cache = K.max_pool2d_forward(dev(x), (3, 3), (2, 2), (1, 1), True)
        gx = K.max_pool2d_backward(dev(np.zeros(host(y).shape)), cache)
        assert host(K.max_pool2d_indices(cache)).shape == host(y).shape
        y_t = F.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True)
    elif op == "avg_pool2d":
        y, cache = K.avg_pool2d_forward(dev(x), (3, 3), (2, 2), (1, 1), True, False)
        gx = K.avg_pool2d_backward(dev(np.zeros(host(y).shape)), cache)
        y_t = F.avg_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True, count_include_pad=False)
    else:
        y, cache = K.lrn_forward(dev(x), 3, 0.5, 0.75, 1.0)
        gx = K.lrn_backward(dev(np.zeros(x.shape)), cache)
        y_t = F.local_response_norm(torch.from_numpy(x), 3, 0.5, 0.75, 1.0)
    assert host(y).shape == tuple(y_t.shape) and host(gx).shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M, inner, N", [(5, 7, 3), (33, 17, 9), (4, 0, 3), (0, 3, 2)])
def test_matmul_matches_numpy_with_transposed_operands(kernels, M, inner, N, dtype):
    """The linear layer's GEMMs: y = x @ W.T, gx = gy @ W, gW = gy.T @ x, so each operand
    may arrive as a transposed view."""
    K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
    rng = np.random.default_rng(M + inner + N)
    a, b = rng.standard_normal((M, inner)), rng.standard_normal((inner, N))
    expected = a @ b
    for left, right in ((a, b), (a.T.copy().T, b), (a, b.T.copy().T)):
        left_d = dev(np.ascontiguousarray(left).astype(dtype))
        right_d = dev(np.ascontiguousarray(right).astype(dtype))
        if not left.flags.c_contiguous:                    # keep the transposed-view layout
            left_d = dev(np.ascontiguousarray(left.T).astype(dtype)).T
        if not right.flags.c_contiguous:
            right_d = dev(np.ascontiguousarray(right.T).astype(dtype)).T
        y = host(K.matmul(left_d, right_d))
        assert y.shape == (M, N)
        assert_close(y, expected, dtype)
