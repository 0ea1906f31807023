"""2-D convolution as im2col + one matrix multiply (the reference).

A convolution slides a (C/groups, kh, kw) filter over the zero-padded input. im2col
copies every window into a column, so the whole layer becomes one GEMM:

    y[n, oc, oh, ow] = b[oc] + sum_{c, i, j} W[oc, c, i, j] x_pad[n, g*Cg + c, oh*sh + i*dh, ow*sw + j*dw]

where g = oc // OCg is the group of the output channel, Cg = C / groups input channels and
OCg = OC / groups output channels per group, and (dh, dw) is the dilation: tap (i, j) of
the kernel reads the input i*dh rows and j*dw columns from the window's corner, so a
dilated kernel spans dh*(kh - 1) + 1 rows with holes between its taps (dilation 1: the
ordinary convolution). Only im2col and col2im see the dilation; the GEMMs do not.

The column layout is (N, C*kh*kw, OH*OW): row c*kh*kw + i*kw + j holds input channel c at
kernel offset (i, j), column oh*OW + ow is the output pixel. It is chosen so that the GEMM
writes NCHW directly, with no transposes: the rows of group g are contiguous, so

    cols (N, C*kh*kw, L)  viewed as (N, G, Cg*kh*kw, L)
    W    (OC, Cg, kh, kw) viewed as (G, OCg, Cg*kh*kw)
    y = W @ cols          (N, G, OCg, L)  is  (N, OC, OH, OW) after a reshape.
"""
import numpy as np

from tinyalex.shapes import conv_output_size

def im2col(x, kernel_size, stride, padding, dilation=(1, 1)):
    """Copy every kh*kw window of the zero-padded x into a column.

    cols[n, c*kh*kw + i*kw + j, oh*OW + ow] = x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]

    Shapes: x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW), same dtype as x;
    OH = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1 (likewise OW).
    One strided slice of x_pad per kernel offset (i, j) fills the (N, C, OH, OW) block of
    every row with that offset at once, so the only Python loop is over the kh*kw offsets.
    """
    # x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # Output pixel (oh, ow) reads padded row oh*sh + i*dh and column ow*sw + j*dw.
            cols[:, :, i, j] = x_pad[:, :, i * dh:i * dh + sh * OH:sh, j * dw:j * dw + sw * OW:sw]
    return cols.reshape(N, C * kh * kw, OH * OW)


def col2im(cols, x_shape, kernel_size, stride, padding, dilation=(1, 1)):
    """The adjoint of im2col: add every column back onto the pixels its window covers.

    x[n, c, h, w] = sum over all (i, j, oh, ow) with oh*sh + i*dh - ph = h and
                    ow*sw + j*dw - pw = w of cols[n, c*kh*kw + i*kw + j, oh*OW + ow]

    Shapes: cols (N, C*kh*kw, OH*OW) -> x (N, C, H, W) = x_shape, same dtype as cols.
    Overlapping windows (stride < kernel) must ADD. Within one kernel offset the strided
    slice touches each pixel at most once, so `+=` on the slice is exact; the sum over
    offsets then accumulates the overlaps. (`a[idx] += v` with repeated indices would
    silently drop all but one of them.)
    """
    # cols (N, C*kh*kw, OH*OW) -> x (N, C, H, W)
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw)
    if cols.shape != (N, C * kh * kw, OH * OW):
        raise ValueError(f"cols: expected shape {(N, C * kh * kw, OH * OW)} for x_shape"
                         f" {tuple(x_shape)}, got {cols.shape}")
    cols = cols.reshape(N, C, kh, kw, OH, OW)
    x_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            x_pad[:, :, i * dh:i * dh + sh * OH:sh, j * dw:j * dw + sw * OW:sw] += cols[:, :, i, j]
    return np.ascontiguousarray(x_pad[:, :, ph:ph + H, pw:pw + W])


def conv2d_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """y = conv2d(x, W) + b, computed as W @ im2col(x) per group.


    Shapes: x (N, C, H, W), weight (OC, C/groups, kh, kw), bias (OC,) or None
            -> y (N, OC, OH, OW), OH = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1 (likewise OW).

    Saved for backward: x, weight, whether there is a bias, stride, padding, groups,
    dilation.
    The columns are NOT saved: they are about kh*kw/(sh*sw) times larger than x (25x for
    AlexNet's 5x5 stride-1 conv2), so backward runs im2col again, which is cheap next to
    the GEMMs.
    PyTorch likewise keeps only the input and the weight.
    """
    # x (N, C, H, W), weight (OC, Cg, kh, kw), bias (OC,) -> y (N, OC, OH, OW)
    N, C, H, W = x.shape
    OC, Cg, kh, kw = weight.shape
    G = groups
    OH = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    cols = im2col(x, (kh, kw), stride, padding, dilation)          # (N, C*kh*kw, L)
    cols = cols.reshape(N, G, Cg * kh * kw, OH * OW)               # (N, G, K, L)
    weight_g = weight.reshape(G, OC // G, Cg * kh * kw)            # (G, OCg, K)
    y = (weight_g @ cols).reshape(N, OC, OH, OW)                   # (N, G, OCg, L) -> NCHW
    if bias is not None:
        y += bias.reshape(1, OC, 1, 1)
    cache = (x, weight, bias is not None, stride, padding, groups, dilation)
    return y, cache


def conv2d_backward(gy, cache, need_gx=True):
    """Gradients of conv2d: (gx or None, gW, gb or None).

    With cols = im2col(x) viewed per group as (N, G, K, L), the weight as W_g (G, OCg, K),
    and y_n = W_g @ cols_n + b:

        gb    = sum_{n, oh, ow} gy                  (OC,)
        gW_g  = sum_n gy_n @ cols_n^T               (G, OCg, K) -> (OC, Cg, kh, kw)
        gcols = W_g^T @ gy_n                        (N, G, K, L)
        gx    = col2im(gcols)                       (N, C, H, W)

    gx is skipped (None) when need_gx is False, e.g. for the first layer, whose input
    (the image) needs no gradient: that saves the second GEMM and the col2im.
    Shapes: gy (N, OC, OH, OW); cache from conv2d_forward.
    """
    # gy (N, OC, OH, OW) -> gx (N, C, H, W) or None, gW (OC, Cg, kh, kw), gb (OC,) or None
    x, weight, has_bias, stride, padding, groups, dilation = cache
    N, OC, OH, OW = gy.shape
    _, Cg, kh, kw = weight.shape
    G = groups
    gy_g = gy.reshape(N, G, OC // G, OH * OW)                                  # (N, G, OCg, L)
    cols = im2col(x, (kh, kw), stride, padding, dilation).reshape(N, G, Cg * kh * kw, OH * OW)
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    gW = (gy_g @ cols.transpose(0, 1, 3, 2)).sum(axis=0)                       # sum_n gy_n cols_n^T
    gW = gW.reshape(weight.shape)
    if not need_gx:
        return None, gW, gb
    weight_g = weight.reshape(G, OC // G, Cg * kh * kw)                        # (G, OCg, K)
    gcols = (weight_g.transpose(0, 2, 1) @ gy_g).reshape(N, G * Cg * kh * kw, OH * OW)
    gx = col2im(gcols, x.shape, (kh, kw), stride, padding, dilation)
    return gx, gW, gb

