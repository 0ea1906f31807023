"""2-D convolution on the CPU: parallel Numba im2col/col2im, the GEMMs in BLAS.

The math is that of tinyalex.kernels.numpy.conv (read its docstrings for the derivation).
im2col and col2im here produce and consume the same public layout, cols (N, C*kh*kw, L),
row c*kh*kw + i*kw + j, column oh*OW + ow (K = Cg*kh*kw per group, L = OH*OW). With a
dilation (dh, dw), tap (i, j) reads the input at offset (i*dh, j*dw) from the window's
corner: only the im2col/col2im index arithmetic changes.

Inside conv2d_forward/backward the columns of a chunk of B samples are laid out
BATCH-INNER instead, cols_t (C*kh*kw, B, L), so that every product is ONE GEMM per group
whose inner or column dimension is B*L:

    forward   y_t (G, OCg, B*L) = W_g (G, OCg, K) @ cols_t (G, K, B*L),  then to NCHW + b
    backward  gW_g += gy_t @ cols_t^T,   gcols_t = W_g^T @ gy_t,   gx = col2im(gcols_t)

With the public layout B GEMMs with L columns would write NCHW directly; L = OH*OW is only
169 at AlexNet's conv3-5 (13 x 13; 144 in d2l's Fashion-MNIST variant, 12 x 12), where the single wide GEMM is faster than B narrow ones by more than
the transposing pass costs (and that pass adds the bias; measured in
benchmarks/results/cpu_design_notes.md). Besides:

- im2col and col2im are parallel loops over disjoint outputs (no races, no atomics);
- the GEMMs run on Numba's own pool, one single-threaded BLAS call per task inside a
  parallel loop (tinyalex.kernels.numba.blas): one pool for everything, so no idle BLAS worker spins
  against the next Numba kernel, whatever was imported first (docs/pitfalls.md#oversubscription);
- the batch is processed in chunks whose columns fit in WORKSPACE_BYTES, and one
  workspace is reused for every chunk and every call: the full column matrix of AlexNet
  at batch 128 would take GBs (docs/pitfalls.md#im2col-memory);
- backward rebuilds the columns chunk by chunk from the saved x, like PyTorch, instead of
  keeping them from the forward (they are kh*kw/(sh*sw) times larger than x).
"""
import threading

import numpy as np
from numba import njit

from tinyalex.shapes import batch_chunks, check_conv_operands, conv_output_size, same_dtype, same_shape
from tinyalex.kernels.numba import buffers
from tinyalex.kernels.numba._checks import float_array
from tinyalex.kernels.numba.blas import gemm
from tinyalex.kernels.numba.parallel_kernel import parallel_kernel, part_range

#: Budget for the column workspace of one conv call. The batch is cut into chunks of
#: whole samples whose columns fit in it (at least one sample per chunk). 128 MiB holds
#: AlexNet's largest per-sample columns (conv2: 2400 x 729 floats, 7.0 MB; 2400 x 676 in
#: d2l's variant) many times
#: over, so at batch 16 every float32 layer runs as one chunk, yet batch 128 stays bounded.
WORKSPACE_BYTES = 128 * 2**20


class _Scratch(threading.local):
    """Reusable per-thread buffers: the columns, and y or gy in the batch-inner layout.

    A fresh np.empty of ~100 MB is not free: the OS hands out zeroed pages on first
    touch, which at AlexNet's conv2 costs over half of what im2col itself costs
    (benchmarks/results/cpu_design_notes.md). So the buffers are kept between calls and
    regrown only when a call needs more: per Python thread, the columns take at most
    WORKSPACE_BYTES (or one sample's columns, if larger), plus a chunk of y or gy.
    """

    def __init__(self):
        self.buffers = {}

    def get(self, name, count, dtype):
        """A 1-D `dtype` view of `count` elements of buffer `name` (contents undefined)."""
        nbytes = count * np.dtype(dtype).itemsize
        buffer = self.buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = self.buffers[name] = np.empty(nbytes, dtype=np.uint8)
        return buffer[:nbytes].view(dtype)


_scratch = _Scratch()


# --- kernels ------------------------------------------------------------------------

@njit(cache=True)
def _valid_outputs(n_out, size, stride, pad, offset):
    """[lo, hi): the outputs o whose tap o*stride - pad + offset lies inside [0, size)."""
    lo = max(0, -((offset - pad) // stride))                       # ceil((pad - offset) / stride)
    hi = min(n_out, (size - 1 + pad - offset) // stride + 1)
    return lo, max(lo, hi)


@parallel_kernel("{f}[:, :, :, ::1], int64, int64, int64, int64, int64, int64, int64, int64, "
                 "{f}[:, :, ::1], boolean")
def _im2col_into(x, kh, kw, sh, sw, ph, pw, dh, dw, cols, batch_inner, part, parts, done):
    """cols[n, r, oh*OW + ow] = x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw],  r = c*kh*kw + i*kw + j,
    or cols[r, n, oh*OW + ow] with batch_inner (the (rows, N, L) layout conv uses).

    Parallel over the N*C*kh*kw rows of cols: each iteration writes its own row, so the
    writes are disjoint. The iterations are ordered as the rows lie in memory, (n, r) or
    (r, n), so each thread's share is one contiguous stretch of cols (in the batch-inner
    layout the other order is slower: every row would land on a different page).
    """
    N, C, H, W = x.shape
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = C * kh * kw
    first, last = part_range(N * rows, part, parts)
    for it in range(first, last):
        if batch_inner:
            r, n = it // N, it % N
        else:
            n, r = it // rows, it % rows
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        row = cols[r, n] if batch_inner else cols[n, r]
        plane = x[n, c]
        oh_lo, oh_hi = _valid_outputs(OH, H, sh, ph, i * dh)
        ow_lo, ow_hi = _valid_outputs(OW, W, sw, pw, j * dw)
        shift = j * dw - pw                                        # input column of ow is ow*sw + shift
        row[:oh_lo * OW] = 0                                       # window rows in the padding
        row[oh_hi * OW:] = 0
        for oh in range(oh_lo, oh_hi):
            x_row = plane[oh * sh - ph + i * dh]
            out = row[oh * OW:(oh + 1) * OW]
            out[:ow_lo] = 0
            if sw == 1:                                            # a contiguous copy
                for ow in range(ow_lo, ow_hi):
                    out[ow] = x_row[ow + shift]
            else:
                for ow in range(ow_lo, ow_hi):
                    out[ow] = x_row[ow * sw + shift]
            out[ow_hi:] = 0


@parallel_kernel("{f}[:, :, ::1], int64, int64, int64, int64, int64, int64, int64, int64, "
                 "{f}[:, :, :, ::1], boolean")
def _col2im_into(cols, kh, kw, sh, sw, ph, pw, dh, dw, x, batch_inner, part, parts, done):
    """x[n, c] = sum of cols[n, c*kh*kw + i*kw + j, oh*OW + ow] over the windows covering it
    (cols[c*kh*kw + i*kw + j, n] with batch_inner).

    Parallel over the N*C input planes: each iteration owns plane x[n, c] and adds into it
    every column entry of its channel, so overlapping windows accumulate inside one
    iteration and no two iterations touch the same pixel (no race, no atomics; the sum
    order is fixed, so the result is bitwise repeatable). As in im2col, the iterations
    run in the order the rows of cols lie in memory (faster, batch-inner; the numbers are
    in benchmarks/results/cpu_design_notes.md).
    """
    N, C, H, W = x.shape
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    first, last = part_range(N * C, part, parts)
    for it in range(first, last):
        if batch_inner:                                            # read cols in memory order
            c, n = it // N, it % N
        else:
            n, c = it // C, it % C
        plane = x[n, c]
        plane[:] = 0
        for i in range(kh):
            oh_lo, oh_hi = _valid_outputs(OH, H, sh, ph, i * dh)
            for j in range(kw):
                ow_lo, ow_hi = _valid_outputs(OW, W, sw, pw, j * dw)
                r = (c * kh + i) * kw + j
                row = cols[r, n] if batch_inner else cols[n, r]
                for oh in range(oh_lo, oh_hi):
                    x_row = plane[oh * sh - ph + i * dh]
                    segment = row[oh * OW:(oh + 1) * OW]
                    for ow in range(ow_lo, ow_hi):
                        x_row[ow * sw - pw + j * dw] += segment[ow]


@parallel_kernel("{f}[:, :, ::1], {f}[:, :, ::1], float64[::1]", fastmath={"reassoc"})
def _transpose_and_sum(gy, gy_t, sums, part, parts, done):
    """gy_t[o, n, l] = gy[n, o, l] and sums[o] += sum_{n, l} gy[n, o, l] (float64).

    Parallel over the output channels o: each iteration owns gy_t[o] and sums[o], so
    nothing is shared. `reassoc` lets the float64 sum vectorise (a different but fixed
    order of additions: still bitwise repeatable).
    """
    N, OC, L = gy.shape
    first, last = part_range(OC, part, parts)
    for o in range(first, last):
        total = 0.0
        for n in range(N):
            src = gy[n, o]
            dst = gy_t[o, n]
            for l in range(L):
                v = src[l]
                dst[l] = v
                total += v
        sums[o] += total


@parallel_kernel("{f}[:, :, ::1], {f}[::1], {f}[:, :, ::1]")
def _from_batch_inner(y_t, bias, y, part, parts, done):
    """y[n, o, l] = y_t[o, n, l] + bias[o]: the GEMM's (OC, N, L) result to NCHW, plus bias.

    Parallel over the N*OC (n, o) rows of y, each written by one iteration only.
    """
    N, OC, L = y.shape
    first, last = part_range(N * OC, part, parts)
    for no in range(first, last):
        n, o = no // OC, no % OC
        src, dst, b = y_t[o, n], y[n, o], bias[o]
        for l in range(L):
            dst[l] = src[l] + b


# --- the kernel API -------------------------------------------------------------------

def _geometry(shape, kernel_size, stride, padding, dilation):
    N, C, H, W = shape
    OH = conv_output_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    return OH, OW


def im2col(x, kernel_size, stride, padding, dilation=(1, 1)):
    """Every kh x kw window of the zero-padded x as a column: x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW)."""
    x = float_array(x, "x", 4)
    N, C = x.shape[:2]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = _geometry(x.shape, kernel_size, stride, padding, dilation)
    cols = buffers.empty((N, C * kh * kw, OH * OW), x.dtype)
    _im2col_into(x, kh, kw, sh, sw, ph, pw, dh, dw, cols, False)
    return cols


def col2im(cols, x_shape, kernel_size, stride, padding, dilation=(1, 1)):
    """The adjoint of im2col: cols (N, C*kh*kw, OH*OW) -> x (N, C, H, W), overlaps added."""
    cols = float_array(cols, "cols", 3)
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = _geometry(x_shape, kernel_size, stride, padding, dilation)
    same_shape(cols, "cols", (N, C * kh * kw, OH * OW), f"for x_shape {tuple(x_shape)}")
    x = buffers.empty((N, C, H, W), cols.dtype)
    _col2im_into(cols, kh, kw, sh, sw, ph, pw, dh, dw, x, False)
    return x


def _check_conv(x, weight, bias, groups):
    x, weight = float_array(x, "x", 4), float_array(weight, "weight", 4)
    bias = None if bias is None else float_array(bias, "bias", 1)
    check_conv_operands(x, weight, bias, groups)
    return x, weight, bias


def conv2d_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """y = conv2d(x, W) + b as im2col (numba), one GEMM per group (BLAS), then a transpose.

    Shapes: x (N, C, H, W), weight (OC, C/groups, kh, kw), bias (OC,) or None
            -> y (N, OC, OH, OW). Per chunk of B samples, in the batch-inner layout:
                cols_t (G, K, B*L)  <- im2col(x[chunk])              (reused workspace)
                y_t (G, OCg, B*L)    = W_g (G, OCg, K) @ cols_t       (BLAS)
                y[chunk] (B, OC, L)  = y_t viewed (OC, B, L), transposed, + b   (numba)
    Why batch-inner: see the module docstring. Saved for backward: x, weight, whether
    there is a bias, stride, padding, groups, dilation (the columns are rebuilt in backward).
    """
    x, weight, bias = _check_conv(x, weight, bias, groups)
    N, C = x.shape[:2]
    OC, Cg, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    OH, OW = _geometry(x.shape, (kh, kw), stride, padding, dilation)
    G, OCg, K, L = groups, OC // groups, Cg * kh * kw, OH * OW
    weight_g = weight.reshape(G, OCg, K)
    y = buffers.empty((N, OC, OH, OW), x.dtype)
    y3 = y.reshape(N, OC, L)
    bias_or_zeros = bias if bias is not None else np.zeros(OC, dtype=x.dtype)

    chunks = batch_chunks(N, C * kh * kw * L * x.itemsize, WORKSPACE_BYTES)
    most = chunks[0][1] - chunks[0][0]
    cols_space = _scratch.get("cols", most * C * kh * kw * L, x.dtype)
    y_space = _scratch.get("y_t", most * OC * L, x.dtype)
    for n0, n1 in chunks:
        B = n1 - n0
        cols_t = cols_space[:C * kh * kw * B * L].reshape(C * kh * kw, B, L)
        y_t = y_space[:OC * B * L].reshape(OC, B, L)
        _im2col_into(x[n0:n1], kh, kw, sh, sw, ph, pw, dh, dw, cols_t, True)
        gemm(weight_g, cols_t.reshape(G, K, B * L), y_t.reshape(G, OCg, B * L))
        _from_batch_inner(y_t, bias_or_zeros, y3[n0:n1])
    cache = (x, weight, bias is not None, stride, padding, groups, dilation)
    return y, cache


def conv2d_backward(gy, cache, need_gx=True):
    """(gx or None, gW, gb or None) of conv2d; formulas in tinyalex.kernels.numpy.conv.

    Per chunk of B samples the columns are rebuilt in the batch-inner layout
    cols_t (C*kh*kw, B, L), and gy is copied to gy_t (OC, B, L) (the same numba pass sums
    gb), so that each gradient is ONE GEMM per group with the whole chunk in its inner
    dimension, rather than B narrow GEMMs and a sum:

        gW_g    (G, OCg, K)  += gy_t (G, OCg, B*L) @ cols_t (G, K, B*L)^T
        gcols_t (G, K, B*L)   = W_g^T (G, K, OCg)  @ gy_t (G, OCg, B*L)    (into cols_t's memory)
        gx[chunk]             = col2im(gcols_t, batch-inner)

    gW is a sum over chunks done by BLAS GEMMs and one `+=` per chunk: no parallel loop
    writes it; gb's sums are owned per output channel.
    """
    x, weight, has_bias, stride, padding, groups, dilation = cache
    gy = float_array(gy, "gy", 4)
    same_dtype(x, "x", gy, "gy")
    N, C = x.shape[:2]
    OC, Cg, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    OH, OW = _geometry(x.shape, (kh, kw), stride, padding, dilation)
    same_shape(gy, "gy", (N, OC, OH, OW), "the shape of y")
    G, OCg, K, L = groups, OC // groups, Cg * kh * kw, OH * OW
    gy3 = gy.reshape(N, OC, L)
    gW = buffers.empty_like(weight)
    gW_g = gW.reshape(G, OCg, K)
    gb_sums = np.zeros(OC)
    weight_g_t = weight.reshape(G, OCg, K).transpose(0, 2, 1)      # (G, K, OCg), BLAS transposes
    gx = buffers.empty_like(x) if need_gx else None

    chunks = batch_chunks(N, C * kh * kw * L * x.itemsize, WORKSPACE_BYTES)
    most = chunks[0][1] - chunks[0][0]
    cols_space = _scratch.get("cols", most * C * kh * kw * L, x.dtype)
    gy_space = _scratch.get("y_t", most * OC * L, x.dtype)      # the forward's y_t buffer
    for index, (n0, n1) in enumerate(chunks):
        B = n1 - n0
        cols_t = cols_space[:C * kh * kw * B * L].reshape(C * kh * kw, B, L)
        gy_t = gy_space[:OC * B * L].reshape(OC, B, L)
        _im2col_into(x[n0:n1], kh, kw, sh, sw, ph, pw, dh, dw, cols_t, True)
        _transpose_and_sum(gy3[n0:n1], gy_t, gb_sums)
        cols_g = cols_t.reshape(G, K, B * L)
        gy_g = gy_t.reshape(G, OCg, B * L)
        gemm(gy_g, cols_g.transpose(0, 2, 1), gW_g, accumulate=index > 0)
        if need_gx:
            gemm(weight_g_t, gy_g, cols_g)                         # the columns are spent: reuse
            _col2im_into(cols_t, kh, kw, sh, sw, ph, pw, dh, dw, gx[n0:n1], True)
    gb = gb_sums.astype(x.dtype) if has_bias else None
    return gx, gW, gb
