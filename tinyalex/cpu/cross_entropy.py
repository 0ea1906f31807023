"""Softmax cross-entropy on the CPU: fused Numba kernels, one row per iteration.

Semantics and the stable log-sum-exp are in tinyalex.reference.cross_entropy:

    loss_n = (m_n - z_n,target_n) + s_n,   m_n = max_c z_nc,   s_n = log sum_c exp(z_nc - m_n)
    glogits_nc = (exp((z_nc - m_n) - s_n) - [c == target_n]) * w_n,  w_n = gloss/N, gloss or gloss_n

Keeping m_n and s_n apart, rather than lse_n = m_n + s_n, keeps the softmax accurate to
the last bits for logits of order 1e3: z - lse would cancel two numbers of that size.

Rows are independent, so `prange` iterations write disjoint rows (race-free); the N
per-row losses are then summed serially, in a fixed order. A parallel launch costs a few
microseconds, more than a whole (16, 10) loss, so below PARALLEL_MIN_ELEMENTS logits the
same row kernels run in a plain loop.
"""
import numpy as np
from numba import njit, prange

from ._checks import float_array

REDUCTIONS = ("mean", "sum", "none")
#: Logit count from which the rows are spread over threads (a launch ~ a few thousand exp).
PARALLEL_MIN_ELEMENTS = 4096


@njit(cache=True)
def _first_bad_target(target, C):
    """Index of the first target outside [0, C), or -1."""
    for n in range(target.size):
        if target[n] < 0 or target[n] >= C:
            return n
    return -1


@njit(cache=True)
def _row_loss(logits, target, row_max, log_sum, losses, n):
    """row_max[n], log_sum[n] = log sum_c exp(logits[n, c] - row_max[n]) and losses[n] (float64)."""
    row = logits[n]
    m = -np.inf
    for c in range(row.size):
        m = max(m, float(row[c]))
    total = 0.0
    for c in range(row.size):
        total += np.exp(row[c] - m)                                # every exponent <= 0: no overflow
    row_max[n] = m
    log_sum[n] = np.log(total)                                     # total >= 1: no log(0)
    losses[n] = (m - row[target[n]]) + log_sum[n]


@njit(cache=True)
def _row_gradient(logits, target, row_max, log_sum, row_weight, glogits, n):
    """glogits[n, c] = (softmax[n, c] - [c == target[n]]) * row_weight[n]."""
    row, out, weight = logits[n], glogits[n], row_weight[n]
    for c in range(row.size):
        out[c] = np.exp((row[c] - row_max[n]) - log_sum[n]) * weight
    out[target[n]] -= weight


@njit(cache=True)
def _ordered_sum(losses):
    """sum(losses) in index order (a parallel reduction's order would depend on the threads)."""
    total = 0.0
    for n in range(losses.size):
        total += losses[n]
    return total


@njit(parallel=True, cache=True)
def _losses_parallel(logits, target, row_max, log_sum, losses):
    for n in prange(logits.shape[0]):
        _row_loss(logits, target, row_max, log_sum, losses, n)
    return _ordered_sum(losses)


@njit(cache=True)
def _losses_serial(logits, target, row_max, log_sum, losses):
    for n in range(logits.shape[0]):
        _row_loss(logits, target, row_max, log_sum, losses, n)
    return _ordered_sum(losses)


@njit(parallel=True, cache=True)
def _gradient_parallel(logits, target, row_max, log_sum, row_weight, glogits):
    for n in prange(logits.shape[0]):
        _row_gradient(logits, target, row_max, log_sum, row_weight, glogits, n)


@njit(cache=True)
def _gradient_serial(logits, target, row_max, log_sum, row_weight, glogits):
    for n in range(logits.shape[0]):
        _row_gradient(logits, target, row_max, log_sum, row_weight, glogits, n)


def cross_entropy_forward(logits, target, reduction):
    """loss = reduce_n(logsumexp(logits_n) - logits_n,target_n).

    Shapes: logits (N, C) float, target (N,) int64 in [0, C)
            -> loss () for 'mean' and 'sum', (N,) for 'none'; dtype of logits.
    Saved for backward: logits, target, the per-row m and s (N,) and the reduction. The
    softmax exp((logits - m) - s) is recomputed in backward instead of stored: 2N floats
    are kept instead of N*C.
    """
    logits = float_array(logits, "logits", 2)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    N, C = logits.shape
    if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu" or target.shape != (N,):
        raise TypeError(f"target: expected integer class indices of shape {(N,)}, got"
                        f" {getattr(target, 'dtype', type(target).__name__)} {getattr(target, 'shape', '')}")
    target = np.ascontiguousarray(target, dtype=np.int64)
    bad = _first_bad_target(target, C)
    if bad >= 0:
        raise ValueError(f"target: expected class indices in [0, {C}), got {target[bad]} at {bad}")
    row_max, log_sum, losses = np.empty(N), np.empty(N), np.empty(N)
    rows = _losses_parallel if logits.size >= PARALLEL_MIN_ELEMENTS else _losses_serial
    total = rows(logits, target, row_max, log_sum, losses)
    if reduction == "none":
        loss = losses.astype(logits.dtype)
    else:
        loss = np.array(total / N if reduction == "mean" else total, dtype=logits.dtype)
    return loss, (logits, target, row_max, log_sum, reduction)


def cross_entropy_backward(gloss, cache):
    """glogits = (softmax - onehot(target)) * gloss (/ N for 'mean'); -> (N, C), dtype of logits."""
    logits, target, row_max, log_sum, reduction = cache
    N = logits.shape[0]
    gloss = np.asarray(gloss, dtype=np.float64)
    expected = (N,) if reduction == "none" else ()
    if gloss.shape != expected:
        raise ValueError(f"gloss: expected shape {expected} for reduction {reduction!r}, got {gloss.shape}")
    if reduction == "none":
        row_weight = np.ascontiguousarray(gloss)
    else:
        row_weight = np.full(N, gloss / N if reduction == "mean" else gloss)
    glogits = np.empty_like(logits)
    rows = _gradient_parallel if logits.size >= PARALLEL_MIN_ELEMENTS else _gradient_serial
    rows(logits, target, row_max, log_sum, row_weight, glogits)
    return glogits
