"""Mean squared error as an autograd Function."""
from tinyalex.autograd import Function
from tinyalex.kernels import kernels_for


class MSELoss(Function):
    """loss = reduce_i (input_i - target_i)^2, reduce = 'mean', 'sum' or 'none'.

    ginput = 2 (input - target) * gloss (divided by n for 'mean'), gtarget = -ginput: the
    loss is symmetric in its two inputs, so a target that requires grad gets one too (as
    in torch). Shapes: input and target the same; loss () or input's shape ('none').
    """

    @staticmethod
    def forward(input, target, *, reduction):
        return kernels_for(input).mse_loss_forward(input, target, reduction)

    @staticmethod
    def backward(gloss, cache, needs_input_grad):
        ginput = kernels_for(gloss).mse_loss_backward(gloss, cache)
        return (ginput if needs_input_grad[0] else None), (-ginput if needs_input_grad[1] else None)
