"""Exercise: the backward pass of ReLU.

Copy this file, write the body of relu_backward between the markers, and grade it:

    cp docs/exercises/relu.py mine.py
    tinyalex exercise check mine.py

The check compares your gradient with the reference element by element (and names the
first wrong element with its input value), runs gradcheck (float64 finite differences,
then torch where installed), and trains cpu-alexnet on 512 Fashion-MNIST images with your
ReLU in every layer. The file is a kernel set (tinyalex.register_kernels): the contract's
relu_forward and relu_backward, with the contract's signatures.

Derivation: docs/ops/relu.md, section 2.
"""
import numpy as np


def relu_forward(x):
    """y = max(0, x), elementwise. (Given.)

    Shapes: x (any) -> y (same shape and dtype).
    Saved for backward: the boolean mask x > 0, all the backward needs.
    """
    y = np.asarray(np.maximum(x, 0))                               # a 0-d x gives a scalar: keep an array
    cache = x > 0
    return y, cache


def relu_backward(gy, cache):
    """gx = dL/dx for relu_forward's call, given gy = dL/dy.

    Shapes: gy (any) -> gx (gy's shape and dtype).
    cache: `positive`, the boolean mask x > 0 that relu_forward saved (x's shape).

    Hints (docs/ops/relu.md#2-backward-step-by-step):
    - each y_i depends on x_i only, so the Jacobian is diagonal: gx_i = gy_i * dy_i/dx_i;
    - dy_i/dx_i is 1 where x_i > 0 and 0 where x_i < 0; at x_i == 0 use 0, as PyTorch does;
    - np.where(condition, a, b) picks elementwise, and never turns an inf in gy into a NaN
      the way gy * mask does (inf * 0).
    """
    positive = cache
    # --- your code here ---
    raise NotImplementedError("exercise: write relu_backward; see docs/ops/relu.md#2-backward-step-by-step")
    # --- end of your code ---
