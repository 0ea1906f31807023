"""Devices and array modules: the only place that knows NumPy arrays live on "cpu"
and CuPy arrays on "cuda". Everything else asks here."""
import contextlib

import numpy as np

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
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name == "cuda:0":
        return "cuda"
    raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:0', got {device!r}")


def device_of(array):
    """'cuda' for a CuPy array, 'cpu' for anything else."""
    if _stand_in is not None and isinstance(array, _stand_in.ndarray):
        return "cuda"
    return "cuda" if type(array).__module__.startswith("cupy") else "cpu"


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
