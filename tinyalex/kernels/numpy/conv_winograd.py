"""2-D convolution by Winograd minimal filtering (the reference; read beside conv.py).

Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks", section 4;
the derivation, the error and the backward mapping are in docs/ops/conv2d_winograd.md.

F(m, r) computes m outputs of a 1-D correlation with an r-tap filter g from a = m + r - 1
inputs d with only a multiplies instead of m*r:

    y = AT [ (G g) * (BT d) ]           AT (m, a), G (a, r), BT (a, a), * elementwise

Nested in 2-D, F(m x m, r x r) turns an a x a input tile d into an m x m output tile

    Y = AT [ (G g G^T) * (BT d B) ] A   a*a multiplies instead of m*m*r*r

and for a whole layer the elementwise product, summed over input channels, becomes a*a
independent GEMMs, one per transform-domain position (xi, nu):

    U[xi, nu] (OC, C) = (G W[o, c] G^T)[xi, nu]                   filter transform
    V[xi, nu] (C, T)  = (BT d[c, t] B)[xi, nu]                    input transform, T tiles
    M[xi, nu] (OC, T) = U[xi, nu] @ V[xi, nu]                     a*a GEMMs
    y tile t of o     = AT M[:, :, o, t] A                        output transform

With groups the GEMMs are per group too: (a*a, G) GEMMs of (OCg, Cg) @ (Cg, T).

Backward (stride 1): the input gradient is itself a stride-1 convolution,
gx = correlate(pad(gy, r - 1 - p), flip(W) with in/out channels swapped), so it runs
through the same three transforms; the weight gradient runs them transposed (the
adjoint of each), around a*a GEMMs that sum over the tiles.
"""
from fractions import Fraction

import collections

import numpy as np

from tinyalex.kernels.conv_algorithms import WINOGRAD_TILES, winograd_refusal
from tinyalex.shapes import conv_output_size

#: The finite interpolation points, in the order the transforms use them (a - 1 of them;
#: the last point is infinity). Small integers and halves keep the transforms' entries
#: small, which is what keeps the rounding error small (docs/ops/conv2d_winograd.md#error).
POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2), 3, -3)


#: What conv2d_winograd_forward saves, here and in the numba set: the GEMM path's cache
#: (x, weight, has_bias, stride, padding, groups, dilation) and the output tile size m.
WinogradCache = collections.namedtuple("WinogradCache", "gemm_cache tile")


def winograd_matrices(m, r):
    """(AT (m, a), G (a, r), BT (a, a)) of F(m, r), a = m + r - 1, as float64 arrays.

    Built exactly, in fractions, by the Toom-Cook construction of the derivation page:
    with p_0..p_{a-2} = POINTS and p_{a-1} = infinity, and E_n (a, n) the matrix that
    evaluates a polynomial of n coefficients at the points (row j: p_j^0 .. p_j^(n-1);
    the row of infinity picks the leading coefficient),

        AT = E_m^T,   G = E_r,   BT = (E_a^{-1})^T

    Row j of BT is then scaled to integers and row j of G divided by the same factor:
    y = AT [(G g) * (BT d)] is unchanged because each product pairs row j with row j.
    """
    a = m + r - 1
    if not 2 <= a <= len(POINTS) + 1:
        raise ValueError(f"winograd_matrices: F({m}, {r}) needs {a - 1} finite points, have"
                         f" {len(POINTS)}")
    points = [Fraction(p) for p in POINTS[:a - 1]]

    def evaluation(n):                                             # E_n, (a, n), in fractions
        rows = [[p**k for k in range(n)] for p in points]
        return rows + [[Fraction(int(k == n - 1)) for k in range(n)]]

    E_m, E_r, E_a = evaluation(m), evaluation(r), evaluation(a)
    BT = [list(row) for row in zip(*_inverse(E_a))]                # (E_a^{-1})^T
    G = [list(row) for row in E_r]
    for j in range(a):
        scale = _lcm_of_denominators(BT[j])
        BT[j] = [v * scale for v in BT[j]]
        G[j] = [v / scale for v in G[j]]
    AT = [list(row) for row in zip(*E_m)]
    return tuple(np.array([[float(v) for v in row] for row in M]) for M in (AT, G, BT))


def _inverse(matrix):
    """Exact inverse of a square matrix of Fractions (Gauss-Jordan)."""
    n = len(matrix)
    work = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if work[i][col] != 0)
        work[col], work[pivot] = work[pivot], work[col]
        lead = work[col][col]
        work[col] = [v / lead for v in work[col]]
        for i in range(n):
            if i != col and work[i][col] != 0:
                factor = work[i][col]
                work[i] = [v - factor * w for v, w in zip(work[i], work[col])]
    return [row[n:] for row in work]


def _lcm_of_denominators(values):
    scale = 1
    for v in values:
        d = Fraction(v).denominator
        scale = scale * d // np.gcd(scale, d)
    return scale


def transform_filter(weight, G):
    """U[xi, nu, o, c] = (G W[o, c] G^T)[xi, nu]: weight (OC, Cg, r, r) -> U (a, a, OC, Cg)."""
    return np.einsum("xi,ocij,yj->xyoc", G, weight, G).astype(weight.dtype)


def winograd_correlate(x, U, padding, out_size, groups, m, AT, BT):
    """y[n, o] = sum_c correlate(x_pad[n, c], W[o, c]) from the transformed filter U.

    Shapes: x (N, C, H, W), U (a, a, OC, Cg) -> y (N, OC, OH, OW) = out_size.
    padding (ph, pw) zeros above/left; it may be negative (rows cropped), as the input
    gradient needs when the forward padded by more than r - 1.
    """
    N = x.shape[0]
    a = U.shape[0]
    OC, Cg = U.shape[2:]
    OH, OW = out_size
    TH, TW = -(-OH // m), -(-OW // m)                              # tiles per column, per row
    V = input_tiles_transformed(x, padding, (TH, TW), m, a, BT).reshape(a * a, groups, Cg, N * TH * TW)
    Ug = U.reshape(a * a, groups, OC // groups, Cg)
    Mt = (Ug @ V).reshape(a, a, OC, N, TH, TW)                     # the a*a*groups GEMMs
    Y = np.einsum("ix,xyonhw,jy->nohiwj", AT, Mt, AT)              # (N, OC, TH, m, TW, m)
    return np.ascontiguousarray(Y.reshape(N, OC, TH * m, TW * m)[:, :, :OH, :OW]).astype(x.dtype)


def flipped_transposed(weight, groups):
    """W'[g*Cg + c, o] = W[g*OCg + o, c] rotated by 180 degrees: (OC, Cg, r, r) -> (C, OCg, r, r),
    the weight of the convolution that maps gy back onto x (same groups)."""
    OC, Cg, kh, kw = weight.shape
    w = weight.reshape(groups, OC // groups, Cg, kh, kw).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(w[..., ::-1, ::-1]).reshape(groups * Cg, OC // groups, kh, kw)


def _check(weight, stride, dilation):
    reason = winograd_refusal(weight.shape[2:], stride, dilation)
    if reason:
        raise ValueError(f"conv2d_winograd_forward: {reason}")
    return WINOGRAD_TILES[weight.shape[2]]


def conv2d_winograd_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """y = conv2d(x, W) + b by Winograd F(m x m, r x r): the filter, input and output transforms
    around a*a GEMMs (module docstring).

    Shapes: x (N, C, H, W), weight (OC, C/groups, r, r), bias (OC,) or None
            -> y (N, OC, OH, OW), OH = H + 2*ph - r + 1 (stride 1).
    Saved for backward: the GEMM path's cache (x, weight, has_bias, stride, padding,
    groups, dilation) and the tile size m. Neither U nor V is kept: V is as large as
    the columns of im2col divided by about r*r/(a*a/(m*m)), and backward needs U of the
    flipped weight anyway.
    """
    m = _check(weight, stride, dilation)
    r = weight.shape[2]
    AT, G, BT = winograd_matrices(m, r)
    OH = conv_output_size(x.shape[2], r, 1, padding[0])
    OW = conv_output_size(x.shape[3], r, 1, padding[1])
    y = winograd_correlate(x, transform_filter(weight, G), padding, (OH, OW), groups, m, AT, BT)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y, WinogradCache((x, weight, bias is not None, stride, padding, groups, dilation), m)


def winograd_weight_gradient(x, gy, weight_shape, padding, groups, m):
    """gW (OC, Cg, r, r) by the transposed transforms (each step the adjoint of a forward one):

        V  = BT d B           (a, a, C, T)     the forward's input transform of x
        gM = A gy_t AT        (a, a, OC, T)    gy cut into m x m tiles, zeros past the edge
        gU = gM @ V^T         (a, a, OC, Cg)   per group, summed over the T tiles
        gW = G^T gU G         (OC, Cg, r, r)
    """
    N, C, H, W = x.shape
    OC, Cg, r, _ = weight_shape
    a = m + r - 1
    AT, G, BT = winograd_matrices(m, r)
    OH, OW = gy.shape[2:]
    TH, TW = -(-OH // m), -(-OW // m)
    V = input_tiles_transformed(x, padding, (TH, TW), m, a, BT)    # (a, a, C, N, TH, TW)
    gy_pad = np.zeros((N, OC, TH * m, TW * m), dtype=gy.dtype)
    gy_pad[:, :, :OH, :OW] = gy
    tiles = gy_pad.reshape(N, OC, TH, m, TW, m)                    # tiles[n, o, th, i, tw, j]
    gM = np.einsum("ix,nohiwj,jy->xyonhw", AT, tiles, AT)
    Vg = V.reshape(a * a, groups, Cg, -1)
    gMg = gM.reshape(a * a, groups, OC // groups, -1)
    gU = (gMg @ Vg.transpose(0, 1, 3, 2)).reshape(a, a, OC, Cg)    # sum over the tiles
    return np.einsum("xi,xyoc,yj->ocij", G, gU, G).astype(x.dtype)


def input_tiles_transformed(x, padding, tiles, m, a, BT):
    """V[xi, nu, c, n, th, tw] = (BT d B)[xi, nu], d the a x a tile of x padded by `padding`
    (above/left; negative crops) at (th*m, tw*m). The first half of winograd_correlate."""
    N, C, H, W = x.shape
    TH, TW = tiles
    rows, cols = (TH - 1) * m + a, (TW - 1) * m + a
    x_pad = np.zeros((N, C, rows, cols), dtype=x.dtype)
    ph, pw = padding
    src_h = slice(max(0, -ph), min(H, rows - ph))
    src_w = slice(max(0, -pw), min(W, cols - pw))
    x_pad[:, :, src_h.start + ph:src_h.stop + ph, src_w.start + pw:src_w.stop + pw] = x[:, :, src_h, src_w]
    d = np.lib.stride_tricks.sliding_window_view(x_pad, (a, a), axis=(2, 3))[:, :, ::m, ::m]
    return np.einsum("xu,nchwuv,yv->xycnhw", BT, d, BT)


def conv2d_winograd_backward(gy, cache, need_gx=True):
    """(gx or None, gW, gb or None), all by Winograd:

    gW by the transposed transforms (winograd_weight_gradient); gb = sum of gy; and

    gx[n, c, h, w] = sum_{o, i, j} gy[n, o, h + ph - i, w + pw - j] W[o, c, i, j]
                   = correlate(gy padded by r - 1 - p, W rotated 180 deg)[n, c, h, w]

    with input and output channels swapped per group (flipped_transposed): a stride-1
    convolution of gy (N, OC, OH, OW) into (N, C, H, W), through the same transforms.
    """
    x, weight, has_bias, stride, padding, groups, dilation = cache.gemm_cache
    r, m = weight.shape[2], cache.tile
    gW = winograd_weight_gradient(x, gy, weight.shape, padding, groups, m)
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_gx:
        return None, gW, gb
    AT, G, BT = winograd_matrices(m, r)
    U = transform_filter(flipped_transposed(weight, groups), G)
    gx = winograd_correlate(gy, U, (r - 1 - padding[0], r - 1 - padding[1]), x.shape[2:],
                            groups, m, AT, BT)
    return gx, gW, gb
