"""``tinyalex.cuda``: torch.cuda's questions, answered without importing CuPy's kernels.

The CUDA kernel set itself is tinyalex/kernels/cupy; tensors reach it by living on
device 'cuda' (tinyalex/device.py).
"""
from tinyalex.device import cuda_is_available as is_available
from tinyalex.device import device_count

__all__ = ["is_available", "device_count"]
