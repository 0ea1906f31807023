"""SGD steps of alexnet2012 in the paper's two columns on a fixed batch of BATCH images, run
alone (the one-process twin, both columns in this process) or as one rank of
`mpiexec -n K` (K = 2: one column each; K = 4: 2 columns x 2 data-parallel replicas).
Saves the losses and this process's parameters before and after to OUT/rank<r>.npz, with its column and
replica (tests/mpi/test_model_parallel.py joins the columns and compares).
Usage: python model_parallel_script.py OUT STEPS BATCH MICRO DTYPE"""
import sys
import types

import numpy as np

import tinyalex  # noqa: F401  (first: thread settings before numpy's BLAS loads)
from tinyalex import random as _random
from tinyalex.optim import SGD
from tinyalex.train import models
from tinyalex.train.loop import one_step
from tinyalex.train.parallel import distributed, model_parallel
from tinyalex.train.parallel.data_parallel import BatchGradient, distributed_step
from tinyalex.utils.data.loader import split_units

out, steps, batch, micro, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
world = distributed.world()
columns = model_parallel.split_world(world, types.SimpleNamespace(model_parallel=2, grad_stats=False))

_random.manual_seed(5)
model = models.create_model("alexnet2012", 10, model_parallel=2)
if columns is not None:
    model = model_parallel.column_model(model, columns)
model.to(getattr(np, dtype))
initial = {f"init/{name}": p.array.copy() for name, p in model.named_parameters()}
optimizer = SGD(model.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
rng = np.random.default_rng(0)
images = ((rng.random((batch, 3, 227, 227)) - 0.45) / 0.25).astype(dtype)
labels = rng.integers(0, 10, batch)
gradient = BatchGradient(model, micro)
losses = []
if columns is None:
    for _ in range(steps):
        losses.append(one_step(model, optimizer, images, labels, "cpu", None, gradient)[0])
    column, replica = -1, 0
else:
    replicas = columns.replicas
    distributed.broadcast_parameters(replicas, model, optimizer)
    run = types.SimpleNamespace(model=model, optimizer=optimizer, world=replicas, stats=None,
                                config=types.SimpleNamespace(device="cpu", overlap=False), gradient=gradient)
    step = columns.agreeing(distributed_step)
    first, stop = split_units(batch, micro, replicas.size, replicas.rank)
    for _ in range(steps):
        losses.append(step(run, images[first:stop], labels[first:stop], first, False)[0])
    column, replica = columns.column, columns.replica
rank = 0 if world is None else world.rank
np.savez(f"{out}/rank{rank}.npz", column=column, replica=replica, losses=np.array(losses),
         **{f"param/{name}": p.array for name, p in model.named_parameters()}, **initial)
