"""Mean squared error (the reference): the loss of PyTorch's "Neural Networks" tutorial.

    loss = reduce_i (input_i - target_i)^2,   reduce = mean, sum, or none (elementwise)

The derivation of the backward is in docs/ops/mse_loss.md.
"""
import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def mse_loss_forward(input, target, reduction):
    """loss = reduce( (input - target)^2 )

    Shapes: input, target (any shape, the same; float) -> loss () for 'mean' and 'sum',
            input's shape for 'none'; dtype of input. The mean of no elements is NaN, as
            in PyTorch.
    Saved for backward: diff = input - target and the reduction. The gradient is 2 diff
    scaled by gloss, so neither input nor target is needed again.
    """
    # input (...), target (...) -> loss () or (...)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if input.shape != target.shape:
        raise ValueError(f"target: expected shape {input.shape} (the shape of input), got {target.shape}")
    diff = input - target
    squared = diff * diff
    if reduction == "none":
        loss = squared
    elif reduction == "sum":
        loss = np.asarray(squared.sum(), dtype=input.dtype)             # 0-d, not a NumPy scalar
    else:
        n = squared.size
        loss = np.asarray(squared.sum() / n if n else np.nan, dtype=input.dtype)
    return loss, (diff, reduction)


def mse_loss_backward(gloss, cache):
    """ginput = 2 (input - target) * gloss, divided by n for 'mean'; gtarget = -ginput.

    d/d input_i of (input_i - target_i)^2 is 2 (input_i - target_i); 'sum' multiplies every
    term by the one upstream gloss, 'mean' by gloss / n, 'none' term i by gloss_i.
    Shapes: gloss () for 'mean'/'sum', input's shape for 'none' -> ginput (input's shape).
    """
    # gloss () or (...) -> ginput (...)
    diff, reduction = cache
    gloss = np.asarray(gloss, dtype=diff.dtype)                         # a 0-d float64 would upcast
    if reduction == "mean":
        return diff * (2 * gloss / max(diff.size, 1))
    return diff * (2 * gloss)
