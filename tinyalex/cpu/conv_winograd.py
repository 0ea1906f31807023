"""Winograd convolution on the CPU: parallel Numba transforms around a*a BLAS GEMMs.

The math is tinyalex.reference.conv_winograd's (derivation: docs/ops/conv2d_winograd.md).
Per chunk of B samples, with T = B*TH*TW tiles of m x m outputs and a = m + r - 1:

    U (a*a, OC, Cg)  = G W G^T                 _transform_filter, parallel over o
    V (a*a, C, T)    = BT d B, every tile       _transform_input, parallel over (c, n)
    M (a*a, OC, T)   = U @ V                    a*a*groups GEMMs (tinyalex.cpu.blas, Numba's pool)
    y (B, OC, OH, OW) = AT M A + b              _transform_output, parallel over (o, n)

Race-free by construction: each parallel iteration writes only its own slice (U[:, o],
V[:, c, tiles of n], the plane y[n, o]); the GEMMs write disjoint matrices. Sums run in
a fixed order, so results are bitwise repeatable.

Workspace: V and M of one chunk, in the per-thread scratch buffers of the GEMM path,
with the batch cut into chunks of at most WORKSPACE_BYTES (docs/pitfalls.md#im2col-memory).
Backward: gx is the same routine applied to gy with the flipped, channel-swapped weight
and padding r - 1 - p; gW and gb come from the GEMM path (tinyalex.cpu.conv).
"""
import numpy as np
from numba import get_num_threads, njit, prange

from ..conv_algorithms import WINOGRAD_TILES, WinogradCache, winograd_refusal
from ..reference.conv_winograd import flipped_transposed, winograd_matrices
from ..shapes import conv_output_size
from . import conv as gemm_conv
from .blas import gemm

_matrices = {}


def matrices(m, r, dtype):
    """(AT, G, BT) of F(m, r) in `dtype`, built once (exactly, in fractions) and kept."""
    key = (m, r, np.dtype(dtype))
    if key not in _matrices:
        _matrices[key] = tuple(np.ascontiguousarray(M, dtype=dtype) for M in winograd_matrices(m, r))
    return _matrices[key]


@njit(parallel=True, cache=True)
def _transform_filter(weight, G, U):
    """U[xi*a + nu, o, c] = (G W[o, c] G^T)[xi, nu]. Parallel over o: U[:, o] is its own.

    Vectorised over the input channels c: every statement below is a loop over c.
    """
    OC, Cg, r, _ = weight.shape
    a = G.shape[0]
    for o in prange(OC):
        w = weight[o]                                              # (Cg, r, r)
        tmp = np.zeros((a, r, Cg), dtype=U.dtype)                  # tmp[x, j] = sum_i G[x, i] w[:, i, j]
        for x in range(a):
            for i in range(r):
                g = G[x, i]
                if g != 0:
                    for j in range(r):
                        t = tmp[x, j]
                        for c in range(Cg):
                            t[c] += g * w[c, i, j]
        for x in range(a):                                         # U[x, y] = sum_j tmp[x, j] G[y, j]
            for y in range(a):
                out = U[x * a + y, o]
                out[:] = 0
                for j in range(r):
                    g = G[y, j]
                    if g != 0:
                        t = tmp[x, j]
                        for c in range(Cg):
                            out[c] += g * t[c]


@njit(parallel=True, cache=True)
def _transform_input(x, ph, pw, m, TH, TW, BT, V, parts):
    """V[xi*a + nu, c, n*TH*TW + th*TW + tw] = (BT d B)[xi, nu], d the a x a tile of the
    zero-padded x[n, c] at (th*m - ph, tw*m - pw) (ph, pw may be negative: a crop).

    Parallel over the C*B (c, n) planes, c outer so that each thread's writes cluster in
    V's rows: the iteration owns V[:, c, tiles of n], so the writes are disjoint. Inside,
    the plane is copied into a zero-bordered buffer P; the row transform reads the tiles
    straight from P (stride m), the column transform writes V with unit stride, both as
    loops over all TT tiles of the plane; zero entries of BT are skipped.
    """
    B, C, H, W = x.shape
    a = BT.shape[0]
    TT = TH * TW
    rows, cols = (TH - 1) * m + a, (TW - 1) * m + a
    h_lo, h_hi = max(0, ph), min(rows, H + ph)                     # buffer rows/columns that hold x
    w_lo, w_hi = max(0, pw), min(cols, W + pw)
    P = np.zeros((parts, rows, cols), dtype=V.dtype)               # per-part buffers, allocated once
    E = np.empty((parts, a * a, TT), dtype=V.dtype)                # E[u*a + j, t] = (d_t B)[u, j]
    for part in prange(parts):
        for it in range(part * C * B // parts, (part + 1) * C * B // parts):
            c, n = it // B, it % B
            plane = x[n, c]
            Pp, Ep = P[part], E[part]
            for h in range(h_lo, h_hi):
                dst, src = Pp[h], plane[h - ph]
                for w in range(w_lo, w_hi):
                    dst[w] = src[w - pw]
            for u in range(a):                                     # E[u*a + j] = sum_v BT[j, v] d[u, v]
                for j in range(a):
                    e = Ep[u * a + j]
                    for t in range(TT):
                        e[t] = 0
                    for v in range(a):
                        b = BT[j, v]
                        if b != 0:
                            for th in range(TH):
                                src = Pp[th * m + u]
                                t0 = th * TW
                                for tw in range(TW):
                                    e[t0 + tw] += b * src[tw * m + v]
            t0 = n * TT
            for i in range(a):                                         # V[i*a + j] = sum_u BT[i, u] E[u*a + j]
                for j in range(a):
                    out = V[i * a + j, c, t0:t0 + TT]
                    for t in range(TT):
                        out[t] = 0
                    for u in range(a):
                        b = BT[i, u]
                        if b != 0:
                            e = Ep[u * a + j]
                            for t in range(TT):
                                out[t] += b * e[t]


@njit(parallel=True, cache=True)
def _transform_output(M, AT, bias, TH, TW, y, parts):
    """y[n, o, th*m + i, tw*m + j] = (AT M_t A)[i, j] + bias[o] for tile t of sample n,
    inside the output (the last tiles may hang over its edge: that part is dropped).

    Parallel over the OC*B (o, n) planes of y, each written by one iteration only.
    Both 1-D transforms are loops over all TT tiles of the plane, reading M contiguously.
    """
    B, OC, OH, OW = y.shape
    m, a = AT.shape
    TT = TH * TW
    Qs = np.empty((parts, m * a, TT), dtype=y.dtype)               # Q[i*a + v] = sum_u AT[i, u] M[u*a + v]
    Ys = np.empty((parts, m * m, TT), dtype=y.dtype)               # Y[i*m + j] = b + sum_v AT[j, v] Q[i*a + v]
    for part in prange(parts):
        for it in range(part * OC * B // parts, (part + 1) * OC * B // parts):
            o, n = it // B, it % B
            out = y[n, o]
            t0 = n * TT
            Q, Y = Qs[part], Ys[part]
            for i in range(m):
                for v in range(a):
                    q = Q[i * a + v]
                    q[:] = 0
                    for u in range(a):
                        coef = AT[i, u]
                        if coef != 0:
                            src = M[u * a + v, o, t0:t0 + TT]
                            for t in range(TT):
                                q[t] += coef * src[t]
            for i in range(m):
                for j in range(m):
                    Yij = Y[i * m + j]
                    Yij[:] = bias[o]
                    for v in range(a):
                        coef = AT[j, v]
                        if coef != 0:
                            q = Q[i * a + v]
                            for t in range(TT):
                                Yij[t] += coef * q[t]
            for th in range(TH):                                       # scatter, dropping the overhang
                for i in range(min(m, OH - th * m)):
                    row = out[th * m + i]
                    for tw in range(TW):
                        t = th * TW + tw
                        for j in range(min(m, OW - tw * m)):
                            row[tw * m + j] = Y[i * m + j, t]


def winograd_correlate(x, weight, bias, padding, out_size, groups, m):
    """y (N, OC, OH, OW) = correlate(x zero-padded by (ph, pw) above/left, weight) + bias,
    stride 1, by F(m x m, r x r); the chunked pipeline of the module docstring."""
    N, C, H, W = x.shape
    OC, Cg, r, _ = weight.shape
    AT, G, BT = matrices(m, r, x.dtype)
    a, OH, OW = m + r - 1, out_size[0], out_size[1]
    TH, TW = -(-OH // m), -(-OW // m)
    TT, A2, OCg = TH * TW, a * a, OC // groups
    U = np.empty((A2, OC, Cg), dtype=x.dtype)
    _transform_filter(weight, G, U)
    y = np.empty((N, OC, OH, OW), dtype=x.dtype)
    bias = bias if bias is not None else np.zeros(OC, dtype=x.dtype)
    chunks = gemm_conv.batch_chunks(N, A2 * (C + OC) * TT * x.itemsize)
    most = chunks[0][1] - chunks[0][0]
    V_space = gemm_conv._scratch.get("cols", A2 * C * most * TT, x.dtype)   # the GEMM path's buffers
    M_space = gemm_conv._scratch.get("y_t", A2 * OC * most * TT, x.dtype)
    Ug = U.reshape(A2 * groups, OCg, Cg)
    parts = 4 * get_num_threads()                                # a few per thread: balance
    for n0, n1 in chunks:
        T = (n1 - n0) * TT
        V = V_space[:A2 * C * T].reshape(A2, C, T)
        M = M_space[:A2 * OC * T].reshape(A2, OC, T)
        _transform_input(x[n0:n1], padding[0], padding[1], m, TH, TW, BT, V, parts)
        gemm(Ug, V.reshape(A2 * groups, Cg, T), M.reshape(A2 * groups, OCg, T))
        _transform_output(M, AT, bias, TH, TW, y[n0:n1], parts)
    return y


def _tile(weight, stride, dilation):
    reason = winograd_refusal(weight.shape[2:], stride, dilation)
    if reason:
        raise ValueError(f"conv2d_forward: algorithm='winograd' {reason}")
    return WINOGRAD_TILES[weight.shape[2]]


def conv2d_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """y = conv2d(x, W) + b by Winograd F(m x m, r x r) (module docstring; formulas in
    tinyalex.reference.conv_winograd). Stride 1, no dilation, square 3x3 or 5x5 kernels.

    Shapes: x (N, C, H, W), weight (OC, C/groups, r, r), bias (OC,) or None -> y (N, OC, OH, OW).
    Saved for backward: the GEMM path's cache (x, weight, ...) and the tile size m.
    """
    x, weight, bias = gemm_conv._check_conv(x, weight, bias, groups)
    m = _tile(weight, stride, dilation)
    r = weight.shape[2]
    OH = conv_output_size(x.shape[2], r, 1, padding[0])
    OW = conv_output_size(x.shape[3], r, 1, padding[1])
    y = winograd_correlate(x, weight, bias, padding, (OH, OW), groups, m)
    cache = (x, weight, bias is not None, tuple(stride), tuple(padding), groups, tuple(dilation))
    return y, WinogradCache(cache, m)


def conv2d_backward(gy, cache, need_gx=True):
    """(gx or None, gW, gb or None): gW, gb by im2col + GEMM; gx by Winograd on gy with
    the flipped, channel-swapped weight and padding r - 1 - p (a stride-1 convolution)."""
    x, weight, has_bias, stride, padding, groups, dilation = cache.gemm_cache
    _, gW, gb = gemm_conv.conv2d_backward(gy, cache.gemm_cache, need_gx=False)
    if not need_gx:
        return None, gW, gb
    gy = np.ascontiguousarray(gy)
    r = weight.shape[2]
    flipped = flipped_transposed(weight, groups)
    gx = winograd_correlate(gy, flipped, None, (r - 1 - padding[0], r - 1 - padding[1]),
                            x.shape[2:], groups, cache.tile)
    return gx, gW, gb
