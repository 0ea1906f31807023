"""A CUDA emulator for tests: kernels/*.cu run on the CPU, with their real launchers.

- emulator.h   CUDA's device-side vocabulary for g++ (force-included, the .cu is unchanged)
- runtime.cc   one fiber per CUDA thread, barriers, warp shuffles, and the memory checks
               (bounds, races, uninitialised shared memory) behind every load and store
- build.py     compiles the runtime and each kernel module with g++, cached on disk
- emulator.py  Module / Kernel: exact argument-type checks, launches, EmulatedKernelError
- fake_cupy.py a minimal CuPy stand-in on top of it, so tinyalex/kernels/cupy/*.py run as they are
- traffic.py   the counting mode (opt-in): global sectors per warp-level request, shared-memory
               bank conflicts, and the distinct sectors each array moved

docs/cuda-emulator.md says what it proves and what only a GPU run proves.
"""
from .build import EmulatorBuildError, compiler_missing_reason
from .emulator import EmulatedKernelError, access_count, compile_module, set_seed
from .traffic import count_traffic

__all__ = ["EmulatedKernelError", "EmulatorBuildError", "access_count", "compile_module",
           "compiler_missing_reason", "count_traffic", "set_seed"]
