"""One suite for every kernel set: the `kernels` fixture runs a test once per set.

A test that takes `kernels` gets a KernelSet: its name, the device its tensors live on,
its module (the raw kernel functions), and `to_device` / `to_numpy` for arrays.
Inside the test the CPU set in force is the one under test.
"""
import dataclasses

import numpy as np
import pytest

from tinyalex import device as _device
from tinyalex.dispatch import load_kernel_set, use_kernels

KERNEL_SET_NAMES = ("numpy", "numba", "cupy")


@dataclasses.dataclass
class KernelSet:
    name: str
    device: str
    module: object

    def to_device(self, array):
        return _device.to_device(np.asarray(array), self.device)

    def to_numpy(self, array):
        return np.asarray(_device.to_device(array, "cpu"))


@pytest.fixture(params=KERNEL_SET_NAMES)
def kernels(request):
    name = request.param
    if name == "cupy":
        if not _device.cuda_is_available():
            pytest.skip("cupy kernels need a CUDA GPU: " + _cuda_reason())
        yield KernelSet(name, "cuda", load_kernel_set(name))
        return
    with use_kernels(name):
        yield KernelSet(name, "cpu", load_kernel_set(name))


def _cuda_reason():
    try:
        _device.cupy_module()
    except RuntimeError as exc:
        return str(exc)
    return ""
