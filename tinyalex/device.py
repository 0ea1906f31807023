"""Devices and array modules: the only place that knows NumPy arrays live on "cpu"
and CuPy arrays on "cuda". Everything else asks here.

The module is callable, like ``torch.device``: ``tinyalex.device('cuda:0')`` returns a
:class:`Device` (see the end of this file)."""
import contextlib
import sys
import types

import numpy as np

from tinyalex.errors import ValueRuntimeError

_cupy = None
_cupy_error = None
_stand_in = None  # a module playing cupy, inside cupy_stand_in() only (tests)


def cupy_module():
    """Return the cupy module, or raise RuntimeError saying why CUDA cannot be used."""
    global _cupy, _cupy_error
    if _stand_in is not None:
        return _stand_in
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            count = cupy.cuda.runtime.getDeviceCount()
            if count < 1:
                raise RuntimeError("no CUDA device is visible")
            _cupy = cupy
        except Exception as exc:  # ImportError, CUDARuntimeError, ...
            _cupy_error = f"{type(exc).__name__}: {exc}"
    if _cupy is None:
        raise RuntimeError(
            "device 'cuda' is not available: " + _cupy_error
            + " (install cupy-cuda13x on a machine with an NVIDIA GPU)")
    return _cupy


def cuda_is_available():
    try:
        cupy_module()
        return True
    except RuntimeError:
        return False


def default_device():
    """'cuda' when a CUDA GPU is usable, else 'cpu'."""
    return "cuda" if cuda_is_available() else "cpu"


def parse_device(device):
    """Normalise a device spec ('cpu', 'cuda', 'cuda:0') to 'cpu' or 'cuda'."""
    name = str(device)
    if name in ("cpu", "cpu:0"):
        return "cpu"
    if name == "cuda" or name == "cuda:0":
        return "cuda"
    raise ValueRuntimeError(f"device: expected 'cpu', 'cuda' or 'cuda:0' (tinyalex drives one"
                            f" GPU), got {str(device)!r}")


def device_of(array):
    """'cuda' for a CuPy array, 'cpu' for anything else."""
    if _stand_in is not None and isinstance(array, _stand_in.ndarray):
        return "cuda"
    return "cuda" if type(array).__module__.startswith("cupy") else "cpu"


def tensor_device(array):
    """The :class:`Device` that ``Tensor.device`` reports: device('cpu') or device('cuda:0')."""
    return _CUDA0 if device_of(array) == "cuda" else _CPU


def array_module(array):
    """numpy or cupy, whichever owns `array` (like cupy.get_array_module)."""
    return cupy_module() if device_of(array) == "cuda" else np


@contextlib.contextmanager
def cupy_stand_in(module):
    """Inside the block, `module` plays cupy: cupy_module() returns it, and instances of
    its `ndarray` class are arrays on 'cuda'.

    The seam through which the tests run the CUDA kernels without a GPU
    (tests/cuda_emulator/fake_cupy.py: a test double of the launch path, not of CuPy).
    Nothing in tinyalex calls it; outside the block nothing changes.
    """
    global _stand_in
    previous, _stand_in = _stand_in, module
    try:
        yield module
    finally:
        _stand_in = previous


def to_device(array, device):
    """Copy `array` to `device` ('cpu' or 'cuda'); returns the same array if it is already there."""
    device = parse_device(device)
    if device_of(array) == device:
        return array
    if device == "cuda":
        return cupy_module().asarray(array)
    return array.get()


class Device(str):
    """torch.device's counterpart: ``tinyalex.device('cuda:0')``, ``tinyalex.device('cpu')``,
    ``tinyalex.device('cuda', 0)``; what ``Tensor.device`` returns.

    It is a ``str`` whose value is the normalised name, 'cpu' or 'cuda' (tinyalex drives one
    GPU), so it goes wherever a device string goes and compares equal to one. ``type`` and
    ``index`` are torch's attributes; ``str()`` gives the spelling torch prints ('cuda:0').
    Unlike torch, ``device('cuda') == device('cuda:0') == 'cuda'``: with one GPU they name
    the same device.
    """

    def __new__(cls, type, index=None):
        if isinstance(type, Device) and index is None:
            return type
        if not isinstance(type, str):
            raise TypeError(f"device: expected a string such as 'cpu' or 'cuda:0', got "
                            f"{type.__class__.__name__}")
        spec = type if index is None else f"{type}:{index}"
        name = parse_device(spec)
        self = super().__new__(cls, name)
        if name == "cpu" and ":" in spec and spec != "cpu:0":
            raise ValueError(f"device: expected 'cpu' or 'cpu:0', got {spec!r}")
        self.index = None if name == "cpu" or ":" not in spec else 0
        return self

    @property
    def type(self):
        return str.__str__(self)

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __format__(self, spec):
        return format(str(self), spec)

    def __repr__(self):
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"

    def __reduce__(self):
        return Device, (str(self),)

    __hash__ = str.__hash__
    __eq__ = str.__eq__


def device_count():
    """How many CUDA devices tinyalex can use: 1 or 0 (like torch.cuda.device_count)."""
    return 1 if cuda_is_available() else 0


class _DeviceModule(types.ModuleType):
    """This module, made callable: ``tinyalex.device('cuda:0')`` builds a :class:`Device`
    as ``torch.device(...)`` does, and ``isinstance(d, tinyalex.device)`` holds for one,
    while ``tinyalex.device.to_device`` and friends stay plain module functions."""

    def __call__(self, type, index=None):
        return Device(type, index)

    def __instancecheck__(self, obj):
        return isinstance(obj, Device)


sys.modules[__name__].__class__ = _DeviceModule


_CPU, _CUDA0 = Device("cpu"), Device("cuda:0")
