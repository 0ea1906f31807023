"""Softmax cross-entropy, fused (the reference).

    loss_n = -log softmax(logits_n)[target_n] = logsumexp(logits_n) - logits_n[target_n]

computed stably: subtracting the row maximum m_n first makes every exponent <= 0, so
exp cannot overflow and the row's largest term is exp(0) = 1, so log cannot see 0.
log(softmax(x)) done naively gives inf - inf = NaN for logits of order 1e3.

torch's options all fit one form. With nlp[n, c] = -log softmax(logits_n)[c] >= 0,

    loss_n = sum_c q[n, c] * nlp[n, c]

for a target distribution q (N, C) built from the target and the options:

    class indices t_n, weight w (C,) (ones if None), label smoothing eps, ignore_index:
        q[n, c] = kept_n * ((1 - eps) * w[t_n] * [c == t_n] + eps / C * w[c])
        kept_n  = t_n != ignore_index          (an ignored row has q = 0: loss 0, gradient 0)
        'mean' divides the sum by D = sum_n kept_n * w[t_n], the weights of the kept targets
        (torch's rule, also with label smoothing; all rows ignored gives 0/0 = NaN, as torch)
    class probabilities T (N, C):
        q[n, c] = w[c] * ((1 - eps) * T[n, c] + eps / C)
        'mean' divides by D = N (N = 0 gives NaN, as torch)

With no options, q is one-hot and loss_n is the plain -log p[n, t_n].
"""
import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def cross_entropy_forward(logits, target, reduction, weight=None, ignore_index=-100,
                          label_smoothing=0.0):
    """loss = reduce_n( sum_c q[n, c] * (logsumexp(z_n) - z[n, c]) ),  z = logits - max_c logits

    Shapes: logits (N, C) float; target (N,) int64 class indices in [0, C) or ==
            ignore_index, or (N, C) class probabilities of the logits' dtype; weight (C,)
            or None -> loss () for 'mean' and 'sum', (N,) for 'none'; dtype of logits.
    q is the target distribution of the module docstring; D the 'mean' denominator.
    Saved for backward: the softmax probabilities (N, C), q (N, C), the rows that count
    (kept), the reduction and D; the gradient is built from them without touching the
    logits again.
    """
    # logits (N, C), target (N,) or (N, C) -> loss () or (N,)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    N, C = logits.shape
    z = logits - logits.max(axis=1, keepdims=True, initial=-np.inf)  # every z <= 0
    exp_z = np.exp(z)
    sum_exp = exp_z.sum(axis=1, keepdims=True)                     # (N, 1), >= 1
    neg_log_p = np.log(sum_exp) - z                                # (N, C), >= 0
    w = np.ones(C, dtype=logits.dtype) if weight is None else weight
    eps = label_smoothing
    if target.ndim == 1:                                           # class indices
        kept = target != ignore_index                              # (N,)
        t = np.where(kept, target, 0)                              # any valid index for ignored rows
        q = (eps / C) * kept[:, None] * w[None, :]                 # (N, C)
        q[np.arange(N), t] += (1 - eps) * w[t] * kept              # one index per row: no repeats
        denominator = (w[t] * kept).sum()
    else:                                                          # class probabilities
        kept = np.ones(N, dtype=bool)
        q = w * ((1 - eps) * target + eps / C)
        denominator = N
    q = q.astype(logits.dtype, copy=False)
    losses = (q * neg_log_p).sum(axis=1)                           # (N,)
    with np.errstate(invalid="ignore", divide="ignore"):           # D = 0: NaN (or inf), as torch
        if reduction == "mean":
            loss = np.asarray(losses.sum() / logits.dtype.type(denominator))
        elif reduction == "sum":
            loss = np.asarray(losses.sum())
        else:
            loss = losses
    cache = (exp_z / sum_exp, q, kept, reduction, denominator)
    return loss.astype(logits.dtype, copy=False), cache


def cross_entropy_backward(gloss, cache):
    """glogits[n, c] = (Q_n * softmax[n, c] - q[n, c]) * g_n,   Q_n = sum_c q[n, c]

    Derivation: d nlp[n, c'] / d z[n, c] = softmax[n, c] - [c == c'], so
    d loss_n / d z[n, c] = sum_c' q[n, c'] (softmax[n, c] - [c == c']) = Q_n softmax - q.
    With q one-hot (no options) this is the familiar softmax - onehot.
    g_n = gloss / D for 'mean', gloss for 'sum', gloss_n for 'none'. Ignored rows get an
    exact 0 (not 0 * (gloss / 0) = NaN when every row is ignored), as in torch.
    Shapes: gloss () for 'mean'/'sum', (N,) for 'none' -> glogits (N, C), dtype of logits.
    """
    # gloss () or (N,) -> glogits (N, C)
    probs, q, kept, reduction, denominator = cache
    gloss = np.asarray(gloss, dtype=probs.dtype)                   # a 0-d float64 would upcast
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduction == "mean":
            g = gloss / probs.dtype.type(denominator)
        else:
            g = gloss[:, None] if reduction == "none" else gloss
        glogits = (q.sum(axis=1, keepdims=True) * probs - q) * g
    return np.where(kept[:, None], glogits, probs.dtype.type(0))
