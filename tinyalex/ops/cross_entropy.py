"""Softmax cross-entropy as one fused autograd Function."""
from ..autograd import Function
from ..dispatch import kernels_for


class CrossEntropy(Function):
    """loss_n = logsumexp(z_n) - z_n[t_n], reduced by 'mean', 'sum' or 'none'.

    Fused with the softmax so that large logits stay finite (log-sum-exp after subtracting
    the row max) and the backward is one expression: gz = (softmax(z) - onehot(t)) * gloss
    (divided by N for 'mean'). Shapes: z (N, C), t (N,) int64, loss () or (N,).
    The target is not differentiable, so it is a parameter, not an input tensor.
    """

    @staticmethod
    def forward(logits, *, target, reduction):
        return kernels_for(logits).cross_entropy_forward(logits, target, reduction)

    @staticmethod
    def backward(gloss, cache, needs_input_grad):
        return (kernels_for(gloss).cross_entropy_backward(gloss, cache),)
