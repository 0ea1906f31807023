"""Array checks of the CUDA launchers (shape and dtype agreement: tinyalex/shapes.py),
and the C scalar types they pass.

The functional layer validates user arguments; these checks guard what the kernels
assume: a CuPy array of float32 or float64, a rank, one dtype across operands, and C
order (the kernels index flat memory). A wrong assumption would not raise on the GPU, it
would read the wrong bytes.
"""
import numpy as np

from tinyalex.kernels.cupy.loader import C_TYPES, cupy


def float_array(a, name, ndim=None):
    """`a` as a C-contiguous float32/float64 CuPy array (no copy if it already is one).

    A 0-d array stays 0-d (ascontiguousarray may return shape (1,), as NumPy's does).
    """
    a = _float_cupy_array(a, name)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return a if a.flags.c_contiguous else cupy().ascontiguousarray(a)


def in_place_array(a, name):
    """`a` itself, checked to be a float32/float64 CuPy array in C order (it will be written)."""
    a = _float_cupy_array(a, name)
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (it is updated in place),"
                         f" got strides {a.strides} for shape {a.shape}")
    return a


def check_dtype(a, name, dtype, what):
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} ({what}), got {a.dtype}")


def i32(value):
    """A C int kernel argument. Raises ValueError if `value` does not fit in 32 bits."""
    if not -2**31 <= value < 2**31:
        raise ValueError(f"a size of {value} does not fit the kernels' 32-bit int")
    return np.int32(value)


def i64(value):
    """A C long long kernel argument (element counts, strides)."""
    return np.int64(value)


def _float_cupy_array(a, name):
    if not isinstance(a, cupy().ndarray):
        raise TypeError(f"{name}: expected a cupy.ndarray, got {type(a).__name__}")
    if a.dtype not in C_TYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    return a
