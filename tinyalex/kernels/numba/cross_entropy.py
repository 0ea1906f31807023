"""Softmax cross-entropy on the CPU: fused Numba kernels, one row per iteration.

Semantics, torch's options and the stable log-sum-exp are in
tinyalex.kernels.numpy.cross_entropy. Per row n, with m_n = max_c z_nc and
s_n = log sum_c exp(z_nc - m_n), the negative log-probability is
nlp_nc = (m_n - z_nc) + s_n, and for the target distribution q (never materialised here)

    loss_n     = sum_c q_nc * nlp_nc
    glogits_nc = (Q_n * exp((z_nc - m_n) - s_n) - q_nc) * g_n,   Q_n = sum_c q_nc

class indices:  q_nc = kept_n ((1 - eps) w[t_n] [c == t_n] + eps/C w_c),
                Q_n  = kept_n ((1 - eps) w[t_n] + eps/C W),  W = sum_c w_c
probabilities:  q_nc = w_c ((1 - eps) T_nc + eps/C),  Q_n summed in the forward and saved

and g_n = gloss / D ('mean'), gloss ('sum') or gloss_n ('none'). Keeping m_n and s_n
apart, rather than lse_n = m_n + s_n, keeps the softmax accurate to the last bits for
logits of order 1e3: z - lse would cancel two numbers of that size. Ignored rows get an
exact 0 gradient.

Rows are independent, so the parallel loop's iterations write disjoint rows (race-free); the N
per-row losses and the weights of the kept targets are then summed serially, in a fixed
order. A parallel launch costs a few microseconds, more than a whole (16, 10) loss, so
below PARALLEL_MIN_ELEMENTS logits the same row kernels run in a plain loop.
"""
import numpy as np
from numba import njit

from tinyalex.shapes import same_dtype, same_shape
from tinyalex.kernels.numba import buffers
from tinyalex.kernels.numba._checks import float_array
from tinyalex.kernels.numba.parallel_kernel import parallel_kernel, part_range

REDUCTIONS = ("mean", "sum", "none")
#: Logit count from which the rows are spread over threads (a launch ~ a few thousand exp).
PARALLEL_MIN_ELEMENTS = 4096


@njit(cache=True)
def _first_bad_target(target, C, ignore_index):
    """Index of the first target outside [0, C) that is not ignore_index, or -1."""
    for n in range(target.size):
        if target[n] != ignore_index and (target[n] < 0 or target[n] >= C):
            return n
    return -1


@njit(cache=True)
def _row_stats(row):
    """(m, s): the row maximum and log sum_c exp(row[c] - m), in float64."""
    m = -np.inf
    for c in range(row.size):
        m = max(m, float(row[c]))
    total = 0.0
    for c in range(row.size):
        total += np.exp(row[c] - m)                                # every exponent <= 0: no overflow
    return m, np.log(total)                                        # total >= 1: no log(0)


@njit(cache=True)
def _class_row_loss(logits, target, weight, ignore_index, eps, row_max, log_sum, losses,
                    kept_weight, n):
    """Row n with class indices: row_max, log_sum, losses[n] and kept_weight[n] = kept w[t_n]."""
    row = logits[n]
    m, s = _row_stats(row)
    row_max[n], log_sum[n] = m, s
    t = target[n]
    if t == ignore_index:
        losses[n], kept_weight[n] = 0.0, 0.0
        return
    w_t = float(weight[t])
    loss = (1.0 - eps) * w_t * ((m - row[t]) + s)
    if eps != 0.0:
        smooth = 0.0
        for c in range(row.size):
            smooth += weight[c] * ((m - row[c]) + s)
        loss += eps / row.size * smooth
    losses[n], kept_weight[n] = loss, w_t


@njit(cache=True)
def _probability_row_loss(logits, target, weight, eps, row_max, log_sum, losses, q_sum, n):
    """Row n with class probabilities: row_max, log_sum, losses[n] and q_sum[n] = Q_n."""
    row, probs = logits[n], target[n]
    m, s = _row_stats(row)
    row_max[n], log_sum[n] = m, s
    C = row.size
    loss, total_q = 0.0, 0.0
    for c in range(C):
        q = weight[c] * ((1.0 - eps) * probs[c] + eps / C)
        loss += q * ((m - row[c]) + s)
        total_q += q
    losses[n], q_sum[n] = loss, total_q


@njit(cache=True)
def _class_row_gradient(logits, target, weight, ignore_index, eps, weight_sum, row_max, log_sum,
                        row_scale, glogits, n):
    """glogits[n, c] = (Q_n softmax[n, c] - q[n, c]) * row_scale[n]; 0 for an ignored row."""
    row, out = logits[n], glogits[n]
    t = target[n]
    if t == ignore_index:
        out[:] = 0
        return
    C = row.size
    g = row_scale[n]
    picked = (1.0 - eps) * weight[t]                               # q[n, t] without the smoothing
    total_q = picked + eps / C * weight_sum
    for c in range(C):
        p = np.exp((row[c] - row_max[n]) - log_sum[n])
        out[c] = (total_q * p - eps / C * weight[c]) * g
    out[t] -= picked * g


@njit(cache=True)
def _probability_row_gradient(logits, target, weight, eps, q_sum, row_max, log_sum, row_scale,
                              glogits, n):
    """glogits[n, c] = (Q_n softmax[n, c] - q[n, c]) * row_scale[n]."""
    row, probs, out = logits[n], target[n], glogits[n]
    C = row.size
    g = row_scale[n]
    for c in range(C):
        p = np.exp((row[c] - row_max[n]) - log_sum[n])
        q = weight[c] * ((1.0 - eps) * probs[c] + eps / C)
        out[c] = (q_sum[n] * p - q) * g


@njit(cache=True)
def _ordered_sum(values):
    """sum(values) in index order (a parallel reduction's order would depend on the threads)."""
    total = 0.0
    for n in range(values.size):
        total += values[n]
    return total


# The same row loops, parallel (each iteration writes its own row) and serial.
@parallel_kernel("{f}[:, ::1], int64[::1], {f}[::1], int64, float64, float64[::1], "
                 "float64[::1], float64[::1], float64[::1]")
def _class_losses_parallel(logits, target, weight, ignore_index, eps, row_max, log_sum, losses,
                           kept_weight, part, parts, done):
    first, last = part_range(logits.shape[0], part, parts)
    for n in range(first, last):
        _class_row_loss(logits, target, weight, ignore_index, eps, row_max, log_sum, losses,
                        kept_weight, n)


@njit(cache=True)
def _class_losses_serial(logits, target, weight, ignore_index, eps, row_max, log_sum, losses,
                         kept_weight):
    for n in range(logits.shape[0]):
        _class_row_loss(logits, target, weight, ignore_index, eps, row_max, log_sum, losses,
                        kept_weight, n)


@parallel_kernel("{f}[:, ::1], {f}[:, ::1], {f}[::1], float64, float64[::1], float64[::1], "
                 "float64[::1], float64[::1]")
def _probability_losses_parallel(logits, target, weight, eps, row_max, log_sum, losses, q_sum,
                                 part, parts, done):
    first, last = part_range(logits.shape[0], part, parts)
    for n in range(first, last):
        _probability_row_loss(logits, target, weight, eps, row_max, log_sum, losses, q_sum, n)


@njit(cache=True)
def _probability_losses_serial(logits, target, weight, eps, row_max, log_sum, losses, q_sum):
    for n in range(logits.shape[0]):
        _probability_row_loss(logits, target, weight, eps, row_max, log_sum, losses, q_sum, n)


@parallel_kernel("{f}[:, ::1], int64[::1], {f}[::1], int64, float64, float64, float64[::1], "
                 "float64[::1], float64[::1], {f}[:, ::1]")
def _class_gradient_parallel(logits, target, weight, ignore_index, eps, weight_sum, row_max,
                             log_sum, row_scale, glogits, part, parts, done):
    first, last = part_range(logits.shape[0], part, parts)
    for n in range(first, last):
        _class_row_gradient(logits, target, weight, ignore_index, eps, weight_sum, row_max,
                            log_sum, row_scale, glogits, n)


@njit(cache=True)
def _class_gradient_serial(logits, target, weight, ignore_index, eps, weight_sum, row_max,
                           log_sum, row_scale, glogits):
    for n in range(logits.shape[0]):
        _class_row_gradient(logits, target, weight, ignore_index, eps, weight_sum, row_max,
                            log_sum, row_scale, glogits, n)


@parallel_kernel("{f}[:, ::1], {f}[:, ::1], {f}[::1], float64, float64[::1], float64[::1], "
                 "float64[::1], float64[::1], {f}[:, ::1]")
def _probability_gradient_parallel(logits, target, weight, eps, q_sum, row_max, log_sum,
                                   row_scale, glogits, part, parts, done):
    first, last = part_range(logits.shape[0], part, parts)
    for n in range(first, last):
        _probability_row_gradient(logits, target, weight, eps, q_sum, row_max, log_sum,
                                  row_scale, glogits, n)


@njit(cache=True)
def _probability_gradient_serial(logits, target, weight, eps, q_sum, row_max, log_sum,
                                 row_scale, glogits):
    for n in range(logits.shape[0]):
        _probability_row_gradient(logits, target, weight, eps, q_sum, row_max, log_sum,
                                  row_scale, glogits, n)


def _parallel(logits):
    return logits.size >= PARALLEL_MIN_ELEMENTS


def cross_entropy_forward(logits, target, reduction, weight=None, ignore_index=-100,
                          label_smoothing=0.0):
    """loss = reduce_n( sum_c q[n, c] * nlp[n, c] ), torch's options (see the module docstring).

    Shapes: logits (N, C) float; target (N,) integer class indices in [0, C) or ==
            ignore_index, or (N, C) probabilities of the logits' dtype; weight (C,) or None
            -> loss () for 'mean' and 'sum', (N,) for 'none'; dtype of logits.
    Saved for backward: logits, target, the weights (ones if None), the per-row m and s
    (N,), Q (N,) for probability targets, the options, the reduction and the 'mean'
    denominator D. The softmax exp((logits - m) - s) is recomputed in backward instead of
    stored: a few N floats are kept instead of N*C.
    """
    logits = float_array(logits, "logits", 2)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    N, C = logits.shape
    if weight is None:
        weight = np.ones(C, dtype=logits.dtype)
    weight = float_array(weight, "weight", 1)
    same_dtype(logits, "logits", weight, "weight")
    same_shape(weight, "weight", (C,), "one per class")
    eps = float(label_smoothing)
    row_max, log_sum, losses = np.empty(N), np.empty(N), np.empty(N)
    if isinstance(target, np.ndarray) and target.ndim == 2:       # class probabilities
        target = float_array(target, "target", 2)
        same_dtype(logits, "logits", target, "target")
        same_shape(target, "target", (N, C), "class probabilities, the shape of logits")
        q_sum = np.empty(N)
        rows = _probability_losses_parallel if _parallel(logits) else _probability_losses_serial
        rows(logits, target, weight, eps, row_max, log_sum, losses, q_sum)
        denominator = float(N)
    else:
        if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu" or target.shape != (N,):
            raise TypeError(f"target: expected integer class indices of shape {(N,)} or"
                            f" probabilities of shape {(N, C)}, got"
                            f" {getattr(target, 'dtype', type(target).__name__)} {getattr(target, 'shape', '')}")
        target = np.ascontiguousarray(target, dtype=np.int64)
        bad = _first_bad_target(target, C, ignore_index)
        if bad >= 0:
            raise ValueError(f"target: expected class indices in [0, {C}) or ignore_index"
                             f" {ignore_index}, got {target[bad]} at {bad}")
        q_sum = None
        kept_weight = np.empty(N)
        rows = _class_losses_parallel if _parallel(logits) else _class_losses_serial
        rows(logits, target, weight, int(ignore_index), eps, row_max, log_sum, losses, kept_weight)
        denominator = _ordered_sum(kept_weight)
    if reduction == "none":
        loss = losses.astype(logits.dtype)
    else:
        total = np.float64(_ordered_sum(losses))
        with np.errstate(invalid="ignore", divide="ignore"):       # D = 0: NaN (or inf), as torch
            loss = np.array(total / denominator if reduction == "mean" else total, dtype=logits.dtype)
    cache = (logits, target, weight, int(ignore_index), eps, row_max, log_sum, q_sum, reduction,
             denominator)
    return loss, cache


def cross_entropy_backward(gloss, cache):
    """glogits = (Q * softmax - q) * g, g = gloss / D, gloss or gloss_n; -> (N, C), dtype of logits."""
    logits, target, weight, ignore_index, eps, row_max, log_sum, q_sum, reduction, denominator = cache
    N = logits.shape[0]
    gloss = np.asarray(gloss, dtype=np.float64)
    expected = (N,) if reduction == "none" else ()
    if gloss.shape != expected:
        raise ValueError(f"gloss: expected shape {expected} for reduction {reduction!r}, got {gloss.shape}")
    if reduction == "none":
        row_scale = np.ascontiguousarray(gloss)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):       # D = 0: inf or NaN, as torch
            scale = gloss / np.float64(denominator) if reduction == "mean" else gloss
        row_scale = np.full(N, scale)
    glogits = buffers.empty_like(logits)
    if q_sum is None:
        rows = _class_gradient_parallel if _parallel(logits) else _class_gradient_serial
        rows(logits, target, weight, ignore_index, eps, float(weight.sum(dtype=np.float64)),
             row_max, log_sum, row_scale, glogits)
    else:
        rows = _probability_gradient_parallel if _parallel(logits) else _probability_gradient_serial
        rows(logits, target, weight, eps, q_sum, row_max, log_sum, row_scale, glogits)
    return glogits
