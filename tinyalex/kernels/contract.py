"""The kernel contract: every function a kernel set provides, with its signature and meaning.

Each kernel set (tinyalex/kernels/numpy, numba and cupy) defines these names with these
signatures; tests/kernels/test_contract.py checks that each set has every one, with the
same parameters. The bodies here only say what an implementation must do: call a set's
function (``tinyalex.kernels.kernels_for(array)``), never these.

Conventions for all of them: arrays are NCHW and C-contiguous, floats are float32 or
float64 (one dtype per call), pairs are (height, width). A forward returns ``(y, cache)``;
the cache is private to the set that made it, and only that set's backward reads it.
"""


def _contract_only(name):
    raise NotImplementedError(f"{name} is the contract; call a kernel set's {name}"
                              " (tinyalex.kernels.kernels_for(array))")


# --- convolution ----------------------------------------------------------------------

def im2col(x, kernel_size, stride, padding, dilation=(1, 1)):
    """x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW), zero padding.

    Row c*kh*kw + i*kw + j, column oh*OW + ow holds x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw];
    OH = (H + 2*ph - dh*(kh-1) - 1) // sh + 1 (likewise OW).
    """
    _contract_only("im2col")


def col2im(cols, x_shape, kernel_size, stride, padding, dilation=(1, 1)):
    """cols (N, C*kh*kw, OH*OW) -> x (x_shape): the adjoint of im2col, overlapping windows add."""
    _contract_only("col2im")


def conv2d_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """(y, cache) of y = conv2d(x, weight) + bias by im2col + GEMM.

    weight (OC, C/groups, kh, kw), bias (OC,) or None -> y (N, OC, OH, OW). Symmetric
    padding (the functional layer pads 'same' asymmetrically in front).
    """
    _contract_only("conv2d_forward")


def conv2d_backward(gy, cache, need_gx=True):
    """(gx or None, gW, gb or None) of conv2d_forward's call; gx is skipped unless need_gx."""
    _contract_only("conv2d_backward")


def matmul(a, b):
    """a @ b for 2-D float arrays of one dtype (transposed views such as W.T allowed): the
    linear layer's GEMMs, on the set's own thread pool."""
    _contract_only("matmul")


# --- pooling --------------------------------------------------------------------------

def max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False):
    """(y, cache) of max pooling with -inf padding (at most half the kernel).

    OH = (H + 2*ph - kh) // sh + 1, or with ceil_mode torch's ceil size
    (tinyalex.shapes.pool_output_size). The argmax is the first maximum among the window's
    real pixels in row-major order (never padding), the last NaN in a window holding NaN.
    """
    _contract_only("max_pool2d_forward")


def max_pool2d_backward(gy, cache):
    """gx: each window's gy goes to its argmax."""
    _contract_only("max_pool2d_backward")


def max_pool2d_indices(cache):
    """indices (N, C, OH, OW) int64: each window's argmax as h*W + w in its input plane
    (torch's return_indices)."""
    _contract_only("max_pool2d_indices")


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True,
                       divisor_override=None):
    """(y, cache) of average pooling: zero padding, OH as for max_pool2d_forward, y = window
    sum / divisor with torch's divisor per window (tinyalex.shapes.avg_pool_divisors)."""
    _contract_only("avg_pool2d_forward")


def avg_pool2d_backward(gy, cache):
    """gx: each window sends gy / divisor to every pixel it covers."""
    _contract_only("avg_pool2d_backward")


# --- normalisation and activations ----------------------------------------------------

def lrn_forward(x, size, alpha, beta, k):
    """(y, cache) of local response normalisation, PyTorch's convention:
    y = x / (k + alpha/size * sum_{c' in [c - size//2, c + (size-1)//2]} x_{c'}^2)^beta."""
    _contract_only("lrn_forward")


def lrn_backward(gy, cache):
    """gx of lrn_forward's call."""
    _contract_only("lrn_backward")


def relu_forward(x):
    """(y, cache) of y = max(x, 0)."""
    _contract_only("relu_forward")


def relu_backward(gy, cache):
    """gx = gy where x > 0, else 0."""
    _contract_only("relu_backward")


def dropout_forward(x, p, seed, offset=0):
    """(y, cache) of inverted dropout: keep[i] = uniform(seed, offset + i) >= p, with uniform
    tinyalex.random.counter_uniform (the same bits on every set); y = x * keep / (1 - p).

    offset: the flat index of x's first element in the whole batch, so a data-parallel
    rank holding rows [r0, r1) of it draws the rows' masks of the one-process run.
    """
    _contract_only("dropout_forward")


def dropout_backward(gy, cache):
    """gx = gy * keep / (1 - p), with forward's mask."""
    _contract_only("dropout_backward")


# --- losses ---------------------------------------------------------------------------

def cross_entropy_forward(logits, target, reduction, weight=None, ignore_index=-100,
                          label_smoothing=0.0):
    """(loss, cache) of softmax cross-entropy.

    logits (N, C) float; target (N,) int64 in [0, C) or == ignore_index (a row that counts
    for nothing), or (N, C) class probabilities of the logits' dtype; weight (C,) or None.
    loss_n = sum_c q_nc (lse_n - logits_nc) with torch's target distribution q; 'mean'
    divides by the kept targets' weights (N for probabilities), 0/0 = nan; reduction
    'mean' | 'sum' gives shape (), 'none' (N,).
    """
    _contract_only("cross_entropy_forward")


def cross_entropy_backward(gloss, cache):
    """glogits (N, C) of cross_entropy_forward's call."""
    _contract_only("cross_entropy_backward")


def mse_loss_forward(input, target, reduction):
    """(loss, cache) of reduce((input - target)^2): input and target of one shape and float
    dtype; reduction 'mean' | 'sum' gives shape (), 'none' the input's shape."""
    _contract_only("mse_loss_forward")


def mse_loss_backward(gloss, cache):
    """ginput of mse_loss_forward's call (the target's gradient is -ginput)."""
    _contract_only("mse_loss_backward")


#: The ops' kernels: name -> the function above. Every set defines each of them.
KERNEL_API = {f.__name__: f for f in (
    im2col, col2im, conv2d_forward, conv2d_backward, matmul,
    max_pool2d_forward, max_pool2d_backward, max_pool2d_indices, avg_pool2d_forward,
    avg_pool2d_backward, lrn_forward, lrn_backward, relu_forward, relu_backward,
    dropout_forward, dropout_backward, cross_entropy_forward, cross_entropy_backward,
    mse_loss_forward, mse_loss_backward)}


# --- beside the ops -------------------------------------------------------------------

def sgd_update(param, grad, buf, lr, momentum, weight_decay, nesterov, first_step, dampening=0.0):
    """Update `param` and its momentum buffer `buf` in place with torch's SGD rule; returns
    None. param, grad and buf of one shape and float dtype; buf is None when momentum is 0.
    optim.SGD.step calls it on the kernel set of each parameter."""
    _contract_only("sgd_update")


def conv2d_winograd_forward(x, weight, bias, stride, padding, groups, dilation=(1, 1)):
    """(y, cache) of conv2d_forward's result by Winograd minimal filtering: square 3x3 or 5x5
    kernels, stride 1, no dilation (anything else is a ValueError). Only in the sets whose
    CONV2D_ALGORITHMS lists 'winograd'."""
    _contract_only("conv2d_winograd_forward")


def conv2d_winograd_backward(gy, cache, need_gx=True):
    """(gx or None, gW, gb or None) of conv2d_winograd_forward's call."""
    _contract_only("conv2d_winograd_backward")


#: What every set defines: the ops' kernels and the SGD step.
SET_API = {**KERNEL_API, "sgd_update": sgd_update}

#: What a set whose CONV2D_ALGORITHMS lists 'winograd' defines too.
WINOGRAD_API = {f.__name__: f for f in (conv2d_winograd_forward, conv2d_winograd_backward)}
