"""The kernel sets, and the choice of the one that runs an op.

tinyalex has three kernel sets with one interface (tinyalex/kernels/contract.py), each in
the folder named as users select it:

- ``numpy`` (tinyalex/kernels/numpy): the readable reference, the oracle the tests trust;
- ``numba`` (tinyalex/kernels/numba): parallel ``@njit`` kernels plus BLAS, the CPU default;
- ``cupy`` (tinyalex/kernels/cupy): CUDA C kernels from ``kernels/*.cu`` plus cuBLAS.

The device of the array decides between CPU and GPU; on the CPU, ``TINYALEX_CPU``
(``numpy`` or ``numba``) or the context manager :func:`use_kernels` decides which set.
conv_algorithms.py chooses among a set's convolution algorithms ('gemm', 'winograd').
"""
import contextlib
import importlib
import os

from tinyalex.device import device_of

KERNEL_SETS = {name: f"tinyalex.kernels.{name}" for name in ("numpy", "numba", "cupy")}
CPU_KERNEL_SETS = ("numpy", "numba")
DEFAULT_CPU_KERNELS = "numba"

_cpu_override = None


def cpu_kernel_set_name():
    """The CPU kernel set in force: use_kernels(), else $TINYALEX_CPU, else numba."""
    if _cpu_override is not None:
        return _cpu_override
    name = os.environ.get("TINYALEX_CPU", DEFAULT_CPU_KERNELS) or DEFAULT_CPU_KERNELS
    if name not in CPU_KERNEL_SETS:
        raise ValueError(f"TINYALEX_CPU: expected one of {CPU_KERNEL_SETS}, got {name!r}")
    return name


def load_kernel_set(name):
    """Import and return the module of kernel set `name` ('numpy', 'numba' or 'cupy')."""
    if name not in KERNEL_SETS:
        raise ValueError(f"kernels: expected one of {tuple(KERNEL_SETS)}, got {name!r}")
    try:
        return importlib.import_module(KERNEL_SETS[name])
    except ImportError as exc:
        raise RuntimeError(f"kernel set {name!r} cannot be loaded: {exc}") from exc


def kernels_for(array):
    """The kernel set module that runs ops on `array`: cupy for CUDA arrays, else the CPU set."""
    if device_of(array) == "cuda":
        return load_kernel_set("cupy")
    return load_kernel_set(cpu_kernel_set_name())


@contextlib.contextmanager
def use_kernels(name):
    """Run CPU ops with kernel set `name` ('numpy' or 'numba') inside the block.

    The GPU set ('cupy') is chosen by putting tensors on device 'cuda', not here.
    """
    global _cpu_override
    if name not in CPU_KERNEL_SETS:
        raise ValueError(f"use_kernels: expected one of {CPU_KERNEL_SETS} (the GPU set 'cupy'"
                         f" is chosen by device='cuda'), got {name!r}")
    load_kernel_set(name)  # fail here, with the reason, rather than at the first op
    previous, _cpu_override = _cpu_override, name
    try:
        yield
    finally:
        _cpu_override = previous
