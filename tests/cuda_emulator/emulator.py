"""Launch emulated CUDA kernels on numpy arrays: argument checks, then runtime.cc.

:func:`compile_module` builds a .cu source (build.py) and returns a :class:`Module`;
``module.kernel("im2col<float>")`` is a :class:`Kernel`, called like CuPy's RawKernel:
``kernel(grid, block, args)``. Before anything runs, every argument is checked against
the kernel's C parameter types, as the compiled module describes them:

    T* / const T*         a C-contiguous numpy array whose dtype is T's
    int, long long, ...   a numpy scalar of exactly that C type (np.int32, np.int64, ...)

CuPy passes each argument's bytes as they are, so on a GPU a wrong type is not an error
but garbage; here it is a TypeError naming the argument. Then the runtime runs the grid
(see runtime.cc) and any failed check raises :class:`EmulatedKernelError`.

The order in which the threads of a block interleave comes from a seed:
:func:`set_seed` (the test fixture calls it per test, from $TINYALEX_EMULATOR_SEED and
the test's name), plus a counter of launches, so that a failure reproduces.
"""
import ctypes
import re
from pathlib import Path

import numpy as np

from . import build, traffic

#: C parameter type -> the numpy dtype an argument of that type must have.
C_SCALARS = {
    "bool": np.dtype(np.bool_),
    "int": np.dtype(np.int32),
    "unsigned int": np.dtype(np.uint32),
    "long long": np.dtype(np.int64),
    "unsigned long long": np.dtype(np.uint64),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
}

MAX_THREADS_PER_BLOCK = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)

#: A fiber yields at a memory access of an argument array with chance 1/YIELD_ONE_IN, so
#: threads interleave inside barrier intervals too, not only at barriers.
YIELD_ONE_IN = 16


class EmulatedKernelError(RuntimeError):
    """A kernel failed a check of the CUDA emulator: out of bounds, a race, a divergent
    barrier or shuffle, undefined behaviour. The message names the kernel, the block and
    thread, and the source line."""


class _Region(ctypes.Structure):
    _fields_ = [("lo", ctypes.c_uint64), ("hi", ctypes.c_uint64), ("writable", ctypes.c_int),
                ("name", ctypes.c_char_p), ("origin", ctypes.c_uint64)]


class _LaunchSpec(ctypes.Structure):
    _fields_ = [("entry", ctypes.c_void_p), ("kernel", ctypes.c_char_p),
                ("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("params", ctypes.POINTER(ctypes.c_ulonglong)), ("nparams", ctypes.c_int),
                ("buffers", ctypes.POINTER(_Region)), ("nbuffers", ctypes.c_int),
                ("shared", ctypes.POINTER(_Region)), ("nshared", ctypes.c_int),
                ("seed", ctypes.c_uint64), ("yield_one_in", ctypes.c_uint),
                ("count_traffic", ctypes.c_int)]


_seed = {"base": 0, "launches": 0}


def set_seed(seed):
    """Seed the interleaving of threads for the launches that follow (and restart their count)."""
    _seed["base"], _seed["launches"] = int(seed) % 2**64, 0


def _next_launch_seed():
    _seed["launches"] += 1
    return (_seed["base"] * 1_000_003 + _seed["launches"]) % 2**64, _seed["launches"]


_runtime = None


def runtime():
    """The runtime library, loaded once with RTLD_GLOBAL: the kernel modules link to its hooks."""
    global _runtime
    if _runtime is None:
        lib = ctypes.CDLL(str(build.runtime_library()), mode=ctypes.RTLD_GLOBAL)
        lib.emu_launch.argtypes = [ctypes.POINTER(_LaunchSpec)]
        lib.emu_launch.restype = ctypes.c_int
        lib.emu_error_message.restype = ctypes.c_char_p
        lib.emu_error_pc.restype = ctypes.c_uint64
        lib.emu_access_count.restype = ctypes.c_uint64
        lib.emu_counted_instruction.argtypes = [ctypes.c_int]
        lib.emu_counted_instruction.restype = traffic.InstructionCounts
        lib.emu_counted_region.argtypes = [ctypes.c_int]
        lib.emu_counted_region.restype = traffic.RegionCounts
        _runtime = lib
    return _runtime


def access_count():
    """How many instrumented loads and stores the runtime has checked so far."""
    return runtime().emu_access_count()


_modules = {}


def compile_module(code, name_expressions, file_name="kernel.cu"):
    """Build (or reuse) the emulated module of CUDA source `code`, exporting `name_expressions`."""
    key = (code, tuple(name_expressions), file_name)
    if key not in _modules:
        _modules[key] = Module(code, list(name_expressions), file_name)
    return _modules[key]


class Module:
    """One compiled .cu source: its kernels, by name expression, and its __shared__ memory."""

    def __init__(self, code, name_expressions, file_name):
        runtime()
        self.file_name = file_name
        self.path = build.build_module(code, name_expressions, file_name)
        self.library = ctypes.CDLL(str(self.path))
        anchor = ctypes.cast(self.library.emu_run_0, ctypes.c_void_p).value
        self.base = anchor - build.symbol_offset(self.path, "emu_run_0")
        self.shared = [(self.base + offset, size, _shared_name(name))
                       for offset, size, name in build.shared_variables(self.path)]
        self._kernels = {expression: Kernel(self, i, expression, _parameter_names(code, expression))
                         for i, expression in enumerate(name_expressions)}

    def kernel(self, name_expression):
        try:
            return self._kernels[name_expression]
        except KeyError:
            raise ValueError(f"name_expression: expected one of {sorted(self._kernels)}"
                             f" (compiled into {self.file_name}), got {name_expression!r}") from None

    def describe_error(self, message, pc):
        """The runtime's message, with the kernel source line of `pc` where debug info has it."""
        line = build.source_line(self.path, pc - self.base - 1) if pc else ""
        return f"{line}: {message}" if line else message


class Kernel:
    """One kernel instantiation; call it as CuPy's RawKernel: kernel(grid, block, args)."""

    def __init__(self, module, index, name, parameter_names):
        self.module, self.name = module, name
        self._entry = ctypes.cast(getattr(module.library, f"emu_run_{index}"), ctypes.c_void_p)
        describe = getattr(module.library, f"emu_describe_{index}")
        text = ctypes.create_string_buffer(2048)
        count = describe(text, len(text))
        self.parameter_types = text.value.decode().split(",") if count else []
        if len(parameter_names) != len(self.parameter_types):
            parameter_names = [f"arg {i}" for i in range(len(self.parameter_types))]
        self.parameter_names = parameter_names

    @property
    def signature(self):
        return f"{self.name}({', '.join(self.parameter_types)})"

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if int(np.prod(block)) > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{self.name}: block: expected at most {MAX_THREADS_PER_BLOCK}"
                             f" threads, got {block}")
        if any(g > most for g, most in zip(grid, MAX_GRID)):
            raise ValueError(f"{self.name}: grid: expected at most {MAX_GRID}, got {grid}")
        if shared_mem:
            raise ValueError(f"{self.name}: shared_mem: dynamic shared memory is not emulated,"
                             f" got {shared_mem} bytes")
        params, buffers = self._check_arguments(args)
        self._launch(grid, block, params, buffers)

    def _check_arguments(self, args):
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: args: expected a tuple, got {type(args).__name__}")
        if len(args) != len(self.parameter_types):
            raise TypeError(f"{self.name}: expected {len(self.parameter_types)} arguments"
                            f" {self.signature}, got {len(args)}")
        params, buffers = [], []
        for i, (value, c_type, name) in enumerate(zip(args, self.parameter_types,
                                                      self.parameter_names)):
            what = f"{self.name}: argument {i} ({name}, {c_type})"
            if c_type.endswith("*"):
                pointee = c_type[:-1].removeprefix("const ")
                _check_array(value, C_SCALARS[pointee], what)
                params.append(value.ctypes.data)
                label = f"'{name}' (argument {i}, {c_type}, shape {value.shape})"
                buffers.append((value.ctypes.data, value.nbytes, not c_type.startswith("const "),
                                label, _allocation_start(value)))
            else:
                params.append(_scalar_bits(value, C_SCALARS[c_type], what))
        return params, buffers

    def _launch(self, grid, block, params, buffers):
        lib = runtime()
        seed, launch_number = _next_launch_seed()
        names = []                                                 # keeps the C strings alive
        spec = _LaunchSpec()
        spec.entry = self._entry.value
        spec.kernel = self.name.encode()
        spec.grid[:] = grid
        spec.block[:] = block
        spec.params = (ctypes.c_ulonglong * max(1, len(params)))(*params)
        spec.nparams = len(params)
        spec.buffers, spec.nbuffers = _regions(buffers, names), len(buffers)
        shared = [(lo, size, True, name, lo) for lo, size, name in self.module.shared]
        spec.shared, spec.nshared = _regions(shared, names), len(shared)
        spec.seed, spec.yield_one_in = seed, YIELD_ONE_IN
        sink = traffic.active_sink()
        spec.count_traffic = sink is not None
        if lib.emu_launch(ctypes.byref(spec)) != 0:
            message = self.module.describe_error(lib.emu_error_message().decode(),
                                                 lib.emu_error_pc())
            raise EmulatedKernelError(f"{message} [grid {grid}, block {block};"
                                      f" interleaving seed {_seed['base']}, launch {launch_number}]")
        if sink is not None:
            sink.append(traffic.read_launch(lib, self, grid, block, buffers, shared))


def _regions(items, names):
    """A C array of emu_region for [(address, size, writable, name, origin)]; `names` keeps
    the bytes."""
    array = (_Region * max(1, len(items)))()
    for slot, (lo, size, writable, name, origin) in zip(array, items):
        names.append(name.encode())
        slot.lo, slot.hi, slot.writable, slot.name = lo, lo + size, writable, names[-1]
        slot.origin = origin
    return array


def _allocation_start(array):
    """The address of the memory block `array` lies in (its own data, or the first base that
    owns memory). The counting mode counts 32-byte sectors from there, as a GPU does from an
    allocation's start (cudaMalloc and CuPy's pool align it to 256 bytes or more)."""
    owner = array
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    return owner.__array_interface__["data"][0]


def _dims(value, what):
    value = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(value) <= 3 or not all(isinstance(v, (int, np.integer)) and v >= 1
                                           for v in value):
        raise ValueError(f"{what}: expected 1 to 3 positive ints, got {value}")
    return tuple(int(v) for v in value) + (1,) * (3 - len(value))


def _check_array(value, dtype, what):
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what}: expected an array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{what}: expected an array of {dtype}, got {value.dtype}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{what}: expected a C-contiguous array (the kernel indexes flat"
                         f" memory), got strides {value.strides} for shape {value.shape}")


def _scalar_bits(value, dtype, what):
    """The argument's bytes in an 8-byte parameter slot, after checking its exact type."""
    if not isinstance(value, np.generic) or value.dtype != dtype:
        got = type(value).__name__ if not isinstance(value, np.generic) else f"np.{value.dtype}"
        raise TypeError(f"{what}: expected a numpy scalar of dtype {dtype} (CuPy passes an"
                        f" argument's bytes as they are), got {got}")
    raw = np.zeros(8, dtype=np.uint8)
    raw[:dtype.itemsize] = np.frombuffer(value.tobytes(), dtype=np.uint8)
    return int(raw.view(np.uint64)[0])


def _shared_name(symbol):
    """"'partials' (__shared__ in cross_entropy_forward<float>)" for a demangled static
    local 'cross_entropy_forward<float>(float const*, ...)::partials'."""
    match = re.match(r"(.*?)\(.*\)::(\w+)$", symbol)
    return f"'{match.group(2)}' (__shared__ in {match.group(1)})" if match else f"'{symbol}' (__shared__)"


def _parameter_names(code, name_expression):
    """The parameter names of the kernel in `code`, for messages ([] if not found)."""
    base = name_expression.split("<")[0]
    match = re.search(rf"__global__\s+void\s+{re.escape(base)}\s*\(([^)]*)\)", code)
    if not match:
        return []
    return [re.findall(r"\w+", p)[-1] for p in match.group(1).split(",") if p.strip()]
