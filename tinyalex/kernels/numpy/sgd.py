"""One SGD step with torch.optim.SGD's rule, in place, as NumPy array expressions.

    g   = grad + weight_decay * param
    buf = g                                        on the first step
    buf = momentum * buf + (1 - dampening) * g     afterwards
    g   = g + momentum * buf  with Nesterov momentum, else g = buf
    param -= lr * g

The textbook form of the fused kernels tinyalex.kernels.numba.sgd and tinyalex.kernels.cupy.sgd (same
signature, same bits). Not part of KERNEL_API: optim.SGD calls it on the kernel set of
each parameter's array.
"""


def sgd_update(param, grad, buf, lr, momentum, weight_decay, nesterov, first_step,
               dampening=0.0):
    """Update `param` and the momentum buffer `buf` in place; returns None.

    Shapes: param, grad, buf: the same shape and float dtype. With momentum == 0 there is
    no buffer (buf=None). At most one parameter-sized temporary exists at a time: the
    largest layer (fc6) would otherwise hold several copies of itself at once.
    """
    g, owned = grad, False                 # owned: g is our temporary, scalable in place
    if weight_decay:
        g = param * weight_decay
        g += grad
        owned = True
    if momentum:
        if first_step:
            buf[...] = g
        else:
            buf *= momentum
            buf += g if dampening == 0 else (1 - dampening) * g
        if nesterov:
            g, owned = (g if owned else g.copy()), True
            g += momentum * buf
        else:
            g, owned = buf, False
    if owned:
        g *= lr
        param -= g
    else:
        param -= lr * g
