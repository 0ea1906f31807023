"""Fused softmax cross-entropy on the GPU (kernels/cross_entropy.cu).

    loss_n = logsumexp(logits_n) - logits_n[target_n],  logsumexp = m + log sum exp(z - m)

with m the row maximum, so exp never overflows (logits of 1e3 stay finite), and the
fused gradient glogits = (softmax - onehot(target)) * gloss (divided by N for 'mean').
The forward runs one thread block per row: a max reduction, then a sum of exponentials,
each a fixed tree of warp shuffles (deterministic).
"""
from ..shapes import same_shape
from ._checks import float_array, i32, i64
from .loader import cupy, get_kernel, launch_1d

REDUCTIONS = ("mean", "sum", "none")

#: Threads per row in the forward: a multiple of the warp size, at most 256 (AlexNet's
#: 1000 classes give each thread 4 logits).
WARP = 32
MAX_ROW_THREADS = 256


def cross_entropy_forward(logits, target, reduction):
    """loss = reduce_n( logsumexp(logits_n) - logits_n[target_n] )

    Shapes: logits (N, C) float, target (N,) integer in [0, C)
            -> loss () for 'mean' and 'sum', (N,) for 'none'; dtype of logits.
    Saved for backward: logits, target (as int64) and lse (N,), the row log-sum-exp. The
    backward rebuilds softmax = exp(logits - lse) from them, so no (N, C) array of
    probabilities is kept (the logits exist anyway).
    """
    # logits (N, C), target (N,) -> loss () or (N,)
    cp = cupy()
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    logits = float_array(logits, "logits", 2)
    N, C = logits.shape
    if C < 1:
        raise ValueError(f"logits: expected at least one class, got shape {logits.shape}")
    target = _class_indices(target, N, C)
    losses = cp.empty(N, dtype=logits.dtype)
    lse = cp.empty(N, dtype=logits.dtype)
    if N > 0:
        threads = min(MAX_ROW_THREADS, WARP * -(-C // WARP))
        kernel = get_kernel("cross_entropy.cu", "cross_entropy_forward", logits.dtype)
        kernel((N,), (threads,), (logits, target, losses, lse, i32(C)))
    if reduction == "mean":
        loss = losses.mean()
    elif reduction == "sum":
        loss = losses.sum()
    else:
        loss = losses
    cache = (logits, target, lse, reduction)
    return loss, cache


def cross_entropy_backward(gloss, cache):
    """glogits = (softmax - onehot(target)) * gloss, divided by N for 'mean'.

    For 'none' each row is scaled by its own gloss_n. The per-row factor reaches the
    kernel as a device array read with stride 0 (one scalar) or 1 (per row), so nothing
    is copied back to the host.
    Shapes: gloss () for 'mean'/'sum', (N,) for 'none' -> glogits (N, C), dtype of logits.
    """
    # gloss () or (N,) -> glogits (N, C)
    cp = cupy()
    logits, target, lse, reduction = cache
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
        if reduction == "mean" and N > 0:
            g = g / N
    glogits = cp.empty_like(logits)
    kernel = get_kernel("cross_entropy.cu", "cross_entropy_backward", logits.dtype)
    launch_1d(kernel, N * C, (logits, target, lse, g, i64(g_stride), glogits, i32(N), i32(C)))
    return glogits


def _class_indices(target, N, C):
    """target as a contiguous int64 CuPy array of shape (N,) with values in [0, C).

    The range check copies two numbers to the host (a synchronisation): an index out of
    range would otherwise read outside the logits.
    """
    cp = cupy()
    target = cp.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"target: expected an integer dtype (int64), got {target.dtype}")
    same_shape(target, "target", (N,), "one class index per row of logits")
    target = cp.ascontiguousarray(target, dtype=cp.int64)
    if N > 0:
        low, high = (int(v) for v in cp.stack((target.min(), target.max())).get())
        if low < 0 or high >= C:
            raise ValueError(f"target: expected class indices in [0, {C}), got values from"
                             f" {low} to {high}")
    return target
