"""The fused SGD step on the CPU: one parallel pass over memory instead of five.

optim.SGD.step with array expressions reads and writes every parameter-sized array
several times (p * wd, + grad, buf *= momentum, buf += g, p -= lr * g): for AlexNet's
58 M parameters that was ~0.19 s of a ~1 s training step at batch 16. This kernel does
the same arithmetic element by element, in ONE parallel loop over disjoint elements.

It rounds exactly as the array expressions do (every scalar is first cast to the
parameter's dtype, as NumPy casts a Python float next to a float32 array, and each
operation is rounded on its own: no fastmath, so no fused multiply-adds), so the fused
and the array path give the same bits; tests/kernels/test_sgd_update.py checks it. Same
signature as tinyalex.kernels.cupy.sgd_update; not part of KERNEL_API.
"""
import numpy as np

from tinyalex.kernels.numba._checks import float_array
from tinyalex.kernels.numba.parallel_kernel import parallel_kernel, part_range


@parallel_kernel("{f}[::1], {f}[::1], {f}[::1], {f}, {f}, {f}, {f}, boolean, boolean, boolean, "
                 "boolean, boolean")
def _sgd(p, grad, buf, lr, momentum, one_minus_dampening, weight_decay, nesterov, first_step,
         has_momentum, has_decay, dampened, part, parts, done):
    """torch.optim.SGD's rule (tinyalex.optim.SGD) per element i; each i is its own."""
    first, last = part_range(p.size, part, parts)
    p, grad, buf = p[first:last], grad[first:last], buf[first:last]  # indices from 0: it vectorises
    for i in range(p.size):
        g = grad[i]
        if has_decay:
            g = p[i] * weight_decay + g
        if has_momentum:
            if first_step:
                b = g
            else:
                b = buf[i] * momentum + (g * one_minus_dampening if dampened else g)
            buf[i] = b
            g = g + momentum * b if nesterov else b
        p[i] = p[i] - lr * g


def sgd_update(param, grad, buf, lr, momentum, weight_decay, nesterov, first_step,
               dampening=0.0):
    """Update `param` and the momentum buffer `buf` in place; returns None.

    Shapes: param, grad, buf: the same shape and float dtype, param and buf C-contiguous
    (written in place). With momentum == 0 there is no buffer: pass buf=None. first_step:
    True on the parameter's first update, when buf is set to g rather than blended.
    """
    if not (isinstance(param, np.ndarray) and param.flags.c_contiguous):
        raise ValueError("sgd_update: param: expected a C-contiguous numpy array (updated in place)")
    grad = float_array(grad, "grad")
    if grad.dtype != param.dtype or grad.shape != param.shape:
        raise ValueError(f"sgd_update: grad: expected {param.dtype} {param.shape}, got"
                         f" {grad.dtype} {grad.shape}")
    if momentum:
        if not (isinstance(buf, np.ndarray) and buf.flags.c_contiguous
                and buf.dtype == param.dtype and buf.shape == param.shape):
            raise ValueError("sgd_update: buf: expected a C-contiguous array like param")
    else:
        buf = np.empty(0, dtype=param.dtype)                       # never read or written
    T = param.dtype.type
    _sgd(param.reshape(-1), grad.reshape(-1), buf.reshape(-1), T(lr), T(momentum),
         T(1 - dampening), T(weight_decay), bool(nesterov), bool(first_step), bool(momentum),
         bool(weight_decay), dampening != 0)
