"""The gradient allreduce overlapped with backward, in buckets, as PyTorch's DDP does it.

The flat buffer (distributed.FlatBuffer: every gradient in model order, then EXTRAS) is
cut into buckets of whole parameters (distributed.plan_buckets). Backward produces the last
layers' gradients first, so while it still runs through the convolutions (most of the
compute), the fully connected layers' gradients (most of the bytes) are already on their
way. Three parts:

- :class:`BucketWatch` counts the gradients arriving at each parameter (a post-accumulate
  hook: the autograd core knows nothing of buckets or MPI) and hands each bucket over once
  every parameter in it has all of this backward's gradients, the last bucket first and in
  the same fixed order on every rank, since collectives must be started in one order;
- :class:`ThreadAllreduce` (CPU ranks) sums the buckets on a communication thread with
  World.allreduce_'s recursive doubling, on a communicator of its own;
- :class:`StreamAllreduce` (GPU ranks) queues each bucket's NCCL allreduce on a stream of
  its own, after an event that marks the bucket ready on the compute stream.

Bits: every element's sum is the one the whole-buffer allreduce computes (the pairwise tree
over micro-batches, then over ranks, elementwise), so ``mpiexec -n K`` still trains the
one-process bits. With micro-batches only the last one's backward hands buckets over: a
bucket is final only once every micro-batch of the step has added into it
(data_parallel.BatchGradient). ``--no-overlap`` turns this off, for comparison.
"""
import bisect
import queue
import threading
import time

#: Bucket size for CPU ranks. A message between ranks of one machine costs little beyond
#: its bytes (benchmarks/bench_dist.py's fit puts the latency near 0), so buckets can be
#: small: 1 MiB cuts cpu-alexnet's 2.4 MB into 4, of which 3 (the classifier) travel during
#: the convolutions' backward. GPU ranks take NCCL's (NcclAllreduce.BUCKET_BYTES, DDP's 25 MiB).
CPU_BUCKET_BYTES = 2**20


class BucketWatch:
    """Calls ``on_bucket(start, stop)`` during ``loss.backward()`` for each bucket (element
    range) of `buffer`'s plan once the gradients of all its parameters are in their
    ``.grad``: the last bucket first, each only after the ones behind it, so every rank
    starts the same buckets in the same order whatever the order their gradients come in.

    buffer: a distributed.FlatBuffer; bucket_bytes: the bucket size for plan_buckets.
    """

    def __init__(self, buffer, bucket_bytes):
        self.bucket_bytes, self.spans = bucket_bytes, buffer.buckets(bucket_bytes)
        ends = [stop for _, stop in self.spans]
        self.params = [p for p in buffer.params if p.requires_grad]
        offsets = dict(zip(map(id, buffer.params), buffer.offsets))
        self._bucket = {id(p): bisect.bisect_right(ends, offsets[id(p)]) for p in self.params}
        self._on_bucket = None
        for p in self.params:          # left in place: they do nothing outside backward()
            p.register_post_accumulate_grad_hook(self._arrived)

    def backward(self, loss, on_bucket):
        """loss.backward(), handing each bucket to on_bucket as soon as it is complete; a
        bucket whose parameters get no gradient (or fewer than the graph's edges promise)
        is handed over when backward ends, still in order."""
        edges = gradient_edges(loss)
        self._left = {id(p): edges[id(p)] for p in self.params if id(p) in edges}
        self._missing = [0] * len(self.spans)
        for key in self._left:
            self._missing[self._bucket[key]] += 1
        self._next, self._on_bucket = len(self.spans) - 1, on_bucket
        try:
            self._hand_over()                      # buckets with no gradient to wait for
            loss.backward()
            self._missing = [0] * len(self.spans)
            self._hand_over()
        finally:
            self._on_bucket = None

    def _arrived(self, p):
        if self._on_bucket is None:
            return
        key = id(p)
        self._left[key] -= 1
        if self._left[key] == 0:
            self._missing[self._bucket[key]] -= 1
            self._hand_over()

    def _hand_over(self):
        while self._next >= 0 and self._missing[self._next] == 0:
            self._on_bucket(*self.spans[self._next])
            self._next -= 1


def gradient_edges(root):
    """{id(leaf): number of graph edges into it} for the leaves backward from `root` will
    add gradients into (the AccumulateGrad ends of grad_fn.next_functions, as in torch):
    a leaf's gradient is whole once that many have arrived."""
    counts, seen, stack = {}, {root.grad_fn}, [root.grad_fn]
    while stack:
        for node, _ in stack.pop().next_functions:
            variable = getattr(node, "variable", None)
            if variable is not None:
                counts[id(variable)] = counts.get(id(variable), 0) + 1
            elif node is not None and node not in seen:
                seen.add(node)
                stack.append(node)
    return counts


class ThreadAllreduce:
    """CPU ranks: sum buckets over the ranks on a communication thread, in the order they
    are started, with World.allreduce_ (recursive doubling: the bits of the whole-buffer
    sum). MPI runs at MPI_THREAD_SERIALIZED: between start() and finish() the main thread
    computes and makes no MPI call.

    world: a World of its own (:meth:`over` makes one), or a stand-in with its allreduce_."""

    bucket_bytes = CPU_BUCKET_BYTES

    def __init__(self, world):
        self.world = world
        self._queue, self._error = queue.Queue(), None
        threading.Thread(target=self._serve, name="tinyalex-allreduce", daemon=True).start()

    @classmethod
    def over(cls, world):
        """A ThreadAllreduce over a duplicate of `world`'s communicator, so its messages
        never meet the main thread's (every rank must call it at the same point:
        duplicating a communicator is collective)."""
        from mpi4py import MPI

        from tinyalex.train.parallel.distributed import World
        level = MPI.Query_thread()
        if level < MPI.THREAD_SERIALIZED:
            from tinyalex.errors import TrainingError
            raise TrainingError("overlapping the allreduce with backward: expected an MPI with "
                                f"MPI_THREAD_SERIALIZED ({MPI.THREAD_SERIALIZED}), got thread level "
                                f"{level}; pass --no-overlap")
        return cls(World(world.comm.Dup(), world.local_size, world.local_rank, hosts=world.hosts,
                         timeout=world.timeout, job_ranks=world.job_ranks))

    def start(self, view):
        """Queue a slice of the flat buffer to be summed in place."""
        self._queue.put(view)

    def finish(self):
        """Wait until every queued bucket is summed; raise the thread's error, if any. The
        thread's MPI_Waitall cannot time out, so a partner gone silent mid-transfer is
        noticed here, after the world's timeout, as a LostRankError."""
        timeout, start = getattr(self.world, "timeout", None), time.monotonic()
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                if timeout is not None and time.monotonic() - start > timeout:
                    raise self.world.lost("overlapped allreduce", time.monotonic() - start)
                self._queue.all_tasks_done.wait(timeout=None if timeout is None else 1.0)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _serve(self):
        while True:
            view = self._queue.get()
            try:
                if self._error is None:        # after an error, only drain the queue
                    self.world.allreduce_(view, on_thread=True)
            except BaseException as exc:       # noqa: B036 (re-raised on the main thread)
                self._error = exc
            finally:
                self._queue.task_done()


class StreamAllreduce:
    """GPU ranks: each bucket's NCCL allreduce is queued on a stream of its own once the
    compute stream has reached the bucket's last write (an event), and the compute stream
    waits for the last allreduce at finish(): backward's kernels run on while NCCL moves
    the buckets, and the host never waits. Sums like the whole-buffer call with 2 ranks;
    with more, NCCL's order may depend on the message size (as before: not bit for bit).

    nccl: a distributed.NcclAllreduce; cupy: the module (injected by tests)."""

    def __init__(self, nccl, cupy=None):
        if cupy is None:
            import cupy
        self.nccl, self.cuda = nccl, cupy.cuda
        self.bucket_bytes = nccl.bucket_bytes
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def start(self, view):
        self.stream.wait_event(self.cuda.get_current_stream().record())
        self.nccl.allreduce_(view, stream=self.stream.ptr)

    def finish(self):
        self.cuda.get_current_stream().wait_event(self.stream.record())
