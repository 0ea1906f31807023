"""Local response normalisation across channels on the GPU (kernels/lrn.cu); AlexNet
paper section 3.3.

PyTorch's convention, as tinyalex.kernels.numpy.lrn (which documents the mapping from the
paper's constants: the paper's k=2, n=5, alpha=1e-4, beta=0.75 is size=5, alpha=5e-4 here):

    s_c = k + alpha/size * sum_{c' in [c - size//2, c + (size-1)//2] ∩ [0, C)} x_{c'}^2
    y_c = x_c * s_c^(-beta)
"""
from tinyalex.shapes import same_dtype, same_shape
from tinyalex.kernels.cupy._checks import float_array, i32
from tinyalex.kernels.cupy.loader import constant, cupy, get_kernel, launch_tiles


def _launch(name, x, args):
    """Run lrn.cu's `name` over x's tiles (LRN_PIXELS pixels x LRN_CHANNELS channels of one
    sample), one block of (LRN_PIXELS, LRN_ROWS) threads per tile."""
    N, C, H, W = x.shape
    kernel = get_kernel("lrn.cu", name, x.dtype)
    pixels, channels = constant("lrn.cu", "LRN_PIXELS"), constant("lrn.cu", "LRN_CHANNELS")
    tiles = N * -(-C // channels) * -(-(H * W) // pixels)
    launch_tiles(kernel, tiles, (pixels, constant("lrn.cu", "LRN_ROWS")), args)


def lrn_forward(x, size, alpha, beta, k):
    """y_c = x_c * (k + alpha/size * sum_{c' in window(c)} x_{c'}^2)^(-beta)

    Shapes: x (N, C, H, W) -> y (N, C, H, W), same dtype.
    Saved for backward: x, y and s (the base of the denominator), plus the constants. With
    y saved, the backward's window sum needs gy_c * y_c / s_c = gy_c x_c s_c^(-beta-1)
    and no pow per term; y is the layer's output, so keeping it costs no extra memory
    while the next layer holds it too.
    """
    # x (N, C, H, W) -> y (N, C, H, W)
    cp = cupy()
    x = float_array(x, "x", 4)
    if int(size) != size or size < 1:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    size = int(size)
    N, C, H, W = x.shape
    y = cp.empty_like(x)
    s = cp.empty_like(x)
    T = x.dtype.type
    _launch("lrn_forward", x, (x, y, s, i32(N), i32(C), i32(H), i32(W), i32(size),
                               T(alpha / size), T(beta), T(k)))
    cache = (x, y, s, size, alpha, beta)
    return y, cache


def lrn_backward(gy, cache):
    """gx_j = gy_j s_j^(-beta) - (2 alpha beta / size) x_j sum_{c : j in window(c)} gy_c x_c s_c^(-beta-1)

    The sum runs over the transposed window c in [j - (size-1)//2, j + size//2]; the
    derivation is in tinyalex.kernels.numpy.lrn.lrn_backward. One thread per element gathers
    it from a shared-memory slab of gy_c y_c / s_c (kernels/lrn.cu): deterministic, no atomics.
    Shapes: gy (N, C, H, W) -> gx (N, C, H, W), same dtype.
    """
    # gy (N, C, H, W) -> gx (N, C, H, W)
    x, y, s, size, alpha, beta = cache
    gy = float_array(gy, "gy", 4)
    same_dtype(x, "x", gy, "gy")
    same_shape(gy, "gy", x.shape, "the shape of x")
    N, C, H, W = x.shape
    gx = cupy().empty_like(x)
    T = x.dtype.type
    _launch("lrn_backward", x, (gy, x, y, s, gx, i32(N), i32(C), i32(H), i32(W), i32(size),
                                T(beta), T(2 * alpha * beta / size)))
    return gx
