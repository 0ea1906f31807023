"""Data-parallel training (tinyalex.train.parallel.distributed): the parts that need no MPI, then
`mpiexec -n 2` runs through subprocess, with timeouts and one thread per rank. The MPI
tests skip when mpi4py (the `dist` extra) or mpiexec is missing."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from tinyalex import threads
from tinyalex.train.parallel import distributed
from tinyalex.utils.data import loader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEP_SCRIPT = os.path.join(REPO, "tests", "mpi", "step_script.py")
ALLREDUCE_SCRIPT = os.path.join(REPO, "tests", "mpi", "allreduce_script.py")


# --- without MPI ---------------------------------------------------------------------------
def test_launched_reads_mpich_and_open_mpi_variables():
    assert threads.launched({}) == (1, 0, 1, 0)
    assert threads.launched({"PMI_SIZE": "4", "PMI_RANK": "3", "MPI_LOCALNRANKS": "2",
                                 "MPI_LOCALRANKID": "1"}) == (4, 3, 2, 1)
    assert threads.launched({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}) == (2, 1, 2, 1)
    with pytest.raises(RuntimeError, match="expected integers from the MPI launcher, got 'two'"):
        threads.launched({"PMI_SIZE": "two"})


def test_rank_threads_share_the_cores_and_respect_the_user():
    assert threads.rank_threads(2, 2) == 1 and threads.rank_threads(16, 3) == 5
    assert threads.rank_threads(2, 4) == 1
    env = {"PMI_SIZE": "2", "PMI_RANK": "0", "MPI_LOCALNRANKS": "2", "OMP_NUM_THREADS": "2"}
    chosen = threads.configure_rank_threads(env)
    expected = str(threads.rank_threads(threads.available_cores(), 2))
    assert chosen == {v: expected for v in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    assert env["OMP_NUM_THREADS"] == "2"                      # the user's choice stays
    assert threads.configure_rank_threads({}) == {}       # one process: nothing set


@pytest.mark.parametrize("n", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_split_rows_covers_the_batch_in_rank_order(n, size):
    parts = [loader.split_rows(n, size, r) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    lengths = [stop - first for first, stop in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_wait_sleeps_between_polls_instead_of_spinning():
    class Request:
        polls = 0

        def Test(self):
            self.polls += 1
            return self.polls > 12
    slept = []
    distributed.wait(Request(), sleep=slept.append)
    assert len(slept) == 12 and slept[0] == 0 and slept[1] == 1e-5
    assert max(slept) == distributed.MAX_POLL_SLEEP_S and slept == sorted(slept)


def test_flat_buffer_packs_gradients_and_extras_and_scales_back():
    from tinyalex import nn
    from tinyalex.tensor import tensor
    layer = nn.Linear(3, 2)
    layer.weight.grad = tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    layer.bias.grad = None                                   # no gradient: packed as zeros
    buffer = distributed.FlatBuffer(layer.parameters(), np, np.float32)
    assert buffer.flat.size == 8 + len(distributed.EXTRAS)
    buffer.pack(dict(loss_sum=2.5, correct=3, count=4, stop=0))
    np.testing.assert_array_equal(buffer.flat[:8], [0, 1, 2, 3, 4, 5, 0, 0])
    assert buffer.extras() == dict(loss_sum=2.5, correct=3.0, count=4.0, stop=0.0)
    buffer.flat[:8] *= 2                                      # as a sum over 2 ranks would
    buffer.unpack(0.5)
    np.testing.assert_array_equal(layer.weight.grad.array, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(layer.bias.grad.array, [0, 0])


def test_split_units_deals_whole_micro_batches_in_rank_order():
    assert [loader.split_units(12, 3, 2, r) for r in range(2)] == [(0, 6), (6, 12)]
    assert [loader.split_units(10, 3, 2, r) for r in range(2)] == [(0, 6), (6, 10)]  # 3+3 | 3+1
    assert [loader.split_units(4, 3, 3, r) for r in range(3)] == [(0, 3), (3, 4), (4, 4)]
    for n, size in ((7, 3), (12, 4), (1, 2)):
        assert [loader.split_units(n, 1, size, r) for r in range(size)] == \
            [loader.split_rows(n, size, r) for r in range(size)]


def _pairwise(arrays):
    """((a0 + a1) + (a2 + a3)) + ... (the order ranks' sums meet in World.allreduce_)."""
    while len(arrays) > 1:
        arrays = [arrays[i] + arrays[i + 1] if i + 1 < len(arrays) else arrays[i]
                  for i in range(0, len(arrays), 2)]
    return arrays[0]


@pytest.mark.parametrize("batch, micro, ranks", [(12, 3, 2), (12, 3, 4), (12, 6, 2), (9, 3, 2), (8, 1, 8)])
def test_batch_gradient_of_the_ranks_shares_meets_in_the_one_process_order(batch, micro, ranks):
    """Without MPI: the ranks' BatchGradient sums, added as the ranks add them, give every bit
    of the one-process sum over the same micro-batches (9 / 3 with 2 ranks: shares of 2 and 1
    micro-batches, still the same tree)."""
    from tinyalex.train import models
    from tinyalex import random as _random
    from tinyalex.train.parallel.data_parallel import BatchGradient
    _random.manual_seed(1)
    model = models.create_model("cpu-alexnet", 10)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    state = _random.get_rng_state()
    one = BatchGradient(model, micro)
    one.accumulate(images, labels, "cpu")
    after_one = _random.get_rng_state()
    shares = []
    for rank in range(ranks):
        _random.set_rng_state(state)                       # every rank starts from the same state
        first, stop = loader.split_units(batch, micro, ranks, rank)
        share = BatchGradient(model, micro)
        share.accumulate(images[first:stop], labels[first:stop], "cpu", first)
        assert _random.get_rng_state() == after_one        # and draws the same seeds
        shares.append(share.buffer.flat.copy())
    np.testing.assert_array_equal(_pairwise(shares), one.buffer.flat)
    extras = one.buffer.extras()
    assert extras["count"] == batch and extras["stop"] == 0


@pytest.mark.cuda_emulated
def test_batch_gradient_on_cuda_arrays_meets_in_the_one_process_order(emulated_cuda):
    """The GPU ranks' path (cupy buffers, here the emulated cupy set): a small network with
    dropout, 8 rows in micro-batches of 2, one process against 2 ranks' shares."""
    from tinyalex import nn
    from tinyalex import random as _random
    from tinyalex.train.parallel.data_parallel import BatchGradient
    _random.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 5))
    model.to("cuda")
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    state = _random.get_rng_state()
    one = BatchGradient(model, 2)
    one.accumulate(images, labels, "cuda")
    shares = []
    for rank in range(2):
        _random.set_rng_state(state)
        first, stop = loader.split_units(8, 2, 2, rank)
        share = BatchGradient(model, 2)
        share.accumulate(images[first:stop], labels[first:stop], "cuda", first)
        shares.append(share.buffer.flat.get())
    assert isinstance(one.buffer.flat, emulated_cuda.ndarray)
    np.testing.assert_array_equal(shares[0] + shares[1], one.buffer.flat.get())
    assert one.buffer.extras()["count"] == 8


def test_micro_batches_give_the_whole_batch_step_to_rounding():
    from tinyalex.train import models
    from tinyalex import random as _random
    from tinyalex.train.parallel.data_parallel import BatchGradient
    from tinyalex.optim import SGD
    from tinyalex.train.loop import one_step
    rng = np.random.default_rng(0)
    images = rng.standard_normal((12, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 12)
    results = []
    for micro in (None, 5):
        _random.manual_seed(1)
        model = models.create_model("cpu-alexnet", 10)
        optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        gradient = None if micro is None else BatchGradient(model, micro)
        loss, correct = one_step(model, optimizer, images, labels, "cpu", None, gradient)
        results.append((loss, correct, [p.array.copy() for p in model.parameters()]))
    (loss, correct, params), (micro_loss, micro_correct, micro_params) = results
    assert micro_loss == pytest.approx(loss, rel=1e-6) and micro_correct == correct
    for whole, sliced in zip(params, micro_params):
        np.testing.assert_allclose(sliced, whole, rtol=1e-4, atol=1e-6)


def test_flat_buffer_buckets_end_with_the_extras():
    from tinyalex import nn
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 3))   # 110 + 33 elements
    buffer = distributed.FlatBuffer(model.parameters(), np, np.float32)
    # weight 100, bias 10 (would overflow 100), then 10 + 30 + 3: the extras join the last
    assert buffer.buckets(4 * 100) == [(0, 100), (100, 143 + len(distributed.EXTRAS))]


def test_plan_buckets_cover_the_buffer_without_splitting_a_parameter():
    sizes = [10, 300, 5, 5, 5, 1000, 2]
    buckets = distributed.plan_buckets(sizes, bucket_bytes=4 * 20)
    assert buckets[0][0] == 0 and buckets[-1][1] == sum(sizes)
    assert all(a[1] == b[0] for a, b in zip(buckets, buckets[1:]))
    edges = set(np.cumsum([0] + sizes).tolist())
    assert all(start in edges and stop in edges for start, stop in buckets)
    assert buckets == [(0, 10), (10, 310), (310, 325), (325, 1325), (1325, 1327)]
    with pytest.raises(ValueError, match="expected a positive size, got 0"):
        distributed.plan_buckets(sizes, 0)


class FakeNccl:
    """cupy.cuda.nccl's calls that NcclAllreduce makes, recorded."""
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0
    made = []

    @staticmethod
    def get_unique_id():
        return (1, 2, 3)

    class NcclCommunicator:
        def __init__(self, size, uid, rank):
            self.args, self.calls = (size, uid, rank), []
            FakeNccl.made.append(self)

        def allReduce(self, send, recv, count, dtype, op, stream):
            self.calls.append((send, recv, count, dtype, op))


class FakeWorld:
    """One rank's view of a 2-rank world whose rank 0 sent `sent`."""

    def __init__(self, rank, sent):
        self.rank, self.size, self.sent = rank, 2, sent

    def broadcast_object(self, obj):
        return obj if self.rank == 0 else self.sent


def test_nccl_unique_id_comes_from_rank_0_and_buckets_cover_the_buffer():
    FakeNccl.made.clear()
    distributed.NcclAllreduce(FakeWorld(1, sent=(9, 9)), nccl=FakeNccl)
    assert FakeNccl.made[-1].args == (2, (9, 9), 1)          # rank 1 uses rank 0's id
    nccl = distributed.NcclAllreduce(FakeWorld(0, sent=None), nccl=FakeNccl, bucket_bytes=4 * 100)
    assert FakeNccl.made[-1].args == (2, (1, 2, 3), 0)
    buffer = types.SimpleNamespace(data=types.SimpleNamespace(ptr=1000), size=250,
                                   dtype=np.dtype(np.float32))
    nccl.allreduce_(buffer, buckets=[(0, 100), (100, 200), (200, 250)])
    nccl.allreduce_(buffer)
    calls = FakeNccl.made[-1].calls
    assert [(c[0], c[2]) for c in calls] == [(1000, 100), (1400, 100), (1800, 50), (1000, 250)]
    assert all(c[0] == c[1] and c[3] == FakeNccl.NCCL_FLOAT32 and c[4] == FakeNccl.NCCL_SUM for c in calls)


def test_several_processes_without_mpi4py_say_what_to_install(monkeypatch):
    monkeypatch.setattr(distributed, "_world_checked", False)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # import mpi4py now fails
    with pytest.raises(RuntimeError, match=r"expected mpi4py to be installed .*tinyalex\[dist\]"):
        distributed.world()


def test_one_process_never_imports_mpi4py():
    code = "import sys, tinyalex.train.parallel.distributed as d, tinyalex.train; assert d.world() is None; " \
           "print('mpi4py' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(env, PYTHONPATH=REPO), check=True).stdout
    assert out.strip() == "False"


# --- with MPI ------------------------------------------------------------------------------
def _mpiexec():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install '.[dist]')")
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.path.exists(here) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("mpiexec is not on PATH (pip install '.[dist]' brings MPICH's)")
    return found


def _env(threads="1"):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    env.update(PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    if threads:
        env.update(NUMBA_NUM_THREADS=threads, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    return env


def _train_args(out, *extra, limit_train=256, batch_size=32):
    return ["-m", "tinyalex", "train", "--model", "cpu-alexnet", "--epochs", "1", "--limit-train",
            str(limit_train), "--limit-test", "128", "--batch-size", str(batch_size), "--seed", "3",
            "--lr", "0.005", "--out", str(out), *extra]


def _metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _steps(out):
    """steps.jsonl's rows without their wall time."""
    with open(os.path.join(out, "steps.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in f]


def _masks_by_step_and_layer(saved, micro_batches, steps=2, layers=2):
    """The dropout masks a process drew, joined over its micro-batches: [step][layer]."""
    masks = [saved[f"mask{i}"] for i in range(steps * micro_batches * layers)]
    return [[np.concatenate([masks[(s * micro_batches + m) * layers + layer] for m in range(micro_batches)])
             for layer in range(layers)] for s in range(steps)]


@pytest.mark.parametrize("ranks, micro, overlap", [(2, 6, "on"), (2, 3, "on"), (4, 3, "on"), (2, 3, "off")],
                         ids=["2-ranks-1-micro-batch-each", "2-ranks-2-each", "4-ranks-1-each",
                              "2-ranks-2-each-no-overlap"])
def test_ranks_train_bit_for_bit_the_one_process_step_with_the_same_micro_batches(tmp_path, ranks, micro,
                                                                                  overlap):
    """A batch of 12 in micro-batches of `micro`: each rank runs its share of them, and the
    gradients meet in the one-process pairwise order, so every bit agrees, whether the
    allreduce overlaps backward in buckets or follows it. Overlapped, the first bucket's
    sum over the ranks is complete before the first layer's gradient is computed."""
    mpiexec = _mpiexec()
    (tmp_path / "one").mkdir()
    (tmp_path / "ranks").mkdir()
    subprocess.run([sys.executable, STEP_SCRIPT, str(tmp_path / "one"), str(micro)], env=_env(),
                   timeout=300, check=True)
    subprocess.run([mpiexec, "-n", str(ranks), sys.executable, STEP_SCRIPT, str(tmp_path / "ranks"), str(micro),
                    overlap], env=_env(), timeout=300, check=True)
    one = np.load(tmp_path / "one" / "rank0.npz")
    saved = [np.load(tmp_path / "ranks" / f"rank{r}.npz") for r in range(ranks)]
    one_masks = _masks_by_step_and_layer(one, 12 // micro)
    for rank in saved:
        first, stop = int(rank["first"]), int(rank["stop"])
        assert stop - first == 12 // ranks
        for step, layers in enumerate(_masks_by_step_and_layer(rank, (stop - first) // micro)):
            for layer, mask in enumerate(layers):             # the rows' masks, bit for bit
                np.testing.assert_array_equal(mask, one_masks[step][layer][first:stop])
        np.testing.assert_array_equal(rank["losses"], one["losses"])
        assert rank["mid_backward"].tolist() == ([True] * 2 if overlap == "on" else [])
    params = [k for k in one.files if k.startswith("param/")]
    assert len(params) == 16
    for key in params:
        for rank in saved:
            np.testing.assert_array_equal(rank[key], one[key], err_msg=key)


@pytest.mark.parametrize("ranks", [2, 4])
def test_allreduce_sums_the_ranks_in_the_pairwise_tree_order(tmp_path, ranks):
    mpiexec = _mpiexec()
    subprocess.run([mpiexec, "-n", str(ranks), sys.executable, ALLREDUCE_SCRIPT, str(tmp_path)],
                   env=_env(), timeout=120, check=True)
    values = [(1e8, 1.0, -1e8, 1.0)[r % 4] for r in range(ranks)]
    expected = _pairwise([np.float32(v) for v in values])
    for r in range(ranks):
        saved = np.load(tmp_path / f"rank{r}.npz")
        for key in saved.files:
            assert (saved[key] == expected).all(), (key, np.unique(saved[key]), expected)


TIMING = ("images_per_sec", "seconds")


def test_mpiexec_train_writes_the_one_process_metrics_bit_for_bit(tmp_path):
    """Batches of 32 in micro-batches of 16: one process, and 2 ranks of one micro-batch each."""
    mpiexec = _mpiexec()
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *_train_args(one, "--micro-batch", "16")], env=_env(), timeout=300,
                   check=True, capture_output=True)
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, *_train_args(two, "--micro-batch", "16")],
                          env=_env(), timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch 1/1: train loss") == 1   # only rank 0 prints
    a, b = _metrics(one)[0], _metrics(two)[0]
    # training: every bit; evaluation: each rank sums its shard of the test set, so the loss
    # sums meet in another order (float64)
    assert {k: v for k, v in b.items() if k not in TIMING + ("test_loss",)} == \
        {k: v for k, v in a.items() if k not in TIMING + ("test_loss",)}
    assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-12, abs=0)
    # steps.jsonl: rank 0's rows (the global batch's loss), once each, as one process writes them
    rows_one, rows_two = (_steps(d) for d in (one, two))
    assert [r["step"] for r in rows_two] == list(range(8))
    assert rows_two == rows_one
    from tinyalex.train.checkpoint import load_checkpoint, read_checkpoint_meta
    assert read_checkpoint_meta(two / "checkpoint.npz")["world_size"] == 2
    (weights_one, _, _), (weights_two, _, _) = (load_checkpoint(d / "checkpoint.npz") for d in (one, two))
    for name, array in weights_one.items():
        np.testing.assert_array_equal(weights_two[name], array, err_msg=name)


FAILING_RANK = """
import sys
from tinyalex.threads import launched
from tinyalex.train import cli
from tinyalex.train.loop import Parts
from tinyalex.train.parallel.data_parallel import distributed_step
calls = []
def failing(*args):
    calls.append(1)
    if launched()[1] == 1 and len(calls) == 2:
        raise RuntimeError("rank 1 broke at its second step")
    return distributed_step(*args)
sys.exit(cli.main(sys.argv[1:], parts=Parts(distributed_step=failing)))
"""


def test_a_failing_rank_ends_the_job_within_seconds(tmp_path):
    mpiexec = _mpiexec()
    start = time.monotonic()
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", FAILING_RANK,
                           *_train_args(tmp_path / "run")[2:]],
                          env=_env(), timeout=120, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    assert "rank 1 broke at its second step" in done.stderr
    assert "error on rank 1 of 2" in done.stderr
    assert "lost rank" not in done.stderr     # its own error, not a lost rank (the liveness channel)
    assert elapsed < 60, f"the job took {elapsed:.0f} s to end"  # minutes if a rank hung


def test_ctrl_c_stops_both_ranks_at_one_batch_and_resume_finishes_the_run(tmp_path):
    mpiexec = _mpiexec()
    out, whole = tmp_path / "run", tmp_path / "whole"
    args = _train_args(out, limit_train=1024, batch_size=8)
    job = subprocess.Popen([mpiexec, "-n", "2", sys.executable, *args], env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in job.stdout:                                # training has started: stop it
            if line.startswith("epoch 1/1") and "/128" in line and not line.startswith("epoch 1/1 1/"):
                break
        job.send_signal(signal.SIGINT)                         # mpiexec forwards it to every rank
        rest = job.communicate(timeout=60)[0]
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, rest
    assert rest.count("interrupted: saved") == 1              # rank 0 saved, once
    from tinyalex.train.checkpoint import read_checkpoint_meta
    meta = read_checkpoint_meta(out / "checkpoint.npz")
    assert 0 < meta["batch"] < 128 and meta["world_size"] == 2
    alone = tmp_path / "alone"
    shutil.copytree(out, alone)
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, *args, "--resume"], env=_env(),
                          timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # the same checkpoint resumed by one process, in the ranks' micro-batches (4 rows each)
    done = subprocess.run([sys.executable, *_train_args(alone, "--resume", "--micro-batch", "4",
                                                        limit_train=1024, batch_size=8)],
                          env=_env(), timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resume: 1 rank (the checkpoint had 2)" in done.stdout
    subprocess.run([mpiexec, "-n", "2", sys.executable, *_train_args(whole, limit_train=1024, batch_size=8)],
                   env=_env(), timeout=300, check=True, capture_output=True)
    uninterrupted = {k: v for k, v in _metrics(whole)[0].items() if k not in TIMING}
    for resumed in (out, alone):                               # every bit of the uninterrupted run
        assert {k: v for k, v in _metrics(resumed)[0].items() if k not in TIMING} == uninterrupted, resumed


def test_each_rank_gets_cores_over_local_ranks_threads(tmp_path):
    mpiexec = _mpiexec()
    # each rank writes its own file: mpiexec may interleave the ranks' stdout mid-line
    code = ("import tinyalex, os, numba, pathlib; pathlib.Path(os.environ['OUT_DIR'],"
            " os.environ['PMI_RANK']).write_text(f\"{numba.config.NUMBA_NUM_THREADS} "
            "{os.environ['OPENBLAS_NUM_THREADS']}\")")
    env = {k: v for k, v in _env(threads=None).items()
           if k not in threads.THREAD_VARIABLES}
    subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", code], env=dict(env, OUT_DIR=str(tmp_path)),
                   timeout=120, capture_output=True, text=True, check=True)
    expected = str(threads.rank_threads(threads.available_cores(), 2))
    assert [(tmp_path / r).read_text() for r in ("0", "1")] == [f"{expected} {expected}"] * 2
