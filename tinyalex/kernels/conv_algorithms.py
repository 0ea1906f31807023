"""Which algorithm computes a convolution: 'auto', 'gemm' or 'winograd' (like cuDNN's choice).

- 'gemm': im2col + one GEMM per group (tinyalex.kernels.numpy.conv). Any geometry.
- 'winograd': Winograd minimal filtering (Lavin & Gray 2016, "Fast Algorithms for
  Convolutional Neural Networks"), tinyalex.kernels.numpy.conv_winograd and
  docs/ops/conv2d_winograd.md. Square 3x3 or 5x5 kernels, stride 1, no dilation; any
  padding, groups, float32 and float64. Forward, input gradient and weight gradient all
  use it. Not bit-identical to 'gemm' (see the page's accuracy section).
- 'auto': `choose()` picks one per layer shape, by a fixed rule measured on the numba
  kernel set (nothing is timed at run time).

The choice is made per call (`conv2d(..., algorithm=)`), per module
(`nn.Conv2d(..., algorithm=)`), or, for calls and modules that leave it at None, globally
here: `set_conv_algorithm(name)` or, for a block, `with conv_algorithm(name):`. This is the
one place the global setting lives.

The switch is device-neutral: each kernel set lists what it implements in
CONV2D_ALGORITHMS. 'auto' chooses among those (the cupy set has only 'gemm', so 'auto'
means 'gemm' on a GPU); naming an algorithm a set lacks raises a ValueError that says so.
"""
import contextlib

ALGORITHMS = ("auto", "gemm", "winograd")
#: Kernel sizes (square) that 'winograd' handles, and its output tile m for each: F(m x m, r x r).
WINOGRAD_TILES = {3: 4, 5: 4}

_global = "auto"

def check_name(op, name):
    """`name` if it is one of ALGORITHMS, else a ValueError naming `op`."""
    if name not in ALGORITHMS:
        raise ValueError(f"{op}: algorithm: expected one of {ALGORITHMS}, got {name!r}")
    return name


def set_conv_algorithm(name):
    """Set the algorithm of every conv2d call and Conv2d module whose algorithm is None."""
    global _global
    _global = check_name("set_conv_algorithm", name)


def get_conv_algorithm():
    """The global conv algorithm ('auto' unless set_conv_algorithm changed it)."""
    return _global


@contextlib.contextmanager
def conv_algorithm(name):
    """`with conv_algorithm('gemm'):` sets the global algorithm inside the block only."""
    previous = get_conv_algorithm()
    set_conv_algorithm(name)
    try:
        yield
    finally:
        set_conv_algorithm(previous)


def winograd_refusal(kernel_size, stride, dilation):
    """Why 'winograd' cannot run this geometry (a sentence), or None if it can."""
    kh, kw = kernel_size
    if tuple(stride) != (1, 1):
        return f"needs stride 1, got stride {tuple(stride)}"
    if tuple(dilation) != (1, 1):
        return f"needs dilation 1, got dilation {tuple(dilation)}"
    if kh != kw or kh not in WINOGRAD_TILES:
        return (f"supports square kernels of size {sorted(WINOGRAD_TILES)}, got kernel size"
                f" {(kh, kw)}")
    return None


def choose(weight_shape, stride, dilation, groups, out_size, available=ALGORITHMS):
    """The 'auto' rule: 'winograd' where it was measured faster, else 'gemm'.

    Narrow layers lose (the transforms cost as much as the GEMMs they shrink), as do tiny
    planes (the last tiles are mostly padding). Hence: at least MIN_CHANNELS input and
    output channels per group, and outputs of at least MIN_OUTPUT pixels a side. The
    measurements behind the two thresholds are in benchmarks/results/cpu_design_notes.md.
    """
    OC, Cg, kh, kw = weight_shape
    if "winograd" not in available or winograd_refusal((kh, kw), stride, dilation):
        return "gemm"
    wide = min(Cg, OC // groups) >= MIN_CHANNELS and min(out_size) >= MIN_OUTPUT
    return "winograd" if wide else "gemm"


MIN_CHANNELS = 64
MIN_OUTPUT = 6


def resolve(op, requested, weight_shape, stride, dilation, groups, out_size, available,
            kernel_set):
    """The concrete algorithm ('gemm' or 'winograd') for one call.

    requested None means the global setting. An explicit algorithm the kernel set lacks,
    or 'winograd' on a geometry it cannot do, is refused with a ValueError naming why.
    """
    name = check_name(op, get_conv_algorithm() if requested is None else requested)
    if name == "auto":
        return choose(weight_shape, stride, dilation, groups, out_size, available)
    if name not in available:
        raise ValueError(f"{op}: algorithm={name!r} is not available in the {kernel_set!r}"
                         f" kernel set (it has {tuple(available)}); use 'auto' or 'gemm'")
    if name == "winograd":
        reason = winograd_refusal(weight_shape[2:], stride, dilation)
        if reason:
            raise ValueError(f"{op}: algorithm='winograd' {reason}; use 'gemm' or 'auto'")
    return name
