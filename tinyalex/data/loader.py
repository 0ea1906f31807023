"""A batching data loader with background prefetch and per-batch reproducible randomness.

Randomness is a pure function of (seed, epoch, batch index):

- the sample order of epoch e is ``np.random.default_rng([seed, e]).permutation(N)``;
- batch b of epoch e is augmented with ``np.random.default_rng([seed, e, b])``.

So any epoch can be replayed on its own, without running the ones before it: resuming a
run at epoch e only needs ``loader.set_epoch(e)``. Nothing depends on the prefetch depth
or on thread timing either.

Prefetch: a daemon thread builds the next `prefetch` batches (index, decode, augment)
into a bounded queue while the consumer trains on the current one; NumPy and Pillow
release the GIL for most of that work. An exception in the thread is re-raised in the
consumer, and leaving the loop early (break, an exception) stops and joins the thread.
"""
import queue
import threading

import numpy as np

from .transforms import ToFloat

_BATCH, _DONE, _ERROR = "batch", "done", "error"
_PUT_POLL_S = 0.05  # how often a worker blocked on a full queue checks for a stop


class DataLoader:
    """Iterate over `dataset` in batches of float32 images (B, C, H, W), int64 labels (B,).

    dataset: anything with ``len()`` and ``get_batch(indices) -> (images, labels)``
        (ArrayDataset, ImageFolder).
    batch_size: samples per batch; the last batch is smaller unless drop_last.
    shuffle: draw a new order each epoch (else dataset order).
    seed: the root of all randomness, see the module docstring.
    transform: ``t(images, rng) -> images`` on each batch (see tinyalex.data.transforms);
        if the result is still uint8, ToFloat() scales it to [0, 1].
    prefetch: how many batches the background thread may run ahead; 0 loads each batch
        in the consumer's thread (no thread, easiest to debug).
    collate: for datasets that are not image/label pairs: ``collate(get_batch(indices))``
        is yielded as is, with no transform (tinyalex.utils.data.DataLoader uses this).

    Iterating twice without :meth:`set_epoch` in between replays the same epoch.
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=0, drop_last=False,
                 transform=None, prefetch=2, collate=None):
        if not hasattr(dataset, "__len__") or not callable(getattr(dataset, "get_batch", None)):
            raise TypeError("dataset: expected an object with __len__ and get_batch(indices),"
                            f" got {type(dataset).__name__}")
        _check_int(batch_size, "batch_size", minimum=1)
        _check_int(seed, "seed", minimum=0)
        _check_int(prefetch, "prefetch", minimum=0)
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
        self.collate = collate
        self.epoch = 0
        self.start_batch = 0

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

    def __iter__(self):
        # read now, so a later set_epoch cannot change a running epoch
        epoch, start = self.epoch, self.start_batch
        if self.prefetch == 0:
            return self._batches(epoch, start)
        return self._prefetched(epoch, start)

    def _batches(self, epoch, start_batch):
        """Build the batches of `epoch` from `start_batch` on, in the calling thread."""
        order = np.arange(len(self.dataset))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(order))
        for b in range(start_batch, len(self)):
            start = b * self.batch_size
            batch = self.dataset.get_batch(order[start:start + self.batch_size])
            if self.collate is not None:
                yield self.collate(batch)
                continue
            images, labels = batch
            if self.transform is not None:
                images = self.transform(images, np.random.default_rng([self.seed, epoch, b]))
            yield _as_network_input(images, labels)

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


def _as_network_input(images, labels):
    """float32 (B, C, H, W) images and int64 (B,) labels, checked to agree in B."""
    if images.dtype == np.uint8:
        images = ToFloat()(images)
    if not np.issubdtype(images.dtype, np.floating) or images.ndim != 4:
        raise ValueError("transform: expected float (B, C, H, W) images or uint8 ones,"
                         f" got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels):
        raise ValueError(f"transform: returned {len(images)} images for {len(labels)} labels"
                         " (apply TenCrop to the loader's output, not inside it)")
    return images.astype(np.float32, copy=False), labels


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
