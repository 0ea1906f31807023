"""PyTorch-shaped functional API (like ``torch.nn.functional``).

Each function validates its arguments — naming the argument, what was expected and what
was given — then applies the op's Function from ``tinyalex.ops``. The same call works on
torch and tinyalex, so code ports line by line and tests run one lambda on both.
"""
import numbers

import numpy as np

from . import device as _device
from . import random as _random
from .autograd import FLOAT_DTYPES, Tensor
from .ops.basic import reshape
from .ops.conv import Conv2d
from .ops.cross_entropy import CrossEntropy
from .ops.dropout import Dropout
from .ops.linear import Linear
from .ops.lrn import LocalResponseNorm
from .ops.mse_loss import MSELoss
from .ops.pool import MaxPool2d
from .ops.relu import ReLU

__all__ = ["conv2d", "max_pool2d", "local_response_norm", "relu", "dropout", "linear",
           "cross_entropy", "mse_loss"]


# --- argument checks ---------------------------------------------------------------------
def _check_tensor(op, name, t, ndims=None):
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name}: expected a tinyalex.Tensor, got {type(t).__name__}")
    if ndims is not None and t.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{op}: {name}: expected a {want} tensor, got shape {t.shape}")


def _check_float_tensors(op, **tensors):
    """Every given tensor is float32 or float64, all of one dtype and on one device."""
    given = {k: t for k, t in tensors.items() if t is not None}
    for name, t in given.items():
        _check_tensor(op, name, t)
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name}: expected float32 or float64, got {t.dtype}")
    (first, ref), *rest = given.items()
    for name, t in rest:
        if t.dtype != ref.dtype:
            raise TypeError(f"{op}: {name}: expected dtype {ref.dtype} (the dtype of {first}), "
                            f"got {t.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{op}: {name}: expected device '{ref.device}' (the device of "
                             f"{first}), got '{t.device}'")


def _pair(op, name, value, minimum):
    """An int or a pair of ints, each >= minimum, as a tuple (a, b)."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)):
        raise TypeError(f"{op}: {name}: expected an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name}: expected values >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _only_default(op, name, value, default):
    if value != default:
        raise ValueError(f"{op}: {name}: only {default!r} is supported, got {value!r}")


def _output_size(op, x_shape, kernel, stride, padding):
    """Floor-mode output size; refuses a kernel larger than the padded input."""
    padded = (x_shape[-2] + 2 * padding[0], x_shape[-1] + 2 * padding[1])
    if kernel[0] > padded[0] or kernel[1] > padded[1]:
        raise ValueError(f"{op}: kernel size {kernel} is larger than the padded input "
                         f"{padded} (input {tuple(x_shape[-2:])}, padding {padding})")
    return tuple((p - k) // s + 1 for p, k, s in zip(padded, kernel, stride))


def _batched(x, batch_ndim):
    """Unbatched inputs (one dim short) get a batch dim of 1, as PyTorch allows."""
    return (reshape(x, 1, *x.shape), True) if x.ndim == batch_ndim - 1 else (x, False)


# --- ops ---------------------------------------------------------------------------------
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) of input (N, C, H, W) with weight
    (OC, C/groups, kh, kw), computed as im2col + GEMM. Same signature as torch."""
    op = "conv2d"
    _check_tensor(op, "input", input, (3, 4))
    _check_tensor(op, "weight", weight, (4,))
    _check_float_tensors(op, input=input, weight=weight, bias=bias)
    stride = _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    _only_default(op, "dilation", dilation, 1)
    if not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: groups: expected an int >= 1, got {groups!r}")
    x, unbatched = _batched(input, 4)
    channels, (out_channels, channels_per_group) = x.shape[1], weight.shape[:2]
    if channels != channels_per_group * groups:
        raise ValueError(f"{op}: weight: expected {channels // groups if channels % groups == 0 else '?'}"
                         f" input channels per group (input has {channels} channels, groups={groups}),"
                         f" got weight of shape {weight.shape}")
    if out_channels % groups:
        raise ValueError(f"{op}: weight: expected out_channels divisible by groups={groups}, "
                         f"got {out_channels}")
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"{op}: bias: expected shape ({out_channels},), got {bias.shape}")
    _output_size(op, x.shape, weight.shape[2:], stride, padding)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    y = Conv2d.apply(*inputs, stride=stride, padding=padding, groups=int(groups))
    return reshape(y, *y.shape[1:]) if unbatched else y


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling over (kh, kw) windows, floor mode; the gradient of each window goes to
    its first maximum in row-major order, as in torch. Same signature as torch."""
    op = "max_pool2d"
    _check_tensor(op, "input", input, (3, 4))
    _check_float_tensors(op, input=input)
    kernel = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None or stride == [] else _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    _only_default(op, "dilation", dilation, 1)
    _only_default(op, "ceil_mode", ceil_mode, False)
    _only_default(op, "return_indices", return_indices, False)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding: expected at most half the kernel size {kernel}, "
                         f"got {padding}")
    x, unbatched = _batched(input, 4)
    _output_size(op, x.shape, kernel, stride, padding)
    y = MaxPool2d.apply(x, kernel_size=kernel, stride=stride, padding=padding)
    return reshape(y, *y.shape[1:]) if unbatched else y


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels, in PyTorch's convention:

        y_c = x_c / (k + alpha/size * sum_{c'=c-size//2}^{c+(size-1)//2} x_{c'}^2)^beta

    Channels outside [0, C) count as zeros, and alpha is divided by size. The 2012 paper
    (Krizhevsky et al., section 3.3) writes b = a / (k + alpha * sum a^2)^beta without the
    division, with k=2, n=5, alpha=1e-4, beta=0.75; the same layer here (and in torch) is
    ``local_response_norm(x, size=5, alpha=5e-4, beta=0.75, k=2.0)``.
    Input (N, C, ...) with at least 3 dims, like torch.
    """
    op = "local_response_norm"
    _check_tensor(op, "input", input)
    if input.ndim < 3:
        raise ValueError(f"{op}: input: expected at least 3 dims (N, C, ...), got shape {input.shape}")
    _check_float_tensors(op, input=input)
    if not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"{op}: size: expected an int >= 1, got {size!r}")
    if not k > 0 or not alpha >= 0 or not beta >= 0:
        raise ValueError(f"{op}: expected k > 0, alpha >= 0 and beta >= 0, got k={k}, "
                         f"alpha={alpha}, beta={beta}")
    x = input if input.ndim == 4 else reshape(input, *input.shape[:2], -1, 1)
    y = LocalResponseNorm.apply(x, size=int(size), alpha=float(alpha), beta=float(beta), k=float(k))
    return y if input.ndim == 4 else reshape(y, *input.shape)


def relu(input, inplace=False):
    """max(input, 0). ``inplace`` is accepted for torch compatibility; the result is
    always a new tensor (the backward needs the input's sign)."""
    _check_float_tensors("relu", input=input)
    return ReLU.apply(input)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean squared error, reduce_i (input_i - target_i)^2, with 'mean' (default), 'sum' or
    'none'. Same signature as torch. input and target must have one shape: torch only warns
    and broadcasts, which is almost always a bug. ``weight`` (input's shape) weighs each
    squared error, and 'mean' then divides by sum(weight), as in torch. size_average and
    reduce are torch's deprecated spellings of reduction, mapped the same way."""
    op = "mse_loss"
    _check_tensor(op, "input", input)
    _check_tensor(op, "target", target)
    _check_float_tensors(op, input=input, target=target, weight=weight)
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduction = "none" if reduce is False else ("mean" if size_average else "sum")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    if target.shape != input.shape:
        raise ValueError(f"{op}: target: expected shape {input.shape} (the shape of input), "
                         f"got {target.shape}")
    if weight is None:
        return MSELoss.apply(input, target, reduction=reduction)
    if weight.shape != input.shape:
        raise ValueError(f"{op}: weight: expected shape {input.shape} (the shape of input), "
                         f"got {weight.shape}")
    weighted = MSELoss.apply(input, target, reduction="none") * weight
    if reduction == "none":
        return weighted
    return weighted.sum() if reduction == "sum" else weighted.sum() / weight.sum()


def dropout(input, p=0.5, training=True, inplace=False):
    """Inverted dropout: in training, zero each element with probability p and scale the
    rest by 1/(1-p); outside training, return input unchanged. The mask comes from
    tinyalex's global generator (``tinyalex.manual_seed``)."""
    op = "dropout"
    _check_float_tensors(op, input=input)
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: p: expected a probability in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return input
    return Dropout.apply(input, p=float(p), seed=_random.next_seed())


def linear(input, weight, bias=None):
    """input @ weight.T + bias, with weight (out_features, in_features) as in torch;
    input (*, in_features)."""
    op = "linear"
    _check_tensor(op, "input", input)
    _check_tensor(op, "weight", weight, (2,))
    _check_float_tensors(op, input=input, weight=weight, bias=bias)
    out_features, in_features = weight.shape
    if input.ndim == 0 or input.shape[-1] != in_features:
        raise ValueError(f"{op}: input: expected last dimension {in_features} (weight is "
                         f"{weight.shape}), got shape {input.shape}")
    if bias is not None and bias.shape != (out_features,):
        raise ValueError(f"{op}: bias: expected shape ({out_features},), got {bias.shape}")
    x = input if input.ndim == 2 else reshape(input, -1, in_features)
    y = Linear.apply(*((x, weight) if bias is None else (x, weight, bias)))
    return y if input.ndim == 2 else reshape(y, *input.shape[:-1], out_features)


def cross_entropy(input, target, reduction="mean"):
    """Softmax cross-entropy of logits (N, C) against class indices (N,), fused and stable
    for large logits. reduction: 'mean' (default), 'sum' or 'none'."""
    op = "cross_entropy"
    _check_tensor(op, "input", input, (2,))
    _check_float_tensors(op, input=input)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    target_array = target.array if isinstance(target, Tensor) else target
    if isinstance(target, Tensor) and target.device != input.device:
        raise ValueError(f"{op}: target: expected device '{input.device}' (the device of input), "
                         f"got '{target.device}'")
    if not hasattr(target_array, "dtype") or target_array.dtype.kind not in "iu":
        kind = getattr(target_array, "dtype", type(target_array).__name__)
        raise TypeError(f"{op}: target: expected integer class indices (int64), got {kind}")
    n, classes = input.shape
    if target_array.shape != (n,):
        raise ValueError(f"{op}: target: expected shape ({n},) to match input {input.shape}, "
                         f"got {tuple(target_array.shape)}")
    if n:
        low, high = int(target_array.min()), int(target_array.max())
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise ValueError(f"{op}: target: expected class indices in [0, {classes}), got {bad}")
    target_array = _device.to_device(target_array.astype(np.int64, copy=False), input.device)
    return CrossEntropy.apply(input, target=target_array, reduction=reduction)
