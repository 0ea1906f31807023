"""A batching data loader with background prefetch, worker processes, data-parallel
slices, and per-sample reproducible randomness.

Randomness is a pure function of (seed, epoch, the sample's position in the epoch):

- the sample order of epoch e is ``np.random.default_rng([seed, e]).permutation(N)``;
- the sample at position g of that order (batch g // B) is augmented with the draws of
  ``SampleRNG(seed, e, [g])`` (tinyalex.train.data.transforms): per sample, not per batch.

So any epoch can be replayed on its own, without running the ones before it: resuming a
run at epoch e only needs ``loader.set_epoch(e)``. Nothing depends on the prefetch depth,
thread timing, the number of worker processes (``workers``), or how a batch is split over
data-parallel ranks (``rank``, ``world_size``: each rank gets its rows of every batch,
in whole micro-batches of ``rank_unit`` rows, :func:`split_units`, with the
augmentation those rows get in one process).

Prefetch: a daemon thread builds the next `prefetch` batches (index, decode, augment)
into a bounded queue while the consumer trains on the current one; NumPy and Pillow
release the GIL for most of that work. An exception in the thread is re-raised in the
consumer, and leaving the loop early (break, an exception) stops and joins the thread.
"""
import queue
import threading

import numpy as np

from tinyalex.utils.data.batch import build_batch

_BATCH, _DONE, _ERROR = "batch", "done", "error"
_PUT_POLL_S = 0.05  # how often a worker blocked on a full queue checks for a stop


class DataLoader:
    """Iterate over `dataset` in batches of float32 images (B, C, H, W), int64 labels (B,).

    dataset: anything with ``len()`` and ``get_batch(indices) -> (images, labels)``
        (ArrayDataset, ImageFolder).
    batch_size: samples per batch; the last batch is smaller unless drop_last.
    shuffle: draw a new order each epoch (else dataset order).
    seed: the root of all randomness, see the module docstring.
    transform: ``t(images, rng) -> images`` on each batch (see tinyalex.train.data.transforms);
        if the result is still uint8, ToFloat() scales it to [0, 1].
    prefetch: how many batches the background thread may run ahead; 0 loads each batch
        in the consumer's thread (no thread, easiest to debug).
    workers: worker processes that load and transform batches in parallel, handing them
        over through shared memory (tinyalex.utils.data.workers); 0 loads in this process.
    rank, world_size: this data-parallel rank's rows of every batch (see the module
        docstring); len(), set_epoch and the order are the whole batches'.
    rank_unit: the rows go to the ranks in whole runs of this many (the training step's
        micro-batches, tinyalex.train.parallel.data_parallel); the last run of a batch may be shorter.
    collate: for datasets that are not image/label pairs: ``collate(get_batch(indices))``
        is yielded as is, with no transform (tinyalex.utils.data.DataLoader uses this).

    Iterating twice without :meth:`set_epoch` in between replays the same epoch.
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=0, drop_last=False,
                 transform=None, prefetch=2, collate=None, workers=0, rank=0, world_size=1,
                 rank_unit=1):
        if not hasattr(dataset, "__len__") or not callable(getattr(dataset, "get_batch", None)):
            raise TypeError("dataset: expected an object with __len__ and get_batch(indices),"
                            f" got {type(dataset).__name__}")
        _check_int(batch_size, "batch_size", minimum=1)
        _check_int(seed, "seed", minimum=0)
        _check_int(prefetch, "prefetch", minimum=0)
        _check_int(workers, "workers", minimum=0)
        _check_int(world_size, "world_size", minimum=1)
        _check_int(rank, "rank", minimum=0)
        _check_int(rank_unit, "rank_unit", minimum=1)
        if workers and collate is not None:
            raise ValueError(f"workers: expected 0 with a collate function (worker processes hand "
                             f"over image and label arrays only), got {workers!r}")
        if rank >= world_size:
            raise ValueError(f"rank: expected an int < world_size={world_size}, got {rank!r}")
        for name, value in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: expected a bool, got {value!r}")
        if transform is not None and not callable(transform):
            raise TypeError("transform: expected a callable t(images, rng) or None,"
                            f" got {type(transform).__name__}")
        if collate is not None and (not callable(collate) or transform is not None):
            raise TypeError("collate: expected a callable, and no transform with it,"
                            f" got collate={collate!r}, transform={transform!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.transform = transform
        self.prefetch = int(prefetch)
        self.workers = int(workers)
        self.rank, self.world_size, self.rank_unit = int(rank), int(world_size), int(rank_unit)
        self.collate = collate
        self.epoch = 0
        self.start_batch = 0
        self._pool = None

    def set_epoch(self, epoch, start_batch=0):
        """Choose the epoch the next iteration replays (its order and augmentation), and
        the batch to start from (to resume an interrupted epoch exactly)."""
        _check_int(epoch, "epoch", minimum=0)
        _check_int(start_batch, "start_batch", minimum=0)
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self):
        """Batches per epoch: ceil(N / batch_size), or floor with drop_last."""
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def plan(self):
        """The loader's BatchPlan: what finds the samples of each batch, without the dataset."""
        return BatchPlan(len(self.dataset), self.batch_size, self.shuffle, self.seed,
                         self.rank, self.world_size, self.rank_unit)

    def rows(self, batch):
        """(first, stop, n): this rank's rows [first, stop) of batch `batch`, of n in all."""
        return self.plan().rows(batch)

    def order(self, epoch):
        """The sample order of `epoch`: a permutation of range(N), or range(N)."""
        return self.plan().order(epoch)

    def batch_spec(self, order, epoch, b):
        """What builds this rank's part of batch b: (dataset indices, epoch positions)."""
        return self.plan().batch_spec(order, epoch, b)

    def __iter__(self):
        # read now, so a later set_epoch cannot change a running epoch
        epoch, start = self.epoch, self.start_batch
        if self.workers:
            from tinyalex.utils.data.workers import pooled_batches
            return pooled_batches(self, epoch, start)
        if self.prefetch == 0:
            return self._batches(epoch, start)
        return self._prefetched(epoch, start)

    def _batches(self, epoch, start_batch):
        """Build the batches of `epoch` from `start_batch` on, in the calling thread."""
        order = self.order(epoch)
        for b in range(start_batch, len(self)):
            indices, positions = self.batch_spec(order, epoch, b)
            yield build_batch(self.dataset, self.transform, self.seed, epoch, indices, positions,
                              self.collate)

    def close(self):
        """Stop the worker processes (if any); the loader restarts them if iterated again."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            self._pool = None
            pool.close()

    def _prefetched(self, epoch, start_batch):
        """Yield the batches of `epoch` as a background thread produces them."""
        batches = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(epoch, start_batch, batches, stop),
                                  name="tinyalex-data-loader", daemon=True)
        worker.start()
        try:
            while True:
                kind, item = batches.get()
                if kind == _DONE:
                    return
                if kind == _ERROR:
                    raise item
                yield item
        finally:  # also runs when the consumer breaks out early (generator close)
            stop.set()
            worker.join()

    def _produce(self, epoch, start_batch, batches, stop):
        """The worker: queue every batch, then _DONE; or queue the exception that stopped it."""
        try:
            for batch in self._batches(epoch, start_batch):
                if not _put(batches, (_BATCH, batch), stop):
                    return
            _put(batches, (_DONE, None), stop)
        except BaseException as exc:  # anything, so the consumer never waits forever
            _put(batches, (_ERROR, exc), stop)


def _put(batches, item, stop):
    """Put `item`, waiting while the queue is full; False if `stop` was set meanwhile."""
    while not stop.is_set():
        try:
            batches.put(item, timeout=_PUT_POLL_S)
            return True
        except queue.Full:
            pass
    return False


class BatchPlan:
    """Which samples make each batch of an epoch, and which rows of it are this rank's: all
    a loader's worker processes need to know of it (the dataset travels apart)."""

    def __init__(self, n, batch_size, shuffle, seed, rank, world_size, rank_unit):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.rank_unit = rank, world_size, rank_unit

    def rows(self, batch):
        """(first, stop, n): this rank's rows [first, stop) of batch `batch`, of n in all."""
        n = min(self.batch_size, self.n - batch * self.batch_size)
        first, stop = split_units(n, self.rank_unit, self.world_size, self.rank)
        return first, stop, n

    def order(self, epoch):
        """The sample order of `epoch`: a permutation of range(N), or range(N)."""
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return np.arange(self.n)

    def batch_spec(self, order, epoch, b):
        """What builds this rank's part of batch b: (dataset indices, epoch positions)."""
        first, stop, _ = self.rows(b)
        positions = np.arange(b * self.batch_size + first, b * self.batch_size + stop)
        return order[positions], positions


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def split_rows(n, size, rank):
    """(first, stop) of rank's rows of a batch of n: contiguous slices in rank order, the
    first n % size ranks one row longer (like numpy.array_split)."""
    base, extra = divmod(n, size)
    first = rank * base + min(rank, extra)
    return first, first + base + (1 if rank < extra else 0)


def split_units(n, unit, size, rank):
    """(first, stop) of rank's rows of a batch of n when rows go to ranks in whole runs of
    `unit` rows (micro-batches, the last one maybe shorter): split_rows over the
    ceil(n / unit) runs. unit=1 is split_rows."""
    first, stop = split_rows(-(-n // unit), size, rank)
    return min(first * unit, n), min(stop * unit, n)
