"""The data-parallel SGD step of a training run with several ranks (`torchrun`-style, see
tinyalex.distributed): each rank's slice of the global batch, one allreduce of the gradient
sums and the batch's counts, and the same update on every rank; the reduce that makes
evaluate() count every rank's test shard; and the dropout seeds a rank with no rows must
still draw.

tinyalex.distributed holds the communication (the world, allreduce, FlatBuffer, NCCL); this
module holds what a training step does with it. tinyalex.train imports these names and calls
_distributed_step through its own globals, so a test can replace
``tinyalex.train._distributed_step``.
"""
import numpy as np

from . import device as _device
from . import distributed as _dist
from . import functional as F
from . import random as _random
from .autograd import tensor


def _allreduce_sums(world):
    """A reduce for evaluate(): the four sums over the ranks, in float64."""
    def reduce(values):
        return [float(v) for v in world.allreduce_(np.asarray(values, dtype=np.float64))]
    return reduce


def _distributed_step(run, images, labels, first_row, stop):
    """One data-parallel SGD step on this rank's rows [first_row, ...) of a global batch:
    backward of the summed loss, one allreduce of the flat buffer (gradient sums and the
    EXTRAS), gradients divided by the global count, then the update. Returns (global mean
    loss, global correct, global count, whether any rank asked to stop)."""
    model, optimizer, device, buffer = run.model, run.optimizer, run.config.device, run.buffer
    optimizer.zero_grad()
    count, loss_sum, correct = len(labels), 0.0, 0
    if count:
        with _random.batch_rows(first_row):       # dropout: this slice's masks of the whole batch
            logits = model(tensor(images, device=device))
        loss = F.cross_entropy(logits, tensor(labels, device=device), reduction="sum")
        loss.backward()
        loss_sum = loss.item()
        predictions = _device.to_device(logits.array.argmax(axis=1), "cpu")
        correct = int((predictions == labels).sum())
    else:  # an empty slice (a last batch smaller than the ranks): keep the seed stream in step
        _skip_dropout_seeds(model)
    buffer.pack(dict(loss_sum=loss_sum, correct=correct, count=count, stop=float(bool(stop))))
    if buffer.xp is np:
        run.world.allreduce_(buffer.flat)
    else:
        nccl = _nccl(run)
        nccl.allreduce_(buffer.flat, buffer.buckets(nccl.bucket_bytes))
    totals = buffer.extras()
    total = int(round(totals["count"]))
    if total:
        buffer.unpack(1.0 / total)
        if run.stats is not None:
            run.stats.before_step()
        optimizer.step()
        if run.stats is not None:
            run.stats.after_step()
    mean = totals["loss_sum"] / total if total else 0.0
    return mean, int(round(totals["correct"])), total, totals["stop"] > 0


def _nccl(run):
    """The run's NCCL communicator (made on first use: GPU ranks)."""
    if getattr(run, "nccl", None) is None:
        run.nccl = _dist.NcclAllreduce(run.world)
    return run.nccl


def _skip_dropout_seeds(model):
    """Draw the seeds the model's dropout layers would draw in a forward, as a rank with no
    rows must, so that its generator stays in step with the other ranks'."""
    from .nn import Dropout
    for module in model.modules():
        if isinstance(module, Dropout) and module.training and module.p > 0:
            _random.next_seed()
