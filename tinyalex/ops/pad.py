"""Zero padding of the last two axes as an autograd Function (torch's asymmetric 'same'
convolution padding). Written on the array module of its input, like tinyalex.ops.basic:
NumPy or CuPy, no kernel set involved."""
from tinyalex import device as _device
from tinyalex.autograd import Function


class ZeroPad2d(Function):
    """y = x with `top` and `bottom` zero rows and `left` and `right` zero columns added.

    y[..., top + h, left + w] = x[..., h, w], and 0 elsewhere.
    Shapes: x (..., H, W) -> y (..., top + H + bottom, left + W + right), same dtype.
    Saved for backward: the four pads and x's (H, W). The adjoint of padding is cropping:
    gx = gy[..., top:top + H, left:left + W].
    """

    @staticmethod
    def forward(x, *, pads):
        top, bottom, left, right = pads
        H, W = x.shape[-2:]
        xp = _device.array_module(x)
        y = xp.zeros(x.shape[:-2] + (top + H + bottom, left + W + right), dtype=x.dtype)
        y[..., top:top + H, left:left + W] = x
        return y, (pads, (H, W))

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        (top, _, left, _), (H, W) = cache
        xp = _device.array_module(gy)
        return (xp.ascontiguousarray(gy[..., top:top + H, left:left + W]),)
