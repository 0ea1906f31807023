"""Run as `mpiexec -n K python allreduce_script.py OUT`: each rank sums buffers over the
ranks with World.allreduce_ and saves what it got to OUT/rank<r>.npz. Rank r contributes
VALUES[r % 4] everywhere: adding them in different orders gives different float32 sums
((1e8 + 1) + (-1e8 + 1) = 0, but (1e8 - 1e8) + (1 + 1) = 2), so the saved sums show the
order in which the ranks' buffers met."""
import sys

import numpy as np

import tinyalex  # noqa: F401
from tinyalex.train.parallel import distributed

VALUES = (1e8, 1.0, -1e8, 1.0)
world = distributed.world()
results = {}
for size in (16, 1 << 21):   # a short and an 8 MB buffer (MPI libraries switch algorithms by size)
    buffer = np.full(size, VALUES[world.rank % 4], dtype=np.float32)
    results[f"n{size}"] = world.allreduce_(buffer)
np.savez(f"{sys.argv[1]}/rank{world.rank}.npz", **results)
