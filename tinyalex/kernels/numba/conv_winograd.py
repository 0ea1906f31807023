"""Winograd convolution on the CPU: parallel Numba transforms around a*a BLAS GEMMs.

The math is tinyalex.kernels.numpy.conv_winograd's (derivation: docs/ops/conv2d_winograd.md).
Per chunk of B samples, with T = B*TH*TW tiles of m x m outputs and a = m + r - 1, the
transform domain keeps the channels innermost, so every transform loop runs along
contiguous channels (long, vectorised loops even where a plane holds only 6 x 6 tiles):

    U (a*a, OC, Cg)   = G W G^T                _transform_filter, parallel over o
    X (B, rows, cols, C) = x zero-padded, channels last      _pad_channels_last
    V (a*a, T, C)     = BT d B, every tile      _transform_input, parallel over rows of tiles
    M (a*a, T, OC)    = V @ U^T                 a*a GEMMs per group (tinyalex.kernels.numba.blas, Numba's pool)
    y (B, OC, OH, OW) = AT M A + b              _transform_output, parallel over rows of tiles

Race-free by construction: each parallel iteration writes only its own slice (U[:, o],
a row of X, V[:, tiles of a row], the output rows of a row of tiles); the GEMMs write
disjoint blocks. Sums run in a fixed order, so results are bitwise repeatable.

Workspace: V and M of one chunk, in the per-thread scratch buffers of the GEMM path,
with the batch cut into chunks of at most WORKSPACE_BYTES (docs/pitfalls.md#im2col-memory).
Backward: gx is the same routine applied to gy with the flipped, channel-swapped weight
and padding r - 1 - p; gW runs the three transforms transposed around a*a GEMMs that
sum over the tiles (winograd_weight_gradient).
"""
import numpy as np

from tinyalex.kernels.conv_algorithms import WINOGRAD_TILES, winograd_refusal
from tinyalex.kernels.numpy.conv_winograd import WinogradCache, flipped_transposed, winograd_matrices
from tinyalex.shapes import batch_chunks, conv_output_size
from tinyalex.kernels.numba import buffers, conv as gemm_conv
from tinyalex.kernels.numba.blas import gemm
from tinyalex.kernels.numba.parallel_kernel import parallel_kernel, part_range

_matrices = {}


def matrices(m, r, dtype):
    """(AT, G, BT) of F(m, r) in `dtype`, built once (exactly, in fractions) and kept."""
    key = (m, r, np.dtype(dtype))
    if key not in _matrices:
        _matrices[key] = tuple(np.ascontiguousarray(M, dtype=dtype) for M in winograd_matrices(m, r))
    return _matrices[key]


@parallel_kernel("{f}[:, :, :, ::1], {f}[:, ::1], {f}[:, :, ::1]")
def _transform_filter(weight, G, U, part, parts, done):
    """U[xi*a + nu, o, c] = (G W[o, c] G^T)[xi, nu]. Parallel over o: U[:, o] is its own.

    Vectorised over the input channels c: every statement below is a loop over c.
    """
    OC, Cg, r, _ = weight.shape
    a = G.shape[0]
    first, last = part_range(OC, part, parts)
    for o in range(first, last):
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


@parallel_kernel("{f}[:, :, :, ::1], int64, int64, {f}[:, :, :, ::1]")
def _pad_channels_last(x, ph, pw, X, part, parts, done):
    """X[n, h, w, c] = x[n, c, h - ph, w - pw], zero outside x: the input, zero-padded, with
    the channels innermost, so that every transform below runs along contiguous channels.

    x (B, C, H, W) -> X (B, rows, cols, C). Parallel over the B*rows rows of X, each its own.
    """
    B, C, H, W = x.shape
    rows, cols = X.shape[1], X.shape[2]
    w_lo, w_hi = max(0, pw), min(cols, W + pw)
    first, last = part_range(B * rows, part, parts)
    for it in range(first, last):
        n, h = it // rows, it % rows
        out = X[n, h]
        if h - ph < 0 or h - ph >= H:
            out[:, :] = 0
            continue
        out[:w_lo, :] = 0
        out[w_hi:, :] = 0
        for c in range(C):
            src = x[n, c, h - ph]
            for w in range(w_lo, w_hi):
                out[w, c] = src[w - pw]


@parallel_kernel("{f}[:, :, :, ::1], int64, int64, int64, {f}[:, ::1], {f}[:, :, ::1]")
def _transform_input(X, m, TH, TW, BT, V, part, parts, done):
    """V[xi*a + nu, n*TH*TW + th*TW + tw, c] = (BT d B)[xi, nu] for the a x a tile d of
    channel c at (th*m, tw*m) of the padded, channels-last X (B, rows, cols, C).

    Parallel over the B*TH rows of tiles: an iteration writes V[:, tiles of its row, :]
    only. Every inner loop runs along the C contiguous channels (vectorised); zero entries
    of BT are skipped.
    """
    B, C = X.shape[0], X.shape[3]
    a = BT.shape[0]
    TT = TH * TW
    first, last = part_range(B * TH, part, parts)
    for it in range(first, last):
        n, th = it // TH, it % TH
        E = np.empty((a, a, C), dtype=V.dtype)                     # E[u, j] = sum_v BT[j, v] d[u, v]
        acc = np.empty(C, dtype=V.dtype)                           # one row of V, summed in cache
        for tw in range(TW):
            for u in range(a):
                row = X[n, th * m + u]
                for j in range(a):
                    e = E[u, j]
                    e[:] = 0
                    for v in range(a):
                        b = BT[j, v]
                        if b != 0:
                            src = row[tw * m + v]
                            for c in range(C):
                                e[c] += b * src[c]
            t = n * TT + th * TW + tw
            for i in range(a):                                     # V[i*a + j] = sum_u BT[i, u] E[u, j]
                for j in range(a):
                    acc[:] = 0
                    for u in range(a):
                        b = BT[i, u]
                        if b != 0:
                            e = E[u, j]
                            for c in range(C):
                                acc[c] += b * e[c]
                    out = V[i * a + j, t]                          # V is written once, not per term
                    for c in range(C):
                        out[c] = acc[c]


@parallel_kernel("{f}[:, :, ::1], {f}[:, ::1], {f}[::1], int64, int64, {f}[:, :, :, ::1]")
def _transform_output(M, AT, bias, TH, TW, y, part, parts, done):
    """y[n, o, th*m + i, tw*m + j] = (AT M_t A)[i, j] + bias[o] for tile t = (n, th, tw),
    M (a*a, T, OC) channels last; the part of the last tiles past the output is dropped.

    Parallel over the B*TH rows of tiles: an iteration writes output rows th*m .. th*m + m - 1
    of every channel of sample n, which no other iteration touches. The transforms run
    along the OC contiguous channels of M.
    """
    B, OC, OH, OW = y.shape
    m, a = AT.shape
    TT = TH * TW
    first, last = part_range(B * TH, part, parts)
    for it in range(first, last):
        n, th = it // TH, it % TH
        Q = np.empty((m, a, OC), dtype=y.dtype)                    # Q[i, v] = sum_u AT[i, u] M[u*a + v]
        Y = np.empty(OC, dtype=y.dtype)
        for tw in range(TW):
            t = n * TT + th * TW + tw
            for i in range(m):
                for v in range(a):
                    q = Q[i, v]
                    q[:] = 0
                    for u in range(a):
                        coef = AT[i, u]
                        if coef != 0:
                            src = M[u * a + v, t]
                            for o in range(OC):
                                q[o] += coef * src[o]
            for i in range(min(m, OH - th * m)):
                for j in range(min(m, OW - tw * m)):
                    for o in range(OC):
                        Y[o] = bias[o]
                    for v in range(a):
                        coef = AT[j, v]
                        if coef != 0:
                            q = Q[i, v]
                            for o in range(OC):
                                Y[o] += coef * q[o]
                    h, w = th * m + i, tw * m + j
                    for o in range(OC):
                        y[n, o, h, w] = Y[o]


@parallel_kernel("{f}[:, :, :, ::1], {f}[:, ::1], int64, int64, {f}[:, :, ::1]")
def _transform_output_adjoint(GY, AT, TH, TW, gM, part, parts, done):
    """gM[x*a + y, t, o] = sum_{i, j} AT[i, x] AT[j, y] gy_t[i, j]: the adjoint (transpose)
    of the output transform, for the weight gradient. GY (B, TH*m, TW*m, OC) is gy
    channels last, zero past the output (the overhang of the last tiles gets no gradient).

    Parallel over the B*TH rows of tiles, each writing gM[:, tiles of its row, :] only.
    """
    B, OC = GY.shape[0], GY.shape[3]
    m, a = AT.shape
    TT = TH * TW
    first, last = part_range(B * TH, part, parts)
    for it in range(first, last):
        n, th = it // TH, it % TH
        Q = np.empty((a, m, OC), dtype=gM.dtype)                   # Q[x, j] = sum_i AT[i, x] gy[i, j]
        acc = np.empty(OC, dtype=gM.dtype)                         # one row of gM, summed in cache
        for tw in range(TW):
            for x in range(a):
                for j in range(m):
                    q = Q[x, j]
                    q[:] = 0
                    for i in range(m):
                        coef = AT[i, x]
                        if coef != 0:
                            src = GY[n, th * m + i, tw * m + j]
                            for o in range(OC):
                                q[o] += coef * src[o]
            t = n * TT + th * TW + tw
            for x in range(a):
                for y in range(a):
                    acc[:] = 0
                    for j in range(m):
                        coef = AT[j, y]
                        if coef != 0:
                            q = Q[x, j]
                            for o in range(OC):
                                acc[o] += coef * q[o]
                    out = gM[x * a + y, t]
                    for o in range(OC):
                        out[o] = acc[o]


@parallel_kernel("{f}[:, :, ::1], {f}[:, ::1], {f}[:, :, :, ::1]")
def _transform_filter_adjoint(gU, G, gW, part, parts, done):
    """gW[o, c] = G^T gU[:, o, c] G (gU viewed (a, a)): the adjoint of the filter transform.
    Parallel over o, each writing gW[o] only; vectorised over c."""
    OC, Cg, r, _ = gW.shape
    a = G.shape[0]
    first, last = part_range(OC, part, parts)
    for o in range(first, last):
        tmp = np.zeros((r, a, Cg), dtype=gW.dtype)                 # tmp[i, y] = sum_x G[x, i] gU[x*a + y]
        for i in range(r):
            for x in range(a):
                g = G[x, i]
                if g != 0:
                    for y in range(a):
                        src, t = gU[x * a + y, o], tmp[i, y]
                        for c in range(Cg):
                            t[c] += g * src[c]
        acc = np.empty(Cg, dtype=gW.dtype)
        for i in range(r):
            for j in range(r):
                acc[:] = 0
                for y in range(a):
                    g = G[y, j]
                    if g != 0:
                        t = tmp[i, y]
                        for c in range(Cg):
                            acc[c] += g * t[c]
                for c in range(Cg):
                    gW[o, c, i, j] = acc[c]


def winograd_weight_gradient(x, gy, weight_shape, padding, groups, m):
    """gW (OC, Cg, r, r) of y = correlate(x padded, W) by the transposed transforms:

        V  (a*a, T, C)  = BT d B                 the forward's input transform, recomputed
        gM (a*a, T, OC) = A gy_t AT              adjoint of the output transform
        gU (a*a, OC, Cg) = sum_t gM^T @ V        a*a GEMMs per group, summed over chunks
        gW              = G^T gU G               adjoint of the filter transform
    """
    N, C, H, W = x.shape
    OC, Cg, r, _ = weight_shape
    AT, G, BT = matrices(m, r, x.dtype)
    a, (OH, OW) = m + r - 1, gy.shape[2:]
    TH, TW = -(-OH // m), -(-OW // m)
    TT, A2, OCg = TH * TW, a * a, OC // groups
    rows, cols = (TH - 1) * m + a, (TW - 1) * m + a
    gU = buffers.empty((A2, OC, Cg), x.dtype)
    per_sample = (rows * cols * C + TH * m * TW * m * OC + A2 * TT * (C + OC)) * x.itemsize
    chunks = batch_chunks(N, per_sample, gemm_conv.WORKSPACE_BYTES)
    most = chunks[0][1] - chunks[0][0]
    X_space = gemm_conv._scratch.get("winograd_x", most * rows * cols * C, x.dtype)
    GY_space = gemm_conv._scratch.get("winograd_gy", most * TH * m * TW * m * OC, x.dtype)
    V_space = gemm_conv._scratch.get("cols", A2 * most * TT * C, x.dtype)
    M_space = gemm_conv._scratch.get("y_t", A2 * most * TT * OC, x.dtype)
    for index, (n0, n1) in enumerate(chunks):
        B = n1 - n0
        T = B * TT
        X = X_space[:B * rows * cols * C].reshape(B, rows, cols, C)
        GY = GY_space[:B * TH * m * TW * m * OC].reshape(B, TH * m, TW * m, OC)
        V = V_space[:A2 * T * C].reshape(A2, T, C)
        gM = M_space[:A2 * T * OC].reshape(A2, T, OC)
        _pad_channels_last(x[n0:n1], padding[0], padding[1], X)
        _transform_input(X, m, TH, TW, BT, V)
        _pad_channels_last(gy[n0:n1], 0, 0, GY)
        _transform_output_adjoint(GY, AT, TH, TW, gM)
        for g in range(groups):                                    # gU[k] (OCg, Cg) += gM[k]^T @ V[k]
            cin, cout = slice(g * Cg, (g + 1) * Cg), slice(g * OCg, (g + 1) * OCg)
            gemm(gM[:, :, cout].transpose(0, 2, 1), V[:, :, cin], gU[:, cout, :],
                 accumulate=index > 0)
    gW = buffers.empty(weight_shape, x.dtype)
    _transform_filter_adjoint(gU, G, gW)
    return gW


def winograd_correlate(x, weight, bias, padding, out_size, groups, m):
    """y (N, OC, OH, OW) = correlate(x zero-padded by (ph, pw) above/left, weight) + bias,
    stride 1, by F(m x m, r x r); the chunked pipeline of the module docstring."""
    N, C, H, W = x.shape
    OC, Cg, r, _ = weight.shape
    AT, G, BT = matrices(m, r, x.dtype)
    a, OH, OW = m + r - 1, out_size[0], out_size[1]
    TH, TW = -(-OH // m), -(-OW // m)
    TT, A2, OCg = TH * TW, a * a, OC // groups
    rows, cols = (TH - 1) * m + a, (TW - 1) * m + a
    U = buffers.empty((A2, OC, Cg), x.dtype)
    _transform_filter(weight, G, U)
    y = buffers.empty((N, OC, OH, OW), x.dtype)
    bias = bias if bias is not None else np.zeros(OC, dtype=x.dtype)
    chunks = batch_chunks(N, (rows * cols * C + A2 * TT * (C + OC)) * x.itemsize,
                          gemm_conv.WORKSPACE_BYTES)
    most = chunks[0][1] - chunks[0][0]
    X_space = gemm_conv._scratch.get("winograd_x", most * rows * cols * C, x.dtype)
    V_space = gemm_conv._scratch.get("cols", A2 * most * TT * C, x.dtype)  # the GEMM path's buffers
    M_space = gemm_conv._scratch.get("y_t", A2 * most * TT * OC, x.dtype)
    for n0, n1 in chunks:
        B = n1 - n0
        T = B * TT
        X = X_space[:B * rows * cols * C].reshape(B, rows, cols, C)
        V = V_space[:A2 * T * C].reshape(A2, T, C)
        M = M_space[:A2 * T * OC].reshape(A2, T, OC)
        _pad_channels_last(x[n0:n1], padding[0], padding[1], X)
        _transform_input(X, m, TH, TW, BT, V)
        for g in range(groups):                                    # M[k] (T, OCg) = V[k] @ U[k]^T
            cin, cout = slice(g * Cg, (g + 1) * Cg), slice(g * OCg, (g + 1) * OCg)
            gemm(V[:, :, cin], U[:, cout, :].transpose(0, 2, 1), M[:, :, cout])
        _transform_output(M, AT, bias, TH, TW, y[n0:n1])
    return y


def _tile(weight, stride, dilation):
    reason = winograd_refusal(weight.shape[2:], stride, dilation)
    if reason:
        raise ValueError(f"conv2d_winograd_forward: {reason}")
    return WINOGRAD_TILES[weight.shape[2]]


def conv2d_winograd_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """y = conv2d(x, W) + b by Winograd F(m x m, r x r) (module docstring; formulas in
    tinyalex.kernels.numpy.conv_winograd). Stride 1, no dilation, square 3x3 or 5x5 kernels.

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


def conv2d_winograd_backward(gy, cache, need_gx=True):
    """(gx or None, gW, gb or None), all three by Winograd:

    - gW by the transposed transforms (winograd_weight_gradient);
    - gx = correlate(gy padded by r - 1 - p, W rotated 180 degrees with its in/out
      channels swapped): a stride-1 convolution, through winograd_correlate;
    - gb = sum of gy over (n, h, w), in float64.
    """
    x, weight, has_bias, stride, padding, groups, dilation = cache.gemm_cache
    gy = gemm_conv.float_array(gy, "gy", 4)
    gemm_conv.same_dtype(x, "x", gy, "gy")
    r = weight.shape[2]
    out_size = (x.shape[2] + 2 * padding[0] - r + 1, x.shape[3] + 2 * padding[1] - r + 1)
    gemm_conv.same_shape(gy, "gy", (x.shape[0], weight.shape[0]) + out_size, "the shape of y")
    gW = winograd_weight_gradient(x, gy, weight.shape, padding, groups, cache.tile)
    gb = gy.sum(axis=(0, 2, 3), dtype=np.float64).astype(x.dtype) if has_bias else None
    if not need_gx:
        return None, gW, gb
    flipped = flipped_transposed(weight, groups)
    gx = winograd_correlate(gy, flipped, None, (r - 1 - padding[0], r - 1 - padding[1]),
                            x.shape[2:], groups, cache.tile)
    return gx, gW, gb
