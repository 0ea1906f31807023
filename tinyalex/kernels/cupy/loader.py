"""Where the CUDA C comes from, how it is compiled, how it is launched, and cuBLAS's mode.

Sources. The kernels are CUDA C++ in ``kernels/*.cu``, one file per op family, each
kernel a template on T = float or double. An installed wheel carries them as package data
in ``tinyalex/kernels/cupy/sources/``; a source checkout has them in the repository's top-level
``kernels/``. :func:`kernels_dir` looks in that order.

Compilation. :func:`get_kernel` compiles a whole file the first time one of its kernels
is asked for: ``cupy.RawModule(code=..., options=("-std=c++17",), name_expressions=[...])``
runs NVRTC at run time for the GPU in use, instantiating ``name<float>`` and
``name<double>`` for every kernel listed in :data:`KERNEL_FILES`. The module is cached in
memory per (device id, file). CuPy also caches the compiled binary on disk, keyed by the
source text and the options, under ``$CUPY_CACHE_DIR`` (default ``~/.cupy/kernel_cache``),
so only the first run on a machine pays for NVRTC; warm up before timing either way
(docs/pitfalls.md#compile-cost). CuPy compiles with ``-ftz=true``: float32 subnormals flush to zero on the
GPU, a difference from the CPU sets only for values below 1.2e-38.

Launch geometry (see each file's header). Most kernels are 1-D grid-stride loops over
their elements: :func:`launch_1d` uses :data:`BLOCK` threads per block and at most
:data:`MAX_BLOCKS` blocks, and the loop covers whatever the grid does not. The kernels
that stage their inputs in shared memory loop over tiles instead, one block per tile:
:func:`launch_tiles`, with the tile's sizes read from the source's ``inline constexpr int``
constants by :func:`constant`, so the .cu file is the one place they are written.

cuBLAS. :func:`matmul` is the one place that picks the compute type of float32 GEMMs:
strict fp32 by default, TF32 tensor cores with ``TINYALEX_TF32=1`` (docs/pitfalls.md#fair-cudnn).
"""
import os
import re
from pathlib import Path

import numpy as np

import tinyalex
from tinyalex.device import cupy_module

#: file in kernels/ -> the kernels it defines, each a template on T (float, double).
KERNEL_FILES = {
    "im2col.cu": ("im2col", "col2im"),
    "pool.cu": ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
                "avg_pool2d_backward"),
    "lrn.cu": ("lrn_forward", "lrn_backward"),
    "relu.cu": ("relu_forward", "relu_backward"),
    "dropout.cu": ("dropout",),
    "cross_entropy.cu": ("cross_entropy_forward", "cross_entropy_backward",
                         "soft_cross_entropy_forward", "soft_cross_entropy_backward"),
    "sgd.cu": ("sgd_update",),
}

#: numpy dtype -> the C++ type the kernel templates are instantiated with.
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

#: Threads per block of the 1-D launches, and the largest grid they use.
BLOCK = 256
MAX_BLOCKS = 2**20

COMPILE_OPTIONS = ("-std=c++17",)

_modules = {}  # (device id, file) -> (cupy.RawModule, its inline constexpr ints)


def cupy():
    """The cupy module, or RuntimeError saying why CUDA cannot be used (tinyalex.device)."""
    return cupy_module()


def kernels_dir():
    """The folder holding the .cu sources: the installed package's, else the repository's."""
    candidates = (Path(__file__).resolve().parent / "sources",
                  Path(tinyalex.__file__).resolve().parent.parent / "kernels")
    for folder in candidates:
        if (folder / "im2col.cu").is_file():
            return folder
    raise FileNotFoundError("tinyalex's CUDA sources were not found in "
                            + " or ".join(str(c) for c in candidates))


def source(file):
    """The CUDA C source text of kernels/`file`, each ``#include "name.cuh"`` line replaced by
    that header's text between #line directives (errors still name the header's lines): one
    self-contained text for NVRTC, whose cache key then covers the headers too."""
    _check_file(file)
    folder = kernels_dir()
    text = (folder / file).read_text(encoding="utf-8")

    def inline(match):
        line = text.count("\n", 0, match.start()) + 1
        header = (folder / match.group(1)).read_text(encoding="utf-8")
        return f'#line 1 "{match.group(1)}"\n{header}#line {line + 1} "{file}"'
    return _INCLUDE.sub(inline, text)


_INCLUDE = re.compile(r'^#include "(\w+\.cuh)"$', re.MULTILINE)


def name_expressions(file):
    """The template instantiations compiled for `file`: name<float> and name<double> of each kernel."""
    _check_file(file)
    return [f"{name}<{c_type}>" for name in KERNEL_FILES[file] for c_type in C_TYPES.values()]


def get_kernel(file, name, dtype):
    """The compiled kernel name<float> or name<double> of kernels/`file`, for `dtype`.

    Compiles the file on first use on the current device; later calls are dict lookups.
    """
    _check_file(file)
    if name not in KERNEL_FILES[file]:
        raise ValueError(f"name: expected one of {KERNEL_FILES[file]} (the kernels of {file}),"
                         f" got {name!r}")
    dtype = np.dtype(dtype)
    if dtype not in C_TYPES:
        raise TypeError(f"dtype: the CUDA kernels are compiled for float32 and float64,"
                        f" got {dtype}")
    return _compiled(file)[0].get_function(f"{name}<{C_TYPES[dtype]}>")


def constant(file, name):
    """The value of ``inline constexpr int name = <integer>;`` in kernels/`file` (a tile size),
    read from the text the file's module was compiled from, so the two always agree."""
    _check_file(file)
    constants = _compiled(file)[1]
    if name not in constants:
        raise ValueError(f"name: expected an 'inline constexpr int {name} = <integer>;' in {file},"
                         f" found only {sorted(constants)}")
    return constants[name]


def _compiled(file):
    """(cupy.RawModule, {inline constexpr int name: value}) of kernels/`file` on the current device."""
    cp = cupy()
    key = (cp.cuda.Device().id, file)
    compiled = _modules.get(key)
    if compiled is None:
        text = source(file)
        module = cp.RawModule(code=text, options=COMPILE_OPTIONS,
                              name_expressions=name_expressions(file))
        constants = {name: int(value) for name, value in _CONSTEXPR_INT.findall(text)}
        compiled = _modules[key] = (module, constants)
    return compiled


_CONSTEXPR_INT = re.compile(r"^inline constexpr int (\w+) = (\d+);", re.MULTILINE)


def launch_1d(kernel, total, args):
    """Run a grid-stride kernel over `total` items: BLOCK threads per block, at most MAX_BLOCKS.

    `args` must match the kernel's C signature exactly: arrays for pointers, and numpy
    scalars of the exact C type (np.int32 for int, np.int64 for long long, the array's
    dtype for T), because CuPy passes each argument's bytes as they are.
    """
    if total <= 0:
        return
    blocks = min(-(-total // BLOCK), MAX_BLOCKS)
    kernel((blocks,), (BLOCK,), args)


def launch_tiles(kernel, tiles, block, args):
    """Run a kernel whose blocks loop over `tiles` tiles (tile = blockIdx.x, += gridDim.x):
    one block of shape `block` per tile, at most MAX_BLOCKS. `args` as for launch_1d."""
    if tiles <= 0:
        return
    kernel((min(tiles, MAX_BLOCKS),), tuple(block), args)


def tf32_enabled():
    """True when TINYALEX_TF32=1: float32 GEMMs may run on TF32 tensor cores."""
    value = os.environ.get("TINYALEX_TF32", "0") or "0"
    if value not in ("0", "1"):
        raise ValueError(f"TINYALEX_TF32: expected '0' or '1', got {value!r}")
    return value == "1"


def matmul(a, b, out=None):
    """a @ b for 2-D a and b on cuBLAS, in strict fp32 unless TINYALEX_TF32=1.

    CuPy chooses the cuBLAS compute type per dtype through cupy._core.set_compute_type;
    left alone, it reads CUPY_TF32 once, at the process's first float32 GEMM. tinyalex
    sets the float32 compute type before each of its GEMMs instead, so that TINYALEX_TF32
    alone decides (and may change between calls, as the benchmark does):
    COMPUTE_TYPE_DEFAULT is CUBLAS_COMPUTE_32F, COMPUTE_TYPE_TF32 is
    CUBLAS_COMPUTE_32F_FAST_TF32 (GPUs of compute capability 8.0 and up; CuPy warns and
    keeps fp32 on older ones). The setting is CuPy's, process-wide: other float32
    matmuls in the same program see it too. float64 GEMMs are always strict.

    Only 2-D operands: CuPy's 2-D path (cublasGemmEx) honours the compute type and takes
    a transposed view (a.T) as a transpose flag, without a copy, while its batched 3-D
    path ignores the compute type and copies non-contiguous operands. `out`, if given,
    must be C-contiguous.
    """
    cp = cupy()
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul: expected 2-D operands, got shapes {a.shape} and {b.shape}")
    if a.dtype == np.float32 or b.dtype == np.float32:
        from cupy._core import _routines_linalg as linalg
        compute_type = linalg.COMPUTE_TYPE_TF32 if tf32_enabled() else linalg.COMPUTE_TYPE_DEFAULT
        if cp._core.get_compute_type(np.float32) != compute_type:
            cp._core.set_compute_type(np.float32, compute_type)
    return cp.matmul(a, b, out=out)


def _check_file(file):
    if file not in KERNEL_FILES:
        raise ValueError(f"file: expected one of {tuple(KERNEL_FILES)}, got {file!r}")
