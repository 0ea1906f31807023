"""Data-parallel training: K processes ("ranks") started by ``mpiexec -n K tinyalex train``.

Engines, not sockets of our own: MPI through mpi4py between CPU ranks (the ``dist`` extra
pins mpi4py and the MPICH runtime wheel), and NCCL through CuPy between GPUs, with NCCL's
unique id sent over MPI. mpi4py is imported only when the launcher says that more than one
process was started (:func:`launched`), so a one-process run never needs MPI.

Semantics (what makes K ranks reproduce the one-process run, bit for bit with
``--micro-batch``, see tinyalex.train.parallel.data_parallel):

- ``--batch-size`` is the global batch. Every rank draws the same permutation (same seed)
  and takes its row slice of each global batch: whole micro-batches with --micro-batch
  (:func:`split_units`), else rows (:func:`split_rows`: the first B % K ranks get one row
  more).
- Randomness is keyed by global position, never by rank: dropout masks by the element's
  index in the whole batch (``tinyalex.random.batch_rows``, an offset in every dropout
  kernel), augmentation by the sample's position in the epoch
  (``tinyalex.train.data.transforms.SampleRNG``). Every rank draws the same dropout seeds from
  the same generator, so each sample gets the mask and the crop of the one-process run.
- After backward, each rank packs sum_over_its_rows(gradient) into one flat buffer,
  together with its loss sum, correct count, sample count and stop flag, and one
  allreduce (sum) gives every rank the global sums; dividing by the global count gives
  the gradient of the global batch's mean loss (:class:`FlatBuffer`). Between CPU ranks
  the allreduce adds the ranks' buffers in a fixed pairwise order (``World.allreduce_``)
  when K is a power of two; NCCL's ring adds two ranks' buffers as a + b too, and more
  in an order of its own.
- Parameters (and momentum buffers) are broadcast from rank 0 at start and after
  ``--resume``. Evaluation is split into contiguous shards, its sums allreduced.
- Only rank 0 prints and writes files. A checkpoint records ``world_size``; since nothing
  but the order of the gradient sums depends on K, resuming with another K continues the
  same run (logged; bit for bit with --micro-batch, as above).

Faults: an exception on one rank calls ``MPI_Abort`` (:func:`abort_on_error`), so the job
ends non-zero within seconds instead of hanging in a collective (docs/pitfalls.md#mpi-hang).
A rank whose process dies is seen by mpiexec, which kills the job at once, and by the
liveness channel (tinyalex.train.parallel.liveness, opened by :func:`world`), whose helper
names the lost rank first. A host that goes silent (power, network) is not: MPI reports nothing to the ranks waiting for it, so a
rank that has waited TINYALEX_RANK_TIMEOUT seconds in one collective raises
:class:`LostRankError` naming the rank and host it waits for (docs/pitfalls.md#lost-host).
Stops that every rank agrees on (Ctrl-C carried in the stop flag, a NaN loss, which the
allreduce makes global) end all ranks at the same batch without Abort. Every wait polls a
non-blocking request with a sleep that grows to 1 ms, so a rank waiting for another never
spins a core (MPICH's blocking calls busy-poll); the overlap's communication thread blocks
only once its partner is there (:meth:`World._swap`).

Threads: each rank gets cores / local ranks threads for Numba, OpenMP and BLAS, set before
they load (:func:`configure_rank_threads`, called by ``import tinyalex``;
docs/pitfalls.md#rank-threads).
"""
import atexit
import os
import sys
import threading
import time

from tinyalex.threads import launched

#: How long a failing rank waits between printing its error and MPI_Abort.
ABORT_GRACE_S = 0.2

#: Longest sleep between two polls of a pending collective, in seconds.
MAX_POLL_SLEEP_S = 1e-3

#: Seconds a rank waits in one collective before it calls the ranks it waits for lost
#: (TINYALEX_RANK_TIMEOUT; 0 waits forever). Long, because a slow rank is not a lost one:
#: another rank may be compiling its first step's kernels or writing a checkpoint.
#: PyTorch's process groups time out after 10 (NCCL) or 30 minutes (Gloo).
RANK_TIMEOUT_S = 600.0


class LostRankError(RuntimeError):
    """A rank got no reply in one collective for the rank timeout: the rank it waits for
    (or one that rank waits for) has a dead, hung or unreachable host."""


def rank_timeout(environ=None):
    """TINYALEX_RANK_TIMEOUT in seconds (RANK_TIMEOUT_S if unset), or None for 0 or inf
    (no limit)."""
    raw = (os.environ if environ is None else environ).get("TINYALEX_RANK_TIMEOUT", "")
    try:
        seconds = float(raw) if raw.strip() else RANK_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:                                  # negative or nan
        from tinyalex.errors import TrainingError
        raise TrainingError("TINYALEX_RANK_TIMEOUT: expected seconds, a number >= 0 "
                            f"(0: wait forever), got {raw!r}")
    return seconds if 0 < seconds < float("inf") else None


def wait(request, sleep=time.sleep, clock=time.monotonic, timeout=None, lost=None):
    """Complete a non-blocking MPI request without spinning: Test, then sleep a little
    (doubling from 10 us up to MAX_POLL_SLEEP_S) between tests. MPICH's blocking calls
    busy-poll a core at 100% for as long as they wait. With `timeout` (seconds), raise
    ``lost(seconds waited)`` (an exception) once the request has waited longer."""
    delay, start = 0.0, clock()
    while not request.Test():
        if timeout is not None and clock() - start > timeout:
            raise lost(clock() - start)
        sleep(delay)
        delay = min(max(2 * delay, 1e-5), MAX_POLL_SLEEP_S)


class World:
    """The ranks of this job over an mpi4py communicator: the collectives training needs,
    each completed by :func:`wait` (no spinning)."""

    def __init__(self, comm, local_size=1, local_rank=0, hosts=None, timeout=None, channel=None,
                 job_ranks=None):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.local_size, self.local_rank = local_size, local_rank
        self.hosts = hosts                     # each rank's host name, for LostRankError
        self.job_ranks = job_ranks             # of a part of the job: each rank's rank in the job
        self.timeout = timeout                 # seconds, or None: wait forever
        self.channel = channel                 # the liveness.Channel, or None
        self._received = None                  # allreduce_'s receive buffer

    @property
    def is_main(self):
        return self.rank == 0

    def _wait(self, request, what, peers=None):
        """wait() for this rank's part of `what` (a collective's name), on `peers` (the
        ranks it waits for; default every other rank) for at most self.timeout."""
        wait(request, timeout=self.timeout, lost=lambda waited: self.lost(what, waited, peers))

    def lost(self, what, waited, peers=None):
        """The LostRankError for `waited` seconds without a reply from `peers` in `what`."""
        others = [r for r in range(self.size) if r != self.rank] if peers is None else peers
        named = ", ".join(f"{self.job_ranks[r] if self.job_ranks else r}"
                          + (f" (host {self.hosts[r]})" if self.hosts else "") for r in others)
        return LostRankError(
            f"no reply from rank{'s' if len(others) > 1 else ''} {named} for {waited:.0f} s "
            f"in the {what}: a host died, hangs or left the network "
            "(TINYALEX_RANK_TIMEOUT sets this wait, in seconds)")

    def allreduce_(self, buffer, on_thread=False):
        """Sum a NumPy buffer over the ranks, in place.

        With a power-of-two number of ranks the sum is the pairwise tree over rank order,
        ((b0 + b1) + (b2 + b3)) + ..., by recursive doubling: at distance d = 1, 2, 4, ...
        each rank swaps its partial sum with rank ^ d and adds the two (a + b == b + a, so
        both partners hold the same bits). MPI's own allreduce may sum in another order
        for large buffers. With another number of ranks, MPI's allreduce. The sum is
        elementwise, so summing the slices of a buffer one by one gives the same bits.

        on_thread: called from a communication thread while the main thread computes
        (tinyalex.train.parallel.overlap): each swap then moves its bytes in one blocking
        MPI call, which releases Python's GIL, once the partner is known to be there."""
        size = self.size
        if size & (size - 1):
            from mpi4py import MPI
            self._wait(self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), "allreduce")
            return buffer
        received = self._receive_buffer(buffer)
        distance = 1
        while distance < size:
            self._swap(buffer, received, self.rank ^ distance, distance, on_thread)
            buffer += received
            distance *= 2
        return buffer

    def _swap(self, buffer, received, partner, tag, on_thread):
        """Send `buffer` to `partner` and receive its into `received`.

        On the main thread every request is polled with wait(). A communication thread
        polls too, but then it runs only when the main thread lets go of the GIL, which
        a Numba kernel holds until it returns: the transfer would advance only between two
        kernels. So the thread first swaps an empty message with its partner, polled (a
        late partner costs a sleep, not a spinning core), then waits for the data in
        MPI_Waitall, which drives the copy in C with the GIL released (and busy-polls,
        but only while both partners move bytes)."""
        requests = [self.comm.Isend(buffer, dest=partner, tag=tag),
                    self.comm.Irecv(received, source=partner, tag=tag)]
        if on_thread:
            import numpy as np
            from mpi4py import MPI
            met = [self.comm.Isend(np.empty(0, np.uint8), dest=partner, tag=0),  # distances >= 1
                   self.comm.Irecv(np.empty(0, np.uint8), source=partner, tag=0)]
            for request in met:
                self._wait(request, "allreduce", [partner])
            MPI.Request.Waitall(requests)
            return
        for request in requests:
            self._wait(request, "allreduce", [partner])

    def _receive_buffer(self, like):
        """An array like `like` to receive a partner's sum into: a view of one array kept
        from step to step and grown to the largest buffer summed (a fresh one would fault
        in its pages every step)."""
        held = self._received
        if held is None or held.size < like.size or held.dtype != like.dtype:
            import numpy as np
            held = self._received = np.empty(like.size, like.dtype)
        return held[:like.size].reshape(like.shape)

    def broadcast_(self, buffer, root=0):
        """Overwrite a NumPy buffer with root's, in place."""
        self._wait(self.comm.Ibcast(buffer, root=root), "broadcast")
        return buffer

    def broadcast_object(self, obj, root=0):
        """root's picklable `obj` on every rank (small things: ids, flags, settings)."""
        import pickle

        import numpy as np
        data = pickle.dumps(obj) if self.rank == root else b""
        length = np.array([len(data)], dtype=np.int64)
        self.broadcast_(length, root)
        raw = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root \
            else np.empty(int(length[0]), dtype=np.uint8)
        self.broadcast_(raw, root)
        return obj if self.rank == root else pickle.loads(raw.tobytes())

    def barrier(self):
        self._wait(self.comm.Ibarrier(), "barrier")

    def abort(self, code):
        """End every rank of the job now with exit code `code`."""
        self.comm.Abort(code)


_world = None
_world_checked = False


def world():
    """This job's :class:`World`, or None for a one-process run. mpi4py is imported (and
    MPI initialised) here, and only when the launcher started more than one process."""
    global _world, _world_checked
    if _world_checked:
        return _world
    size, _, local_size, local_rank = launched()
    if size > 1:
        timeout = rank_timeout()
        try:
            import mpi4py
            # the main thread calls MPI, and the overlap's communication thread while the
            # main thread makes no MPI call (tinyalex.train.parallel.overlap)
            mpi4py.rc.thread_level = "serialized"
            from mpi4py import MPI
        except ImportError as exc:
            raise RuntimeError(f"the launcher started {size} processes: expected mpi4py to be "
                               "installed for data-parallel training (pip install "
                               f"'tinyalex[dist]'), got {type(exc).__name__}: {exc}") from exc
        comm = MPI.COMM_WORLD
        if comm.Get_size() != size:
            raise RuntimeError(f"MPI: expected {size} ranks as the launcher said, got "
                               f"{comm.Get_size()} (is mpi4py built for another MPI than mpiexec's?)")
        # the host names mpiexec was given (hydra's PMI_HOSTNAME), once, for LostRankError
        hosts = comm.allgather(os.environ.get("PMI_HOSTNAME") or MPI.Get_processor_name())
        from tinyalex.train.parallel import liveness
        channel = liveness.open_channel(comm, hosts, _lost_rank)
        _world = World(comm, local_size, local_rank, hosts, timeout, channel)
        if channel is not None:
            atexit.register(channel.close)     # runs before mpi4py's MPI_Finalize
    _world_checked = True
    return _world


def is_main_process():
    """True on rank 0, and in a one-process run (without importing MPI)."""
    return launched()[1] == 0


def mark_collective(exc):
    """Flag `exc` as raised by every rank alike at the same point (a NaN loss after the
    allreduce, an agreed Ctrl-C), so the ranks end together without MPI_Abort; returns it."""
    exc.collective = True
    return exc


def abort_on_error(exc, command="tinyalex"):
    """In a multi-rank job, report an exception that not every rank shares and MPI_Abort
    the job (exit code 2 for a user error, 130 for an unagreed Ctrl-C, else 1), so no rank
    waits forever in a collective. Returns without doing anything in a one-process run or
    for a collective exception."""
    if _world is None or getattr(exc, "collective", False):
        return
    code = 130 if isinstance(exc, KeyboardInterrupt) else 2 if _is_user_error(exc) else 1
    trace = code == 1 and not isinstance(exc, LostRankError)    # a lost host's trace says nothing
    _stop_job(" ".join(str(exc).split()) or type(exc).__name__, code, command, exc if trace else None)


def _lost_rank(rank):
    """The liveness channel's call when `rank` ended without a word (its helper has said so)."""
    _stop_job(None, 1)


_stopping = threading.Lock()   # taken once, never given back: the first to stop the job says why


def _stop_job(message, code, command="tinyalex", exc=None):
    """Print this rank's one line on why the job ends (unless `message` is None: said
    already), then `exc`'s trace; tell the liveness channel that this end is on purpose,
    and MPI_Abort every rank with `code`."""
    w = _world
    _stopping.acquire()
    if w.channel is not None:
        w.channel.failing()
    if message is not None:   # the line first: MPI_Abort may cut what the launcher forwards
        print(f"{command}: error on rank {w.rank} of {w.size}: {message}; stopping all {w.size} ranks",
              file=sys.stderr, flush=True)
    if exc is not None:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(ABORT_GRACE_S)   # time for the launcher to forward this rank's output
    w.abort(code)


def _is_user_error(exc):
    from tinyalex.errors import ValueRuntimeError
    return isinstance(exc, ValueRuntimeError)


# --- flat buffers ----------------------------------------------------------------------
#: The statistics after the gradients in the flat buffer: loss sum, correct predictions,
#: samples, and the stop flag (a rank's Ctrl-C), all summed by the allreduce.
EXTRAS = ("loss_sum", "correct", "count", "stop")


class FlatBuffer:
    """One contiguous buffer holding every parameter's gradient, then EXTRAS, so one
    allreduce (one message, no per-layer latency) averages a whole step.

    params: the parameters, in model order; xp: numpy or cupy; dtype: the gradients'.
    """

    def __init__(self, params, xp, dtype):
        self.params = list(params)
        self.xp = xp
        self.offsets, offset = [], 0
        for p in self.params:
            self.offsets.append(offset)
            offset += int(p.array.size)
        self.grad_size = offset
        self.flat = xp.zeros(offset + len(EXTRAS), dtype=dtype)

    @property
    def nbytes(self):
        return int(self.flat.nbytes)

    def buckets(self, bucket_bytes):
        """plan_buckets over the parameters, the EXTRAS joining the last bucket."""
        sizes = [int(p.array.size) for p in self.params]
        plan = plan_buckets(sizes, bucket_bytes, self.flat.dtype.itemsize) or [(0, 0)]
        return plan[:-1] + [(plan[-1][0], self.flat.size)]

    def pack(self, extras, out=None):
        """Copy the gradients (zeros for a parameter without one) and `extras` (a dict of
        EXTRAS) into the buffer, or into `out`, an array like it."""
        flat = self.flat if out is None else out
        self.pack_gradients(flat)
        self.pack_extras(extras, flat)

    def pack_gradients(self, out, start=0, stop=None):
        """Copy the gradients of the parameters that lie in elements [start, stop) of the
        buffer (a bucket: whole parameters) into `out`, zeros for a parameter without one."""
        stop = self.grad_size if stop is None else stop
        for p, offset in zip(self.params, self.offsets):
            if start <= offset < stop:
                view = out[offset:offset + p.array.size]
                if p.grad is None:
                    view[...] = 0
                else:
                    view[...] = p.grad.array.reshape(-1)

    def pack_extras(self, extras, out):
        """Write `extras` (a dict of EXTRAS) after the gradients of `out`."""
        out[self.grad_size:] = self.xp.asarray([float(extras[k]) for k in EXTRAS], dtype=out.dtype)

    def extras(self):
        """EXTRAS as Python floats, read from the buffer (after the allreduce)."""
        tail = self.flat[self.grad_size:]
        values = tail.get() if hasattr(tail, "get") else tail
        return {k: float(v) for k, v in zip(EXTRAS, values)}

    def unpack(self, scale):
        """Set every parameter's gradient to its slice of the buffer times `scale`."""
        from tinyalex.tensor import Tensor
        scale = self.flat.dtype.type(scale)
        for p, offset in zip(self.params, self.offsets):
            view = self.flat[offset:offset + p.array.size].reshape(p.array.shape)
            if p.grad is None or p.grad.array.shape != view.shape:
                p.grad = Tensor(view * scale)
            else:                                   # one pass over memory, no temporary
                self.xp.multiply(view, scale, out=p.grad.array)


def broadcast_parameters(w, model, optimizer=None):
    """Make every rank's parameters (and momentum buffers) rank 0's, with one broadcast of
    a flat buffer each. A rank without a momentum buffer that rank 0 has gets one."""
    if w is None:
        return
    params = list(model.parameters())
    _broadcast_arrays(w, [p.array for p in params], lambda i, a: _set_array(params[i], a))
    if optimizer is None:
        return
    have = [i for i, p in enumerate(params) if "momentum_buffer" in optimizer.state.get(p, {})]
    have = w.broadcast_object(have)
    buffers = []
    for i in have:
        state = optimizer.state.setdefault(params[i], {})
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = params[i].array.copy()
        buffers.append(state["momentum_buffer"])
    _broadcast_arrays(w, buffers, lambda j, a: buffers[j].__setitem__(Ellipsis, a))


def _set_array(p, value):
    p.array[...] = value


def _broadcast_arrays(w, arrays, store):
    """Broadcast a list of same-dtype arrays from rank 0 through one flat host buffer."""
    import numpy as np

    from tinyalex import device as _device
    if not arrays:
        return
    host = [_device.to_device(a, "cpu") for a in arrays]
    flat = np.concatenate([h.reshape(-1) for h in host])
    w.broadcast_(flat)
    offset = 0
    for i, h in enumerate(host):
        part = flat[offset:offset + h.size].reshape(h.shape)
        offset += h.size
        xp = _device.array_module(arrays[i])
        store(i, xp.asarray(part))


# --- NCCL (one rank per GPU) -------------------------------------------------------------
def plan_buckets(sizes, bucket_bytes, itemsize=4):
    """Group consecutive parameters (sizes in elements, in buffer order) into buckets of
    about `bucket_bytes`, returned as (start, stop) element ranges of the flat buffer that
    together cover it exactly. A parameter never straddles two buckets; one larger than
    bucket_bytes gets a bucket of its own. Buckets let an allreduce start on the last
    layers' gradients while backward still runs (DDP's scheme)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes: expected a positive size, got {bucket_bytes!r}")
    buckets, start, filled = [], 0, 0
    for size in sizes:
        if filled and (filled + size) * itemsize > bucket_bytes:
            buckets.append((start, start + filled))
            start, filled = start + filled, 0
        filled += size
    if filled:
        buckets.append((start, start + filled))
    return buckets


class NcclAllreduce:
    """Sum device buffers over the ranks with NCCL (cupy.cuda.nccl), one rank per GPU.

    NCCL needs the same unique id on every rank before its communicator exists: rank 0
    makes it and MPI broadcasts it (`w.broadcast_object`). `nccl` may be injected (tests).
    """

    BUCKET_BYTES = 25 * 2**20               # DDP's default bucket

    def __init__(self, w, nccl=None, bucket_bytes=BUCKET_BYTES):
        if nccl is None:
            from cupy.cuda import nccl
        self.nccl, self.world, self.bucket_bytes = nccl, w, bucket_bytes
        uid = nccl.get_unique_id() if w.rank == 0 else None
        uid = w.broadcast_object(uid)
        self.comm = nccl.NcclCommunicator(w.size, uid, w.rank)

    def allreduce_(self, buffer, buckets=None, stream=0):
        """Sum a float32/float64 device buffer in place, one NCCL call per (start, stop)
        element range of `buckets` (default: the whole buffer in one call). The calls are
        queued on `stream` in order; NCCL runs them as the stream reaches them."""
        dtype = {4: self.nccl.NCCL_FLOAT32, 8: self.nccl.NCCL_FLOAT64}[buffer.dtype.itemsize]
        ptr, item = buffer.data.ptr, buffer.dtype.itemsize
        for start, stop in buckets or [(0, buffer.size)]:
            self.comm.allReduce(ptr + start * item, ptr + start * item, stop - start, dtype,
                                self.nccl.NCCL_SUM, stream)
        return buffer


def select_gpu(w, cupy=None):
    """Make GPU (local rank mod the GPU count) current for this rank; returns its id."""
    if cupy is None:
        import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    if count < 1:
        raise RuntimeError("--device cuda with several ranks: expected a GPU per rank, got none")
    device = w.local_rank % count
    cupy.cuda.Device(device).use()
    return device
