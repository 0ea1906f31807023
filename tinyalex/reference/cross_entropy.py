"""Softmax cross-entropy, fused (the reference).

    loss_n = -log softmax(logits_n)[target_n] = logsumexp(logits_n) - logits_n[target_n]

computed stably: subtracting the row maximum m_n first makes every exponent <= 0, so
exp cannot overflow and the row's largest term is exp(0) = 1, so log cannot see 0.
log(softmax(x)) done naively gives inf - inf = NaN for logits of order 1e3.
"""
import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def cross_entropy_forward(logits, target, reduction):
    """loss = reduce_n( log sum_c exp(z_nc) - z_n,target_n ),  z = logits - max_c logits

    Shapes: logits (N, C) float, target (N,) int64 in [0, C)
            -> loss () for 'mean' and 'sum', (N,) for 'none'; dtype of logits.
    Saved for backward: the softmax probabilities (N, C), target and reduction; the
    gradient is built from them without touching the logits again.
    """
    # logits (N, C), target (N,) -> loss () or (N,)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    N = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)                 # every z <= 0
    exp_z = np.exp(z)
    sum_exp = exp_z.sum(axis=1, keepdims=True)                     # (N, 1), >= 1
    losses = np.log(sum_exp[:, 0]) - z[np.arange(N), target]       # (N,)
    if reduction == "mean":
        loss = np.asarray(losses.mean())                           # 0-d, dtype of logits
    elif reduction == "sum":
        loss = np.asarray(losses.sum())
    else:
        loss = losses
    cache = (exp_z / sum_exp, target, reduction)
    return loss, cache


def cross_entropy_backward(gloss, cache):
    """glogits = (softmax - onehot(target)) * gloss, divided by N for 'mean'.

    d loss_n / d logits_nc = softmax_nc - [c == target_n], the fused gradient: no log or
    exp derivative is ever formed. For 'none' each row is scaled by its own gloss_n.
    Shapes: gloss () for 'mean'/'sum', (N,) for 'none' -> glogits (N, C), dtype of logits.
    """
    # gloss () or (N,) -> glogits (N, C)
    probs, target, reduction = cache
    N = probs.shape[0]
    gloss = np.asarray(gloss, dtype=probs.dtype)                   # a 0-d float64 would upcast
    glogits = probs.copy()
    glogits[np.arange(N), target] -= 1                             # one target per row: no repeats
    if reduction == "mean":
        return glogits * (gloss / N)
    if reduction == "sum":
        return glogits * gloss
    return glogits * gloss[:, None]
