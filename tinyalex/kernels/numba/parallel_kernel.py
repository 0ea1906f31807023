"""@parallel_kernel: a prange kernel compiled two ways from one Python function.

Numba takes about three times as long to compile a function with `parallel=True` as the
same function without it: the loop body becomes a gufunc, and its machine code is
generated again for each wrapper around it (benchmarks/results/coldstart.md). On a first
run, with an empty cache, that is most of the wait. So every prange kernel of this set has
two compiled versions of the same code:

- `parallel`: `njit(parallel=True, cache=True)`, what a call runs;
- `serial`: `njit(cache=True)` (prange runs as range), cheap to compile. A first run
  starts on it while the parallel version compiles in another process
  (tinyalex/kernels/numba/precompile.py), and a one-core machine never needs more.

Both give the same bits: every prange iteration writes its own outputs and does the same
arithmetic whichever thread runs it, in the same order (no float atomics, no reduction
across iterations). tests/kernels/test_numba_pool.py checks it kernel by kernel.
"""
import functools
import types

from numba import njit


class ParallelKernel:
    """A prange kernel: `run` (the parallel version unless switched) is what a call runs."""

    def __init__(self, function, **options):
        functools.update_wrapper(self, function)
        self.parallel = njit(function, parallel=True, cache=True, **options)
        # Numba names its cache files after the qualified name, and its cache key leaves out
        # the parallel option: under the same name, the serial version would load the
        # parallel one's machine code, or overwrite it.
        self.serial = njit(copy_function(function, "_serial"), cache=True, **options)
        self.run = self.parallel

    def __call__(self, *args):
        return self.run(*args)

    def __repr__(self):
        return f"<parallel kernel {self.__module__}.{self.__qualname__}>"


def parallel_kernel(function=None, **options):
    """`@parallel_kernel` or `@parallel_kernel(fastmath=...)`: Numba's options except parallel
    and cache, which are set (see the module docstring)."""
    if function is None:
        return lambda f: ParallelKernel(f, **options)
    return ParallelKernel(function, **options)


def copy_function(function, suffix, **names):
    """`function`'s code under the qualified name + suffix, its globals updated with `names`
    (the names it finds in its module unless given here)."""
    copy = types.FunctionType(function.__code__, {**function.__globals__, **names},
                              function.__name__ + suffix, function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__ + suffix
    copy.__module__, copy.__doc__ = function.__module__, function.__doc__
    return copy
