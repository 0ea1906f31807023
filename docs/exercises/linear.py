"""Exercise: the backward pass of the linear (fully connected) layer, y = x W^T + b.

Copy this file, write the body of linear_backward between the markers, and grade it:

    cp docs/exercises/linear.py mine.py
    tinyalex exercise check mine.py

In the kernel contract the linear layer is one GEMM, `matmul(a, b)`, and
tinyalex/ops/linear.py composes its backward from it. Here you write that backward
yourself, as cs231n's affine_backward: linear_forward and linear_backward are the layer's
pair, and `tinyalex exercise check` runs them as the autograd Function of every linear
layer (the check's gradcheck and its 512-image training run of cpu-alexnet, whose
classifier is three linear layers).

Derivation: docs/ops/linear.md, section 2.
"""
import numpy as np


def linear_forward(x, weight, bias):
    """y = x @ weight.T + bias. (Given.)

    Shapes: x (M, in), weight (out, in), bias (out,) or None -> y (M, out), x's dtype.
    Saved for backward: x, weight and whether there is a bias.
    """
    y = x @ weight.T                                               # (M, in) @ (in, out)
    if bias is not None:
        y = y + bias                                               # broadcast over the M rows
    cache = (x, weight, bias is not None)
    return y, cache


def linear_backward(gy, cache):
    """(gx, gW, gb): dL/dx, dL/dweight and dL/dbias for linear_forward's call, given gy = dL/dy.

    Shapes: gy (M, out) -> gx (M, in), gW (out, in), gb (out,) or None when there was no
    bias; each of gy's dtype.
    cache: (x, weight, has_bias) as linear_forward saved it.

    Hints (docs/ops/linear.md#2-backward-step-by-step):
    - write y[m, o] = sum_i x[m, i] W[o, i] + b[o] and take the partial derivative of y[m, o]
      with respect to one x[m', i], one W[o', i] and one b[o'];
    - the chain rule sums gy[m, o] times each partial over every (m, o); write each sum as a
      matrix product and check the shapes: gx must be (M, in), gW (out, in);
    - W and b are shared by all M rows, so their gradients add up every row's contribution.
    """
    x, weight, has_bias = cache
    # --- your code here ---
    raise NotImplementedError("exercise: write linear_backward; see docs/ops/linear.md#2-backward-step-by-step")
    # --- end of your code ---
