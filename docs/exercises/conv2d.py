"""Exercise: the backward pass of 2-D convolution as im2col + GEMM, and col2im, the adjoint
of im2col.

Copy this file, write the bodies of col2im and conv2d_backward between the markers, and
grade them:

    cp docs/exercises/conv2d.py mine.py
    tinyalex exercise check mine.py

Do col2im first: conv2d_backward ends with it, and the check grades col2im on its own.
The file is a kernel set (tinyalex.register_kernels): the contract's im2col, col2im,
conv2d_forward and conv2d_backward, with the contract's signatures.

    y[n, oc, oh, ow] = b[oc] + sum_{c, i, j} W[oc, c, i, j] x_pad[n, g*Cg + c, oh*sh + i*dh, ow*sw + j*dw]

g = oc // OCg is the group of the output channel, Cg = C / groups input and OCg = OC / groups
output channels per group. The columns are (N, C*kh*kw, OH*OW): row c*kh*kw + i*kw + j holds
input channel c at kernel offset (i, j), column oh*OW + ow the output pixel. The rows of a
group are contiguous, so per group the layer is one GEMM:

    cols (N, C*kh*kw, L) viewed as (N, G, K, L), K = Cg*kh*kw, L = OH*OW
    W    (OC, Cg, kh, kw) viewed as (G, OCg, K)
    y = W @ cols          (N, G, OCg, L)  is  (N, OC, OH, OW) after a reshape.

Derivation: docs/ops/conv2d.md, section 2.
"""
import numpy as np

from tinyalex.shapes import conv_output_size


def im2col(x, kernel_size, stride, padding, dilation=(1, 1)):
    """cols[n, c*kh*kw + i*kw + j, oh*OW + ow] = x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]. (Given.)

    Shapes: x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW), x's dtype;
    OH = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1 (likewise OW). x_pad is x with ph zero rows
    above and below and pw zero columns left and right. One strided slice of x_pad per
    kernel offset (i, j) fills that offset's rows for every output pixel at once.
    """
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
    """The adjoint of im2col: x (x_shape) with every column entry added back onto the pixel
    it was copied from.

    Shapes: cols (N, C*kh*kw, OH*OW) -> x (N, C, H, W) = x_shape, cols' dtype.

    Hints (docs/ops/conv2d.md#2-backward-step-by-step, step 3):
    - im2col copies x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw] into one column entry; the
      adjoint sends each entry back there, and a pixel read by several windows (stride <
      kernel) receives the SUM of their entries;
    - undo im2col's loop: a zero x_pad of (N, C, H + 2*ph, W + 2*pw), cols viewed as
      (N, C, kh, kw, OH, OW), and for each offset (i, j) the same strided slice, added to;
    - within one offset the slice touches each pixel once, so `+=` on it is exact; the
      entries read from the padding land in the border, which you crop away at the end.
    """
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    OH, OW = conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw)
    # --- your code here ---
    raise NotImplementedError("exercise: write col2im; see docs/ops/conv2d.md#2-backward-step-by-step")
    # --- end of your code ---


def conv2d_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """y = conv2d(x, weight) + bias, as weight @ im2col(x) per group. (Given.)

    Shapes: x (N, C, H, W), weight (OC, C/groups, kh, kw), bias (OC,) or None
            -> y (N, OC, OH, OW), x's dtype.
    Saved for backward: x, weight, whether there is a bias, stride, padding, groups,
    dilation. Not the columns: they are kh*kw/(sh*sw) times the size of x, and the backward
    recomputes them with im2col.
    """
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
    """(gx or None, gW, gb or None): dL/dx, dL/dweight, dL/dbias for conv2d_forward's call,
    given gy = dL/dy. gx is None when need_gx is False (the first layer: the image needs
    no gradient); gb is None when there was no bias.

    Shapes: gy (N, OC, OH, OW) -> gx (N, C, H, W), gW (OC, Cg, kh, kw), gb (OC,); gy's dtype.
    cache: (x, weight, has_bias, stride, padding, groups, dilation) as conv2d_forward saved it.

    Hints (docs/ops/conv2d.md#2-backward-step-by-step):
    - per sample n and group g the forward is Y = W_g @ cols[n, g] + b with W_g (OCg, K),
      cols[n, g] (K, L) and Y = gy[n] viewed as (G, OCg, L). For Y = A @ B and G = dL/dY,
      dL/dA = G @ B^T and dL/dB = A^T @ G (step 1);
    - W and b are shared by every sample and every output pixel: their gradients sum over
      n (and b's over the pixels too) (step 2);
    - dL/dcols = W_g^T @ gy per group, reshaped to (N, C*kh*kw, L); col2im turns it into gx
      (step 3). im2col(x, ...) gives the columns again (the forward did not keep them).
    """
    x, weight, has_bias, stride, padding, groups, dilation = cache
    N, OC, OH, OW = gy.shape
    _, Cg, kh, kw = weight.shape
    G = groups
    # --- your code here ---
    raise NotImplementedError("exercise: write conv2d_backward; see docs/ops/conv2d.md#2-backward-step-by-step")
    # --- end of your code ---
