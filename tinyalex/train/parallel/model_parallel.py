"""The 2012 paper's two-GPU split (section 3.2, figure 2) across MPI ranks:
``mpiexec -n 2 tinyalex train --model alexnet2012 --model-parallel 2`` puts one column of
the network on each rank. docs/model-parallel.md draws the pattern.

What a rank holds. The one-process twin is alexnet2012 with per-column LRN
(``models.create_model(..., model_parallel=2)``). Column c of 2 holds rows
[c n/2, (c+1) n/2) of each of the twin's weights and biases: half the kernels of every conv
layer and half the neurons of every fully connected layer (fc8: half the classes). So the
twin's state_dict is the columns' stacked along dim 0, key by key, and a column's
state_dict has the twin's keys ('features.8.weight', ...) with half the rows.

Where the ranks talk. The twin's groups=2 convs (conv2, conv4, conv5) read only their own
column's maps, so on a rank they are ordinary convs of its own maps, with no message. Every
other layer after conv1 (conv3, fc6, fc7, fc8) reads both columns' maps:

- forward, :class:`ShareColumns`: each rank sends its maps to the other and concatenates
  the two along dim 1 in column order (an allgather), which is the twin's input;
- backward: each rank's layer gives a gradient for both columns' maps; each rank sends the
  other its part and adds what it receives, rank 0's part first (a reduce-scatter).

fc8's outputs are gathered too (:class:`GatherOutput`), so every rank computes the same
logits and loss; its backward keeps the rank's own columns of the loss gradient (the loss
is computed on every rank alike, not split, so there is nothing to add).

LRN and dropout. LRN normalises within the maps a rank holds, as the twin's per-column LRN
does. Dropout sits before fc6 and fc7 (torchvision's order), after the allgather: every
rank draws the same seed from the global generator and masks the gathered features, which
is the mask the twin draws for them, element by element (tinyalex.random). A neuron's
fate is thus the same on both ranks and in the twin, and no stream needs splitting.

Data parallelism composes: with K = 2R ranks, ranks 2r and 2r+1 are replica r's two
columns (so rank 0 holds column 0 of replica 0), the column's R ranks average their
gradients as in data_parallel.py, and each replica reads its own rows of each batch. Their
allreduce runs after backward (the loop turns the overlap off): the columns' messages use
the main thread during backward, and MPI runs at MPI_THREAD_SERIALIZED (overlap.py).

Checkpoints. Rank 0 writes one checkpoint.npz in the twin's format and keys, so `tinyalex
eval`, `predict` and `export` read it as the twin, and a run resumes with any number of
ranks. It writes the other column's arrays as they arrive, a chunk of rows at a time
(:func:`write_joined`), so no rank ever holds more than its half; on resume each rank reads
only its own rows (:func:`own_rows`). One file, written atomically, keeps run_dir.py's rule
that a kill at any instant leaves the old checkpoint or the new one.

Equal to the twin to rounding: the columns compute the twin's sums, but a layer that reads
both columns adds its input gradient as (rank 0's part + rank 1's part) where the twin's
GEMM adds over all outputs at once, so the runs agree to float rounding per step.
"""
import zipfile

import numpy as np

from tinyalex import device as _device
from tinyalex import nn
from tinyalex.autograd import Function
from tinyalex.errors import TrainingError
from tinyalex.train import models
from tinyalex.train.parallel import distributed as _dist

#: The most bytes of rows a checkpoint message carries (the sending rank's extra memory).
CHUNK_BYTES = 8 * 2**20

#: MPI tags of the exchanges (the pairwise allreduce_ uses 1, 2, 4, ...).
TAG_MAPS, TAG_ROWS = 1 << 20, 1 << 21


def column_range(size, columns, column):
    """Rows [start, stop) of a dimension of `size` that `column` of `columns` holds: equal
    parts, the first columns one larger when they do not divide it (an odd class count)."""
    base, extra = divmod(size, columns)
    start = column * base + min(column, extra)
    return start, start + base + (column < extra)


def column_sizes(size, columns):
    """How many rows of a dimension of `size` each column holds."""
    return [stop - start for start, stop in (column_range(size, columns, c) for c in range(columns))]


class Columns:
    """This rank's place in a model-parallel job, and its messages.

    world: the job's World; count: columns per replica (2). Rank r holds column r % count
    of replica r // count. ``exchange``: a World of this replica's column ranks (the maps
    travel there); ``replicas``: a World of the ranks that hold this column (the
    data-parallel gradient average, and what the training loop uses as its world)."""

    def __init__(self, world, count):
        self.count, self.column, self.replica = count, world.rank % count, world.rank // count
        self.exchange = _part_of(world, world.comm.Split(self.replica, self.column),
                                 [self.replica * count + q for q in range(count)])
        self.replicas = _part_of(world, world.comm.Split(self.column, self.replica),
                                 list(range(self.column, world.size, count)))

    # --- the maps a layer reads ----------------------------------------------------------
    def allgather(self, local, sizes):
        """Every column's block (N, sizes[q], ...) in column order, `local` being this
        rank's; host NumPy arrays."""
        local = np.ascontiguousarray(_device.to_device(local, "cpu"))
        blocks = [local if q == self.column else np.empty((local.shape[0], sizes[q], *local.shape[2:]),
                                                          local.dtype) for q in range(self.count)]
        self._trade({q: local for q in self._others()}, {q: blocks[q] for q in self._others()}, TAG_MAPS)
        return blocks

    def reduce_scatter(self, blocks):
        """The sum over the column ranks of their block for this rank's column, added in
        rank order; blocks[q]: this rank's gradient for column q's maps."""
        blocks = [np.ascontiguousarray(_device.to_device(b, "cpu")) for b in blocks]
        own = blocks[self.column]
        received = {q: np.empty_like(own) for q in self._others()}
        self._trade({q: blocks[q] for q in self._others()}, received, TAG_MAPS)
        parts = [own if q == self.column else received[q] for q in range(self.count)]
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        return total

    def any(self, flag):
        """True on every column rank if `flag` is true on any of them."""
        return bool(self.exchange.allreduce_(np.array([float(bool(flag))]))[0] > 0)

    def _others(self):
        return [q for q in range(self.count) if q != self.column]

    def _trade(self, sends, receives, tag):
        """Post every send and receive (column -> array) to the exchange's ranks, then wait
        for all without spinning, naming a rank that does not answer (World's wait)."""
        comm = self.exchange.comm
        requests = [(comm.Irecv(buffer, source=q, tag=tag), q) for q, buffer in receives.items()]
        requests += [(comm.Isend(buffer, dest=q, tag=tag), q) for q, buffer in sends.items()]
        for request, q in requests:
            self.exchange._wait(request, "exchange of the columns' maps", [q])

    # --- the training loop's hooks -------------------------------------------------------
    def agreeing(self, step):
        """A data-parallel step (data_parallel.distributed_step's signature) whose stop flag
        (a Ctrl-C) is agreed over the column ranks too, so they stop at the same batch."""
        def column_step(run, images, labels, first_row, stop):
            loss, correct, count, stop = step(run, images, labels, first_row, stop)
            return loss, correct, count, self.any(stop)
        return column_step

    def save_checkpoint(self, run_dir, name, model, optimizer, scheduler, meta):
        """The twin's checkpoint `name` in run_dir, written by rank 0 with the other column
        ranks' arrays streamed in (replica 0's); the other replicas hold copies and send
        nothing."""
        from tinyalex.train.checkpoint import checkpoint_arrays
        if self.replica == 0 and self.column > 0:
            send_rows(self, checkpoint_arrays(model, optimizer, scheduler, meta))
        run_dir.save_checkpoint(name, model, optimizer, scheduler, meta,   # writes on rank 0 only
                                savez=lambda f, **arrays: write_joined(f, arrays, self))

    def load_checkpoint(self, run_dir):
        """This column's part of run_dir's checkpoint.npz: (model state, optimizer state, meta)."""
        return run_dir.load_checkpoint(read=lambda archive, key: own_rows(archive, key, self.count, self.column))


def _part_of(world, comm, ranks):
    """A World over `comm`, a part of `world` holding its ranks `ranks` (in order): their
    hosts and job ranks, to name a lost one as the job knows it, and the job's wait limit."""
    hosts = None if world.hosts is None else [world.hosts[r] for r in ranks]
    return _dist.World(comm, world.local_size, world.local_rank, hosts, world.timeout, world.channel,
                       job_ranks=ranks)


def split_world(world, config):
    """The :class:`Columns` of this rank for config.model_parallel columns, or None when the
    model is not split over ranks (one column, or one process: the twin runs whole)."""
    count = config.model_parallel or 1
    if count == 1 or world is None:
        return None
    refusal = None        # every rank finds it alike: it ends them together, said once
    if world.size % count:
        refusal = (f"--model-parallel {count}: expected a number of ranks that {count} divides "
                   f"({count} columns times the data-parallel replicas), got {world.size}")
    elif config.grad_stats:
        refusal = (f"--grad-stats: expected no --model-parallel {count} across ranks (each rank "
                   "holds half of every layer), got both; leave one out")
    if refusal:
        raise _dist.mark_collective(TrainingError(refusal))
    return Columns(world, count)


# --- autograd Functions whose forward and backward send messages ------------------------
class ShareColumns(Function):
    """y = concat(x_0, ..., x_{C-1}) along dim 1, x_q being column q's maps: what a layer
    reading every column (conv3, fc6, fc7, fc8) takes in. Backward: every column's layer
    gave a gradient for all of y; this rank's x gets the sum of their blocks for its
    columns, gx = sum_q gy_q[:, own], added in rank order (a reduce-scatter).

    Shapes: x (N, sizes[c], ...) -> y (N, sum(sizes), ...). Saved: the layout only."""

    @staticmethod
    def forward(x, *, columns, sizes):
        xp = _device.array_module(x)
        return xp.asarray(np.concatenate(columns.allgather(x, sizes), axis=1)), (columns, sizes)

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        columns, sizes = cache
        xp = _device.array_module(gy)
        bounds = np.cumsum([0] + sizes)
        blocks = [gy[:, bounds[q]:bounds[q + 1]] for q in range(columns.count)]
        return (xp.asarray(columns.reduce_scatter(blocks)),)


class GatherOutput(ShareColumns):
    """The network's output: ShareColumns' forward (every rank then computes the same loss).
    Backward: gx = gy[:, own columns], nothing added, since each rank's loss already is the
    whole loss.

    Shapes: x (N, sizes[c]) -> y (N, sum(sizes)). Saved: the layout only."""

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        columns, sizes = cache
        start = sum(sizes[:columns.column])
        return (_device.array_module(gy).ascontiguousarray(gy[:, start:start + sizes[columns.column]]),)


# --- one column of the twin -------------------------------------------------------------
class ColumnAlexNet(models.AlexNet):
    """One column of an AlexNet twin: the twin's blocks and layer indices (so the twin's
    state_dict keys), each conv and linear layer cut to this column's rows, and
    :class:`ShareColumns` before each layer that reads every column (before the dropout in
    front of it, see the module docstring). `shares`: block name -> {layer index: the
    columns' sizes along dim 1 there}; `output_sizes`: the columns' output sizes."""

    def __init__(self, features, classifier, pool_size, columns, shares, output_sizes):
        super().__init__(features, classifier, pool_size)
        self.columns, self.shares, self.output_sizes = columns, shares, output_sizes

    def forward(self, x):
        x = self._through("features", x)
        x = self._through("classifier", self.avgpool(x).flatten(1))
        return GatherOutput.apply(x, columns=self.columns, sizes=self.output_sizes)

    def _through(self, block, x):
        shares = self.shares[block]
        for index, layer in enumerate(getattr(self, block)):
            if index in shares:
                sizes = shares[index]
                if x.shape[1] != sizes[self.columns.column]:
                    raise ValueError(f"{block}.{index}: input: expected {sizes[self.columns.column]} "
                                     f"features per row on column {self.columns.column}, got {x.shape[1]}")
                x = ShareColumns.apply(x, columns=self.columns, sizes=sizes)
            x = layer(x)
        return x


def column_model(twin, columns):
    """Column `columns.column` of `twin` (models.create_model(..., model_parallel=2)): the
    twin's layers, each conv and linear layer keeping its column's rows (copied, so the
    twin can be freed). The first conv reads the image, which every rank has; a grouped
    conv (groups = the column count) reads its own column's maps; every other conv and
    linear layer reads all columns'. The twin is changed in place; don't use it after."""
    count, column = columns.count, columns.column
    last = [m for m in twin.classifier if isinstance(m, nn.Linear)][-1]
    output_sizes = column_sizes(last.out_features, count)
    shares, first = {}, True
    for block_name in ("features", "classifier"):
        block, shares[block_name] = getattr(twin, block_name), {}
        for index, layer in enumerate(block):
            if isinstance(layer, nn.LocalResponseNorm):
                if getattr(layer, "columns", 1) != count:
                    raise ValueError(f"{block_name}.{index}: expected LRN within each of {count} columns "
                                     f"(models.alexnet2012(column_lrn=True)), got {layer}")
                block[index] = nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
            if not isinstance(layer, (nn.Conv2d, nn.Linear)):
                continue
            grouped = isinstance(layer, nn.Conv2d) and layer.groups > 1
            if grouped and layer.groups != count:
                raise ValueError(f"{block_name}.{index}: expected groups 1 or {count}, got {layer.groups}")
            if not (first or grouped):
                start = index
                while start > 0 and isinstance(block[start - 1], nn.Dropout):
                    start -= 1     # dropout after the allgather: the twin's mask, on every rank
                wide = layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features
                shares[block_name][start] = column_sizes(wide, count)
            _keep_rows(layer, *column_range(layer.weight.shape[0], count, column), grouped)
            first = False
    return ColumnAlexNet(twin.features, twin.classifier, twin.avgpool.output_size, columns,
                         shares, output_sizes)


def _keep_rows(layer, start, stop, grouped):
    """Cut `layer` to output rows [start, stop): its weight and bias, copied. A grouped
    conv becomes an ordinary conv of its own group's maps."""
    layer.weight = nn.Parameter(layer.weight.array[start:stop].copy())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.array[start:stop].copy())
    if isinstance(layer, nn.Conv2d):
        layer.out_channels = stop - start
        if grouped:
            layer.in_channels, layer.groups = layer.in_channels // layer.groups, 1
    else:
        layer.out_features = stop - start


# --- checkpoints: the twin's file, each rank's rows --------------------------------------
def _row_chunks(rows, row_bytes):
    """(start, stop) runs of rows of at most CHUNK_BYTES (at least one row each)."""
    step = max(1, CHUNK_BYTES // max(row_bytes, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def send_rows(columns, arrays):
    """A column rank's half of a checkpoint to rank 0 (write_joined): each array's row
    count, then every array's rows, in chunks, in the order of `arrays` (meta left out)."""
    arrays = [np.ascontiguousarray(a) for key, a in arrays.items() if key != "meta"]
    comm = columns.exchange.comm
    _dist.wait(comm.Isend(np.array([a.shape[0] for a in arrays], dtype=np.int64), dest=0, tag=TAG_ROWS))
    for array in arrays:
        rows = array.reshape(array.shape[0], -1)
        for start, stop in _row_chunks(len(rows), rows[:1].nbytes):
            _dist.wait(comm.Isend(rows[start:stop], dest=0, tag=TAG_ROWS))


def write_joined(f, arrays, columns):
    """Write the .npz np.savez(f, **twin_arrays) would, on rank 0, from its own `arrays`
    (checkpoint_arrays of column 0) and the other column ranks' rows (send_rows) received
    a chunk at a time: each array is the columns' stacked along dim 0. 'meta' is rank 0's."""
    comm, keys = columns.exchange.comm, [k for k in arrays if k != "meta"]
    counts = {}
    for q in range(1, columns.count):
        counts[q] = np.empty(len(keys), dtype=np.int64)
        _dist.wait(comm.Irecv(counts[q], source=q, tag=TAG_ROWS))
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for i, key in enumerate(keys):
            own = np.ascontiguousarray(arrays[key])
            header = np.lib.format.header_data_from_array_1_0(own)
            header["shape"] = (own.shape[0] + sum(int(c[i]) for c in counts.values()), *own.shape[1:])
            with archive.open(key + ".npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array_header_2_0(entry, header)
                rows = own.reshape(own.shape[0], -1)
                for start, stop in _row_chunks(len(rows), rows[:1].nbytes):
                    entry.write(rows[start:stop].tobytes())
                for q in range(1, columns.count):
                    for start, stop in _row_chunks(int(counts[q][i]), rows[:1].nbytes):
                        chunk = np.empty((stop - start, rows.shape[1]), dtype=own.dtype)
                        _dist.wait(comm.Irecv(chunk, source=q, tag=TAG_ROWS))
                        entry.write(chunk.tobytes())
        with archive.open("meta.npy", "w") as entry:
            np.lib.format.write_array(entry, np.asarray(arrays["meta"]))


def own_rows(archive, key, count, column):
    """Column `column`'s rows of array `key` of an open .npz (np.load's NpzFile), read
    without reading the other columns' rows into memory."""
    with archive.zip.open(key + ".npy") as entry:
        version = np.lib.format.read_magic(entry)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(entry)
        if fortran_order or not shape:
            raise ValueError(f"{key}: expected a C-ordered array with rows, got shape {shape}")
        start, stop = column_range(shape[0], count, column)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        entry.seek(entry.tell() + start * row_bytes)
        data = entry.read((stop - start) * row_bytes)
    return np.frombuffer(data, dtype=dtype).reshape((stop - start, *shape[1:])).copy()
