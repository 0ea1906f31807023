"""The kernel sets, and the choice of the one that runs an op.

tinyalex has three kernel sets with one interface (tinyalex/kernels/contract.py), each in
the folder named as users select it:

- ``numpy`` (tinyalex/kernels/numpy): the readable reference, the oracle the tests trust;
- ``numba`` (tinyalex/kernels/numba): parallel ``@njit`` kernels plus BLAS, the CPU default;
- ``cupy`` (tinyalex/kernels/cupy): CUDA C kernels from ``kernels/*.cu`` plus cuBLAS.

The device of the array decides between CPU and GPU; on the CPU, ``TINYALEX_CPU``
(``numpy``, ``numba``, a registered set's name or a file of kernels) or the context manager
:func:`use_kernels` decides which set. own_sets.py builds sets of your own
(:func:`register_kernels`); conv_algorithms.py chooses among a set's convolution
algorithms ('gemm', 'winograd').
"""
import contextlib
import importlib
import os

from tinyalex.device import device_of

from tinyalex.errors import ValueRuntimeError
from tinyalex.kernels import own_sets as _own_sets

KERNEL_SETS = {name: f"tinyalex.kernels.{name}" for name in ("numpy", "numba", "cupy")}
CPU_KERNEL_SETS = ("numpy", "numba")
DEFAULT_CPU_KERNELS = "numba"

_cpu_override = None
_registered = {}            # name -> a set of your own (register_kernels)
_file_texts = {}            # path -> the text its registered set was built from


def registered(name):
    """The set registered as `name`, or None."""
    return _registered.get(name)


def register_kernels(name, kernels, base="numpy"):
    """Register `kernels` (a module, or any object with the functions as attributes) as the
    CPU kernel set `name`: the contract's functions it defines run, the rest come from the
    set `base`. Select it with use_kernels(name) or TINYALEX_CPU=name. Mistakes are refused
    here, each named (own_sets.py). Returns the set."""
    if not isinstance(name, str) or not name or name in KERNEL_SETS:
        raise ValueRuntimeError(f"register_kernels: name: expected a new set name, not one of"
                                f" {tuple(KERNEL_SETS)}, got {name!r}")
    if base not in CPU_KERNEL_SETS and registered(base) is None:
        raise ValueRuntimeError(f"register_kernels: base: expected a CPU kernel set ('numpy',"
                                f" 'numba' or a registered one), got {base!r}")
    _registered[name] = _own_sets.assemble(name, kernels, load_kernel_set(base))
    return _registered[name]


def _cpu_set(name, option, refresh):
    """`name` if it selects a CPU set: 'numpy', 'numba', a registered set, or a .py file of
    kernels, registered under its path (again when `refresh` and its text has changed: a
    learner edits and re-runs in one session). Else a ValueError naming `option`."""
    if isinstance(name, str) and name.endswith(".py"):
        if registered(name) is None or refresh:
            text = _own_sets.read_file(name)
            if registered(name) is None or _file_texts.get(name) != text:
                module = _own_sets.load_file(name)
                register_kernels(name, module, base=getattr(module, "BASE", "numpy"))
                _file_texts[name] = text
    elif name not in CPU_KERNEL_SETS and registered(name) is None:
        raise ValueError(f"{option}: expected one of {CPU_KERNEL_SETS}, a registered set or a .py"
                         f" file of kernels (the GPU set 'cupy' is chosen by device='cuda'),"
                         f" got {name!r}")
    return name


def cpu_kernel_set_name():
    """The CPU kernel set in force: use_kernels(), else $TINYALEX_CPU, else numba."""
    if _cpu_override is not None:
        return _cpu_override
    name = os.environ.get("TINYALEX_CPU", DEFAULT_CPU_KERNELS) or DEFAULT_CPU_KERNELS
    return _cpu_set(name, "TINYALEX_CPU", refresh=False)  # every op asks: no file read here


def load_kernel_set(name):
    """Import and return the module of kernel set `name` ('numpy', 'numba' or 'cupy'), or the
    set registered as `name` (register_kernels)."""
    if registered(name) is not None:
        return registered(name)
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
    """Run CPU ops with kernel set `name` ('numpy', 'numba', a registered set, or a .py file
    of kernels, registered on first use) inside the block.

    The GPU set ('cupy') is chosen by putting tensors on device 'cuda', not here.
    """
    global _cpu_override
    _cpu_set(name, "use_kernels", refresh=True)
    load_kernel_set(name)  # fail here, with the reason, rather than at the first op
    previous, _cpu_override = _cpu_override, name
    try:
        yield
    finally:
        _cpu_override = previous
