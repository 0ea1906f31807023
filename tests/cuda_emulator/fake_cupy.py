"""A minimal CuPy stand-in, so that tinyalex/kernels/cupy/*.py run AS THEY ARE without a GPU.

This is a test double of the LAUNCH PATH, not of CuPy's semantics. What it reproduces
is what the launchers hand to CuPy: ``cupy.RawModule(code=..., options=...,
name_expressions=...)`` compiles the .cu text with the CUDA emulator (emulator.py), and
``module.get_function("name<float>")(grid, block, args)`` checks every argument against
the kernel's C parameter types and runs the kernel through the emulator. Arrays are a
numpy.ndarray subclass with ``.get()``; the module functions the launchers and the
autograd ops call (``empty``, ``zeros``, ``asarray``, ``ascontiguousarray``, ``add``,
``matmul``, ...) are numpy's, returning stand-in arrays. Like CuPy, a ufunc refuses a
host (numpy) array operand, and a kernel refuses a host array argument.

NOT reproduced: asynchrony and streams, CuPy's own kernels and their numerics, cuBLAS
(matmul is numpy's; the compute type is only recorded), memory pools, devices. Inside a
``count_traffic()`` block (traffic.py), each matmul, ufunc and array assignment is noted as
a LibraryCall (its FLOPs and ideal bytes), since the emulator cannot count what CuPy runs.

:func:`installed` puts it in place for a block: tinyalex.device.cupy_stand_in, plus the
``cupy``, ``cupy._core._routines_linalg`` and ``cupyx`` entries of sys.modules that the
launchers import by name.
"""
import contextlib
import re
import sys
import types

import numpy as np

from tinyalex import device as _device
from . import emulator, traffic


class ndarray(np.ndarray):
    """An array in 'device' memory: numpy memory that only .get() brings to the host."""

    def get(self):
        """A host copy, as a plain numpy.ndarray."""
        return np.array(self.view(np.ndarray))

    def __getitem__(self, index):
        # An element stays on the device, as a 0-d array (numpy would give a host scalar).
        return _to_device(super().__getitem__(index), scalars=True)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        for operand in inputs + (out or ()):
            if isinstance(operand, np.ndarray) and not isinstance(operand, ndarray) \
                    and operand.ndim > 0:
                raise TypeError(f"{ufunc.__name__}: a host numpy.ndarray operand (shape"
                                f" {operand.shape}) mixed with device arrays; copy it with"
                                f" cupy.asarray first")
        inputs = tuple(_host_view(a) for a in inputs)
        if out is not None:
            kwargs["out"] = tuple(_host_view(a) for a in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        if traffic.active_sink() is not None:
            _record_ufunc(ufunc, method, inputs, out[0] if out else result)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _to_device(result, scalars=True)

    def __setitem__(self, index, value):
        super().__setitem__(index, value)
        if isinstance(value, np.ndarray) and traffic.active_sink() is not None:
            traffic.record_library_call("CuPy copy", f"{value.shape}", 0, 2 * value.nbytes)


def _record_ufunc(ufunc, method, inputs, result):
    """A ufunc as one CuPy kernel: its array operands read once, its result written once."""
    read = sum(a.nbytes for a in inputs if isinstance(a, np.ndarray))
    written = np.asarray(result).nbytes
    kind = "CuPy reduction" if method == "reduce" else "CuPy elementwise"
    flops = max((a.size for a in inputs if isinstance(a, np.ndarray)), default=1) if method == "reduce" \
        else np.asarray(result).size
    traffic.record_library_call(kind, ufunc.__name__, flops, read + written)


def _host_view(a):
    return a.view(np.ndarray) if isinstance(a, ndarray) else a


def _to_device(value, scalars=False):
    """Stand-in views of the numpy arrays in `value` (and 0-d arrays for numpy scalars)."""
    if isinstance(value, np.ndarray):
        return value.view(ndarray)
    if scalars and isinstance(value, np.generic):
        return np.asarray(value).view(ndarray)
    if isinstance(value, tuple):
        return tuple(_to_device(v, scalars) for v in value)
    return value


def _numpy_function(function):
    def on_device(*args, **kwargs):
        args = tuple(_host_view(a) for a in args)
        kwargs = {k: _host_view(v) for k, v in kwargs.items()}
        return _to_device(function(*args, **kwargs), scalars=True)
    on_device.__name__ = function.__name__
    return on_device


def __getattr__(name):
    """Any other cupy.X is numpy.X on stand-in arrays (dtypes, types and ufuncs as they are:
    a ufunc reaches ndarray.__array_ufunc__ by itself)."""
    value = getattr(np, name)
    if isinstance(value, (type, np.ufunc)) or not callable(value):
        return value
    return _numpy_function(value)


def asarray(a, dtype=None):
    """A device array of `a`: the array itself if it is one already (and of that dtype)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return np.array(a, dtype=dtype).view(ndarray)


def empty(shape, dtype=float):
    """Fresh 'device' memory, poisoned (every byte 0xFF: NaN for floats, -1 for ints) so
    that a kernel or launcher that reads memory nobody wrote shows it."""
    out = np.empty(shape, dtype=dtype)
    out.reshape(-1).view(np.uint8)[:] = 0xFF
    return out.view(ndarray)


def empty_like(a, dtype=None):
    return empty(np.shape(a), dtype=a.dtype if dtype is None else dtype)


def ascontiguousarray(a, dtype=None):
    return np.ascontiguousarray(_host_view(asarray(a, dtype))).view(ndarray)


def matmul(a, b, out=None):
    (M, K), N = a.shape, b.shape[1]
    traffic.record_library_call("cuBLAS GEMM", f"({M}x{K}) @ ({K}x{N})", 2 * M * N * K,
                                (M * K + K * N + M * N) * np.dtype(a.dtype).itemsize)
    if out is None:
        return _to_device(np.matmul(_host_view(a), _host_view(b)))
    np.matmul(_host_view(a), _host_view(b), out=_host_view(out))
    return out


# --- the CUDA side: modules, kernels, the device ------------------------------------------

class RawModule:
    """cupy.RawModule: compiles `code` with the CUDA emulator instead of NVRTC."""

    def __init__(self, code, options=(), name_expressions=None):
        if "-std=c++17" not in options:
            raise ValueError(f"options: the kernels are C++17, got {options}")
        self.options = tuple(options)
        first_line = re.match(r"//\s*(\w+\.cu)\b", code)
        self._module = emulator.compile_module(code, name_expressions or [],
                                               first_line.group(1) if first_line else "kernel.cu")

    def get_function(self, name):
        return RawKernel(self._module.kernel(name))


class RawKernel:
    """A kernel of a RawModule: kernel(grid, block, args, shared_mem=0)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __call__(self, grid, block, args, *, shared_mem=0):
        if isinstance(args, tuple):
            for i, value in enumerate(args):
                if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
                    raise TypeError(f"{self.kernel.name}: argument {i}: a host numpy.ndarray;"
                                    f" kernels take device arrays (cupy.asarray)")
        self.kernel(grid, block, args, shared_mem=shared_mem)


class _Device:
    id = -1  # not a real device id: the loader's cache never mixes these modules with CuPy's

    def __init__(self, device=None):
        pass

    def synchronize(self):
        """Nothing to wait for: every emulated launch has finished when its call returns."""


#: Says that this is the stand-in, to code that reports the device (benchmarks/gpu_check.py).
EMULATED = True

cuda = types.SimpleNamespace(Device=_Device,
                             runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                             set_allocator=lambda allocator=None: None)     # there is no pool to switch off

_routines_linalg = types.ModuleType("cupy._core._routines_linalg")
_routines_linalg.COMPUTE_TYPE_DEFAULT = "COMPUTE_TYPE_DEFAULT"
_routines_linalg.COMPUTE_TYPE_TF32 = "COMPUTE_TYPE_TF32"
_compute_types = {}

_core = types.ModuleType("cupy._core")
_core._routines_linalg = _routines_linalg
_core.get_compute_type = lambda dtype: _compute_types.get(np.dtype(dtype),
                                                          _routines_linalg.COMPUTE_TYPE_DEFAULT)
_core.set_compute_type = lambda dtype, compute_type: _compute_types.__setitem__(np.dtype(dtype),
                                                                                compute_type)


def _scatter_add(a, slices, value):
    np.add.at(_host_view(a), slices, _host_view(value))


cupyx = types.ModuleType("cupyx")
cupyx.scatter_add = _scatter_add


@contextlib.contextmanager
def installed():
    """Play cupy inside the block: tinyalex.device's seam and the imports by name."""
    this = sys.modules[__name__]
    entries = {"cupy": this, "cupy._core": _core, "cupy._core._routines_linalg": _routines_linalg,
               "cupyx": cupyx}
    saved = {name: sys.modules.get(name) for name in entries}
    sys.modules.update(entries)
    try:
        with _device.cupy_stand_in(this):
            yield this
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
