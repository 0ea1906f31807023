"""ReLU, max(0, x) (the reference; AlexNet paper section 3.1)."""
import numpy as np


def relu_forward(x):
    """y = max(0, x)

    Shapes: x (any) -> y (same shape and dtype).
    Saved for backward: the boolean mask x > 0, one byte per element, which is all the
    backward needs (and a quarter of a float32 copy of x).
    """
    # x (...) -> y (...)
    y = np.asarray(np.maximum(x, 0))                               # a 0-d x gives a scalar: keep an array
    cache = x > 0
    return y, cache


def relu_backward(gy, cache):
    """gx = gy where x > 0, else 0. At x == 0 the gradient is 0, as in PyTorch.

    Shapes: gy (any) -> gx (same shape and dtype).
    """
    # gy (...) -> gx (...)
    positive = cache
    return np.where(positive, gy, 0)
