"""The numba set's reused buffers (tinyalex/kernels/numba/buffers.py): training with reuse
gives bitwise the results without it, memory is never lent while anything still refers to
it (a user's view, a graph's saved array, a gradient), and steady steps use no new memory.
Every test runs on its own pool with MIN_BYTES = 0 and a 64 KiB first region, so the tiny
arrays here go through it as the large ones of a real step do, and regions grow (and
retire) along the way."""
import gc
import os
import pathlib
import subprocess
import sys
import weakref

import numpy as np
import pytest

import tinyalex as ta
import tinyalex.functional as F
import tinyalex.nn as nn
import tinyalex.optim as optim
from tinyalex.kernels.numba import buffers


@pytest.fixture
def pool(monkeypatch):
    """A fresh pool lending every array (MIN_BYTES = 0), the one the kernels use here."""
    fresh = buffers.BufferPool(enabled=True)
    monkeypatch.setattr(buffers, "pool", fresh)
    monkeypatch.setattr(buffers, "MIN_BYTES", 0)
    monkeypatch.setattr(buffers, "REGION_BYTES", 1 << 16)
    with ta.use_kernels("numba"):
        yield fresh


class LeaseWatch:
    """Checks every lease the pool makes: its memory overlaps no other live lease's (the
    invariant 'never lent twice'). Raises at once, before a kernel writes over what it
    should not (a clobbered int32 argmax would crash the process instead)."""

    def __init__(self, monkeypatch):
        self.live = []                                    # (weakref to lease, start, end)
        original = buffers.Lease.__init__

        def watched(lease, memory, address, shape, dtype):
            original(lease, memory, address, shape, dtype)
            end = address + int(np.prod(shape)) * dtype.itemsize
            self.live = [entry for entry in self.live if entry[0]() is not None]
            clashes = [(start, stop) for _, start, stop in self.live if start < end and address < stop]
            assert not clashes, f"[{address}, {end}) lent while {clashes} are still lent"
            self.live.append((weakref.ref(lease), address, end))
        monkeypatch.setattr(buffers.Lease, "__init__", watched)


def poison_free_memory(pool):
    """Fill the free ranges of the region (as far as it was ever used) with 0xFF bytes
    (NaN floats, -1 int32, True bools), so that a kernel leaving part of an output
    unwritten cannot pass the bitwise comparison."""
    pool.empty((1,), np.uint8)                            # merges the returned ranges first
    region = pool.region
    for offset, size in region.free:
        region.memory[offset:min(offset + size, region.high_water)].fill(0xFF)


def small_alexnet():
    """Every op of the AlexNet step, small: conv by GEMM (strided) and by Winograd, ReLU,
    LRN, max-pool, dropout, linear, cross-entropy."""
    ta.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=1), nn.ReLU(), nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0),
        nn.MaxPool2d(3, 2), nn.Conv2d(8, 16, 3, padding=1, algorithm="winograd"), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * 5 * 4, 32), nn.ReLU(), nn.Linear(32, 5))
    return model


def train(steps, poison=None, keep=None):
    """Losses and final parameters of `steps` SGD steps on small_alexnet, float32, batch 4,
    H != W. poison: a pool whose free blocks are poisoned before every step; keep: a list
    that receives each step's logits (the user holding outputs)."""
    model = small_alexnet()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        x = ta.tensor(rng.standard_normal((4, 3, 23, 19)).astype(np.float32))
        t = ta.tensor(rng.integers(0, 5, size=4))
        if poison is not None:
            poison_free_memory(poison)
        optimizer.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, t)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if keep is not None:
            keep.append(logits)
    return losses, [p.detach().numpy().copy() for p in model.parameters()]


def test_training_with_reused_buffers_is_bitwise_the_same_as_without(pool):
    losses, params = train(4, poison=pool)
    assert pool.regions_made > 1                          # it grew, and old regions retired
    buffers.reuse_buffers(False)
    try:
        plain_losses, plain_params = train(4)
    finally:
        buffers.reuse_buffers(True)
    assert losses == plain_losses
    for p, q in zip(params, plain_params, strict=True):
        np.testing.assert_array_equal(p, q)


def test_steady_steps_use_no_new_memory_and_keep_gradients_uncopied(pool):
    model = small_alexnet()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = ta.tensor(np.random.default_rng(1).standard_normal((4, 3, 23, 19)).astype(np.float32))
    t = ta.tensor(np.arange(4) % 5)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), t).backward()
        optimizer.step()
    for _ in range(3):                  # the region grows in the first, the layout settles after
        step()
    used = pool.regions_made, pool.resident_bytes()
    for _ in range(3):
        step()
    assert (pool.regions_made, pool.resident_bytes()) == used
    weights = [m.weight for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(isinstance(w.grad.array.base, buffers.Lease) for w in weights)  # stolen, not copied


def test_a_view_the_user_keeps_is_never_lent_again(pool, monkeypatch):
    """NumPy points a view's base at the array that owns the memory, skipping the arrays
    between: a pool that watched the array it handed out would lend its block again while
    a view of it lives. Here the user keeps only a view, and blocks of the same size are
    given back and lent again around it."""
    LeaseWatch(monkeypatch)
    x = ta.tensor(np.random.default_rng(2).standard_normal((3, 4, 5, 6)).astype(np.float32))
    y = F.relu(x)
    view = y.numpy()[1:, ::2]                              # a view of the output, not the output
    expected = view.copy()
    del y
    returned = [F.relu(x + float(i)) for i in range(3)]
    returned_at = {r.numpy().ctypes.data for r in returned}
    del returned                                          # their memory goes back
    gc.collect()
    made = [F.relu(x - 1.0).numpy() for _ in range(4)]    # lent again around the view
    assert not any(np.shares_memory(view, m) for m in made)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(made) for b in made[i + 1:])
    np.testing.assert_array_equal(view, expected)
    assert returned_at & {m.ctypes.data for m in made}   # reused


def test_saved_arrays_user_outputs_and_a_retained_graph_are_never_overwritten(pool, monkeypatch):
    """Two graphs alive at once (the first retained while a second step runs), outputs kept
    by the user: the first backward still gives the gradients of a run without reuse."""
    LeaseWatch(monkeypatch)

    def interleaved():
        model = small_alexnet()
        model.eval()                                       # no dropout: the two passes see one mask
        rng = np.random.default_rng(4)
        xs = [ta.tensor(rng.standard_normal((4, 3, 23, 19)).astype(np.float32)) for _ in range(2)]
        t = ta.tensor(np.arange(4) % 5)
        first = F.cross_entropy(model(xs[0]), t)          # its graph holds the saved arrays
        kept = []
        second_logits = model(xs[1])
        kept.append(second_logits.detach().numpy().copy())
        F.cross_entropy(second_logits, t).backward()      # a whole step in between
        for p in model.parameters():
            p.grad = None
        first.backward(retain_graph=True)
        grads = [p.grad.numpy().copy() for p in model.parameters()]
        for p in model.parameters():
            p.grad = None
        first.backward()                                  # the retained graph, once more
        again = [p.grad.numpy().copy() for p in model.parameters()]
        return grads, again, second_logits.detach().numpy().copy(), kept[0]

    grads, again, logits_after, logits_then = interleaved()
    np.testing.assert_array_equal(logits_after, logits_then)   # the user's output untouched
    for g, h in zip(grads, again, strict=True):
        np.testing.assert_array_equal(g, h)
    buffers.reuse_buffers(False)
    try:
        plain, _, _, _ = interleaved()
    finally:
        buffers.reuse_buffers(True)
    for g, h in zip(grads, plain, strict=True):
        np.testing.assert_array_equal(g, h)


def test_a_gradient_on_a_lease_is_copied_when_something_else_holds_its_memory(pool):
    """autograd keeps a leased gradient as .grad uncopied only when nothing else refers to
    it or to its lease: a view of it, or another array on its lease, forces the copy."""
    holders = {"view": lambda g: g[::2], "array on its lease": lambda g: np.asarray(g.base),
               "nothing": None}
    for what, hold in holders.items():
        kept = []

        class Twice(ta.autograd.Function):
            @staticmethod
            def forward(x):
                return x * 2.0, None

            @staticmethod
            def backward(gy, cache, needs_input_grad):
                g = buffers.empty(gy.shape, gy.dtype)
                g[...] = 2.0 * gy
                if hold is not None:
                    kept.append(hold(g))
                return (g,)

        a = ta.tensor(np.arange(6.0), requires_grad=True)
        Twice.apply(a).sum().backward()
        if hold is None:
            assert isinstance(a.grad.array.base, buffers.Lease), what   # alone: no copy
        else:
            assert not np.shares_memory(a.grad.array, kept[0]), what
            a.grad.array += 1.0
            assert np.all(kept[0] == 2.0), what


def test_release_and_switching_off(pool):
    a = buffers.empty((300,), np.float64)
    address = a.ctypes.data
    assert buffers.release_cached() > 0 and pool.region is None
    b = buffers.empty((300,), np.float64)                 # a new region: a is still lent
    assert not np.shares_memory(a, b) and pool.regions_made == 2
    assert a.ctypes.data == address
    assert buffers.reuse_buffers(False) is True
    try:
        assert buffers.empty((100,), np.float64).base is None          # a plain np.empty
    finally:
        buffers.reuse_buffers(True)
    c = buffers.empty((2, 3), np.int32)
    assert c.shape == (2, 3) and c.dtype == np.int32 and c.flags.c_contiguous and c.flags.writeable
    assert c.ctypes.data % buffers.ALIGN == 0


def test_the_environment_turns_reuse_off():
    code = "from tinyalex.kernels.numba import buffers; print(buffers.pool.enabled)"
    root = str(pathlib.Path(__file__).resolve().parents[2])
    seen = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env=dict(os.environ, TINYALEX_REUSE_BUFFERS=value, PYTHONPATH=root)).stdout.strip()
            for value in ("0", "1")]
    assert seen == ["False", "True"]
