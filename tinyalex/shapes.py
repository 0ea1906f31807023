"""Output sizes of sliding-window ops, shared by every kernel set."""


def conv_output_size(size, kernel, stride, padding):
    """Output length along one axis, floor mode: (size + 2*padding - kernel) // stride + 1."""
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"kernel_size: a kernel of {kernel} with padding {padding} does not fit"
                         f" an input of size {size}")
    return out
