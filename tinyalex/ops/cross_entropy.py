"""Softmax cross-entropy as one fused autograd Function."""
from tinyalex.autograd import Function
from tinyalex.kernels import kernels_for


class CrossEntropy(Function):
    """loss_n = sum_c q[n, c] (logsumexp(z_n) - z[n, c]), reduced by 'mean', 'sum' or 'none'.

    q is the target distribution: one-hot(t_n) for class indices without options; torch's
    weight, ignore_index and label_smoothing, or class-probability targets, change it (see
    tinyalex.kernels.numpy.cross_entropy). Fused with the softmax so that large logits stay
    finite (log-sum-exp after subtracting the row max) and the backward is one expression:
    gz = (Q * softmax(z) - q) * gloss (divided by the 'mean' denominator D: N, or the
    weights of the kept targets). Shapes: z (N, C), t (N,) int64 or (N, C) probabilities,
    weight (C,) or None, loss () or (N,). The target and the weight get no gradient, so
    they are parameters, not input tensors.
    """

    @staticmethod
    def forward(logits, *, target, reduction, weight=None, ignore_index=-100, label_smoothing=0.0):
        return kernels_for(logits).cross_entropy_forward(logits, target, reduction, weight,
                                                         ignore_index, label_smoothing)

    @staticmethod
    def backward(gloss, cache, needs_input_grad):
        return (kernels_for(gloss).cross_entropy_backward(gloss, cache),)
