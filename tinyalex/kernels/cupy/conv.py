"""2-D convolution on the GPU: CUDA im2col/col2im (kernels/im2col.cu), GEMMs on cuBLAS.

The math, the column layout of the public im2col/col2im, the group handling, the
dilation and what is saved are those of tinyalex.kernels.numpy.conv (read its docstrings for
the derivation):
cols (N, C*kh*kw, OH*OW), row c*kh*kw + i*kw + j, column oh*OW + ow; the rows of group g
are the contiguous block [g*Kg, (g+1)*Kg), Kg = Cg*kh*kw; the cache keeps x and the
weight, and backward rebuilds the columns.

What this module changes is the shape of the GEMMs. Inside conv2d the columns of a chunk
of B samples are laid side by side, as one (C*kh*kw, B*L) matrix whose column n*L + l is
pixel l of sample n (the same kernel writes it, with other strides). Then one GEMM per
group covers the whole chunk,

    y_t[g] (OCg, B*L) = W[g] (OCg, Kg) @ cols[g] (Kg, B*L),

instead of B small ones (L = OH*OW is only 169 at AlexNet's conv3-5, 144 in d2l's
Fashion-MNIST variant), and one elementwise pass
turns y_t (OC, B, L) into y (B, OC, L), adding the bias on the way. Backward mirrors it:
gy is transposed once to (OC, B*L), gW[g] += gy_t[g] @ cols[g]^T, and
gcols[g] = W[g]^T @ gy_t[g] overwrites the columns, which col2im folds back into gx.

Memory (docs/pitfalls.md#im2col-memory): the batch is cut into chunks of whole samples whose columns fit in
WORKSPACE_BYTES, and one column workspace and one transposition workspace serve every
chunk, so the peak is one chunk's, not the batch's (about 2 GB for AlexNet at batch 128).
"""
from tinyalex.shapes import batch_chunks, check_conv_operands, conv_output_size, same_dtype, same_shape
from tinyalex.kernels.cupy._checks import float_array, i32, i64
from tinyalex.kernels.cupy.loader import cupy, get_kernel, launch_1d, matmul

#: Budget for the column workspace of one conv call. 512 MiB holds 70 samples of
#: AlexNet's largest columns (conv2: 2400 x 729 floats, 7.0 MB; 2400 x 676 in d2l's variant), so batch 128 runs in
#: two chunks of 64, and smaller layers in one.
WORKSPACE_BYTES = 512 * 2**20


def _output_hw(x_shape, kernel_size, stride, padding, dilation):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    return (conv_output_size(x_shape[2], kh, sh, ph, dh),
            conv_output_size(x_shape[3], kw, sw, pw, dw))


def _column_args(x_shape, kernel_size, stride, padding, dilation, out_hw, side_by_side):
    """The geometry arguments shared by the im2col and col2im kernels.

    side_by_side=False: cols (N, C*kh*kw, L), the KERNEL_API layout;
    side_by_side=True:  cols (C*kh*kw, N*L), the samples next to each other.
    """
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = out_hw
    L = OH * OW
    sample_stride, row_stride = (L, N * L) if side_by_side else (C * kh * kw * L, L)
    return (i32(N), i32(C), i32(H), i32(W), i32(kh), i32(kw), i32(sh), i32(sw),
            i32(ph), i32(pw), i32(dh), i32(dw), i32(OH), i32(OW),
            i64(sample_stride), i64(row_stride))


def _im2col_into(x, cols, kernel_size, stride, padding, dilation, out_hw, side_by_side):
    """Fill `cols` (either layout, see _column_args) with the windows of x (N, C, H, W)."""
    N, C = x.shape[:2]
    kernel = get_kernel("im2col.cu", "im2col", x.dtype)
    args = _column_args(x.shape, kernel_size, stride, padding, dilation, out_hw, side_by_side)
    launch_1d(kernel, N * C * out_hw[0] * out_hw[1], (x, cols) + args)


def _col2im_into(cols, x, kernel_size, stride, padding, dilation, out_hw, side_by_side):
    """Overwrite x (N, C, H, W) with the sum of the column entries over each pixel."""
    kernel = get_kernel("im2col.cu", "col2im", x.dtype)
    args = _column_args(x.shape, kernel_size, stride, padding, dilation, out_hw, side_by_side)
    launch_1d(kernel, x.size, (cols, x) + args)


def im2col(x, kernel_size, stride, padding, dilation=(1, 1)):
    """cols[n, c*kh*kw + i*kw + j, oh*OW + ow] = x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]

    Shapes: x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW), same dtype; zero padding.
    """
    # x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW)
    x = float_array(x, "x", 4)
    N, C = x.shape[:2]
    (kh, kw) = kernel_size
    out_hw = _output_hw(x.shape, kernel_size, stride, padding, dilation)
    cols = cupy().empty((N, C * kh * kw, out_hw[0] * out_hw[1]), dtype=x.dtype)
    _im2col_into(x, cols, kernel_size, stride, padding, dilation, out_hw, side_by_side=False)
    return cols


def col2im(cols, x_shape, kernel_size, stride, padding, dilation=(1, 1)):
    """The adjoint of im2col: every pixel gets the sum of the column entries that copied it.

    Shapes: cols (N, C*kh*kw, OH*OW) -> x (N, C, H, W) = x_shape, same dtype as cols.
    Overlapping windows add, gathered per pixel in a fixed order: deterministic.
    """
    # cols (N, C*kh*kw, OH*OW) -> x (N, C, H, W)
    cols = float_array(cols, "cols", 3)
    x_shape = tuple(int(d) for d in x_shape)
    if len(x_shape) != 4:
        raise ValueError(f"x_shape: expected (N, C, H, W), got {x_shape}")
    N, C = x_shape[:2]
    (kh, kw) = kernel_size
    out_hw = _output_hw(x_shape, kernel_size, stride, padding, dilation)
    same_shape(cols, "cols", (N, C * kh * kw, out_hw[0] * out_hw[1]), f"for x_shape {x_shape}")
    x = cupy().empty(x_shape, dtype=cols.dtype)
    _col2im_into(cols, x, kernel_size, stride, padding, dilation, out_hw, side_by_side=False)
    return x


def conv2d_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """y = conv2d(x, W) + b: per chunk of samples, im2col then one GEMM per group.

    Shapes: x (N, C, H, W), weight (OC, C/groups, kh, kw), bias (OC,) or None
            -> y (N, OC, OH, OW), OH = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1 (likewise OW).
    Saved for backward: x, weight, whether there is a bias, stride, padding, groups,
    dilation (as the reference: the columns are rebuilt in backward, not kept).
    """
    # x (N, C, H, W), weight (OC, Cg, kh, kw), bias (OC,) -> y (N, OC, OH, OW)
    cp = cupy()
    x, weight, bias = _check_conv_operands(x, weight, bias, groups)
    N = x.shape[0]
    OC, Cg, kh, kw = weight.shape
    G, OCg, Kg = groups, OC // groups, Cg * kh * kw
    OH, OW = _output_hw(x.shape, (kh, kw), stride, padding, dilation)
    L = OH * OW
    weight_g = weight.reshape(G, OCg, Kg)
    y = cp.empty((N, OC, OH, OW), dtype=x.dtype)
    chunks = batch_chunks(N, G * Kg * L * x.itemsize, WORKSPACE_BYTES)
    most = max((stop - start for start, stop in chunks), default=0)
    cols_space = cp.empty(G * Kg * most * L, dtype=x.dtype)
    y_space = cp.empty(OC * most * L, dtype=x.dtype)
    for start, stop in chunks:
        B = stop - start
        cols = cols_space[:G * Kg * B * L].reshape(G, Kg, B * L)
        _im2col_into(x[start:stop], cols, (kh, kw), stride, padding, dilation, (OH, OW),
                     side_by_side=True)
        y_t = y_space[:OC * B * L].reshape(G, OCg, B * L)
        for g in range(G):
            matmul(weight_g[g], cols[g], out=y_t[g])
        # y_t (OC, B, L) -> y[start:stop] (B, OC, L), adding the bias in the same pass.
        y_t = y_t.reshape(OC, B, L).transpose(1, 0, 2)
        y_chunk = y[start:stop].reshape(B, OC, L)
        if bias is None:
            y_chunk[...] = y_t
        else:
            cp.add(y_t, bias.reshape(1, OC, 1), out=y_chunk)
    cache = (x, weight, bias is not None, stride, padding, groups, dilation)
    return y, cache


def conv2d_backward(gy, cache, need_gx=True):
    """Gradients of conv2d: (gx or None, gW, gb or None). See tinyalex.kernels.numpy.conv.

    Per chunk of B samples, with cols[g] (Kg, B*L) the chunk's columns of group g and
    gy_t[g] (OCg, B*L) its output gradient:

        gb     = sum_{n, oh, ow} gy                          (OC,)
        gW[g] += gy_t[g] @ cols[g]^T                         (OCg, Kg), summed over chunks
        gcols[g] = W[g]^T @ gy_t[g]                          (Kg, B*L), into the cols space
        gx[chunk] = col2im(gcols)                            (B, C, H, W)

    gx is skipped (None) when need_gx is False (the first layer). Every GEMM contracts
    over a whole chunk and every kernel is a gather, so the result is deterministic.
    Shapes: gy (N, OC, OH, OW); cache from conv2d_forward.
    """
    # gy (N, OC, OH, OW) -> gx (N, C, H, W) or None, gW (OC, Cg, kh, kw), gb (OC,) or None
    cp = cupy()
    x, weight, has_bias, stride, padding, groups, dilation = cache
    N = x.shape[0]
    OC, Cg, kh, kw = weight.shape
    G, OCg, Kg = groups, OC // groups, Cg * kh * kw
    OH, OW = _output_hw(x.shape, (kh, kw), stride, padding, dilation)
    L = OH * OW
    gy = float_array(gy, "gy", 4)
    same_dtype(x, "x", gy, "gy")
    same_shape(gy, "gy", (N, OC, OH, OW), "the shape of the conv output")
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    weight_g = weight.reshape(G, OCg, Kg)
    gW = cp.zeros((G, OCg, Kg), dtype=x.dtype)
    gx = cp.empty(x.shape, dtype=x.dtype) if need_gx else None
    chunks = batch_chunks(N, G * Kg * L * x.itemsize, WORKSPACE_BYTES)
    most = max((stop - start for start, stop in chunks), default=0)
    cols_space = cp.empty(G * Kg * most * L, dtype=x.dtype)
    gy_space = cp.empty(OC * most * L, dtype=x.dtype)
    for start, stop in chunks:
        B = stop - start
        gy_t = gy_space[:OC * B * L].reshape(OC, B, L)
        gy_t[...] = gy[start:stop].reshape(B, OC, L).transpose(1, 0, 2)
        gy_t = gy_t.reshape(G, OCg, B * L)
        cols = cols_space[:G * Kg * B * L].reshape(G, Kg, B * L)
        _im2col_into(x[start:stop], cols, (kh, kw), stride, padding, dilation, (OH, OW),
                     side_by_side=True)
        for g in range(G):
            gW[g] += matmul(gy_t[g], cols[g].T)
        if need_gx:
            for g in range(G):                                     # the columns become gcols
                matmul(weight_g[g].T, gy_t[g], out=cols[g])
            _col2im_into(cols, gx[start:stop], (kh, kw), stride, padding, dilation, (OH, OW),
                         side_by_side=True)
    return gx, gW.reshape(weight.shape), gb


def _check_conv_operands(x, weight, bias, groups):
    """x, weight, bias as C-contiguous arrays of one float dtype, with consistent shapes."""
    x, weight = float_array(x, "x", 4), float_array(weight, "weight", 4)
    bias = None if bias is None else float_array(bias, "bias", 1)
    check_conv_operands(x, weight, bias, groups)
    return x, weight, bias
