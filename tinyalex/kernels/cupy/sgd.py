"""One fused SGD step on the GPU (kernels/sgd.cu): PyTorch's torch.optim.SGD rule in a
single pass over memory. The CPU optimiser's array expressions do the same in five.

    g   = grad + weight_decay * param
    buf = g                                      (first step)
    buf = momentum * buf + (1 - dampening) * g   (later steps)
    g   = g + momentum * buf  if nesterov  else  buf
    param -= lr * g
"""
import numpy as np

from tinyalex.shapes import same_dtype, same_shape
from tinyalex.kernels.cupy._checks import float_array, i64, in_place_array
from tinyalex.kernels.cupy.loader import cupy, get_kernel, launch_1d


def sgd_update(param, grad, buf, lr, momentum, weight_decay, nesterov, first_step,
               dampening=0.0):
    """Update `param` and the momentum buffer `buf` in place; returns None.

    Shapes: param, grad, buf: the same shape and float dtype, param and buf C-contiguous
    (they are written in place). With momentum == 0 there is no buffer: pass buf=None
    (a buffer, if given, is left untouched). first_step: True on the parameter's first
    update, when buf is set to g rather than blended (so its old contents do not matter).
    """
    cp = cupy()
    param = in_place_array(param, "param")
    grad = float_array(grad, "grad")
    same_dtype(param, "param", grad, "grad")
    same_shape(grad, "grad", param.shape, "the shape of param")
    if lr < 0 or momentum < 0 or weight_decay < 0:
        raise ValueError(f"sgd_update: expected lr, momentum and weight_decay >= 0, got lr={lr},"
                         f" momentum={momentum}, weight_decay={weight_decay}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("sgd_update: nesterov needs momentum > 0 and dampening == 0")
    if momentum == 0:
        buf = cp.empty(0, dtype=param.dtype)                       # never read or written
    else:
        buf = in_place_array(buf, "buf")
        same_dtype(param, "param", buf, "buf")
        same_shape(buf, "buf", param.shape, "the shape of param")
    T = param.dtype.type
    kernel = get_kernel("sgd.cu", "sgd_update", param.dtype)
    launch_1d(kernel, param.size, (param, grad, buf, i64(param.size), T(lr), T(momentum),
                                   T(1 - dampening), T(weight_decay), np.int32(bool(nesterov)),
                                   np.int32(bool(first_step))))
