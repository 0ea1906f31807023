"""Planted bugs in the real kernels and launchers: the emulated kernel-set suite must
catch each one. Each test plants one bug (a mutated copy of a .cu source text, or a
launcher whose argument tuple is altered), runs the suite's own test for that op on the
`cupy-emulated` set, and expects it to fail, and how."""
import numpy as np
import pytest

import test_conv2d
import test_cross_entropy
import test_max_pool2d
from cuda_emulator import EmulatedKernelError
from tinyalex.kernels.cupy import conv, loader, pool

pytestmark = pytest.mark.cuda_emulated

# The suite's kernel-level tests of the three ops the bugs are planted in.
conv2d = test_conv2d.TestKernels()
max_pool2d = test_max_pool2d.TestKernels()
cross_entropy = test_cross_entropy.TestKernels()


def plant(monkeypatch, file, original, mutated, count=1, occurrence=None):
    """Make the loader compile kernels/`file` with `original` replaced by `mutated`
    (the `occurrence`-th match only, if given)."""
    text = loader.source(file)
    assert text.count(original) == count, f"{original!r} is no longer in {file}"
    if occurrence is None:
        planted = text.replace(original, mutated)
    else:
        at = -1
        for _ in range(occurrence + 1):
            at = text.index(original, at + 1)
        planted = text[:at] + mutated + text[at + len(original):]
    real_source = loader.source
    monkeypatch.setattr(loader, "source", lambda f: planted if f == file else real_source(f))
    monkeypatch.setattr(loader, "_modules", {})        # recompile, with the planted bug


def test_the_unplanted_kernels_pass(emulated_kernels):
    max_pool2d.test_max_pool2d_matches_torch_with_ties(emulated_kernels, *max_pool2d.POOL_CASES[0], np.float64, False)
    conv2d.test_conv2d_matches_torch(emulated_kernels, *conv2d.CONV_CASES[0], np.float32)
    cross_entropy.test_cross_entropy_matches_torch(emulated_kernels, 70, "mean", 1.0, np.float64)


def test_a_tie_rule_that_keeps_the_last_maximum_fails_the_tie_test(monkeypatch, emulated_kernels):
    plant(monkeypatch, "pool.cu", "if (v > best || isnan(v))", "if (v >= best || isnan(v))")
    with pytest.raises(AssertionError, match="Mismatched elements"):
        max_pool2d.test_max_pool2d_matches_torch_with_ties(emulated_kernels, *max_pool2d.POOL_CASES[0], np.float64, False)


def test_swapped_height_and_width_in_the_pool_launcher_fail(monkeypatch, emulated_kernels):
    """H*W is unchanged, so every read stays inside x (the forward stages whole rows of x,
    clipped to the image): the values are wrong, and the tie test says so."""
    def swapped(*args):
        geometry = list(real(*args))
        geometry[2], geometry[3] = geometry[3], geometry[2]       # (N, C, H, W) -> (N, C, W, H)
        return tuple(geometry)
    real = pool._geometry_args
    monkeypatch.setattr(pool, "_geometry_args", swapped)
    with pytest.raises(AssertionError, match="mismatch"):
        max_pool2d.test_max_pool2d_matches_torch_with_ties(emulated_kernels, *max_pool2d.POOL_CASES[0], np.float64, False)


def test_swapped_pointers_in_the_pool_launch_are_caught_by_the_bounds_check(monkeypatch, emulated_kernels):
    def swapped(kernel, total, args):
        real(kernel, total, (args[1], args[0]) + args[2:])          # (x, y) -> (y, x)
    real = pool.launch_1d
    monkeypatch.setattr(pool, "launch_1d", swapped)
    with pytest.raises(EmulatedKernelError, match=r"max_pool2d_forward<double>, .* (reads|writes) 8 bytes"
                                                  r" .* outside every array it was given"):
        max_pool2d.test_max_pool2d_matches_torch_with_ties(emulated_kernels, *max_pool2d.POOL_CASES[0], np.float64, False)


def test_swapped_pointers_in_the_im2col_launch_are_caught_by_the_bounds_check(monkeypatch, emulated_kernels):
    def swapped(kernel, total, args):
        real(kernel, total, (args[1], args[0]) + args[2:])          # (x, cols) -> (cols, x)
    real = conv.launch_1d
    monkeypatch.setattr(conv, "launch_1d", swapped)
    with pytest.raises(EmulatedKernelError, match=r"im2col.cu:\d+: im2col<float>, .* writes 4 bytes"
                                                  r" .* outside every array it was given"):
        conv2d.test_conv2d_matches_torch(emulated_kernels, *conv2d.CONV_CASES[0], np.float32)


@pytest.mark.parametrize("barrier", [0, 1, 2])
def test_a_removed_barrier_in_cross_entropy_is_a_race(monkeypatch, emulated_kernels, barrier):
    """Any of block_reduce's three __syncthreads() (the file's first three), on a row of 70
    classes (three warps)."""
    plant(monkeypatch, "cross_entropy.cu", "__syncthreads();", ";", count=5, occurrence=barrier)
    with pytest.raises(EmulatedKernelError, match=r"cross_entropy.cu:\d+: cross_entropy_forward<double>,"
                                                  r" .*(race|which no thread of this block has written)"):
        cross_entropy.test_cross_entropy_matches_torch(emulated_kernels, 70, "mean", 1.0, np.float64)


def test_a_removed_barrier_in_the_cross_entropy_backward_is_caught(monkeypatch, emulated_kernels):
    """The barrier between staging the rows' factors and reading them (the file's fourth)."""
    plant(monkeypatch, "cross_entropy.cu", "__syncthreads();", ";", count=5, occurrence=3)
    with pytest.raises(EmulatedKernelError, match=r"cross_entropy.cu:\d+: cross_entropy_backward<double>,"
                                                  r" .*(race|which no thread of this block has written)"):
        cross_entropy.test_cross_entropy_matches_torch(emulated_kernels, 70, "mean", 1.0, np.float64)
