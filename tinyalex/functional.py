"""PyTorch-shaped functional API (like ``torch.nn.functional``).

Each function validates its arguments — naming the argument, what was expected and what
was given — then applies the op's Function from ``tinyalex.ops``. The same call works on
torch and tinyalex, so code ports line by line and tests run one lambda on both.
"""
import numbers

import numpy as np

from tinyalex.kernels import conv_algorithms
from tinyalex import device as _device
from tinyalex import random as _random
from tinyalex.errors import (TypeNotImplementedError, TypeRuntimeError, ValueIndexError,
                             ValueRuntimeError)
from tinyalex.tensor import FLOAT_DTYPES, Tensor
from tinyalex.ops.basic import reshape
from tinyalex.ops.conv import Conv2d
from tinyalex.ops.cross_entropy import CrossEntropy
from tinyalex.ops.dropout import Dropout
from tinyalex.ops.linear import Linear
from tinyalex.ops.lrn import LocalResponseNorm
from tinyalex.ops.pad import ZeroPad2d
from tinyalex.ops.mse_loss import MSELoss
from tinyalex.ops.pool import AvgPool2d, MaxPool2d
from tinyalex.ops.relu import ReLU
from tinyalex.shapes import conv_output_size

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "local_response_norm",
           "relu", "dropout", "linear", "cross_entropy", "mse_loss"]


# --- argument checks ---------------------------------------------------------------------
# Where torch raises RuntimeError, the refusal is a ValueRuntimeError (a bad value) or a
# TypeRuntimeError (a bad dtype): both a RuntimeError and tinyalex's ValueError or TypeError.
# tests/compat/test_refusals.py holds every refusal against torch's.
def _check_tensor(op, name, t, ndims=None):
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name}: expected a tinyalex.Tensor, got {type(t).__name__}")
    if ndims is not None and t.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueRuntimeError(f"{op}: {name}: expected a {want} tensor, got shape {t.shape}")


def _check_float_tensors(op, **tensors):
    """Every given tensor is float32 or float64, all of one dtype and on one device."""
    given = {k: t for k, t in tensors.items() if t is not None}
    for name, t in given.items():
        _check_tensor(op, name, t)
        if t.dtype not in FLOAT_DTYPES:                             # torch: "not implemented for 'Long'"
            raise TypeNotImplementedError(f"{op}: {name}: expected float32 or float64, got {t.dtype}")
    (first, ref), *rest = given.items()
    for name, t in rest:
        if t.dtype != ref.dtype:
            raise TypeRuntimeError(f"{op}: {name}: expected dtype {ref.dtype} (the dtype of {first}), "
                                   f"got {t.dtype}")
        if t.device != ref.device:
            raise ValueRuntimeError(f"{op}: {name}: expected device '{ref.device}' (the device of "
                                    f"{first}), got '{t.device}'")


def _pair(op, name, value, minimum):
    """An int or a pair of ints, each >= minimum, as a tuple (a, b). As in torch, something
    else than ints is a TypeError, a tuple of another length or a value below the minimum a
    RuntimeError (here ValueRuntimeError)."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    if (not isinstance(pair, (tuple, list))
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)):
        raise TypeError(f"{op}: {name}: expected an int or a pair of ints, got {value!r}")
    if len(pair) != 2:
        raise ValueRuntimeError(f"{op}: {name}: expected an int or a pair of ints (one per spatial"
                                f" dim), got {len(pair)} values {value!r}")
    if min(pair) < minimum:
        raise ValueRuntimeError(f"{op}: {name}: expected values >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_bool(op, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name}: expected True or False, got {value!r}")


def _output_size(op, x_shape, kernel, stride, padding, dilation=(1, 1)):
    """Floor-mode (OH, OW): tinyalex.shapes.conv_output_size on each axis, its refusal of a
    kernel larger than the padded input prefixed with the op's name."""
    try:
        return tuple(conv_output_size(size, k, s, p, d)
                     for size, k, s, p, d in zip(x_shape[-2:], kernel, stride, padding, dilation))
    except ValueRuntimeError as exc:
        raise ValueRuntimeError(f"{op}: {exc}") from None


def _pool_geometry(op, input, kernel_size, stride, padding, ceil_mode):
    """Checked (kernel, stride, padding) pairs of a pooling call, torch's rules: stride
    defaults to the kernel, padding is at most half the kernel, the kernel fits."""
    _check_tensor(op, "input", input, (3, 4))
    _check_float_tensors(op, input=input)
    kernel = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None or stride == [] else _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    _check_bool(op, "ceil_mode", ceil_mode)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueRuntimeError(f"{op}: padding: expected at most half the kernel size {kernel}, "
                                f"got {padding}")
    _output_size(op, input.shape, kernel, stride, padding)
    return kernel, stride, padding


def _batched(x, batch_ndim):
    """Unbatched inputs (one dim short) get a batch dim of 1, as PyTorch allows."""
    return (reshape(x, 1, *x.shape), True) if x.ndim == batch_ndim - 1 else (x, False)


# --- ops ---------------------------------------------------------------------------------
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algorithm=None):
    """2-D convolution (cross-correlation) of input (N, C, H, W) with weight
    (OC, C/groups, kh, kw). Same signature as torch, plus the keyword `algorithm`.

    algorithm: 'gemm' (im2col + GEMM), 'winograd' (Winograd F(4x4, r x r): square 3x3 or
    5x5 kernels, stride 1, no dilation; docs/ops/conv2d_winograd.md), 'auto' (a fixed
    per-shape rule) or None (the global setting, 'auto' unless
    tinyalex.set_conv_algorithm changed it). See tinyalex.kernels.conv_algorithms.

    dilation (dh, dw): tap (i, j) reads input pixel (oh*sh - ph + i*dh, ow*sw - pw + j*dw),
    so OH = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1.
    padding: an int, a pair, 'valid' (no padding) or 'same' (OH = H; stride 1 only, as in
    torch). 'same' pads dh*(kh - 1) rows in total, total // 2 above and the rest below
    (likewise columns): when the total is odd (an even kernel with an odd dilation) the
    extra row and column go at the bottom and right, exactly as torch does, through an
    explicit zero pad in front of the convolution.
    """
    op = "conv2d"
    if algorithm is not None:
        conv_algorithms.check_name(op, algorithm)
    _check_tensor(op, "input", input, (3, 4))
    _check_tensor(op, "weight", weight, (4,))
    _check_float_tensors(op, input=input, weight=weight, bias=bias)
    stride = _pair(op, "stride", stride, 1)
    dilation = _pair(op, "dilation", dilation, 1)
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool):
        raise TypeError(f"{op}: groups: expected an int, got {groups!r}")
    if groups < 1:
        raise ValueRuntimeError(f"{op}: groups: expected an int >= 1, got {groups!r}")
    kernel = weight.shape[2:]
    extra = (0, 0)                                                 # 'same': rows/columns past the symmetric part
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueRuntimeError(f"{op}: padding: expected an int, a pair of ints, 'same' or 'valid',"
                                    f" got {padding!r}")
        if padding == "same" and stride != (1, 1):
            raise ValueRuntimeError(f"{op}: padding='same' is not supported for strided convolutions"
                                    f" (expected stride 1), got stride {stride}")
        same = padding == "same"
        totals = tuple(d * (k - 1) if same else 0 for d, k in zip(dilation, kernel))
        padding = (totals[0] // 2, totals[1] // 2)
        extra = (totals[0] - 2 * padding[0], totals[1] - 2 * padding[1])
    else:
        padding = _pair(op, "padding", padding, 0)
    x, unbatched = _batched(input, 4)
    channels, (out_channels, channels_per_group) = x.shape[1], weight.shape[:2]
    if channels != channels_per_group * groups:
        raise ValueRuntimeError(f"{op}: weight: expected {channels // groups if channels % groups == 0 else '?'}"
                                f" input channels per group (input has {channels} channels, groups={groups}),"
                                f" got weight of shape {weight.shape}")
    if out_channels % groups:
        raise ValueRuntimeError(f"{op}: weight: expected out_channels divisible by groups={groups}, "
                                f"got {out_channels}")
    if bias is not None and bias.shape != (out_channels,):
        raise ValueRuntimeError(f"{op}: bias: expected shape ({out_channels},), got {bias.shape}")
    if extra != (0, 0):
        x = ZeroPad2d.apply(x, pads=(0, extra[0], 0, extra[1]))
    _output_size(op, x.shape, kernel, stride, padding, dilation)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    y = Conv2d.apply(*inputs, stride=stride, padding=padding, groups=int(groups),
                     dilation=dilation, algorithm=algorithm)
    return reshape(y, *y.shape[1:]) if unbatched else y


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling over (kh, kw) windows; the gradient of each window goes to its first
    maximum in row-major order, as in torch. Same signature as torch.

    ceil_mode: torch's rounding up of OH and OW (tinyalex.shapes.pool_output_size, where
    the rule is written; docs/ops/max_pool2d.md explains it).
    return_indices: also return the argmax of each window as int64 h*W + w in its input
    plane (torch's indices, never a padding cell), a tensor without gradient.
    """
    op = "max_pool2d"
    kernel, stride, padding = _pool_geometry(op, input, kernel_size, stride, padding, ceil_mode)
    if _pair(op, "dilation", dilation, 1) != (1, 1):                # torch dilates; tinyalex does not
        raise ValueError(f"{op}: dilation: only 1 is supported, got {dilation!r}")
    _check_bool(op, "return_indices", return_indices)
    x, unbatched = _batched(input, 4)
    indices = [] if return_indices else None
    y = MaxPool2d.apply(x, kernel_size=kernel, stride=stride, padding=padding,
                        ceil_mode=bool(ceil_mode), indices=indices)
    y = reshape(y, *y.shape[1:]) if unbatched else y
    if not return_indices:
        return y
    index = indices[0]
    return y, Tensor(index.reshape(index.shape[1:]) if unbatched else index)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Average pooling over (kh, kw) windows. Same signature as torch.

    y[n, c, oh, ow] = sum of the window of the zero-padded input / divisor[oh, ow], where
    the divisor is kh*kw (count_include_pad=True, torch's default; a window running past
    the padding in ceil mode counts only the padded input it covers), the number of the
    window's real pixels (count_include_pad=False), or divisor_override, a nonzero int.
    Output size, ceil_mode and the padding limit (at most half the kernel) as in
    max_pool2d. The rule is written once: tinyalex.shapes.avg_pool_divisors.
    """
    op = "avg_pool2d"
    kernel, stride, padding = _pool_geometry(op, input, kernel_size, stride, padding, ceil_mode)
    _check_bool(op, "count_include_pad", count_include_pad)
    if divisor_override is not None and (
            not isinstance(divisor_override, numbers.Integral) or isinstance(divisor_override, bool)):
        raise TypeError(f"{op}: divisor_override: expected None or a nonzero int, "
                        f"got {divisor_override!r}")
    if divisor_override == 0:
        raise ValueRuntimeError(f"{op}: divisor_override: expected None or a nonzero int, got 0")
    x, unbatched = _batched(input, 4)
    y = AvgPool2d.apply(x, kernel_size=kernel, stride=stride, padding=padding,
                        ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
                        divisor_override=None if divisor_override is None else int(divisor_override))
    return reshape(y, *y.shape[1:]) if unbatched else y


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed (OH, OW), torch's AdaptiveAvgPool2d. torch averages
    rows [floor(i*H/OH), ceil((i+1)*H/OH)) into output row i; when OH divides H those are
    the non-overlapping blocks of H/OH rows, i.e. avg_pool2d with kernel = stride = H/OH,
    which is what runs here (likewise columns). A None in output_size keeps that size.
    Sizes that do not divide (windows of unequal, overlapping lengths) are refused.
    """
    op = "adaptive_avg_pool2d"
    _check_tensor(op, "input", input, (3, 4))
    size = (output_size, output_size) if output_size is None or isinstance(
        output_size, numbers.Integral) else tuple(output_size)
    if len(size) != 2:
        raise TypeError(f"{op}: output_size: expected an int, None or a pair, got {output_size!r}")
    height, width = input.shape[-2:]
    size = tuple(given if given is not None else have for given, have in zip(size, (height, width)))
    if not all(isinstance(s, numbers.Integral) and s >= 1 for s in size):
        raise ValueError(f"{op}: output_size: expected sizes >= 1, got {output_size!r}")
    if height % size[0] or width % size[1]:
        raise ValueError(f"{op}: output_size: only sizes that divide the input's (height, width)"
                         f" {(height, width)} are supported (torch's windows of unequal length are"
                         f" not implemented), got {tuple(size)}")
    block = (height // size[0], width // size[1])
    return avg_pool2d(input, block, block)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels, in PyTorch's convention:

        y_c = x_c / (k + alpha/size * sum_{c'=c-size//2}^{c+(size-1)//2} x_{c'}^2)^beta

    Channels outside [0, C) count as zeros, and alpha is divided by size. The 2012 paper's
    constants differ: the mapping is in docs/ops/local_response_norm.md#5-constants-pytorch-the-2012-paper-tinyalex.
    Input (N, C, ...) with at least 3 dims, like torch.
    """
    op = "local_response_norm"
    _check_tensor(op, "input", input)
    if input.ndim < 3:
        raise ValueError(f"{op}: input: expected at least 3 dims (N, C, ...), got shape {input.shape}")
    _check_float_tensors(op, input=input)
    if not isinstance(size, numbers.Integral) or isinstance(size, bool):
        raise TypeError(f"{op}: size: expected an int >= 1, got {size!r}")
    if size < 1:
        raise ValueRuntimeError(f"{op}: size: expected an int >= 1, got {size!r}")
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
        raise ValueRuntimeError(f"{op}: target: expected shape {input.shape} (the shape of input), "
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
    tinyalex's global generator (``tinyalex.manual_seed``) and, per element, from the
    element's position in the whole batch: inside ``tinyalex.random.batch_rows(r0)`` the
    input's row 0 is row r0 of the batch, so a data-parallel rank draws the masks that
    those rows get in a one-process run (tinyalex.train.parallel.distributed)."""
    op = "dropout"
    _check_tensor(op, "input", input)
    if input.dtype not in FLOAT_DTYPES:                            # torch: float can't be cast to Long
        raise TypeRuntimeError(f"{op}: input: expected float32 or float64, got {input.dtype}")
    if not isinstance(p, numbers.Real) or isinstance(p, bool):
        raise TypeError(f"{op}: p: expected a probability in [0, 1], got {p!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: p: expected a probability in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return input
    row = _random.batch_row_offset()
    offset = row * (input.numel() // input.shape[0]) if row and input.ndim else 0
    return Dropout.apply(input, p=float(p), seed=_random.next_seed(), offset=offset)


def linear(input, weight, bias=None):
    """input @ weight.T + bias, with weight (out_features, in_features) as in torch;
    input (*, in_features)."""
    op = "linear"
    _check_tensor(op, "input", input)
    _check_tensor(op, "weight", weight, (2,))
    _check_float_tensors(op, input=input, weight=weight, bias=bias)
    out_features, in_features = weight.shape
    if input.ndim == 0 or input.shape[-1] != in_features:
        raise ValueRuntimeError(f"{op}: input: expected last dimension {in_features} (weight is "
                                f"{weight.shape}), got shape {input.shape}")
    if bias is not None and bias.shape != (out_features,):
        raise ValueRuntimeError(f"{op}: bias: expected shape ({out_features},), got {bias.shape}")
    rows = int(np.prod(input.shape[:-1]))                          # not -1: (0,) @ (8, 0)^T is (8,) zeros
    x = input if input.ndim == 2 else reshape(input, rows, in_features)
    y = Linear.apply(*((x, weight) if bias is None else (x, weight, bias)))
    return y if input.ndim == 2 else reshape(y, *input.shape[:-1], out_features)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, C) (or unbatched (C,)), fused and stable for large
    logits. Same signature as torch (size_average and reduce, deprecated there, must be None).

    target: class indices (N,) (or () unbatched), integers in [0, C) or == ignore_index; or
    class probabilities (N, C) (or (C,)) of the input's dtype.
    weight (C,): a rescaling weight per class. label_smoothing eps in [0, 1]: the target
    becomes (1 - eps) * target + eps / C. ignore_index: rows with that target count for
    nothing (class indices only). reduction: 'mean' (default), 'sum' or 'none'.

    'mean' is torch's: for class indices, the sum of the losses divided by the sum of
    w[t_n] over the rows not ignored (N without weights; NaN when every row is ignored);
    for probabilities, divided by N. See tinyalex.kernels.numpy.cross_entropy for the formulas.
    The target and the weight get no gradient (torch differentiates probability targets;
    tinyalex refuses a target that requires grad rather than drop its gradient).
    """
    op = "cross_entropy"
    _check_tensor(op, "input", input, (1, 2))
    _check_float_tensors(op, input=input, weight=weight)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    for name, value in (("size_average", size_average), ("reduce", reduce)):
        if value is not None:
            raise ValueError(f"{op}: {name}: deprecated in torch and not supported, expected None"
                             f" (use reduction=), got {value!r}")
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"{op}: ignore_index: expected an int, got {ignore_index!r}")
    if not isinstance(label_smoothing, numbers.Real) or isinstance(label_smoothing, bool):
        raise TypeError(f"{op}: label_smoothing: expected a number in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueRuntimeError(f"{op}: label_smoothing: expected a number in [0, 1], got {label_smoothing!r}")
    if isinstance(target, Tensor):
        if target.device != input.device:
            raise ValueRuntimeError(f"{op}: target: expected device '{input.device}' (the device of input), "
                                    f"got '{target.device}'")
        if target.requires_grad:
            raise ValueError(f"{op}: target: expected a target that does not require grad"
                             f" (gradients with respect to class probabilities are not implemented)")
    target_array = target.array if isinstance(target, Tensor) else target
    unbatched = input.ndim == 1
    classes = input.shape[-1]
    n = 1 if unbatched else input.shape[0]
    kind = getattr(target_array, "dtype", None)
    kind = kind.kind if kind is not None else None
    got = f"{getattr(target_array, 'dtype', type(target_array).__name__)} of shape" \
          f" {tuple(getattr(target_array, 'shape', ()))}"
    index_shape, probability_shape = ((), (classes,)) if unbatched else ((n,), (n, classes))
    if kind == "f" and tuple(target_array.shape) == probability_shape:
        if target_array.dtype != input.dtype:
            raise TypeError(f"{op}: target: expected class probabilities of dtype {input.dtype}"
                            f" (the dtype of input), got {target_array.dtype}")
        if ignore_index != -100:
            raise ValueError(f"{op}: ignore_index: not supported for class-probability targets,"
                             f" expected -100, got {ignore_index}")
        target_array = target_array.reshape(n, classes)
    elif kind in ("i", "u") and tuple(target_array.shape) == index_shape:
        target_array = target_array.reshape(n)
        counted = target_array[target_array != ignore_index]
        if counted.size:
            low, high = int(counted.min()), int(counted.max())
            if low < 0 or high >= classes:                         # torch: IndexError
                bad = low if low < 0 else high
                raise ValueIndexError(f"{op}: target: expected class indices in [0, {classes}) or"
                                 f" ignore_index={ignore_index}, got {bad}")
        target_array = target_array.astype(np.int64, copy=False)
    elif kind in ("i", "u", "f") and len(target_array.shape) == len(index_shape):
        if kind == "f" and (unbatched or target_array.shape[0] == n):   # torch: "expected target dtype to be Long"
            raise TypeRuntimeError(f"{op}: target: expected integer class indices (int64) of shape"
                                   f" {index_shape} or float class probabilities of shape"
                                   f" {probability_shape}, got {got}")
        raise ValueError(f"{op}: target: expected shape {index_shape} to match input"
                         f" {input.shape}, got {tuple(target_array.shape)}")
    elif kind in ("i", "u", "f"):                                  # torch: "0D or 1D target tensor expected"
        raise ValueRuntimeError(f"{op}: target: expected class indices of shape {index_shape} or"
                                f" class probabilities of shape {probability_shape} (a multi-target"
                                f" is not supported), got {got}")
    elif kind == "b":
        raise TypeRuntimeError(f"{op}: target: expected integer class indices (int64) of shape"
                               f" {index_shape} or float class probabilities of shape"
                               f" {probability_shape}, got {got}")
    else:
        raise TypeError(f"{op}: target: expected integer class indices (int64) of shape"
                        f" {index_shape} or float class probabilities of shape"
                        f" {probability_shape}, got {got}")
    if weight is not None:
        if weight.shape != (classes,):
            raise ValueRuntimeError(f"{op}: weight: expected shape ({classes},), one per class, got {weight.shape}")
        if weight.requires_grad:
            raise ValueError(f"{op}: weight: expected a weight that does not require grad"
                             f" (its gradient is not implemented)")
    target_array = _device.to_device(target_array, input.device)
    logits = reshape(input, 1, classes) if unbatched else input
    loss = CrossEntropy.apply(logits, target=target_array, reduction=reduction,
                              weight=None if weight is None else weight.array,
                              ignore_index=int(ignore_index), label_smoothing=float(label_smoothing))
    return reshape(loss, ()) if unbatched and reduction == "none" else loss
