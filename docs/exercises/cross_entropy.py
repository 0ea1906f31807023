"""Exercise: the backward pass of softmax cross-entropy (the fused loss).

Copy this file, write the body of cross_entropy_backward between the markers, and grade it:

    cp docs/exercises/cross_entropy.py mine.py
    tinyalex exercise check mine.py

The file is a kernel set (tinyalex.register_kernels): the contract's cross_entropy_forward
and cross_entropy_backward, with the contract's signatures. The exercise is the plain
loss, class-index targets and no options: the forward refuses a weight, label smoothing,
an ignored target or probability targets (the reference, tinyalex/kernels/numpy/cross_entropy.py,
does them all; docs/ops/cross_entropy.md, section 3b, derives them).

Derivation: docs/ops/cross_entropy.md, section 2.
"""
import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def cross_entropy_forward(logits, target, reduction, weight=None, ignore_index=-100,
                          label_smoothing=0.0):
    """loss_n = logsumexp(logits_n) - logits_n[target_n], reduced over n. (Given.)

    Computed stably: z = logits - max_c logits makes every exponent <= 0.
    Shapes: logits (N, C) float; target (N,) int64 class indices in [0, C) -> loss () for
    'mean' and 'sum', (N,) for 'none'; the logits' dtype.
    Saved for backward: the softmax probabilities p (N, C), the target (N,), the reduction.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if weight is not None or label_smoothing != 0.0 or target.ndim != 1 or (target == ignore_index).any():
        raise NotImplementedError("the cross_entropy exercise is the plain loss: class-index targets,"
                                  " no weight, no label_smoothing, no ignored targets")
    N, C = logits.shape
    z = logits - logits.max(axis=1, keepdims=True, initial=-np.inf)  # every z <= 0
    exp_z = np.exp(z)
    sum_exp = exp_z.sum(axis=1, keepdims=True)                     # (N, 1), >= 1
    losses = np.log(sum_exp[:, 0]) - z[np.arange(N), target]       # (N,)
    if reduction == "mean":
        loss = np.asarray(losses.sum() / logits.dtype.type(N))
    elif reduction == "sum":
        loss = np.asarray(losses.sum())
    else:
        loss = losses
    cache = (exp_z / sum_exp, target, reduction)
    return loss.astype(logits.dtype, copy=False), cache


def cross_entropy_backward(gloss, cache):
    """glogits = dL/dlogits for cross_entropy_forward's call, given gloss = dL/dloss.

    Shapes: gloss () for 'mean' and 'sum', (N,) for 'none' -> glogits (N, C), the dtype of
    the probabilities (cast gloss to it: a float64 scalar must not upcast float32).
    cache: (p, target, reduction): p (N, C) the softmax of each row, target (N,) int64.

    Hints (docs/ops/cross_entropy.md#2-backward-step-by-step):
    - the derivative of logsumexp(x_n) with respect to x[n, c] is the softmax p[n, c];
    - the derivative of the picked logit x[n, t_n] is one-hot: 1 at c == t_n, else 0;
    - the reduction scales each row's gradient: gloss / N for 'mean', gloss for 'sum',
      gloss[n] for row n with 'none' (docs/ops/cross_entropy.md, step 4).
    """
    p, target, reduction = cache
    N, C = p.shape
    gloss = np.asarray(gloss, dtype=p.dtype)
    # --- your code here ---
    raise NotImplementedError("exercise: write cross_entropy_backward; see docs/ops/cross_entropy.md#2-backward-step-by-step")
    # --- end of your code ---
