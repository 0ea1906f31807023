"""Every op through the public API, on every kernel set: float64 finite differences with
hypothesis-drawn shapes, and float32 parity with PyTorch (forward and backward)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyalex as ta
import tinyalex.functional as F
from helpers import check_parity, ta_tensors

# The kernels fixture is set up once per test and reused across examples on purpose.
fd_settings = settings(max_examples=12, deadline=None, derandomize=True,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])


def gradcheck(kernels, fn, arrays, **kwargs):
    assert ta.gradcheck(fn, ta_tensors(kernels, arrays, dtype=np.float64), **kwargs)


# --- float64 finite differences ------------------------------------------------------------
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


@fd_settings
@given(case=conv_cases())
def test_conv2d_finite_differences(kernels, case):
    rng = np.random.default_rng(case["seed"])
    arrays = [rng.standard_normal((case["n"], case["c"], case["h"], case["w"])),
              rng.standard_normal((case["oc"], case["c"] // case["groups"], case["kh"], case["kw"]))]
    if case["bias"]:
        arrays.append(rng.standard_normal(case["oc"]))
    gradcheck(kernels, lambda x, w, b=None: F.conv2d(x, w, b, case["stride"], case["padding"],
                                                      case["dilation"], case["groups"]), arrays)


@fd_settings
@given(n=st.integers(2, 3), c=st.integers(2, 3), h=st.integers(4, 8), w=st.integers(4, 8),
       kernel=st.integers(2, 3), stride=st.integers(1, 3), padding=st.integers(0, 1),
       ceil_mode=st.booleans(), seed=st.integers(0, 99))
def test_max_pool2d_finite_differences(kernels, n, c, h, w, kernel, stride, padding, ceil_mode,
                                       seed):
    if h == w:
        w += 1
    rng = np.random.default_rng(seed)
    # distinct values 0.1 apart: no ties within the finite-difference step
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w) * 0.1
    gradcheck(kernels, lambda x: F.max_pool2d(x, kernel, stride, min(padding, kernel // 2),
                                              ceil_mode=ceil_mode), [x])


@fd_settings
@given(n=st.integers(2, 3), c=st.integers(2, 3), h=st.integers(4, 8), w=st.integers(4, 8),
       kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)), stride=st.integers(1, 3),
       padding=st.integers(0, 1), ceil_mode=st.booleans(), count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, 4]), seed=st.integers(0, 99))
def test_avg_pool2d_finite_differences(kernels, n, c, h, w, kernel, stride, padding, ceil_mode,
                                       count_include_pad, divisor_override, seed):
    if h == w:
        w += 1
    padding = (min(padding, kernel[0] // 2), min(padding, kernel[1] // 2))
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    gradcheck(kernels, lambda x: F.avg_pool2d(x, kernel, stride, padding, ceil_mode,
                                              count_include_pad, divisor_override), [x])


@fd_settings
@given(c=st.integers(2, 7), size=st.integers(1, 6), alpha=st.floats(0.1, 1.0),
       beta=st.floats(0.5, 1.0), k=st.floats(0.5, 2.0), seed=st.integers(0, 99))
def test_local_response_norm_finite_differences(kernels, c, size, alpha, beta, k, seed):
    x = np.random.default_rng(seed).standard_normal((2, c, 3, 4))
    gradcheck(kernels, lambda x: F.local_response_norm(x, size, alpha, beta, k), [x])


@fd_settings
@given(shape=st.sampled_from([(2, 3, 4, 5), (3, 7), (2, 5, 3)]), seed=st.integers(0, 99))
def test_relu_finite_differences(kernels, shape, seed):
    rng = np.random.default_rng(seed)
    # magnitudes in [0.1, 1]: nothing within reach of the kink at 0
    x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 1.0, shape)
    gradcheck(kernels, F.relu, [x])


@fd_settings
@given(p=st.sampled_from([0.1, 0.5, 0.8]), seed=st.integers(0, 99))
def test_dropout_finite_differences(kernels, p, seed):
    x = np.random.default_rng(seed).standard_normal((2, 3, 5, 4))

    def fn(x):
        ta.manual_seed(seed)  # the same mask on every evaluation
        return F.dropout(x, p, training=True)

    gradcheck(kernels, fn, [x])


@fd_settings
@given(m=st.integers(2, 5), k=st.integers(1, 6), n=st.integers(1, 5), bias=st.booleans(),
       batch3d=st.booleans(), seed=st.integers(0, 99))
def test_linear_finite_differences(kernels, m, k, n, bias, batch3d, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, m, k) if batch3d else (m, k))
    arrays = [x, rng.standard_normal((n, k))] + ([rng.standard_normal(n)] if bias else [])
    gradcheck(kernels, lambda x, w, b=None: F.linear(x, w, b), arrays)


@fd_settings
@given(n=st.integers(2, 6), c=st.integers(2, 7), scale=st.sampled_from([1.0, 30.0]),
       reduction=st.sampled_from(["mean", "sum", "none"]), seed=st.integers(0, 99))
def test_cross_entropy_finite_differences(kernels, n, c, scale, reduction, seed):
    rng = np.random.default_rng(seed)
    logits, target = rng.standard_normal((n, c)) * scale, rng.integers(0, c, n)
    target = ta.tensor(kernels.to_device(target))
    gradcheck(kernels, lambda z: F.cross_entropy(z, target, reduction=reduction), [logits],
              atol=1e-6)


@fd_settings
@given(n=st.integers(2, 6), c=st.integers(2, 7), reduction=st.sampled_from(["mean", "sum", "none"]),
       weighted=st.booleans(), smoothing=st.sampled_from([0.0, 0.1, 0.6]),
       form=st.sampled_from(["indices", "ignore", "probabilities"]), seed=st.integers(0, 99))
def test_cross_entropy_options_finite_differences(kernels, n, c, reduction, weighted, smoothing,
                                                  form, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c)) * 3
    weight = ta.tensor(kernels.to_device(rng.uniform(0.2, 2.0, c))) if weighted else None
    ignore_index = -100
    if form == "probabilities":
        target = rng.uniform(0.0, 1.0, (n, c))
        target /= target.sum(axis=1, keepdims=True)
    else:
        target = rng.integers(0, c, n)
        if form == "ignore":
            ignore_index = int(target[0])                              # a real class, ignored
    target = ta.tensor(kernels.to_device(target))
    gradcheck(kernels, lambda z: F.cross_entropy(z, target, weight, ignore_index=ignore_index,
                                                 reduction=reduction, label_smoothing=smoothing),
              [logits], atol=1e-6)


def test_tensor_arithmetic_finite_differences(kernels):
    rng = np.random.default_rng(0)
    a, b, c = rng.uniform(0.5, 2.0, (3, 4)), rng.uniform(0.5, 2.0, (4,)), rng.standard_normal((4, 2))

    def fn(a, b, c):
        d = (a * b - a / b + 2.0) ** 2 - (-a).exp() + a.log()
        return (d @ c).sum(dim=1, keepdim=True) * 0.5 + d.mean() - d.reshape(2, 6).flatten()[3]

    gradcheck(kernels, fn, [a, b, c])


# --- float32 parity with PyTorch -----------------------------------------------------------
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
def test_conv2d_matches_torch(kernels, xs, ws, stride, padding, groups, bias, dilation):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws)]
    arrays += [rng.standard_normal(ws[0])] if bias else []
    check_parity(kernels, lambda x, w, b=None: F.conv2d(x, w, b, stride, padding, dilation, groups),
                 lambda x, w, b=None: TF.conv2d(x, w, b, stride, padding, dilation, groups), arrays)


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (2, 1), ((4, 3), (1, 2)), ((2, 2), 3)])
def test_conv2d_layer_same_padding_keeps_the_size_like_torch(kernels, kernel_size, dilation):
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


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 3, 9, 7), 3, 2, 1),          # overlapping 3/2 pooling with padding
    ((2, 2, 8, 11), 2, 2, 0),         # ceil mode: a last column window of one real pixel
    ((2, 3, 13, 11), 3, 1, 0),        # stride 1: every pixel in up to 9 windows
    ((2, 2, 10, 7), (3, 2), (3, 2), (1, 1)),   # ceil mode's rule drops a window in the padding
])
def test_max_pool2d_matches_torch_with_ties(kernels, shape, kernel, stride, padding, ceil_mode):
    # small integers: many ties; the first maximum in row-major order takes the gradient
    x = np.random.default_rng(2).integers(-2, 3, shape).astype(np.float64)
    check_parity(kernels, lambda x: F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode),
                 lambda x: TF.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode), [x])


@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool2d_return_indices_match_torch(kernels, ceil_mode, unbatched):
    shape = (3, 9, 8) if unbatched else (2, 3, 9, 8)
    x = np.random.default_rng(15).integers(-2, 3, shape).astype(np.float64)
    x[..., :2, :] = -np.inf                                            # windows of -inf and padding
    (ours,) = ta_tensors(kernels, [x])
    y, indices = F.max_pool2d(ours, 3, 2, 1, ceil_mode=ceil_mode, return_indices=True)
    y_t, indices_t = TF.max_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=ceil_mode,
                                   return_indices=True)
    assert indices.dtype == np.int64 and not indices.requires_grad
    assert indices.shape == tuple(indices_t.shape) and y.shape == tuple(y_t.shape)
    np.testing.assert_array_equal(kernels.to_numpy(indices.array), indices_t.numpy())
    np.testing.assert_array_equal(kernels.to_numpy(y.array), y_t.numpy())
    layer = ta.nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(kernels.to_numpy(layer(ours)[1].array), indices_t.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [dict(), dict(ceil_mode=True),
                                     dict(ceil_mode=True, count_include_pad=False),
                                     dict(divisor_override=7)])
@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 3, 9, 7), 3, 2, 1),                  # overlapping 3/2 windows with padding
    ((2, 2, 10, 7), (3, 2), (3, 2), (1, 1)),  # non-square; ceil mode's last window past the padding
    ((2, 2, 12, 18), (2, 3), None, 0),        # stride defaults to the kernel: blocks
])
def test_avg_pool2d_matches_torch(kernels, shape, kernel, stride, padding, options, dtype):
    x = np.random.default_rng(4).standard_normal(shape)
    check_parity(kernels, lambda x: F.avg_pool2d(x, kernel, stride, padding, **options),
                 lambda x: TF.avg_pool2d(x, kernel, stride, padding, **options), [x], dtype=dtype)


@pytest.mark.parametrize("output_size", [(6, 6), 3, (None, 2), (4, 9)])
def test_adaptive_avg_pool2d_layer_matches_torch(kernels, output_size):
    """torch's adaptive windows [floor(i*H/OH), ceil((i+1)*H/OH)) are avg_pool2d's blocks
    when the sizes divide; unbatched input as well."""
    x = np.random.default_rng(5).standard_normal((2, 3, 12, 18))
    check_parity(kernels, lambda x: ta.nn.AdaptiveAvgPool2d(output_size)(x),
                 lambda x: torch.nn.AdaptiveAvgPool2d(output_size)(x), [x])
    check_parity(kernels, lambda x: ta.nn.AdaptiveAvgPool2d(output_size)(x),
                 lambda x: torch.nn.AdaptiveAvgPool2d(output_size)(x), [x[0]])


def test_avg_pool2d_layer_and_refusals():
    x = ta.tensor(np.random.default_rng(6).standard_normal((2, 3, 8, 6)))
    layer = ta.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    expected = TF.avg_pool2d(torch.tensor(x.numpy()), 3, 2, 1, True, False)
    np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="adaptive_avg_pool2d: output_size: only sizes that divide"):
        ta.nn.AdaptiveAvgPool2d(5)(x)
    with pytest.raises(ValueError, match="avg_pool2d: divisor_override: expected None or a nonzero int"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(ValueError, match="avg_pool2d: padding: expected at most half the kernel"):
        F.avg_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="avg_pool2d: kernel_size: a kernel of 9"):
        F.avg_pool2d(x, 9)


@pytest.mark.parametrize("size, alpha, beta, k", [
    (5, 5e-4, 0.75, 2.0),   # the 2012 paper's constants in PyTorch's convention
    (5, 0.5, 0.75, 1.0),
    (4, 0.3, 0.6, 1.2),     # even size: asymmetric window
    (2, 1.0, 0.9, 1.0),
    (9, 0.2, 0.75, 1.0),    # window wider than the channels
])
def test_local_response_norm_matches_torch(kernels, size, alpha, beta, k):
    x = np.random.default_rng(3).standard_normal((2, 7, 5, 6))
    check_parity(kernels, lambda x: F.local_response_norm(x, size, alpha, beta, k),
                 lambda x: TF.local_response_norm(x, size, alpha, beta, k), [x])


def test_relu_matches_torch(kernels):
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 5))
    x[0, 0, 0, :3] = 0.0  # gradient at exactly 0 is 0 in both
    check_parity(kernels, F.relu, TF.relu, [x])


@pytest.mark.parametrize("x_shape, bias", [((4, 7), True), ((2, 3, 7), False)])
def test_linear_matches_torch(kernels, x_shape, bias):
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal((5, 7))]
    arrays += [rng.standard_normal(5)] if bias else []
    check_parity(kernels, lambda x, w, b=None: F.linear(x, w, b),
                 lambda x, w, b=None: TF.linear(x, w, b), arrays)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_cross_entropy_matches_torch_for_huge_logits(kernels, reduction, scale):
    rng = np.random.default_rng(6)
    logits, target = rng.standard_normal((6, 10)) * scale, rng.integers(0, 10, 6)
    check_parity(kernels, lambda z: F.cross_entropy(z, ta.tensor(kernels.to_device(target)), reduction=reduction),
                 lambda z: TF.cross_entropy(z, torch.tensor(target), reduction=reduction), [logits])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [
    dict(weight=True),
    dict(ignore_index=3),
    dict(label_smoothing=0.1),
    dict(weight=True, ignore_index=0, label_smoothing=0.3),
    dict(probabilities=True),
    dict(probabilities=True, weight=True, label_smoothing=0.2),
], ids=["weight", "ignore_index", "label_smoothing", "all three", "probabilities",
        "probabilities+weight+smoothing"])
def test_cross_entropy_options_match_torch(kernels, options, reduction):
    rng = np.random.default_rng(20)
    N, C = 9, 6
    logits = rng.standard_normal((N, C)) * 4
    weight = rng.uniform(0.2, 2.0, C) if options.get("weight") else None
    ignore_index = options.get("ignore_index", -100)
    if options.get("probabilities"):
        target = rng.uniform(0.0, 1.0, (N, C))
        target /= target.sum(axis=1, keepdims=True)
    else:
        target = rng.integers(0, C, N)
        target[::4] = ignore_index if "ignore_index" in options else target[::4]
    smoothing = options.get("label_smoothing", 0.0)

    def ours(z):
        t = ta.tensor(kernels.to_device(target.astype(z.dtype) if target.dtype.kind == "f" else target))
        w = None if weight is None else ta.tensor(kernels.to_device(weight.astype(z.dtype)))
        return F.cross_entropy(z, t, w, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=smoothing)

    def theirs(z):
        w = None if weight is None else torch.tensor(weight)
        return TF.cross_entropy(z, torch.tensor(target), w, ignore_index=ignore_index,
                                reduction=reduction, label_smoothing=smoothing)

    check_parity(kernels, ours, theirs, [logits])
    check_parity(kernels, ours, theirs, [logits], dtype=np.float64)


def test_cross_entropy_loss_layer_takes_torchs_arguments(kernels):
    rng = np.random.default_rng(21)
    logits, target, weight = rng.standard_normal((5, 4)), rng.integers(0, 4, 5), rng.uniform(0.5, 2, 4)
    target[1] = 2
    ours = ta.nn.CrossEntropyLoss(weight=ta.tensor(kernels.to_device(weight)), ignore_index=2,
                                  label_smoothing=0.2)
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), ignore_index=2, label_smoothing=0.2)
    loss = ours(ta.tensor(kernels.to_device(logits)), ta.tensor(kernels.to_device(target)))
    np.testing.assert_allclose(loss.item(), theirs(torch.tensor(logits), torch.tensor(target)).item(),
                               rtol=1e-12)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    with pytest.raises(ValueError, match="size_average"):
        ta.nn.CrossEntropyLoss(size_average=True)


def test_unbatched_conv_and_pool_match_torch(kernels):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((3, 8, 7)), rng.standard_normal((2, 3, 3, 3))
    check_parity(kernels, lambda x, w: F.max_pool2d(F.conv2d(x, w, padding=1), 2),
                 lambda x, w: TF.max_pool2d(TF.conv2d(x, w, padding=1), 2), [x, w])


def test_dropout_is_inverted_and_reuses_its_mask(kernels):
    x = np.random.default_rng(8).standard_normal((64, 128)) + 3.0
    (xt,) = ta_tensors(kernels, [x], dtype=np.float32)
    y = F.dropout(xt, 0.5, training=True)
    y_np = kernels.to_numpy(y.array)
    keep = y_np != 0
    assert abs(keep.mean() - 0.5) < 4 * np.sqrt(0.25 / keep.size)
    np.testing.assert_allclose(y_np[keep], 2 * x.astype(np.float32)[keep], rtol=1e-6)
    gy = np.random.default_rng(9).standard_normal(x.shape).astype(np.float32)
    y.backward(kernels.to_device(gy))
    np.testing.assert_allclose(kernels.to_numpy(xt.grad.array), np.where(keep, 2 * gy, 0), rtol=1e-6)
    assert F.dropout(xt, 0.5, training=False) is xt


def test_backward_is_bitwise_deterministic(kernels):
    rng = np.random.default_rng(10)
    x, w = rng.standard_normal((2, 4, 11, 9)), rng.standard_normal((6, 4, 3, 3))
    gy = None
    grads = []
    for _ in range(2):
        xt, wt = ta_tensors(kernels, [x, w], dtype=np.float32)
        y = F.max_pool2d(F.local_response_norm(F.relu(F.conv2d(xt, wt, stride=1, padding=1)), 5, 0.5), 3, 1)
        y = F.avg_pool2d(y, 3, 1, 1)                                   # overlapping: a gather on every set
        gy = rng.standard_normal(y.shape).astype(np.float32) if gy is None else gy
        y.backward(kernels.to_device(gy))
        grads.append((kernels.to_numpy(xt.grad.array), kernels.to_numpy(wt.grad.array)))
    for a, b in zip(*grads):
        assert np.array_equal(a, b)


def test_max_pool2d_routes_nan_windows_like_torch(kernels):
    x = np.random.default_rng(11).standard_normal((2, 2, 5, 6))
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = x[1, 1, 3, 4] = np.nan   # two NaNs share a window
    gy = np.random.default_rng(12).standard_normal((2, 2, 2, 3))
    (ours,) = ta_tensors(kernels, [x])
    y = F.max_pool2d(ours, 2)
    y.backward(kernels.to_device(gy))
    ref = torch.tensor(x, requires_grad=True)
    y_ref = TF.max_pool2d(ref, 2)
    y_ref.backward(torch.tensor(gy))
    np.testing.assert_array_equal(np.isnan(kernels.to_numpy(y.array)), np.isnan(y_ref.detach().numpy()))
    np.testing.assert_allclose(kernels.to_numpy(ours.grad.array), ref.grad.numpy(), rtol=1e-12)


# --- N = 0 and shape (): torch's shapes and values on every set -----------------------------
class _Lib:
    """The same names on both libraries: lib.F (functional), lib.nn (layers)."""

    def __init__(self, functional, nn):
        self.F, self.nn = functional, nn


TINYALEX, TORCH = _Lib(F, ta.nn), _Lib(TF, torch.nn)


def _empty_target(n):
    return np.zeros(n, dtype=np.int64)


# name -> (call(lib, *tensors), input arrays); every input float array gets a gradient.
EDGE_CASES = {
    "conv2d N=0": (lambda lib, x, w, b: lib.F.conv2d(x, w, b, 1, 1),
                   [np.zeros((0, 3, 5, 6)), np.ones((4, 3, 3, 3)), np.ones(4)]),
    "conv2d N=0 dilated same": (lambda lib, x, w: lib.F.conv2d(x, w, padding="same", dilation=2),
                                [np.zeros((0, 2, 5, 6)), np.ones((4, 2, 2, 3))]),
    "max_pool2d N=0": (lambda lib, x: lib.F.max_pool2d(x, 3, 2, 1), [np.zeros((0, 3, 7, 6))]),
    "max_pool2d N=0 ceil": (lambda lib, x: lib.F.max_pool2d(x, 2, 2, ceil_mode=True),
                            [np.zeros((0, 3, 7, 6))]),
    "avg_pool2d N=0 ceil": (lambda lib, x: lib.F.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                                             count_include_pad=False),
                            [np.zeros((0, 3, 7, 6))]),
    "local_response_norm N=0": (lambda lib, x: lib.F.local_response_norm(x, 3, 0.5),
                                [np.zeros((0, 4, 3, 5))]),
    "relu N=0": (lambda lib, x: lib.F.relu(x), [np.zeros((0, 3))]),
    "relu ()": (lambda lib, x: lib.F.relu(x), [np.array(1.5)]),
    "relu () negative": (lambda lib, x: lib.F.relu(x), [np.array(-0.5)]),
    "dropout eval ()": (lambda lib, x: lib.F.dropout(x, 0.5, training=False), [np.array(1.5)]),
    "linear N=0": (lambda lib, x, w, b: lib.F.linear(x, w, b),
                   [np.zeros((0, 7)), np.ones((5, 7)), np.ones(5)]),
    "linear (0,) @ (8, 0)": (lambda lib, x, w: lib.F.linear(x, w), [np.zeros(0), np.ones((8, 0))]),
    "linear 3-D N=0": (lambda lib, x, w: lib.F.linear(x, w), [np.zeros((2, 0, 7)), np.ones((5, 7))]),
    "cross_entropy N=0 mean": (lambda lib, z, t: lib.F.cross_entropy(z, t),
                               [np.zeros((0, 4)), _empty_target(0)]),
    "cross_entropy N=0 sum": (lambda lib, z, t: lib.F.cross_entropy(z, t, reduction="sum"),
                              [np.zeros((0, 4)), _empty_target(0)]),
    "cross_entropy N=0 none": (lambda lib, z, t: lib.F.cross_entropy(z, t, reduction="none"),
                               [np.zeros((0, 4)), _empty_target(0)]),
    "cross_entropy unbatched ()": (lambda lib, z, t: lib.F.cross_entropy(z, t),
                                   [np.array([0.5, -1.0, 2.0]), np.array(2)]),
    "cross_entropy unbatched () none": (lambda lib, z, t: lib.F.cross_entropy(z, t, reduction="none"),
                                        [np.array([0.5, -1.0, 2.0]), np.array(0)]),
    "cross_entropy N=0 probabilities": (lambda lib, z: lib.F.cross_entropy(z, z.detach() * 0.0),
                                        [np.zeros((0, 4))]),
    "Flatten N=0": (lambda lib, x: lib.nn.Flatten()(x), [np.zeros((0, 3, 2))]),
    "sum then relu": (lambda lib, x: x.relu().sum().relu(), [np.array([1.0, -2.0, 3.0])]),
    "mean then relu": (lambda lib, x: x.relu().mean().relu(), [np.array([[1.0, -2.0], [3.0, 0.5]])]),
    "mean of N=0": (lambda lib, x: x.mean(), [np.zeros((0, 3))]),
    "sum of N=0": (lambda lib, x: x.sum(), [np.zeros((0, 3))]),
    "sum of ()": (lambda lib, x: (x * 2.0).sum().relu(), [np.array(-1.5)]),
    "elementwise of () then relu": (lambda lib, x: (x.sum() * 2.0).relu(), [np.array([0.5, 1.25])]),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_empty_batch_and_0d_match_torch(kernels, name, dtype):
    """Output shape, dtype and values (NaN where torch gives NaN), and every input gradient
    (shape and values) for a random upstream gradient, against torch."""
    call, arrays = EDGE_CASES[name]
    ours = ta_tensors(kernels, arrays, dtype=dtype)
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    theirs = [torch.tensor(a, dtype=torch_dtype if a.dtype.kind == "f" else None,
                           requires_grad=a.dtype.kind == "f") for a in arrays]
    y, y_t = call(TINYALEX, *ours), call(TORCH, *theirs)
    assert y.shape == tuple(y_t.shape), f"shape {y.shape}, torch {tuple(y_t.shape)}"
    assert y.dtype == np.dtype(dtype)
    y_np = kernels.to_numpy(y.array)
    assert isinstance(y.array, type(kernels.to_device(np.zeros(1)))), "a scalar, not an array"
    np.testing.assert_allclose(y_np, y_t.detach().numpy(), rtol=1e-6, atol=1e-7, equal_nan=True)

    gy = np.random.default_rng(0).uniform(0.5, 1.5, y.shape)         # never all ones
    y.backward(kernels.to_device(gy.astype(dtype)))
    y_t.backward(torch.tensor(gy, dtype=torch_dtype))
    for i, (a, t) in enumerate(zip(ours, theirs)):
        if t.requires_grad:
            assert a.grad is not None and a.grad.shape == tuple(t.grad.shape), f"grad {i} shape"
            np.testing.assert_allclose(kernels.to_numpy(a.grad.array), t.grad.numpy(), rtol=1e-6,
                                       atol=1e-7, equal_nan=True, err_msg=f"grad of input {i}")


@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (2, 0, 4)])
def test_dropout_in_training_keeps_shape_and_mask_at_0d_and_empty(kernels, shape):
    x = np.full(shape, 1.5)
    (xt,) = ta_tensors(kernels, [x])
    ta.manual_seed(3)
    y = F.dropout(xt, 0.5, training=True)
    assert y.shape == shape
    y_np = kernels.to_numpy(y.array)
    assert np.all((y_np == 0) | (y_np == 3.0))                         # dropped, or scaled by 2
    gy = np.random.default_rng(1).uniform(0.5, 1.5, shape)
    y.backward(kernels.to_device(gy))
    assert xt.grad.shape == shape
    np.testing.assert_array_equal(kernels.to_numpy(xt.grad.array), np.where(y_np != 0, 2 * gy, 0))
