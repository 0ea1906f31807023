"""Array checks of the numba kernels (shape and dtype agreement: tinyalex/shapes.py).

The functional layer validates user arguments; these checks guard what the njit kernels
assume (a float dtype, a rank, one dtype across operands), because Numba would otherwise
compile a silent integer version or fail deep inside with a typing error.
"""
import numpy as np


FLOAT_DTYPES = (np.float32, np.float64)


def float_array(a, name, ndim=None):
    """`a` as a C-contiguous float32/float64 ndarray (no copy if it already is one).

    A 0-d array stays 0-d: np.ascontiguousarray would return shape (1,).
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)
