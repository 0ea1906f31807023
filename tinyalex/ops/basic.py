"""Tensor arithmetic, reductions and reshapes: the differentiable glue for users' own losses
and regularisers. Each op is written on the array module of its input (NumPy or CuPy), so
no kernel set is involved; gradients of broadcast operands are summed back to their shape.
"""
import collections
import operator

import numpy as np

from tinyalex import device as _device
from tinyalex.autograd import Function
from tinyalex.tensor import Tensor, _as_array
from tinyalex.errors import ValueRuntimeError


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
    xp = _device.array_module(a.array)
    return Tensor(xp.asarray(getattr(xp, ufunc)(a.array, b.array)))


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
def dim_or_axis(dim, axis):
    """torch accepts NumPy's ``axis=`` for ``dim=`` (``y_hat.argmax(axis=1)``)."""
    if axis is not None and dim is not None:
        raise TypeError(f"expected dim or axis, not both; got dim={dim!r}, axis={axis!r}")
    return dim if axis is None else axis


def _dim(dim, ndim):
    """One dim as an index in [0, ndim) (a 0-d tensor has dims 0 and -1, as in torch)."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"dim: expected an int, got {dim!r}")
    n = ndim if ndim else 1           # (`max` below is the tensor op, not the builtin)
    if not -n <= dim < n:  # IndexError, as torch raises
        raise IndexError(f"dim: expected a value in [{-n}, {n - 1}], got {dim}")
    return int(dim) % n


def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    axes = tuple(sorted({_dim(d, ndim) for d in dims}))
    if len(axes) != len(dims):
        raise ValueRuntimeError(f"dim: expected distinct dims, got {dim!r}")
    return axes if ndim else ()


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
        y = _device.array_module(x).asarray(x.sum(axis=axes, keepdims=keepdim))  # 0-d, not a scalar
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
        # count 0 means an empty gy: any divisor will do (this module's max() is the op's)
        return (_unreduce(gy / gy.dtype.type(count or 1), shape, axes, keepdim),)


def sum(x, dim=None, keepdim=False):
    return Sum.apply(x, axes=_axes(dim, x.ndim), keepdim=keepdim)


def mean(x, dim=None, keepdim=False):
    if x.dtype.kind != "f":
        raise TypeError(f"mean: expected a float tensor, got {x.dtype}")
    return Mean.apply(x, axes=_axes(dim, x.ndim), keepdim=keepdim)


#: What ``max(dim)`` and ``min(dim)`` return, like torch.return_types.max: a named tuple,
#: so both ``_, predicted = torch.max(outputs, 1)`` and ``.values``/``.indices`` work.
max_result = collections.namedtuple("max", "values indices")
min_result = collections.namedtuple("min", "values indices")


def _arg_extreme(x, dim, keepdim, which):
    """Indices (int64) of the first maximum or minimum along dim, or in the flattened x."""
    xp = _device.array_module(x.array)
    if x.numel() == 0:
        raise ValueRuntimeError(f"{which}: expected a non-empty tensor, got shape {x.shape}")
    if x.ndim == 0 and dim is not None:
        _dim(dim, 0)
        return Tensor(xp.zeros((), np.int64))
    if dim is None:
        i = xp.asarray(getattr(x.array, which)()).astype(np.int64)
        return Tensor(i.reshape((1,) * x.ndim) if keepdim else i)
    axis = _dim(dim, x.ndim)
    i = xp.asarray(getattr(x.array, which)(axis=axis)).astype(np.int64)
    return Tensor(xp.expand_dims(i, axis) if keepdim else i)


def argmax(x, dim=None, keepdim=False):
    """Index of the first maximum, over the flattened tensor or along dim (int64)."""
    return _arg_extreme(x, dim, keepdim, "argmax")


def argmin(x, dim=None, keepdim=False):
    return _arg_extreme(x, dim, keepdim, "argmin")


class SelectAlongDim(Function):
    """y = x taken at `indices` along `axis` (one per output element); gx scatters gy back
    to those indices, so max(dim)'s gradient goes to the element it returned, as in torch.

    Shapes: x (..., n, ...), indices and y as x with dim `axis` of size 1 (keepdims).
    """

    @staticmethod
    def forward(x, indices, axis):
        index = _along(indices, axis)
        return x[index], (x.shape, index)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        shape, index = cache
        gx = _device.array_module(gy).zeros(shape, dtype=gy.dtype)
        gx[index] = gy  # one index per slice: no repeats, so assignment is exact
        return (gx,)


def _along(indices, axis):
    """The advanced index that picks indices[..., 0, ...] along `axis` in every slice
    (NumPy's take_along_axis, written out so that CuPy runs the same code)."""
    xp = _device.array_module(indices)
    grid = [xp.arange(n).reshape([n if i == k else 1 for i in range(indices.ndim)])
            for k, n in enumerate(indices.shape)]
    grid[axis] = indices
    return tuple(grid)


class ExtremeAll(Function):
    """y = max (or min) of all of x; gx shares gy evenly among the elements equal to y, as
    torch does for the reduction without dim (a tie of k elements gives each gy / k)."""

    @staticmethod
    def forward(x, which):
        xp = _device.array_module(x)
        y = xp.asarray(getattr(x, which)())
        return y, (x == y, )

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        (hits,) = cache
        return ((hits * (gy / hits.sum())).astype(gy.dtype),)


def _extreme(x, dim, keepdim, which):
    if x.numel() == 0:
        raise ValueRuntimeError(f"{which}: expected a non-empty tensor, got shape {x.shape}")
    if dim is None:
        if keepdim:
            raise TypeError(f"{which}: keepdim needs dim")
        return ExtremeAll.apply(x, which=which)
    axis, result = _dim(dim, x.ndim), max_result if which == "max" else min_result
    if x.ndim == 0:  # one element: itself, at index 0
        return result(reshape(x, ()), Tensor(_device.array_module(x.array).zeros((), np.int64)))
    indices = _arg_extreme(x, axis, True, "arg" + which).array
    values = SelectAlongDim.apply(x, indices=indices, axis=axis)
    if not keepdim:
        values, indices = squeeze(values, axis), indices.squeeze(axis)
    return result(values, Tensor(indices))


def max(x, dim=None, keepdim=False):
    """torch.max(x): the largest element (0-d); torch.max(x, dim, keepdim=False): the named
    tuple (values, indices) of each slice's first maximum along dim."""
    return _extreme(x, dim, keepdim, "max")


def min(x, dim=None, keepdim=False):
    """Like :func:`max`, for the smallest element."""
    return _extreme(x, dim, keepdim, "min")


# --- shapes ------------------------------------------------------------------------------
class Reshape(Function):
    @staticmethod
    def forward(x, shape):
        return x.reshape(shape), x.shape

    @staticmethod
    def backward(gy, x_shape, needs_input_grad):
        return (gy.reshape(x_shape),)


def reshape(x, *shape, op="reshape"):
    """x with the given shape (ints, at most one -1 to infer), as torch's reshape and view;
    `op` names the caller in refusals."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        if any(isinstance(n, bool) for n in shape):
            raise TypeError
        shape = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise TypeError(f"{op}: shape: expected ints, got {shape}") from None
    if any(n < -1 for n in shape):
        raise ValueRuntimeError(f"{op}: shape: expected sizes >= 0 (or one -1 to infer), got {shape}")
    if shape.count(-1) > 1:
        raise ValueRuntimeError(f"{op}: shape: expected at most one -1 (only one size can be"
                                f" inferred), got {shape}")
    try:
        np.empty(x.shape, dtype=np.bool_).reshape(shape)  # validate without touching the data
    except ValueError:
        raise ValueRuntimeError(f"{op}: shape: cannot view shape {x.shape} ({x.numel()} elements)"
                                f" as {shape}") from None
    return Reshape.apply(x, shape=shape)


def squeeze(x, dim=None):
    """Drop dims of size 1: all of them, or those named in dim (an int or a tuple); a named
    dim of another size is left alone, as in torch."""
    axes = set(range(x.ndim)) if dim is None else set(_axes(dim, x.ndim))
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)))


def unsqueeze(x, dim):
    """Insert a dim of size 1 at position dim, in [-ndim - 1, ndim]."""
    axis = _dim(dim, x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, 1)
    start, end = _dim(start_dim, x.ndim), _dim(end_dim, x.ndim)
    if start > end:
        raise ValueRuntimeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
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
    if len(dims) != x.ndim:
        raise ValueRuntimeError(f"permute: dims: expected a permutation of {x.ndim} axes, got {tuple(dims)}")
    dims = tuple(_dim(d, x.ndim) for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ValueRuntimeError(f"permute: dims: expected a permutation of {x.ndim} axes, got {dims}")
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    if x.ndim == 0:
        return x
    dim0, dim1 = _dim(dim0, x.ndim), _dim(dim1, x.ndim)
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


class GetItem(Function):
    """y = x[index]; gx scatters gy back, adding where an advanced index repeats."""

    @staticmethod
    def forward(x, index):
        y = x[index]  # a view for basic indices; an integer index gives a NumPy scalar
        return (y if y.ndim else _device.array_module(x).asarray(y)), (x.shape, x.dtype, index)

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


class Clone(Function):
    @staticmethod
    def forward(x):
        return x.copy(), None

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return (gy,)


def clone(x):
    return Clone.apply(x)


def convert(x, device=None, dtype=None):
    device = x.device if device is None else _device.parse_device(device)
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if device == x.device and dtype == x.dtype:
        return x
    if x.requires_grad and dtype.kind != "f":
        return Tensor(_device.to_device(x.array, device).astype(dtype))
    return Convert.apply(x, device=device, dtype=dtype)
