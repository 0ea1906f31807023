"""@parallel_kernel: a kernel whose loop Numba's threads share, compiled once per float type.

Every parallel kernel of this set is one loop over independent iterations (elements, image
rows, planes, GEMM tasks), each writing its own outputs. It is written as a Python function
that does one part of that loop,

    @parallel_kernel("{f}[::1], {f}[::1]")      # the kernel's arguments; {f}: the float type
    def _relu_forward(x, y, part, parts, done):
        first, last = part_range(x.size, part, parts)
        ...

and `parallel_kernel` compiles it as a NumPy generalized ufunc on Numba's 'parallel' target.
The ufunc's loop runs over the parts 0 .. parts-1 and Numba's thread pool shares them out;
a call cuts the loop into as many parts as the pool has threads (NUMBA_NUM_THREADS), so each
thread takes one contiguous share of the iterations, as a prange loop's static schedule
does (with numba.set_num_threads(k) the k threads share the parts out). The kernel's
arrays are ufunc inputs without a loop dimension, so every part sees them whole, and the
kernel writes its outputs into them in place (NumPy passes an input by pointer when its dtype and layout
match the signature, which __call__ checks, so no copy is ever written instead). `done` is
the ufunc's output, which a ufunc must have; the kernels leave it alone. A loop over
elements slices its arrays to its share and counts from 0 (`x[first:last]`): indices
Numba knows are not negative need no wraparound test, and the loop vectorises.

Why not `njit(parallel=True)` and prange? Numba compiles a prange loop's body again as a
gufunc of its own and generates its machine code more than once: 3 to 4 times a plain
compile, 15.8 CPU seconds for the quick start's 22 kernels, most of a first run's wait
(benchmarks/results/coldstart.md). This ufunc compiles once and runs as fast; two details
make it so:

- _Builder: Numba's own threaded loop around a 'parallel' gufunc links the compiled
  kernel's code into itself and compiles it all again in every process, even when the
  kernel comes from the disk cache (Numba issue 8085): 0.1 s a kernel, 2.4 s before every
  run's first batch. _Builder's loop calls the cached kernel by its address instead.
- The kernel is compiled with LLVM's `noalias` on its array arguments, as Numba compiles
  a prange loop's body: its arrays never overlap (every caller passes distinct buffers),
  and without the promise LLVM keeps loads it could have hoisted (im2col and the LRN
  backward ran 10-20% slower).

The results do not depend on the thread count: an iteration does the same arithmetic in
the same order whichever part it falls in (no float atomics, no reduction across
iterations); tests/kernels/test_numba_pool.py checks every kernel cut into 1, 2, 3 and 7
parts. _Builder uses Numba internals (numba.np.ufunc), hence the upper bound on numba in
pyproject.toml.
"""
import functools
import itertools
import types

import llvmlite.ir as llvm_ir
import numba
import numpy as np
from numba import njit
from numba import types as nbtypes
from numba.core import cgutils, sigutils
from numba.np.numpy_support import as_dtype
from numba.np.ufunc.parallel import ParallelGUFuncBuilder, _launch_threads
from numba.np.ufunc.ufuncbuilder import build_gufunc_wrapper

#: The ufunc's arguments after the kernel's: the part, how many parts, and the output `done`.
_PART_TYPES = (nbtypes.int64, nbtypes.int64, nbtypes.int64[:])


@njit(cache=True)
def part_range(count, part, parts):
    """(first, last): iterations [first, last) of a loop of `count` are part `part` of `parts`."""
    return part * count // parts, (part + 1) * count // parts


class ParallelKernel:
    """A kernel of this set (module docstring): call it with its arguments, without the part ones.

    signature: Numba's notation for the arguments, {f} standing for the float type; the
    float type of a call is its first argument's dtype. The ufunc for a float type is built
    (compiled, or loaded from Numba's disk cache) on first use or by build().
    """

    def __init__(self, function, signature, **options):
        functools.update_wrapper(self, function)
        self.function, self.signature, self.options = function, signature, options
        self._arguments = {}    # dtype name -> the Numba types of the arguments
        self._calls = {}        # numpy dtype -> (ufunc, argument count, the array arguments)

    def arguments(self, dtype):
        """The Numba types of the kernel's arguments for float type `dtype`."""
        dtype = np.dtype(dtype).name
        if dtype not in self._arguments:
            self._arguments[dtype] = sigutils.normalize_signature(self.signature.format(f=dtype))[0]
        return self._arguments[dtype]

    def ufunc_signature(self, dtype):
        """The Numba signature of the ufunc for `dtype`: the kernel's arguments, then the part's."""
        return nbtypes.void(*self.arguments(dtype), *_PART_TYPES)

    def build(self, dtype):
        """The ufunc for float type `dtype`: Numba loads it from its disk cache or compiles it."""
        return self._call(dtype)[0]

    def compile(self, dtype, cache=True):
        """A new ufunc for float type `dtype` (with cache=False compiled whatever the disk
        cache holds: benchmarks/bench_coldstart.py times it)."""
        arguments = self.arguments(dtype)
        cores = ",".join(f"({','.join(f'd{i}_{k}' for k in range(a.ndim))})"
                         if isinstance(a, nbtypes.Array) else "()" for i, a in enumerate(arguments))
        builder = _Builder(self.function, f"{cores},(),()->()", cache=cache, targetoptions=dict(self.options))
        builder.add(self.ufunc_signature(dtype))
        return builder.build_ufunc()

    def built(self, dtype):
        """Whether this process has the ufunc for `dtype`."""
        return np.dtype(dtype) in self._calls

    def cached(self, dtype):
        """Whether Numba's disk cache holds the compiled kernel for `dtype` (so build() only
        loads it). Numba's internals: a Numba that changes them gives False, which costs time
        (a compile), not correctness."""
        if self.built(dtype):
            return True
        try:
            from numba.core.caching import FunctionCache
            from numba.core.registry import cpu_target
            cache = FunctionCache(self.function)
            return cache.load_overload(self.ufunc_signature(dtype), cpu_target.target_context) is not None
        except Exception:                                    # noqa: BLE001 (internals changed)
            return False

    def __call__(self, *args):
        ufunc, count, arrays = self._calls.get(args[0].dtype) or self._call(args[0].dtype)
        if len(args) != count:
            raise TypeError(f"{self.__qualname__}: expected {count} arguments, got {len(args)}")
        for index, dtype, ndim in arrays:     # the common case in as few steps as can be
            arg = args[index]
            if not (type(arg) is np.ndarray and arg.dtype is dtype and arg.ndim == ndim
                    and arg.flags.carray):              # C-contiguous, aligned (and writeable)
                self._check_argument(index, arg, dtype, ndim)
        with np.errstate(all="ignore"):     # NumPy would warn of the float flags a kernel leaves set
            ufunc(*args, *_parts())

    def _check_argument(self, index, arg, dtype, ndim):
        """Raise unless `arg` is a C-contiguous, aligned `dtype` array of `ndim` dimensions."""
        if not (isinstance(arg, np.ndarray) and arg.dtype == dtype and arg.ndim == ndim
                and arg.flags.c_contiguous and arg.flags.aligned):
            got = (f"{arg.dtype} array of shape {arg.shape}, strides {arg.strides}"
                   + ("" if arg.flags.aligned else ", not aligned")
                   if isinstance(arg, np.ndarray) else type(arg).__name__)
            raise TypeError(f"{self.__qualname__}: argument {index} expected a C-contiguous"
                            f" {dtype} array with {ndim} dimensions, got {got}")

    def _call(self, dtype):
        """(ufunc, argument count, (index, dtype, ndim) of each array argument) for `dtype`,
        built on first use: what a call checks its arguments against (they are read as the
        signature says, so anything else would be read wrongly, or written into a copy NumPy
        made)."""
        dtype = np.dtype(dtype)
        if dtype not in self._calls:
            arguments = self.arguments(dtype)
            arrays = tuple((index, np.dtype(a.dtype.name), a.ndim) for index, a in enumerate(arguments)
                           if isinstance(a, nbtypes.Array))
            self._calls[dtype] = (self.compile(dtype), len(arguments), arrays)
        return self._calls[dtype]

    def __repr__(self):
        return f"<parallel kernel {self.__module__}.{self.__qualname__}>"


class _Builder(ParallelGUFuncBuilder):
    """Numba's builder of a 'parallel' gufunc with two changes (the module docstring): the
    kernel is compiled with `noalias`, and the threaded loop around it calls it by address."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        compile_core = self.nb_func._compile_core

        def compile_without_aliases(signature, flags, locals):
            flags.noalias = True            # as Numba's prange loops get: see the module docstring
            return compile_core(signature, flags, locals)
        self.nb_func._compile_core = compile_without_aliases

    def build(self, cres):
        _launch_threads()                       # registers numba_parallel_for and get_num_threads
        inner = build_gufunc_wrapper(self.py_func, cres, self.sin, self.sout, cache=self.cache,
                                     is_parfors=False)
        dimensions = len({name for term in self.sin + self.sout for name in term})
        library, address = _threaded_loop(cres.target_context,
                                          inner.library.get_pointer_to_function(inner.name),
                                          dimensions, len(cres.signature.args))
        _LIBRARIES.extend((inner.library, library))   # their machine code must outlive the ufunc
        dtypes = [as_dtype(a.dtype if isinstance(a, nbtypes.Array) else a).num for a in cres.signature.args]
        return dtypes, address, inner.env


#: The code libraries the ufuncs' loops run in: kept for the life of the process.
_LIBRARIES = []
_loop_names = itertools.count()


def _threaded_loop(context, inner, dimensions, arrays):
    """(library, address) of a NumPy ufunc loop, loop(args, dimensions, steps, data), that
    releases the GIL and has Numba's thread pool (numba_parallel_for) run the ufunc loop at
    address `inner` over shares of the outer dimension, numba.get_num_threads() threads."""
    byte_pointer = llvm_ir.IntType(8).as_pointer()
    intp = context.get_value_type(nbtypes.intp)
    loop_type = llvm_ir.FunctionType(llvm_ir.VoidType(), [byte_pointer.as_pointer(), intp.as_pointer(),
                                                          intp.as_pointer(), byte_pointer])
    name = f"tinyalex_threaded_loop_{next(_loop_names)}"
    library = context.codegen().create_library(name)
    module = library.create_ir_module(name)
    loop = llvm_ir.Function(module, loop_type, name=name)
    builder = llvm_ir.IRBuilder(loop.append_basic_block())
    python = context.get_python_api(builder)
    gil = python.gil_ensure()
    thread = python.save_thread()
    parallel_for_type = llvm_ir.FunctionType(llvm_ir.VoidType(), [byte_pointer] * 5 + [intp] * 3)
    parallel_for = cgutils.get_or_insert_function(module, parallel_for_type, "numba_parallel_for")
    get_num_threads = cgutils.get_or_insert_function(
        module, llvm_ir.FunctionType(llvm_ir.IntType(nbtypes.intp.bitwidth), []), "get_num_threads")
    builder.call(parallel_for, [llvm_ir.Constant(intp, inner).inttoptr(byte_pointer)]
                 + [builder.bitcast(a, byte_pointer) for a in loop.args]
                 + [intp(dimensions), intp(arrays), builder.call(get_num_threads, [])])
    python.restore_thread(thread)
    python.gil_release(gil)
    builder.ret_void()
    library.add_ir_module(module)
    return library, library.get_pointer_to_function(name)


def parts_per_call():
    """Into how many parts a call cuts its loop: one per thread of Numba's pool
    (NUMBA_NUM_THREADS). The loop hands them to numba.get_num_threads() threads, which may
    be fewer (numba.set_num_threads): a thread then takes several parts. Read once; the
    results do not depend on it."""
    return numba.config.NUMBA_NUM_THREADS


@functools.lru_cache(maxsize=1)
def _parts_for(parts):
    indices = np.arange(parts, dtype=np.int64)
    indices.flags.writeable = False
    return indices, parts


def _parts():
    """The ufunc's part arguments: the indices 0 .. parts-1 and their count."""
    return _parts_for(parts_per_call())


def parallel_kernel(signature, **options):
    """`@parallel_kernel("{f}[::1], ...", fastmath=...)`: the module docstring; `options` are
    Numba's (guvectorize's) but target and cache, which are set."""
    return lambda function: ParallelKernel(function, signature, **options)


def copy_function(function, suffix, **names):
    """`function`'s code under the qualified name + suffix, its globals updated with `names`
    (the names it finds in its module unless given here)."""
    copy = types.FunctionType(function.__code__, {**function.__globals__, **names},
                              function.__name__ + suffix, function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__ + suffix
    copy.__module__, copy.__doc__ = function.__module__, function.__doc__
    return copy
