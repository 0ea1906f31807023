"""Worker processes for ``DataLoader(workers=N)``: decode and augment batches in parallel,
hand them over through shared memory, deterministic whatever N is.

Why processes: JPEG decoding and the paper's augmentation hold the GIL for part of their
time, so threads do not scale; the 2012 pipeline needs several cores' worth of decoding.

How: the loader's settings (dataset, transform, batch size, seed, rank) go to N worker
processes once, when the pool starts (``spawn``: a fresh interpreter, safe whatever
threads or MPI state the trainer has; each worker runs numpy/BLAS on one thread). The
consumer sends batch numbers; a worker builds batch b exactly as the loader would in
process (``build_batch``: the same order, the same per-sample SampleRNG draws), writes
the images and labels into a new shared-memory block, and returns its name; the consumer
copies the batch out and unlinks the block. Batches are yielded in order, whichever
worker finishes first, so the result does not depend on N or on timing.

Failures: an exception in a worker is re-raised in the consumer; a worker that dies (a
crash, the OOM killer) is noticed within a second and reported with its exit code.
The pool lives as long as the loader (across epochs); ``DataLoader.close()`` or garbage
collection stops it.
"""
import os
import queue
import weakref

import numpy as np

from tinyalex.utils.data.batch import build_batch

#: Thread settings of a worker: one thread each, the pool supplies the parallelism.
WORKER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                           "NUMBA_NUM_THREADS")
_POLL_S = 1.0  # how often a waiting consumer checks that its workers are alive


def _worker(settings, tasks, results):
    """A worker's loop: build each requested batch into shared memory until told to stop."""
    from multiprocessing import shared_memory

    dataset, transform, plan = settings
    orders = {}
    while True:
        task = tasks.get()
        if task is None:
            return
        token, epoch, b = task
        try:
            if epoch not in orders:
                orders = {epoch: plan.order(epoch)}
            indices, positions = plan.batch_spec(orders[epoch], epoch, b)
            images, labels = build_batch(dataset, transform, plan.seed, epoch, indices, positions)
            block = shared_memory.SharedMemory(create=True, size=max(1, images.nbytes + labels.nbytes))
            try:
                np.ndarray(images.shape, images.dtype, block.buf)[...] = images
                np.ndarray(labels.shape, labels.dtype, block.buf, offset=images.nbytes)[...] = labels
                meta = (block.name, images.shape, images.dtype.str, labels.shape)
            finally:
                block.close()
            results.put(("ok", token, b, meta))
        except BaseException as exc:  # anything: the consumer must never wait forever
            try:
                import pickle
                pickle.dumps(exc)
            except Exception:
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            results.put(("error", token, b, exc))


def _read_block(meta):
    """Copy a batch out of its shared-memory block and unlink the block."""
    from multiprocessing import shared_memory
    name, shape, dtype, label_shape = meta
    block = shared_memory.SharedMemory(name=name)
    try:
        images = np.ndarray(shape, np.dtype(dtype), block.buf).copy()
        labels = np.ndarray(label_shape, np.int64, block.buf, offset=images.nbytes).copy()
    finally:
        block.close()
        block.unlink()
    return images, labels


def _discard(meta):
    try:
        _read_block(meta)
    except FileNotFoundError:
        pass


class WorkerPool:
    """N worker processes serving one loader's batches (see the module docstring)."""

    def __init__(self, loader):
        import multiprocessing as mp
        context = mp.get_context("spawn")
        self.tasks, self.results = context.Queue(), context.Queue()
        plan = loader.plan()
        saved = {k: os.environ.get(k) for k in WORKER_THREAD_VARIABLES}
        os.environ.update({k: "1" for k in WORKER_THREAD_VARIABLES})  # inherited at spawn
        try:
            self.processes = [context.Process(target=_worker, name=f"tinyalex-data-worker-{i}",
                                              args=((loader.dataset, loader.transform, plan),
                                                    self.tasks, self.results), daemon=True)
                              for i in range(loader.workers)]
            for process in self.processes:
                process.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.token = 0
        self._finalizer = weakref.finalize(self, _shutdown, self.processes, self.tasks, self.results)

    def batches(self, loader, epoch, start_batch):
        """Yield loader's batches of `epoch` from start_batch on, in order."""
        self.token += 1
        token, total = self.token, len(loader)
        ahead = len(self.processes) + max(loader.prefetch, 1)
        sent, ready = start_batch, {}
        try:
            for b in range(start_batch, total):
                while sent < total and sent < b + ahead:
                    self.tasks.put((token, epoch, sent))
                    sent += 1
                while b not in ready:
                    kind, got_token, got_b, payload = self._next_result()
                    if got_token != token:      # left over from an abandoned iteration
                        if kind == "ok":
                            _discard(payload)
                        continue
                    if kind == "error":
                        raise payload
                    ready[got_b] = payload
                yield _read_block(ready.pop(b))
        finally:
            for meta in ready.values():
                _discard(meta)

    def _next_result(self):
        while True:
            try:
                return self.results.get(timeout=_POLL_S)
            except queue.Empty:
                dead = [p for p in self.processes if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"data worker {dead[0].name} died (exit code "
                                       f"{dead[0].exitcode}): expected it to deliver batches; "
                                       "out of memory?")

    def close(self):
        self._finalizer()


def _shutdown(processes, tasks, results):
    """Stop the workers, then unlink any batch nobody collected."""
    for _ in processes:
        try:
            tasks.put(None)
        except (OSError, ValueError):
            pass
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
    while True:
        try:
            kind, _, _, payload = results.get(timeout=0.1)
        except (queue.Empty, OSError, ValueError, EOFError):
            break
        if kind == "ok":
            _discard(payload)


def pooled_batches(loader, epoch, start_batch):
    """The loader's batches through its worker pool (started on first use)."""
    pool = getattr(loader, "_pool", None)
    if pool is None:
        pool = loader._pool = WorkerPool(loader)
    return pool.batches(loader, epoch, start_batch)
