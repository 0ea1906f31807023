"""Layers with torch.nn's names, constructor arguments, parameter names and default init.
Each forward is one call into tinyalex.functional."""
import math
import numbers

import numpy as np

from tinyalex.kernels import conv_algorithms
from tinyalex import functional as F
from tinyalex.errors import ValueRuntimeError
from tinyalex.nn import init
from tinyalex.nn.module import Module, Parameter


def _empty(*shape):
    return Parameter(np.empty(shape, dtype=np.float32))


def _default_init(layer):
    """PyTorch's default for Conv2d and Linear: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform_ with a=sqrt(5) gives exactly that bound for the weight)."""
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        init.default_bias_(layer.bias, layer.weight)


def _check_sizes(layer, **sizes):
    """Channel and feature counts are ints >= 0: torch's TypeError for another type, its
    RuntimeError (here ValueRuntimeError) for a negative size."""
    for name, size in sizes.items():
        if not isinstance(size, numbers.Integral) or isinstance(size, bool):
            raise TypeError(f"{layer}: {name}: expected an int, got {size!r}")
        if size < 0:
            raise ValueRuntimeError(f"{layer}: {name}: expected an int >= 0, got {size}")


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


class Conv2d(Module):
    """torch.nn.Conv2d: padding an int, a pair, 'same' (stride 1 only) or 'valid'; dilation an
    int or a pair. See tinyalex.functional.conv2d for the formula and torch's 'same' rule.

    algorithm (keyword, not in torch): this layer's conv algorithm, 'auto', 'gemm',
    'winograd', or None to follow tinyalex.set_conv_algorithm; an attribute that may be
    changed later (tinyalex.kernels.conv_algorithms)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, *, algorithm=None):
        super().__init__()
        if algorithm is not None:
            conv_algorithms.check_name("Conv2d", algorithm)
        self.algorithm = algorithm
        _check_sizes("Conv2d", in_channels=in_channels, out_channels=out_channels)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"Conv2d: groups: expected a positive int, got {groups!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: Invalid padding string {padding!r}, should be one of"
                                 f" ('valid', 'same'), an int or a pair")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' is not supported for strided"
                                 f" convolutions (expected stride 1), got stride {self.stride}")
            self.padding = padding
        else:
            self.padding = _pair(padding)
        self.dilation, self.groups = _pair(dilation), groups
        self.weight = _empty(out_channels, in_channels // groups, *self.kernel_size)
        self.register_parameter("bias", _empty(out_channels) if bias else None)  # None: registered, as in torch
        self.reset_parameters()

    def reset_parameters(self):
        _default_init(self)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups, algorithm=self.algorithm)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        s += f", padding={self.padding}" if self.padding not in ((0, 0), "valid") else ""
        s += f", dilation={self.dilation}" if self.dilation != (1, 1) else ""
        s += f", groups={self.groups}" if self.groups != 1 else ""
        s += f", algorithm={self.algorithm!r}" if self.algorithm is not None else ""
        return s + (", bias=False" if self.bias is None else "")


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        _check_sizes("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features)
        self.register_parameter("bias", _empty(out_features) if bias else None)  # None: registered, as in torch
        self.reset_parameters()

    def reset_parameters(self):
        _default_init(self)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding},"
                f" dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """torch.nn.AvgPool2d; see tinyalex.functional.avg_pool2d for the divisor rule."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """torch.nn.AdaptiveAvgPool2d (torchvision AlexNet's ``avgpool``): average pooling to a
    fixed output size, for inputs whose height and width the output size divides; see
    tinyalex.functional.adaptive_avg_pool2d."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class LocalResponseNorm(Module):
    """See tinyalex.functional.local_response_norm for the formula; the 2012 paper's
    constants map onto these as docs/ops/local_response_norm.md#5-constants-pytorch-the-2012-paper-tinyalex shows."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x)


class Dropout(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p: expected a probability in [0, 1], got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class MSELoss(Module):
    """Mean squared error, ``F.mse_loss(input, target, reduction=self.reduction)``."""

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.size_average, self.reduce, self.reduction = size_average, reduce, reduction

    def forward(self, input, target):
        return F.mse_loss(input, target, self.size_average, self.reduce, self.reduction)


class CrossEntropyLoss(Module):
    """torch.nn.CrossEntropyLoss: weight (a buffer, as in torch), ignore_index, reduction and
    label_smoothing; see tinyalex.functional.cross_entropy. size_average and reduce
    (deprecated in torch) must be None."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__()
        for name, value in (("size_average", size_average), ("reduce", reduce)):
            if value is not None:
                raise ValueError(f"CrossEntropyLoss: {name}: deprecated in torch and not"
                                 f" supported, expected None (use reduction=), got {value!r}")
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)
