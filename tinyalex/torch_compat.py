"""The ``torch.*`` names that client code touches, as thin aliases over tinyalex's core.

``import tinyalex as torch`` then runs tutorial code unchanged: this module adds the
creation functions (``randn``, ``zeros``, ``arange``, ``*_like``, ``from_numpy``,
``as_tensor``), the function forms of Tensor methods (``torch.max(x, 1)``,
``torch.flatten(x, 1)``, ...) and torch's dtype names (``torch.float``, ``torch.long``).
Nothing here computes: each name forwards to an op in :mod:`tinyalex.ops.basic` or to
NumPy's random Generator behind :func:`tinyalex.manual_seed`. ``tinyalex/__init__.py``
re-exports ``__all__``.
"""
import builtins
import numbers

import numpy as np

from tinyalex import device as _device
from tinyalex import random as _random
from tinyalex.tensor import Tensor, _as_array, bool_, check_dtype, float32, float64, int64
from tinyalex.errors import ValueRuntimeError
from tinyalex.ops import basic as _basic

__all__ = [
    "as_tensor", "from_numpy", "zeros", "ones", "full", "empty", "zeros_like", "ones_like",
    "full_like", "empty_like", "rand", "randn", "randint", "rand_like", "randn_like", "arange",
    "is_tensor", "numel", "flatten", "reshape", "squeeze", "unsqueeze", "permute", "transpose",
    "max", "min", "argmax", "argmin", "sum", "mean", "eq", "ne", "lt", "le", "gt", "ge",
    "equal", "add", "sub", "mul", "div", "pow", "exp", "log", "abs",
    "float", "double", "long", "bool", "float32", "float64", "int64",
]


# --- creation ----------------------------------------------------------------------------
def _size(size, keyword, where):
    """torch's size forms: ``f(2, 3)``, ``f((2, 3))``, ``f([2, 3])`` or ``f(size=(2, 3))``."""
    if keyword is not None:
        if size:
            raise TypeError(f"{where}: expected the size positionally or as size=, not both")
        size = (keyword,)
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, builtins.bool) and n >= 0
               for n in size):
        raise TypeError(f"{where}: size: expected non-negative ints, got {size!r}")
    return tuple(int(n) for n in size)


def _make(array, device, requires_grad):
    array = array if device is None else _device.to_device(array, device)
    return Tensor(array, requires_grad=requires_grad)


def as_tensor(data, dtype=None, device=None):
    """A Tensor sharing data's memory when it already has the dtype and device, else a copy."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return Tensor(_as_array(data, dtype, device))


def from_numpy(ndarray):
    """A CPU Tensor sharing the NumPy array's memory (float32/64, int64 or bool only)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(ndarray).__name__}")
    return Tensor(np.asarray(ndarray, dtype=check_dtype(ndarray.dtype, "from_numpy: ndarray")))


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False):
    """size filled with fill_value; the dtype follows the value (bool, int64 or float32)."""
    if dtype is None:
        dtype = (bool_ if isinstance(fill_value, (builtins.bool, np.bool_)) else
                 int64 if isinstance(fill_value, numbers.Integral) else float32)
    shape = _size((size,) if isinstance(size, numbers.Integral) else tuple(size), None, "full")
    return _make(np.full(shape, fill_value, check_dtype(dtype)), device, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False, **kwargs):
    shape = _size(size, kwargs.pop("size", None), "zeros")
    _no_extra("zeros", kwargs)
    return _make(np.zeros(shape, check_dtype(dtype or float32)), device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False, **kwargs):
    shape = _size(size, kwargs.pop("size", None), "ones")
    _no_extra("ones", kwargs)
    return _make(np.ones(shape, check_dtype(dtype or float32)), device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False, **kwargs):
    """Uninitialised in torch; zeros here (the same cost in NumPy, and reproducible)."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad, **kwargs)


def rand(*size, dtype=None, device=None, requires_grad=False, **kwargs):
    """Uniform on [0, 1), drawn from tinyalex's global generator (``manual_seed``)."""
    shape = _size(size, kwargs.pop("size", None), "rand")
    _no_extra("rand", kwargs)
    dtype = _float_dtype(dtype, "rand")
    return _make(_random.generator().random(shape, dtype=dtype), device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False, **kwargs):
    """Standard normal, drawn from tinyalex's global generator (``manual_seed``). The
    values differ from torch's for the same seed: the generators differ."""
    shape = _size(size, kwargs.pop("size", None), "randn")
    _no_extra("randn", kwargs)
    dtype = _float_dtype(dtype, "randn")
    return _make(_random.generator().standard_normal(shape, dtype=dtype), device, requires_grad)


def randint(low=0, high=None, size=None, *, dtype=None, device=None, requires_grad=False):
    """Integers uniform on [low, high): ``randint(high, size)`` or ``randint(low, high, size)``."""
    if size is None:  # randint(high, size): the second positional is the size
        low, high, size = 0, low, high
    if size is None or high is None:
        raise TypeError("randint: expected randint(high, size) or randint(low, high, size)")
    shape = _size(tuple(size), None, "randint")
    values = _random.generator().integers(low, high, shape, dtype=np.int64)
    return _make(values.astype(check_dtype(dtype or int64)), device, requires_grad)


def _like(input, dtype, device):
    return (check_dtype(dtype) if dtype is not None else input.dtype,
            input.device if device is None else device)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return zeros(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return ones(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad=False):
    return zeros_like(input, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return full(input.shape, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


def rand_like(input, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return rand(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def randn_like(input, *, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(input, dtype, device)
    return randn(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    """[start, end) by step; int64 when every bound is an int, else float32 (torch's rule)."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = int64 if ints else float32
    if step == 0:
        raise ValueRuntimeError("arange: step must be nonzero")
    return _make(np.arange(start, end, step).astype(check_dtype(dtype)), device, requires_grad)


def _float_dtype(dtype, where):
    dtype = check_dtype(dtype or float32)
    if dtype not in (float32, float64):
        raise TypeError(f"{where}: dtype: expected float32 or float64, got {dtype}")
    return dtype


def _no_extra(where, kwargs):
    if kwargs:
        raise TypeError(f"{where}: unexpected keyword argument {sorted(kwargs)[0]!r}")


# --- function forms of Tensor methods ----------------------------------------------------
def is_tensor(obj):
    return isinstance(obj, Tensor)


def numel(input):
    return input.numel()


def flatten(input, start_dim=0, end_dim=-1):
    return _basic.flatten(input, start_dim, end_dim)


def reshape(input, shape):
    return _basic.reshape(input, shape)


def squeeze(input, dim=None):
    return _basic.squeeze(input, dim)


def unsqueeze(input, dim):
    return _basic.unsqueeze(input, dim)


def permute(input, dims):
    return _basic.permute(input, dims)


def transpose(input, dim0, dim1):
    return _basic.transpose(input, dim0, dim1)


def max(input, dim=None, keepdim=False, *, axis=None):
    """``torch.max(x)``: the largest element; ``torch.max(x, 1)``: (values, indices)."""
    return _basic.max(input, _basic.dim_or_axis(dim, axis), keepdim)


def min(input, dim=None, keepdim=False, *, axis=None):
    return _basic.min(input, _basic.dim_or_axis(dim, axis), keepdim)


def argmax(input, dim=None, keepdim=False, *, axis=None):
    return _basic.argmax(input, _basic.dim_or_axis(dim, axis), keepdim)


def argmin(input, dim=None, keepdim=False, *, axis=None):
    return _basic.argmin(input, _basic.dim_or_axis(dim, axis), keepdim)


def sum(input, dim=None, keepdim=False, *, axis=None):
    return _basic.sum(input, _basic.dim_or_axis(dim, axis), keepdim)


def mean(input, dim=None, keepdim=False, *, axis=None):
    return _basic.mean(input, _basic.dim_or_axis(dim, axis), keepdim)


def eq(input, other):
    return _basic.compare(input, other, "equal")


def ne(input, other):
    return _basic.compare(input, other, "not_equal")


def lt(input, other):
    return _basic.compare(input, other, "less")


def le(input, other):
    return _basic.compare(input, other, "less_equal")


def gt(input, other):
    return _basic.compare(input, other, "greater")


def ge(input, other):
    return _basic.compare(input, other, "greater_equal")


def equal(input, other):
    """True if both tensors have the same shape and elements (a Python bool)."""
    if input.shape != other.shape:
        return False
    return builtins.bool(_basic.compare(input, other, "equal").array.all())


def add(input, other):
    return _basic.add(input, other)


def sub(input, other):
    return _basic.sub(input, other)


def mul(input, other):
    return _basic.mul(input, other)


def div(input, other):
    return _basic.div(input, other)


def pow(input, exponent):
    return _basic.pow(input, exponent)


def exp(input):
    return _basic.exp(input)


def log(input):
    return _basic.log(input)


def abs(input):
    return _basic.abs(input)


# --- dtype names (last: they shadow Python's float and bool in this module) ---------------
float = float32
double = float64
long = int64
bool = bool_
