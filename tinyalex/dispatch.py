"""Kernel dispatch: picks the kernel set that runs an op.

tinyalex has three kernel sets with one interface:

- ``numpy``  (``tinyalex.reference``): the readable reference, the oracle the tests trust;
- ``numba``  (``tinyalex.cpu``): parallel ``@njit`` kernels plus BLAS, the CPU default;
- ``cupy``   (``tinyalex.cuda``): CUDA C kernels from ``kernels/*.cu`` plus cuBLAS.

The device of the array decides between CPU and GPU; on the CPU, ``TINYALEX_CPU``
(``numpy`` or ``numba``) or the context manager :func:`use_kernels` decides which set.

Every set exposes the functions named in :data:`KERNEL_API`, with the same signatures.
``cache`` objects are private to the set that made them: only that set's backward reads
them. All arrays are NCHW and C-contiguous; float kernels work in float32 and float64.
"""
import contextlib
import importlib
import os

from .device import device_of

#: name -> signature and contract of every kernel each set must provide.
KERNEL_API = {
    "im2col": "im2col(x, kernel_size, stride, padding, dilation=(1, 1)) -> cols. x (N,C,H,W);"
              " pairs (kh,kw), (sh,sw), (ph,pw), (dh,dw); cols (N, C*kh*kw, OH*OW), row"
              " c*kh*kw + i*kw + j, column oh*OW + ow, holding x_pad[n, c, oh*sh + i*dh,"
              " ow*sw + j*dw]; zero padding; OH = (H + 2*ph - dh*(kh-1) - 1) // sh + 1.",
    "col2im": "col2im(cols, x_shape, kernel_size, stride, padding, dilation=(1, 1)) -> x. The"
              " adjoint of im2col: overlapping windows add.",
    "conv2d_forward": "conv2d_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1),"
                      " algorithm='gemm') -> (y, cache). weight (OC, C/groups, kh, kw), bias"
                      " (OC,) or None; y (N,OC,OH,OW); symmetric padding (the functional layer"
                      " pads 'same' asymmetrically in front). algorithm: one of the set's"
                      " CONV2D_ALGORITHMS ('gemm', and 'winograd' where implemented: stride 1,"
                      " no dilation, square 3x3/5x5); anything else is a ValueError. 'auto' is"
                      " resolved before the call (tinyalex.conv_algorithms.resolve).",
    "conv2d_backward": "conv2d_backward(gy, cache, need_gx=True) -> (gx or None, gW, gb or None).",
    "matmul": "matmul(a, b) -> a @ b. 2-D float arrays of one dtype (transposed views such as"
              " W.T allowed): the linear layer's GEMMs, on the set's own thread pool.",
    "max_pool2d_forward": "max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False)"
                          " -> (y, cache). -inf padding (at most half the kernel); OH floor"
                          " (H + 2*ph - kh) // sh + 1, or with ceil_mode torch's ceil size"
                          " (tinyalex.shapes.pool_output_size). The argmax is the first maximum"
                          " among the window's real pixels in row-major order (never padding),"
                          " the last NaN in a window holding NaN.",
    "max_pool2d_backward": "max_pool2d_backward(gy, cache) -> gx.",
    "max_pool2d_indices": "max_pool2d_indices(cache) -> indices (N, C, OH, OW) int64: each"
                          " window's argmax as h*W + w in its input plane (torch's"
                          " return_indices).",
    "avg_pool2d_forward": "avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False,"
                          " count_include_pad=True, divisor_override=None) -> (y, cache). Zero"
                          " padding; OH as for max_pool2d_forward; y = window sum / divisor,"
                          " torch's divisor per window (tinyalex.shapes.avg_pool_divisors).",
    "avg_pool2d_backward": "avg_pool2d_backward(gy, cache) -> gx: each window sends gy / divisor"
                           " to every pixel it covers.",
    "lrn_forward": "lrn_forward(x, size, alpha, beta, k) -> (y, cache). PyTorch convention:"
                   " y = x / (k + alpha/size * sum_{c' in [c - size//2, c + (size-1)//2]}"
                   " x_{c'}^2)^beta.",
    "lrn_backward": "lrn_backward(gy, cache) -> gx.",
    "relu_forward": "relu_forward(x) -> (y, cache).",
    "relu_backward": "relu_backward(gy, cache) -> gx.",
    "dropout_forward": "dropout_forward(x, p, seed, offset=0) -> (y, cache). keep[i] ="
                       " uniform(seed, offset + i) >= p with uniform from"
                       " tinyalex.dispatch.counter_uniform (the same bits on every set); y = x *"
                       " keep / (1 - p). offset: the flat index of x's first element in the"
                       " whole batch, so a data-parallel rank holding rows [r0, r1) of it draws"
                       " the rows' masks of the one-process run (tinyalex.distributed).",
    "dropout_backward": "dropout_backward(gy, cache) -> gx.",
    "cross_entropy_forward": "cross_entropy_forward(logits, target, reduction, weight=None,"
                             " ignore_index=-100, label_smoothing=0.0) -> (loss, cache)."
                             " logits (N,C) float; target (N,) int64 in [0,C) or == ignore_index"
                             " (a row that counts for nothing), or (N,C) class probabilities of"
                             " the logits' dtype; weight (C,) or None. loss_n = sum_c q_nc"
                             " (lse_n - logits_nc) with torch's target distribution q; 'mean'"
                             " divides by the kept targets' weights (N for probabilities),"
                             " 0/0 = nan; reduction 'mean'|'sum' gives shape (), 'none' (N,).",
    "cross_entropy_backward": "cross_entropy_backward(gloss, cache) -> glogits (N,C).",
    "mse_loss_forward": "mse_loss_forward(input, target, reduction) -> (loss, cache). input and"
                        " target of one shape and float dtype; loss = reduce((input - target)^2),"
                        " reduction 'mean'|'sum' gives shape (), 'none' the input's shape.",
    "mse_loss_backward": "mse_loss_backward(gloss, cache) -> ginput (the target's gradient is"
                         " -ginput).",
}

KERNEL_SETS = {"numpy": "tinyalex.reference", "numba": "tinyalex.cpu", "cupy": "tinyalex.cuda"}
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


# --- the counter-based RNG shared by every kernel set (dropout) -------------------------
# splitmix64 of (seed + (i + 1) * golden), top 24 bits as a float in [0, 1). Being a pure
# function of (seed, i), every set and every thread draws the same mask for the same seed.
SPLITMIX_GOLDEN = 0x9E3779B97F4A7C15
SPLITMIX_MUL1 = 0xBF58476D1CE4E5B9
SPLITMIX_MUL2 = 0x94D049BB133111EB


def counter_uniform(seed, count, xp=None, offset=0):
    """uniform(seed, i) for i in range(offset, offset + count), as float64 in [0, 1), 24 bits
    of resolution."""
    import numpy as np
    xp = xp or np
    index = xp.arange(count, dtype=xp.uint64) + xp.uint64(offset)
    z = xp.uint64(seed) + (index + xp.uint64(1)) * xp.uint64(SPLITMIX_GOLDEN)
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(SPLITMIX_MUL1)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(SPLITMIX_MUL2)
    z = z ^ (z >> xp.uint64(31))
    return (z >> xp.uint64(40)).astype(xp.float64) * (1.0 / (1 << 24))
