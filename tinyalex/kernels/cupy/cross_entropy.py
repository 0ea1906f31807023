"""Fused softmax cross-entropy on the GPU (kernels/cross_entropy.cu), with torch's options.

    loss_n = sum_c q_nc (lse_n - logits_nc),  lse = m + log sum exp(z - m)

with m the row maximum, so exp never overflows (logits of 1e3 stay finite), q the target
distribution of tinyalex.kernels.numpy.cross_entropy (one-hot without options; class weights,
label smoothing, ignore_index and probability targets change it), and the fused gradient
glogits = (Q * softmax - q) * g, Q = sum_c q, g = gloss / D ('mean'), gloss or gloss_n.
The forward runs one thread block per row: a max reduction, then a sum of exponentials,
then the weighted sums the options need, each a fixed tree of warp shuffles
(deterministic). The 'mean' denominator D (the weights of the kept targets, or N for
probability targets) stays on the device: nothing is copied back but the range check.
"""
from tinyalex.shapes import same_dtype, same_shape
from tinyalex.kernels.cupy._checks import float_array, i32, i64
from tinyalex.kernels.cupy.loader import cupy, get_kernel, launch_1d

REDUCTIONS = ("mean", "sum", "none")

#: Threads per row in the forward: a multiple of the warp size, at most 256 (AlexNet's
#: 1000 classes give each thread 4 logits).
WARP = 32
MAX_ROW_THREADS = 256


def cross_entropy_forward(logits, target, reduction, weight=None, ignore_index=-100,
                          label_smoothing=0.0):
    """loss = reduce_n( sum_c q[n, c] * (logsumexp(logits_n) - logits[n, c]) )

    Shapes: logits (N, C) float; target (N,) integer class indices in [0, C) or ==
            ignore_index, or (N, C) probabilities of the logits' dtype; weight (C,) or None
            -> loss () for 'mean' and 'sum', (N,) for 'none'; dtype of logits.
    Saved for backward: logits, target (int64 indices, or the probabilities), the weights
    (ones if None) and whether there were any (without, the backward reads none), the options, lse (N,), Q (N,) for probability targets, the reduction
    and D. The backward rebuilds softmax = exp(logits - lse) from them, so no (N, C) array
    of probabilities is kept (the logits exist anyway).
    """
    # logits (N, C), target (N,) or (N, C) -> loss () or (N,)
    cp = cupy()
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    logits = float_array(logits, "logits", 2)
    N, C = logits.shape
    if C < 1:
        raise ValueError(f"logits: expected at least one class, got shape {logits.shape}")
    scalar = logits.dtype.type
    weighted = weight is not None
    weight = float_array(weight, "weight", 1) if weighted else cp.ones(C, dtype=logits.dtype)
    same_dtype(logits, "logits", weight, "weight")
    same_shape(weight, "weight", (C,), "one per class")
    smoothing = scalar(label_smoothing)
    losses = cp.empty(N, dtype=logits.dtype)
    lse = cp.empty(N, dtype=logits.dtype)
    threads = min(MAX_ROW_THREADS, WARP * -(-C // WARP))
    if isinstance(target, cp.ndarray) and target.ndim == 2:       # class probabilities
        target = float_array(target, "target", 2)
        same_dtype(logits, "logits", target, "target")
        same_shape(target, "target", (N, C), "class probabilities, the shape of logits")
        q_sum = cp.empty(N, dtype=logits.dtype)
        if N > 0:
            kernel = get_kernel("cross_entropy.cu", "soft_cross_entropy_forward", logits.dtype)
            kernel((N,), (threads,), (logits, target, weight, smoothing, losses, lse, q_sum, i32(C)))
        denominator = cp.asarray(N, dtype=logits.dtype)
    else:
        target = _class_indices(target, N, C, ignore_index)
        q_sum = None
        if N > 0:
            kernel = get_kernel("cross_entropy.cu", "cross_entropy_forward", logits.dtype)
            kernel((N,), (threads,), (logits, target, weight, i64(ignore_index), smoothing,
                                      losses, lse, i32(C)))
        kept = target != ignore_index
        denominator = (weight[cp.where(kept, target, 0)] * kept).sum()   # the kept targets' weights
    if reduction == "mean":
        loss = losses.sum() / denominator                          # 0/0 is NaN, as in torch
    elif reduction == "sum":
        loss = losses.sum()
    else:
        loss = losses
    cache = (logits, target, weight, weighted, int(ignore_index), smoothing, lse, q_sum,
             reduction, denominator)
    return loss, cache


def cross_entropy_backward(gloss, cache):
    """glogits = (Q * softmax - q) * g: g = gloss / D for 'mean', gloss for 'sum', gloss_n for 'none'.

    The per-row factor reaches the kernel as a device array read with stride 0 (one
    scalar) or 1 (per row), so nothing is copied back to the host. Ignored rows get 0.
    Shapes: gloss () for 'mean'/'sum', (N,) for 'none' -> glogits (N, C), dtype of logits.
    """
    # gloss () or (N,) -> glogits (N, C)
    cp = cupy()
    logits, target, weight, weighted, ignore_index, smoothing, lse, q_sum, reduction, denominator = cache
    N, C = logits.shape
    gloss = cp.asarray(gloss, dtype=logits.dtype)
    if reduction == "none":
        same_shape(gloss, "gloss", (N,), "one per row, reduction 'none'")
        g, g_stride = cp.ascontiguousarray(gloss), 1
    else:
        if gloss.size != 1:
            raise ValueError(f"gloss: expected a scalar for reduction {reduction!r},"
                             f" got shape {gloss.shape}")
        g, g_stride = gloss.reshape(1), 0
        if reduction == "mean":
            g = g / denominator                                    # D = 0: inf or NaN, as torch
    glogits = cp.empty_like(logits)
    if q_sum is None:
        weight_sum = weight.sum().reshape(1)
        kernel = get_kernel("cross_entropy.cu", "cross_entropy_backward", logits.dtype)
        args = (logits, target, weight, i32(weighted), i64(ignore_index), smoothing, weight_sum,
                lse, g, i64(g_stride), glogits, i32(N), i32(C))
    else:
        kernel = get_kernel("cross_entropy.cu", "soft_cross_entropy_backward", logits.dtype)
        args = (logits, target, weight, smoothing, lse, q_sum, g, i64(g_stride), glogits,
                i32(N), i32(C))
    launch_1d(kernel, N * C, args)
    return glogits


def _class_indices(target, N, C, ignore_index):
    """target as a contiguous int64 CuPy array of shape (N,), values in [0, C) or ignore_index.

    The range check copies two numbers to the host (a synchronisation): an index out of
    range would otherwise read outside the logits.
    """
    cp = cupy()
    target = cp.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"target: expected integer class indices (int64) of shape {(N,)} or"
                        f" probabilities of shape {(N, C)}, got {target.dtype} {target.shape}")
    same_shape(target, "target", (N,), "one class index per row of logits")
    target = cp.ascontiguousarray(target, dtype=cp.int64)
    if N > 0:
        counted = cp.where(target == ignore_index, 0, target)
        low, high = (int(v) for v in cp.stack((counted.min(), counted.max())).get())
        if low < 0 or high >= C:
            raise ValueError(f"target: expected class indices in [0, {C}) or ignore_index"
                             f" {ignore_index}, got values from {low} to {high}")
    return target
