"""Tensor arithmetic, reductions and reshapes: the differentiable glue for users' own losses
and regularisers. Each op is written on the array module of its input (NumPy or CuPy), so
no kernel set is involved; gradients of broadcast operands are summed back to their shape.
"""
import numpy as np

from .. import device as _device
from ..autograd import Function, Tensor, _as_array


# --- operand handling --------------------------------------------------------------------
def _operands(a, b, op):
    """Two Tensors of one dtype and device; a Python number or array becomes a constant."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: expected at least one Tensor")
    ref = a if isinstance(a, Tensor) else b
    a, b = (t if isinstance(t, Tensor) else Tensor(_as_array(t, ref.dtype, ref.device))
            for t in (a, b))
    if a.device != b.device:
        raise ValueError(f"{op}: expected both tensors on one device, got {a.device} and {b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: expected both tensors of one dtype, got {a.dtype} and {b.dtype}")
    return a, b


def _sum_to_shape(g, shape):
    """Undo broadcasting: sum g over the axes that broadcasting added or stretched."""
    if g.shape == shape:
        return g
    leading = g.ndim - len(shape)
    axes = tuple(range(leading)) + tuple(
        leading + i for i, n in enumerate(shape) if n == 1 and g.shape[leading + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


# --- elementwise -------------------------------------------------------------------------
class Add(Function):
    @staticmethod
    def forward(a, b):
        return a + b, (a.shape, b.shape)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        a_shape, b_shape = cache
        return _sum_to_shape(gy, a_shape), _sum_to_shape(gy, b_shape)


class Sub(Function):
    @staticmethod
    def forward(a, b):
        return a - b, (a.shape, b.shape)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        a_shape, b_shape = cache
        return _sum_to_shape(gy, a_shape), _sum_to_shape(-gy, b_shape)


class Mul(Function):
    @staticmethod
    def forward(a, b):
        return a * b, (a, b)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        a, b = cache
        return _sum_to_shape(gy * b, a.shape), _sum_to_shape(gy * a, b.shape)


class Div(Function):
    @staticmethod
    def forward(a, b):
        return a / b, (a, b)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        a, b = cache
        ga = gy / b
        return _sum_to_shape(ga, a.shape), _sum_to_shape(-ga * a / b, b.shape)


class Neg(Function):
    @staticmethod
    def forward(x):
        return -x, None

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return (-gy,)


class Pow(Function):
    """y = x ** p for a constant p; gx = p x^(p-1) gy."""

    @staticmethod
    def forward(x, exponent):
        return x ** exponent, (x, exponent)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        x, exponent = cache
        return (gy * exponent * x ** (exponent - 1),)


class Exp(Function):
    @staticmethod
    def forward(x):
        y = _device.array_module(x).exp(x)
        return y, y

    @staticmethod
    def backward(gy, y, needs_input_grad):
        return (gy * y,)


class Log(Function):
    @staticmethod
    def forward(x):
        return _device.array_module(x).log(x), x

    @staticmethod
    def backward(gy, x, needs_input_grad):
        return (gy / x,)


class Abs(Function):
    @staticmethod
    def forward(x):
        xp = _device.array_module(x)
        return xp.abs(x), xp.sign(x)

    @staticmethod
    def backward(gy, sign, needs_input_grad):
        return (gy * sign,)


def add(a, b):
    return Add.apply(*_operands(a, b, "add"))


def sub(a, b):
    return Sub.apply(*_operands(a, b, "sub"))


def mul(a, b):
    return Mul.apply(*_operands(a, b, "mul"))


def div(a, b):
    return Div.apply(*_operands(a, b, "div"))


def neg(x):
    return Neg.apply(x)


def pow(x, exponent):
    if not isinstance(exponent, (int, float)):
        raise TypeError(f"pow: exponent: expected a Python int or float, got {type(exponent).__name__}")
    return Pow.apply(x, exponent=exponent)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def abs(x):
    return Abs.apply(x)


def compare(a, b, ufunc):
    """Elementwise comparison; a bool tensor with no gradient."""
    a, b = _operands(a, b, ufunc)
    return Tensor(getattr(_device.array_module(a.array), ufunc)(a.array, b.array))


# --- matrix product ----------------------------------------------------------------------
class MatMul(Function):
    """y = a @ b with batch broadcasting; ga = gy @ b^T, gb = a^T @ gy (summed over
    broadcast batch axes). Both operands are saved: each is the other's gradient factor."""

    @staticmethod
    def forward(a, b):
        return a @ b, (a, b)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        a, b = cache
        ga = _sum_to_shape(gy @ b.swapaxes(-1, -2), a.shape) if needs_input_grad[0] else None
        gb = _sum_to_shape(a.swapaxes(-1, -2) @ gy, b.shape) if needs_input_grad[1] else None
        return ga, gb


def matmul(a, b):
    a, b = _operands(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: expected tensors with at least 1 dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    if a.ndim == 1:
        return reshape(matmul(reshape(a, 1, -1), b), *(b.shape[:-2] + b.shape[-1:]))
    if b.ndim == 1:
        return reshape(matmul(a, reshape(b, -1, 1)), *a.shape[:-1])
    return MatMul.apply(a, b)


# --- reductions --------------------------------------------------------------------------
def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise ValueError(f"dim: expected a value in [{-ndim}, {ndim}), got {d}")
    return tuple(sorted(d % max(ndim, 1) for d in dims))


def _unreduce(gy, shape, axes, keepdim):
    """gy of a reduction over `axes` broadcast back to the input's `shape` (a new array)."""
    if not keepdim:
        gy = gy.reshape([1 if i in axes else n for i, n in enumerate(shape)])
    return _device.array_module(gy).broadcast_to(gy, shape).copy()


class Sum(Function):
    """y = sum of x over `axes`; gx = gy broadcast back over those axes.

    A full reduction is a 0-d array, never a NumPy scalar (x.sum() returns one), so that
    every kernel downstream gets an array: `x.relu().sum().relu()` works on every set.
    """

    @staticmethod
    def forward(x, axes, keepdim):
        y = _device.array_module(x).asarray(x.sum(axis=axes, keepdims=keepdim))
        return y, (x.shape, axes, keepdim)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return (_unreduce(gy, *cache),)


class Mean(Function):
    """y = sum of x over `axes` / count; gx = gy / count broadcast back over those axes.

    count = the number of elements reduced. The mean of nothing (count 0) is NaN, as in
    torch, and its gradient is empty. y is a 0-d array for a full reduction, as in Sum.
    """

    @staticmethod
    def forward(x, axes, keepdim):
        xp = _device.array_module(x)
        count = int(np.prod([x.shape[a] for a in axes]))
        total = x.sum(axis=axes, keepdims=keepdim)
        with np.errstate(invalid="ignore", divide="ignore"):     # 0/0 is NaN, quietly
            y = xp.asarray(total / x.dtype.type(count) if count else total * x.dtype.type(np.nan))
        return y, (x.shape, axes, keepdim, count)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        shape, axes, keepdim, count = cache
        return (_unreduce(gy / gy.dtype.type(max(count, 1)), shape, axes, keepdim),)


def sum(x, dim=None, keepdim=False):
    return Sum.apply(x, axes=_axes(dim, x.ndim), keepdim=keepdim)


def mean(x, dim=None, keepdim=False):
    if x.dtype.kind != "f":
        raise TypeError(f"mean: expected a float tensor, got {x.dtype}")
    return Mean.apply(x, axes=_axes(dim, x.ndim), keepdim=keepdim)


def argmax(x, dim=None, keepdim=False):
    xp = _device.array_module(x.array)
    if dim is None:
        return Tensor(xp.asarray(x.array.argmax()).astype(np.int64))
    y = x.array.argmax(axis=dim)
    return Tensor((xp.expand_dims(y, dim) if keepdim else y).astype(np.int64))


# --- shapes ------------------------------------------------------------------------------
class Reshape(Function):
    @staticmethod
    def forward(x, shape):
        return x.reshape(shape), x.shape

    @staticmethod
    def backward(gy, x_shape, needs_input_grad):
        return (gy.reshape(x_shape),)


def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        np.empty(x.shape, dtype=np.bool_).reshape(shape)  # validate without touching the data
    except ValueError:
        raise ValueError(f"reshape: cannot view shape {x.shape} ({x.numel()} elements) as {shape}") from None
    return Reshape.apply(x, shape=shape)


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, 1)
    start, end = start_dim % x.ndim, end_dim % x.ndim
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = int(np.prod(x.shape[start:end + 1]))                 # not -1: ambiguous for 0 elements
    return reshape(x, *x.shape[:start], merged, *x.shape[end + 1:])


class Permute(Function):
    @staticmethod
    def forward(x, dims):
        return x.transpose(dims), dims

    @staticmethod
    def backward(gy, dims, needs_input_grad):
        return (gy.transpose(np.argsort(dims)),)


def permute(x, dims):
    dims = tuple(d % x.ndim for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute: dims: expected a permutation of {x.ndim} axes, got {dims}")
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


class GetItem(Function):
    """y = x[index]; gx scatters gy back, adding where an advanced index repeats."""

    @staticmethod
    def forward(x, index):
        return x[index], (x.shape, x.dtype, index)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        shape, dtype, index = cache
        xp = _device.array_module(gy)
        gx = xp.zeros(shape, dtype=dtype)
        if xp is np:
            np.add.at(gx, index, gy)
        else:
            import cupyx
            cupyx.scatter_add(gx, index, gy)
        return (gx,)


def raw_index(index):
    """An index with every Tensor in it replaced by its array."""
    def raw(i):
        return i.array if isinstance(i, Tensor) else i
    return tuple(raw(i) for i in index) if isinstance(index, tuple) else raw(index)


def getitem(x, index):
    return GetItem.apply(x, index=raw_index(index))


# --- dtype and device --------------------------------------------------------------------
class Convert(Function):
    """Copy to another device and/or dtype; the gradient goes back the same way."""

    @staticmethod
    def forward(x, device, dtype):
        return _device.to_device(x, device).astype(dtype, copy=False), (
            _device.device_of(x), x.dtype)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        device, dtype = cache
        return (_device.to_device(gy, device).astype(dtype, copy=False),)


def convert(x, device=None, dtype=None):
    device = x.device if device is None else _device.parse_device(device)
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if device == x.device and dtype == x.dtype:
        return x
    if x.requires_grad and dtype.kind != "f":
        return Tensor(_device.to_device(x.array, device).astype(dtype))
    return Convert.apply(x, device=device, dtype=dtype)
