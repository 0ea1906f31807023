"""Two SGD steps of cpu-alexnet on a fixed batch of 12, run alone or as one rank of
`mpiexec -n K`: saves the dropout masks each process drew, the
losses and the parameters to OUT/rank<r>.npz (tests/mpi/test_distributed.py compares them).
Alone, the batch runs as micro-batches of MICRO rows; a rank runs its share of them.
With OVERLAP "on" (the default) the ranks reduce in buckets during backward, and each step
also saves whether a bucket's sum over the ranks was complete while backward still had
the first layer's gradient to compute (the first layer's hook waits for it, 60 s at most).
Usage: python step_script.py OUT MICRO [on|off]"""
import sys
import threading
import types

import numpy as np

import tinyalex  # noqa: F401  (first: thread settings before numpy's BLAS loads)
from tinyalex.train.parallel import distributed
from tinyalex.train import models
from tinyalex import random as _random
from tinyalex.train.loop import one_step
from tinyalex.train.parallel.data_parallel import BatchGradient, distributed_step
from tinyalex.utils.data.loader import split_units
from tinyalex.ops import dropout as dropout_op
from tinyalex.optim import SGD

BATCH, STEPS = 12, 2
out, micro = sys.argv[1], int(sys.argv[2])
overlap = (sys.argv[3] if len(sys.argv) > 3 else "on") == "on"
world = distributed.world()
rank, size = (0, 1) if world is None else (world.rank, world.size)

masks = []
original = dropout_op.kernels_for


class Recording:
    """The kernel set, recording each dropout mask (the numba set caches it as a bool array)."""

    def __init__(self, kernels):
        self.kernels = kernels

    def dropout_forward(self, x, p, seed, offset=0):
        y, cache = self.kernels.dropout_forward(x, p, seed, offset)
        masks.append(np.array(cache[0]))
        return y, cache

    def dropout_backward(self, gy, cache):
        return self.kernels.dropout_backward(gy, cache)


dropout_op.kernels_for = lambda x: Recording(original(x))

_random.manual_seed(5)
model = models.create_model("cpu-alexnet", 10)
optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
rng = np.random.default_rng(0)
images = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
labels = np.arange(BATCH) % 10
first, stop = split_units(BATCH, micro, size, rank)
gradient = BatchGradient(model, micro)
losses = []
if world is None:
    for _ in range(STEPS):
        losses.append(one_step(model, optimizer, images, labels, "cpu", None, gradient)[0])
else:
    distributed.broadcast_parameters(world, model, optimizer)
    run = types.SimpleNamespace(model=model, optimizer=optimizer, world=world, stats=None,
                                config=types.SimpleNamespace(device="cpu", overlap=overlap), gradient=gradient)
    summed, started, mid_backward = threading.Event(), [], []
    if overlap:   # a reducer whose world flags its first summed bucket of each step
        from tinyalex.train.parallel.data_parallel import _reducer
        reducer = _reducer(run)
        reduce_on_thread, start = reducer.world.allreduce_, reducer.start

        def flagging_allreduce(view, on_thread):
            reduce_on_thread(view, on_thread=on_thread)
            summed.set()
        reducer.world.allreduce_ = flagging_allreduce
        reducer.start = lambda view: started.append(1) or start(view)

        def first_layer(grad):   # its gradient is backward's last: buckets started must be summed by now
            if started:
                mid_backward.append(summed.wait(60))
        next(model.parameters()).register_hook(first_layer)
    for _ in range(STEPS):
        summed.clear()
        started.clear()
        losses.append(distributed_step(run, images[first:stop], labels[first:stop], first, False)[0])
np.savez(f"{out}/rank{rank}.npz", first=first, stop=stop, losses=np.array(losses),
         mid_backward=np.array(mid_backward if world is not None and overlap else [], dtype=bool),
         **{f"mask{i}": m for i, m in enumerate(masks)},
         **{f"param/{name}": p.array for name, p in model.named_parameters()})
