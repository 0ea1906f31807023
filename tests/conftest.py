"""One suite for every kernel set: the `kernels` fixture runs a test once per set.

A test that takes `kernels` gets a KernelSet: its name, the device its tensors live on,
its module (the raw kernel functions), and `to_device` / `to_numpy` for arrays.
Inside the test the CPU set in force is the one under test.

`cupy-emulated` is the cupy set with its CUDA kernels run on the CPU by the emulator in
tests/cuda_emulator, through the real launchers (marker `cuda_emulated`); `cupy` is the
same set on a real GPU, skipped where there is none.
"""
import dataclasses
import os
import zlib

import numpy as np
import pytest

from tinyalex import device as _device
from tinyalex.kernels import load_kernel_set, use_kernels

KERNEL_SET_NAMES = ("numpy", "numba", "cupy",
                    pytest.param("cupy-emulated", marks=pytest.mark.cuda_emulated))


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
    if name == "cupy-emulated":
        with emulated_cupy(request):
            yield KernelSet(name, "cuda", load_kernel_set("cupy"))
        return
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


def emulated_cupy(request):
    """The CuPy stand-in installed for one test, its thread interleavings seeded from
    $TINYALEX_EMULATOR_SEED (default 0) and the test's id, so a failure reproduces."""
    import cuda_emulator
    from cuda_emulator import fake_cupy
    reason = cuda_emulator.compiler_missing_reason()
    if reason:
        pytest.skip(reason)
    base = int(os.environ.get("TINYALEX_EMULATOR_SEED", "0"))
    cuda_emulator.set_seed(base * 2**32 + zlib.crc32(request.node.nodeid.encode()))
    return fake_cupy.installed()


@pytest.fixture
def emulated_cuda(request):
    """The CuPy stand-in, for tests that use the emulated cupy set without the `kernels` fixture."""
    with emulated_cupy(request) as cupy:
        yield cupy


@pytest.fixture
def emulated_kernels(emulated_cuda):
    """The `cupy-emulated` KernelSet alone (what `kernels` gives for that param)."""
    return KernelSet("cupy-emulated", "cuda", load_kernel_set("cupy"))


def pytest_terminal_summary(terminalreporter):
    """Line counts, as tinygrad's CI prints them: the afternoon's files against their budget,
    and the whole package (tests/tree.py)."""
    from tree import AFTERNOON_BUDGET, afternoon_lines, package_lines
    terminalreporter.write_line(f"lines: the afternoon (autograd core + reference kernels) {afternoon_lines()}"
                                f" of a {AFTERNOON_BUDGET} budget; the whole package {package_lines()}")
