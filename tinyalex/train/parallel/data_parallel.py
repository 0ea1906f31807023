"""The gradient of a global batch, from micro-batches and ranks, and the data-parallel SGD
step (`torchrun`-style ranks, see tinyalex.train.parallel.distributed).

A global batch of B images is cut into micro-batches of M (``--micro-batch``; the last one
may be shorter). Each runs forward and backward on its own, and their gradient sums are
added in one fixed order: the pairwise tree over the micro-batch index,
((g0 + g1) + (g2 + g3)) + ..., built as a binary counter (:class:`BatchGradient`). With K
ranks each rank holds a contiguous run of whole micro-batches, sums its subtree, and the
ranks' sums meet in the same tree (recursive doubling, ``World.allreduce_``). Each
micro-batch computes exactly what it computes in one process (same rows, dropout masks and
crops), so the step's result depends on B and M only, not on K: whenever every rank holds
the same power-of-two number of micro-batches (B/M a multiple of K, B/(M K) a power of two,
K a power of two), ``mpiexec -n K`` trains bit for bit the one-process run. Otherwise the
sums meet in another order and the runs agree to float rounding per step, which training
then amplifies.

With no micro-batch size (the default but for cpu-alexnet, whose preset has M = 32), each
rank runs its whole share as one micro-batch (M = B/K) and a one-process run its whole
batch: the runs then differ by that rounding. A micro-batch larger than a rank's share is cut
to the share (the loop logs it).

The allreduce runs in buckets during the last micro-batch's backward (overlap.py; each
element's sum is the same, so are the bits), or after it with ``--no-overlap``.

This module holds what a training step does with the communication in distributed.py (the
world, allreduce, FlatBuffer, NCCL) and overlap.py; the loop (tinyalex/train/loop.py) calls
:func:`distributed_step` through its Parts.
"""
import functools

import numpy as np

from tinyalex import device as _device
from tinyalex.train.parallel import distributed as _dist
from tinyalex.train.parallel import overlap as _overlap
from tinyalex import functional as F
from tinyalex import random as _random
from tinyalex.tensor import tensor


class BatchGradient:
    """Forward and backward over a batch's micro-batches; the sum of their gradient sums
    and EXTRAS (loss sum, correct, count) in the fixed pairwise order, left in
    ``self.buffer.flat`` (a :class:`~tinyalex.train.parallel.distributed.FlatBuffer`).

    model: the network; micro_batch: rows per micro-batch, or None for one micro-batch of
    all the rows given.
    """

    def __init__(self, model, micro_batch=None):
        params = list(model.parameters())
        self.model, self.micro_batch = model, micro_batch
        self.buffer = _dist.FlatBuffer(params, _device.array_module(params[0].array), params[0].array.dtype)
        self._spare = []                       # flat arrays to reuse as micro-batch sums
        self._watch = None                     # the BucketWatch, made on the first overlapped step

    def accumulate(self, images, labels, device, first_row=0, stop=False, reducer=None):
        """Run the micro-batches of rows [first_row, first_row + len(labels)) of the global
        batch and leave their tree sum in the buffer, with `stop` (this rank's Ctrl-C) in
        its EXTRAS. Every micro-batch draws the dropout seeds of one forward of the whole
        batch; the generator ends where one forward leaves it.

        reducer: None, or an allreduce overlapped with backward (overlap.ThreadAllreduce or
        StreamAllreduce): during the last micro-batch's backward each bucket of the final
        sums is completed and passed to ``reducer.start`` as soon as its gradients are in,
        last layers first; the caller then waits with ``reducer.finish()``."""
        n = len(labels)
        step = self.micro_batch or max(n, 1)
        starts = range(0, n, step)
        state = _random.get_rng_state()
        levels = []                            # (micro-batches summed, their flat sum), a binary counter
        for index, start in enumerate(starts):
            _random.set_rng_state(state)
            end = min(start + step, n)
            final = index == len(starts) - 1
            leaf = self.buffer.flat if len(starts) == 1 else self._take()
            additions = _join(levels, leaf, final)
            complete = functools.partial(self._complete, leaf, additions, levels[0][1] if final else None, stop)
            rows = (images[start:end], labels[start:end], device, first_row + start, leaf)
            if final and reducer is not None:
                self._backward(*rows, self._bucket_watch(reducer),
                               lambda first, last: reducer.start(complete(first, last)))
            else:
                self._backward(*rows)
                complete(0, self.buffer.flat.size)
            self._spare += [added for _, added in additions]
        if not levels:   # no rows here (a last batch smaller than the ranks): keep the seeds in step
            _skip_dropout_seeds(self.model)
            self.buffer.flat[...] = 0
            self._set_stop(self.buffer.flat, stop)
            for first, last in reversed(self.buffer.buckets(reducer.bucket_bytes) if reducer else []):
                reducer.start(self.buffer.flat[first:last])
        elif levels[0][1] is not self.buffer.flat:
            self._spare.append(self.buffer.flat)
            self.buffer.flat = levels[0][1]

    def _complete(self, leaf, additions, total, stop, first, last):
        """Elements [first, last) of the sums (a bucket, or the whole buffer) once backward
        has put its gradients in: this micro-batch's gradients packed into `leaf`, the
        binary counter's additions, and, in the step's `total`, the stop flag. Returns
        total[first:last] (None before the last micro-batch)."""
        self.buffer.pack_gradients(leaf, first, last)
        for into, added in additions:
            into[first:last] += added[first:last]
        if total is None:
            return None
        if last > self.buffer.grad_size:
            self._set_stop(total, stop)
        return total[first:last]

    def _set_stop(self, total, stop):
        total[self.buffer.grad_size + _dist.EXTRAS.index("stop")] = float(bool(stop))

    def _take(self):
        return self._spare.pop() if self._spare else self.buffer.xp.empty_like(self.buffer.flat)

    def _bucket_watch(self, reducer):
        if self._watch is None or self._watch.bucket_bytes != reducer.bucket_bytes:
            self._watch = _overlap.BucketWatch(self.buffer, reducer.bucket_bytes)
        return self._watch

    def _backward(self, images, labels, device, first_row, out, watch=None, on_bucket=None):
        """One micro-batch: its EXTRAS packed into `out`, then backward (the caller packs
        the gradients; with a `watch`, on_bucket(start, stop) as each bucket completes)."""
        for p in self.buffer.params:
            p.grad = None
        with _random.batch_rows(first_row):    # dropout: these rows' masks of the whole batch
            logits = self.model(tensor(images, device=device))
        loss = F.cross_entropy(logits, tensor(labels, device=device), reduction="sum")
        predictions = _device.to_device(logits.array.argmax(axis=1), "cpu")
        extras = dict(loss_sum=loss.item(), correct=int((predictions == labels).sum()),
                      count=len(labels), stop=0.0)
        self.buffer.pack_extras(extras, out)
        if watch is None:
            loss.backward()
        else:
            watch.backward(loss, on_bucket)


def allreduce_sums(world):
    """A reduce for evaluate(): the four sums over the ranks, in float64."""
    def reduce(values):
        return [float(v) for v in world.allreduce_(np.asarray(values, dtype=np.float64))]
    return reduce


def distributed_step(run, images, labels, first_row, stop):
    """One data-parallel SGD step on this rank's rows [first_row, ...) of a global batch:
    the tree sum of its micro-batches' gradients, the allreduce of the flat buffer
    (gradient sums and the EXTRAS; in buckets overlapped with the last micro-batch's
    backward unless run.config.overlap is False), gradients divided by the global count,
    then the update. Returns (global mean loss, global correct, global count, whether any
    rank asked to stop)."""
    reducer = _reducer(run) if run.config.overlap else None
    run.gradient.accumulate(images, labels, run.config.device, first_row, stop, reducer)
    buffer = run.gradient.buffer
    if reducer is not None:
        reducer.finish()
    elif buffer.xp is np:
        run.world.allreduce_(buffer.flat)
    else:
        nccl = _nccl(run)
        nccl.allreduce_(buffer.flat, buffer.buckets(nccl.bucket_bytes))
    return step_from_sums(buffer, run.optimizer, run.stats)


def step_from_sums(buffer, optimizer, stats):
    """The SGD step from a flat buffer of sums (one process's, or the ranks' after the
    allreduce): gradients divided by the count, then the update. Returns (mean loss,
    correct, count, whether a rank asked to stop); no update for a count of 0."""
    totals = buffer.extras()
    total = int(round(totals["count"]))
    if total:
        buffer.unpack(1.0 / total)
        optimizer_step(optimizer, stats)
    mean = totals["loss_sum"] / total if total else 0.0
    return mean, int(round(totals["correct"])), total, totals["stop"] > 0


def optimizer_step(optimizer, stats):
    """optimizer.step(), with --grad-stats' records around it when `stats` is given."""
    if stats is not None:
        stats.before_step()
    optimizer.step()
    if stats is not None:
        stats.after_step()


def _nccl(run):
    """The run's NCCL communicator (made on first use: GPU ranks)."""
    if getattr(run, "nccl", None) is None:
        run.nccl = _dist.NcclAllreduce(run.world)
    return run.nccl


def _reducer(run):
    """The run's overlapped allreduce (made on first use): a communication thread between
    CPU ranks, a NCCL stream between GPU ranks."""
    if getattr(run, "reducer", None) is None:
        if run.gradient.buffer.xp is np:
            run.reducer = _overlap.ThreadAllreduce.over(run.world)
        else:
            run.reducer = _overlap.StreamAllreduce(_nccl(run))
    return run.reducer


def _skip_dropout_seeds(model):
    """Draw the seeds the model's dropout layers would draw in a forward, as a rank with no
    rows must, so that its generator stays in step with the other ranks'."""
    from tinyalex.nn import Dropout
    for module in model.modules():
        if isinstance(module, Dropout) and module.training and module.p > 0:
            _random.next_seed()


def _join(levels, leaf, last):
    """Plan the addition of `leaf` (one micro-batch's sums) into the binary counter `levels`:
    two subtrees of one size join, and after the `last` micro-batch every subtree left joins
    the first (a batch of 2^a + 2^b + ... micro-batches). Returns the additions [(into,
    added)] in order, to be applied elementwise; `levels` already holds the result."""
    additions, count = [], 1
    while levels and levels[-1][0] == count:
        _, left = levels.pop()
        additions.append((left, leaf))
        leaf, count = left, 2 * count
    levels.append((count, leaf))
    if last:
        additions += [(levels[0][1], partial) for _, partial in levels[1:]]
        del levels[1:]
    return additions
