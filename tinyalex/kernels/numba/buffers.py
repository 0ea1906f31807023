"""Reused memory for the numba set's large arrays: a small caching allocator.

Why: a training step makes the same large arrays every time (activations, the saved
caches, the gradients: fc6's weight gradient alone is 100 MB in the Fashion-MNIST
AlexNet). Made fresh with np.empty, each one faults in new pages, and NumPy asks for
transparent huge pages on large arrays, which on a kernel with THP defrag = madvise can
wait for memory compaction: step times then jump between two levels at random
(docs/pitfalls.md#fresh-pages). Carved out of memory that stays mapped, they cost no
page faults after the first step, and steps take one time.

How: the arrays of at least MIN_BYTES are carved out of one large region (one np.empty,
mapped lazily: only the pages ever used become resident). Free space is a list of
(offset, size) ranges; a request takes the first range that fits (first fit, lowest
offset first, so the used part stays compact) and a returned range merges with its free
neighbours. A step asks for the same arrays in the same order every time, so once the
first step or two have laid them out, every request lands on pages already mapped. (A pool of exact-size blocks kept
far more memory: benchmarks/results/cpu_design_notes.md.)

Never lent twice: every array handed out gets its own :class:`Lease` as its ``base``;
every view of that array, every Tensor, cache, graph node or Numba call holding it keeps
the lease alive. Only when the last of them goes does the lease die and a weakref
finalizer hand its range back. So whatever the user or the autograd graph keeps, its
memory is not lent again. Returned ranges are queued and merged by the next request
under a lock, so a finalizer (run by the garbage collector in any thread, at any moment)
never touches the free list itself.

A request that does not fit starts a region twice as large; the old one is freed when its
last lease dies. TINYALEX_REUSE_BUFFERS=0, or :func:`reuse_buffers` (False), turns reuse
off: every array is a fresh np.empty, as before (the benchmark's A/B). The contents of a
reused array are undefined, exactly as with np.empty: every kernel writes all of its
outputs. The numpy reference set does not use this pool.
"""
import collections
import os
import threading
import weakref

import numpy as np

#: Smaller arrays come from np.empty (reusing them would save less than it costs).
MIN_BYTES = 1 << 20
#: The first region's size. Only the pages used become resident, so it may be generous.
REGION_BYTES = 1 << 30
#: Ranges start at multiples of this: every dtype aligned, no two arrays on one page.
ALIGN = 4096


class Lease:
    """A range of a region lent to exactly one array, whose ``base`` this is (NumPy's
    __array_interface__). It holds the region's memory, so that outlives the pool's own
    reference. ``lent_whole_to_one_array`` tells the autograd's gradient steal that an
    array on a lease owns its memory once nothing else refers to the lease
    (tinyalex/autograd.py, _owns_memory)."""
    __slots__ = ("__array_interface__", "memory", "__weakref__")
    lent_whole_to_one_array = True

    def __init__(self, memory, address, shape, dtype):
        self.memory = memory
        self.__array_interface__ = {"version": 3, "shape": shape, "typestr": dtype.str,
                                    "data": (address, False)}


class Region:
    """One np.empty of `size` bytes and its free ranges [(offset, size)], by offset."""

    def __init__(self, size):
        self.memory = np.empty(size + ALIGN, np.uint8)
        self.address = self.memory.ctypes.data + (-self.memory.ctypes.data) % ALIGN  # offset 0, aligned
        self.free = [(0, size)]
        self.high_water = 0                  # end of the highest range ever lent: what is resident

    def take(self, nbytes):
        """The offset of a range of `nbytes` (first fit), or None if none fits."""
        for index, (offset, size) in enumerate(self.free):
            if size >= nbytes:
                if size == nbytes:
                    del self.free[index]
                else:
                    self.free[index] = (offset + nbytes, size - nbytes)
                self.high_water = max(self.high_water, offset + nbytes)
                return offset
        return None

    def give_back(self, offset, nbytes):
        """Free [offset, offset + nbytes) and merge it with free neighbours."""
        merged = []
        for start, size in sorted(self.free + [(offset, nbytes)]):
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((start, size))
        self.free = merged


class BufferPool:
    """The region in use and the ranges waiting to go back to it; see the module docstring.
    ``regions_made`` counts the regions started."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.region = None
        self.regions_made = 0
        self._returned = collections.deque()        # (weakref to region, offset, nbytes) of dead leases
        self._lock = threading.Lock()

    def empty(self, shape, dtype):
        """An uninitialised C-contiguous array of `shape` and `dtype`, like np.empty."""
        dtype = np.dtype(dtype)
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not self.enabled or nbytes < max(MIN_BYTES, 1):
            return np.empty(shape, dtype)
        size = -(-nbytes // ALIGN) * ALIGN
        with self._lock:
            self._merge_returned()
            region = self.region
            offset = None if region is None else region.take(size)
            if offset is None:                    # start a larger region; the old one goes with its leases
                region = self.region = Region(max(REGION_BYTES, 2 * size,
                                                  2 * region.memory.nbytes if region else 0))
                self.regions_made += 1
                offset = region.take(size)
        lease = Lease(region.memory, region.address + offset, shape, dtype)
        weakref.finalize(lease, self._returned.append, (weakref.ref(region), offset, size)).atexit = False
        return np.asarray(lease)

    def _merge_returned(self):
        """Put the ranges of dead leases back into the free list (ranges of an old region
        are dropped: it is freed with its last lease)."""
        while self._returned:
            region, offset, size = self._returned.popleft()
            if region() is self.region is not None:
                self.region.give_back(offset, size)

    def resident_bytes(self):
        """The bytes of the current region ever lent: about what it keeps resident."""
        return 0 if self.region is None else self.region.high_water

    def release_cached(self):
        """Drop the current region: freed once its leases die (at once if none is left);
        the next request starts a new one. Returns its resident bytes."""
        with self._lock:
            released, self.region = self.resident_bytes(), None
            self._returned.clear()
        return released


pool = BufferPool(enabled=os.environ.get("TINYALEX_REUSE_BUFFERS", "1") != "0")


def empty(shape, dtype):
    """pool.empty: the numba set's large outputs, gradients and caches come from here."""
    return pool.empty(shape, dtype)


def empty_like(a):
    """empty(a.shape, a.dtype), C-contiguous."""
    return pool.empty(a.shape, a.dtype)


def reuse_buffers(enabled):
    """Turn reuse on or off (off: every array a fresh np.empty, the region released);
    returns the previous setting."""
    previous, pool.enabled = pool.enabled, bool(enabled)
    if not enabled:
        pool.release_cached()
    return previous


def release_cached():
    """Release the pool's region (torch.cuda.empty_cache); returns its resident bytes."""
    return pool.release_cached()
