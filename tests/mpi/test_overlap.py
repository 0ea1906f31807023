"""The allreduce overlapped with backward (tinyalex.train.parallel.overlap), without MPI: which
buckets are handed over, when, in which order and holding which values. The MPI runs
(threads, bits against one process) are in test_distributed.py."""
import types

import numpy as np
import pytest

from tinyalex import nn
from tinyalex import functional as F
from tinyalex import random as _random
from tinyalex.tensor import tensor
from tinyalex.train.parallel import distributed
from tinyalex.train.parallel.data_parallel import BatchGradient
from tinyalex.train.parallel.overlap import StreamAllreduce, ThreadAllreduce, gradient_edges


class Recorder:
    """A reducer that keeps a copy of each bucket handed to it, and which parameters had
    their gradient by then."""

    def __init__(self, bucket_bytes, arrivals):
        self.bucket_bytes, self.arrivals, self.started = bucket_bytes, arrivals, []

    def start(self, view):
        self.started.append((view.copy(), list(self.arrivals)))

    def finish(self):
        pass


class TiedEnds(nn.Module):
    """A net whose first and last layers share one weight, the last parameters in the flat
    buffer: its gradient arrives in two parts, at the start and at the end of backward."""

    def __init__(self):
        super().__init__()
        self.middle = nn.Sequential(nn.ReLU(), nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 6))
        self.shared = nn.Linear(6, 6)

    def forward(self, x):
        h = self.middle(F.linear(x.reshape(x.shape[0], -1), self.shared.weight))
        return F.linear(h, self.shared.weight, self.shared.bias)


def _model_and_batch(rows=6):
    _random.manual_seed(2)
    model = TiedEnds()
    rng = np.random.default_rng(0)
    return model, rng.standard_normal((rows, 2, 3)).astype(np.float32), rng.integers(0, 6, rows)


@pytest.mark.parametrize("micro", [None, 2], ids=["one-micro-batch", "3-micro-batches"])
def test_buckets_are_handed_over_complete_last_first_during_backward(micro):
    model, images, labels = _model_and_batch()
    names = {id(p): name for name, p in model.named_parameters()}
    arrivals = []
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda t: arrivals.append(names[id(t)]))
    state = _random.get_rng_state()
    whole = BatchGradient(model, micro)
    whole.accumulate(images, labels, "cpu", stop=True)
    expected = whole.buffer.flat.copy()

    _random.set_rng_state(state)
    arrivals.clear()
    bucketed = BatchGradient(model, micro)
    recorder = Recorder(bucket_bytes=4 * 10, arrivals=arrivals)   # about one parameter per bucket
    bucketed.accumulate(images, labels, "cpu", stop=True, reducer=recorder)
    np.testing.assert_array_equal(bucketed.buffer.flat, expected)

    spans = bucketed.buffer.buckets(recorder.bucket_bytes)
    assert len(spans) >= 5 and len(recorder.started) == len(spans)
    for (first, last), (values, _) in zip(reversed(spans), recorder.started):   # last bucket first
        np.testing.assert_array_equal(values, expected[first:last])          # complete when handed over
    assert recorder.started[0][0][-1] == 1.0                                  # the stop flag, in the last bucket
    # the first bucket goes during the last micro-batch's backward, before it ends (7
    # gradients per backward: the shared weight's two and one for each other parameter)
    assert arrivals[-7:].count("shared.weight") == 2 and len(set(arrivals[-7:])) == 6
    assert len(arrivals) - 7 < len(recorder.started[0][1]) < len(arrivals)


def test_the_shared_weight_waits_for_both_of_its_gradients():
    model, images, labels = _model_and_batch()
    loss = F.cross_entropy(model(tensor(images)), tensor(labels), reduction="sum")
    edges = gradient_edges(loss)
    assert edges[id(model.shared.weight)] == 2 and edges[id(model.shared.bias)] == 1
    assert edges[id(model.middle[1].weight)] == 1 and len(edges) == 6


def test_a_rank_without_rows_hands_over_zeros_in_bucket_order():
    model, images, labels = _model_and_batch()
    gradient = BatchGradient(model, 2)
    recorder = Recorder(bucket_bytes=4 * 10, arrivals=[])
    gradient.accumulate(images[:0], labels[:0], "cpu", 6, stop=True, reducer=recorder)
    spans = gradient.buffer.buckets(recorder.bucket_bytes)
    assert [len(values) for values, _ in recorder.started] == [last - first for first, last in reversed(spans)]
    flat = gradient.buffer.flat
    assert not flat[:-len(distributed.EXTRAS)].any() and gradient.buffer.extras()["stop"] == 1.0


def test_the_communication_thread_sums_in_order_and_its_error_reaches_the_main_thread():
    import threading
    calls = []

    class World:
        def allreduce_(self, view, on_thread):
            assert on_thread and threading.current_thread().name == "tinyalex-allreduce"
            if view[0] < 0:
                raise RuntimeError("rank 1 is gone")
            calls.append(view[0])
            view *= 2

    reducer = ThreadAllreduce(World())
    buckets = [np.full(3, float(i)) for i in range(5)]
    for bucket in buckets:
        reducer.start(bucket)
    reducer.finish()
    assert calls == [0, 1, 2, 3, 4] and [b[0] for b in buckets] == [0, 2, 4, 6, 8]
    for value in (5.0, -1.0, 6.0):                    # the bucket after the error is not summed
        reducer.start(np.full(2, value))
    with pytest.raises(RuntimeError, match="rank 1 is gone"):
        reducer.finish()
    assert calls[5:] == [5.0]
    reducer.start(np.full(2, 7.0))                      # the error was reported once
    reducer.finish()
    assert calls[-1] == 7.0


def test_gpu_buckets_go_on_their_own_stream_after_the_compute_stream_reached_them():
    """The NCCL path with stand-ins for cupy's streams and NcclAllreduce (no GPU here):
    each bucket's allreduce waits for an event recorded on the compute stream when the
    bucket was handed over, and the compute stream waits for the last one at finish()."""
    log = []

    class Stream:
        def __init__(self, name):
            self.name, self.ptr = name, {"compute": 0, "comm": 77}[name]

        def record(self):
            log.append((self.name, "record"))
            return (self.name, len(log))

        def wait_event(self, event):
            log.append((self.name, "wait", event))

    compute = Stream("compute")
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Stream=lambda non_blocking: Stream("comm") if non_blocking else None,
        get_current_stream=lambda: compute))
    nccl = types.SimpleNamespace(bucket_bytes=123, allreduce_=lambda view, stream: log.append(("nccl", view, stream)))
    reducer = StreamAllreduce(nccl, cupy=cupy)
    assert reducer.bucket_bytes == 123
    reducer.start("bucket 2")
    reducer.start("bucket 1")
    reducer.finish()
    assert log == [("compute", "record"), ("comm", "wait", ("compute", 1)), ("nccl", "bucket 2", 77),
                   ("compute", "record"), ("comm", "wait", ("compute", 4)), ("nccl", "bucket 1", 77),
                   ("comm", "record"), ("compute", "wait", ("comm", 7))]
