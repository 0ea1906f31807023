"""The 2012 paper's two-column split (tinyalex.train.parallel.model_parallel): the parts that
need no MPI, then `mpiexec` runs of alexnet2012 against its one-process twin through
subprocess, one thread per rank. The MPI tests skip when mpi4py or mpiexec is missing."""
import io
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

from tinyalex import nn
from tinyalex import functional as F
from tinyalex.errors import TrainingError
from tinyalex.tensor import tensor
from tinyalex.train import models
from tinyalex.train.parallel import model_parallel

from test_distributed import REPO, _env, _metrics, _mpiexec

SCRIPT = os.path.join(REPO, "tests", "mpi", "model_parallel_script.py")


# --- without MPI ---------------------------------------------------------------------------
def test_column_ranges_cut_a_dimension_into_near_equal_runs_in_order():
    assert [model_parallel.column_range(10, 2, c) for c in range(2)] == [(0, 5), (5, 10)]
    assert [model_parallel.column_range(5, 2, c) for c in range(2)] == [(0, 3), (3, 5)]
    assert model_parallel.column_sizes(7, 3) == [3, 2, 2]


def test_column_lrn_normalises_each_half_of_the_channels_alone():
    """Against the ordinary LRN of each half (alpha large enough that neighbours matter),
    and a gradcheck in float64; the whole-channel LRN differs at the halves' edges."""
    from tinyalex.gradcheck import gradcheck
    rng = np.random.default_rng(0)
    x = tensor(rng.standard_normal((2, 8, 3, 5)), requires_grad=True)
    column = models.ColumnLocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0, columns=2)
    halves = [F.local_response_norm(tensor(x.array[:, h * 4:(h + 1) * 4]), 3, 0.5, 0.75, 1.0).array
              for h in range(2)]
    np.testing.assert_array_equal(column(x).array, np.concatenate(halves, axis=1))
    whole = F.local_response_norm(x, 3, 0.5, 0.75, 1.0).array
    assert not np.allclose(whole[:, 3:5], column(x).array[:, 3:5])       # windows that straddle
    np.testing.assert_array_equal(whole[:, :3], column(x).array[:, :3])
    assert gradcheck(column, (x,))
    with pytest.raises(ValueError, match="expected channels that 2 columns divide, got 7"):
        column(tensor(rng.standard_normal((2, 7, 3, 5))))


def test_column_lrn_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    """The twin's checkpoints go through `tinyalex export`: the rearrangement keeps the
    batch axis first."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import tinyalex
    model = nn.Sequential(models.ColumnLocalResponseNorm(5, alpha=0.5, beta=0.75, k=1.0, columns=2))
    tinyalex.onnx.export(model, tensor(np.ones((1, 8, 3, 5), np.float32)), str(tmp_path / "lrn.onnx"),
                         input_names=["input"], output_names=["y"], dynamic_axes={"input": {0: "batch"}})
    x = np.random.default_rng(0).standard_normal((3, 8, 3, 5)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(tmp_path / "lrn.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model(tensor(x)).array, rtol=1e-5, atol=1e-6)


def test_the_twin_is_alexnet2012_with_column_lrn_and_only_alexnet2012_splits():
    twin = models.create_model("alexnet2012", 10, model_parallel=2)
    lrns = [m for m in twin.modules() if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrns) == 2 and all(getattr(m, "columns", 1) == 2 for m in lrns)
    with pytest.raises(ValueError, match="expected 1, or 2 with alexnet2012 .* got 2 with cpu-alexnet"):
        models.create_model("cpu-alexnet", 10, model_parallel=2)


def _columns(column, count=2):
    """What column_model reads of a rank's Columns (no MPI)."""
    return types.SimpleNamespace(count=count, column=column)


def test_a_column_holds_the_twins_rows_of_every_layer_and_half_its_parameters():
    """Both columns' parameters, stacked along dim 0 key by key, are the twin's; conv3, fc6,
    fc7 and fc8 read every column's maps (the allgather sits before fc6's and fc7's dropout);
    the grouped convs become ordinary convs of the column's own maps."""
    from tinyalex import random as _random
    _random.manual_seed(0)
    twin_state = {k: v.array.copy() for k, v in models.create_model("alexnet2012", 5, 2).state_dict().items()}
    columns = []
    for c in range(2):
        _random.manual_seed(0)
        columns.append(model_parallel.column_model(models.create_model("alexnet2012", 5, 2), _columns(c)))
    states = [{k: v.array for k, v in m.state_dict().items()} for m in columns]
    assert list(states[0]) == list(states[1]) == list(twin_state)
    for key, array in twin_state.items():
        np.testing.assert_array_equal(np.concatenate([s[key] for s in states]), array, err_msg=key)
    assert [s["classifier.6.weight"].shape[0] for s in states] == [3, 2]   # 5 classes: 3 + 2
    assert columns[0].shares == {"features": {8: [128, 128]},
                                 "classifier": {0: [4608, 4608], 3: [2048, 2048], 6: [2048, 2048]}}
    assert columns[1].output_sizes == [3, 2]
    conv2, conv4 = columns[1].features[4], columns[1].features[10]
    assert (conv2.groups, conv2.in_channels, conv2.out_channels) == (1, 48, 128)
    assert (conv4.groups, conv4.in_channels, conv4.out_channels) == (1, 192, 192)
    assert type(columns[0].features[2]) is nn.LocalResponseNorm              # its own 48 maps
    counts = [sum(a.size for a in s.values()) for s in states]
    assert sum(counts) == sum(a.size for a in twin_state.values())
    assert counts[0] - counts[1] == 4096 + 1              # fc8's third class: every other layer halves


def test_a_column_of_a_model_without_column_lrn_is_refused():
    with pytest.raises(ValueError, match="expected LRN within each of 2 columns"):
        model_parallel.column_model(models.alexnet2012(10), _columns(0))


def test_a_ctrl_c_on_either_column_rank_stops_both_at_the_same_batch():
    """The step's stop flag is summed over the column ranks (the exchange's allreduce_), so
    a rank that saw no Ctrl-C still stops when the other did."""
    columns = object.__new__(model_parallel.Columns)
    step = columns.agreeing(lambda run, images, labels, first_row, stop: (0.5, 1, 2, stop))
    columns.exchange = types.SimpleNamespace(allreduce_=lambda flag: flag + 1.0)     # the other asked
    assert step(None, None, None, 0, False) == (0.5, 1, 2, True)
    columns.exchange = types.SimpleNamespace(allreduce_=lambda flag: flag)           # nobody else did
    assert step(None, None, None, 0, False)[3] is False and step(None, None, None, 0, True)[3] is True


class Mailbox:
    """A comm whose sends are queued and whose receives take them in order: one rank's
    send_rows replayed into another's write_joined, in one process."""

    def __init__(self):
        self.queue, self.sends = [], 0

    def Isend(self, buffer, dest, tag):
        self.queue.append(np.array(buffer, copy=True))
        self.sends += 1
        return types.SimpleNamespace(Test=lambda: True)

    def Irecv(self, buffer, source, tag):
        message = self.queue.pop(0)
        assert message.size == buffer.size, (message.shape, buffer.shape)
        buffer[...] = message.reshape(buffer.shape)
        return types.SimpleNamespace(Test=lambda: True)


def test_rank_0_writes_the_twins_npz_a_chunk_at_a_time_and_each_rank_reads_its_rows(monkeypatch):
    monkeypatch.setattr(model_parallel, "CHUNK_BYTES", 30)     # a message per row of w
    rng = np.random.default_rng(0)
    twin = {"model/w": rng.standard_normal((5, 3, 2)).astype(np.float32),
            "model/b": rng.standard_normal(5).astype(np.float32),
            "optim/0/momentum_buffer": rng.standard_normal((5, 3, 2)).astype(np.float32)}
    parts = [{k: v[slice(*model_parallel.column_range(5, 2, c))] for k, v in twin.items()} for c in range(2)]
    for c in range(2):
        parts[c]["meta"] = np.array(f'{{"column": {c}}}')
    mail = Mailbox()
    exchange = types.SimpleNamespace(comm=mail)
    model_parallel.send_rows(types.SimpleNamespace(exchange=exchange, count=2, column=1), parts[1])
    assert mail.sends > 1 + len(twin)
    f = io.BytesIO()
    model_parallel.write_joined(f, parts[0], types.SimpleNamespace(exchange=exchange, count=2, column=0))
    assert not mail.queue
    f.seek(0)
    with np.load(f) as archive:
        assert sorted(archive.files) == sorted(list(twin) + ["meta"])
        for key, array in twin.items():
            np.testing.assert_array_equal(archive[key], array)
        assert str(archive["meta"]) == '{"column": 0}'                      # rank 0's meta
        for c in range(2):
            for key in twin:
                np.testing.assert_array_equal(model_parallel.own_rows(archive, key, 2, c), parts[c][key])


def test_model_parallel_is_refused_for_other_models_rank_counts_and_grad_stats():
    from tinyalex.train.config import TrainConfig, check_config
    with pytest.raises(TrainingError, match="--model-parallel 2: expected --model alexnet2012 .* got cpu-alexnet"):
        check_config(TrainConfig(model="cpu-alexnet", model_parallel=2))
    with pytest.raises(TrainingError, match=r"--model-parallel: expected 1, or 2 .* got 3"):
        check_config(TrainConfig(model="alexnet2012", model_parallel=3))
    three = types.SimpleNamespace(size=3)
    with pytest.raises(TrainingError, match="expected a number of ranks that 2 divides .* got 3"):
        model_parallel.split_world(three, TrainConfig(model_parallel=2))
    with pytest.raises(TrainingError, match="--grad-stats: expected no --model-parallel 2 across ranks"):
        model_parallel.split_world(types.SimpleNamespace(size=2), TrainConfig(model_parallel=2, grad_stats=True))
    assert model_parallel.split_world(None, TrainConfig(model_parallel=2)) is None   # one process: the twin


def test_the_cli_refuses_a_column_count_other_than_2(capsys):
    from tinyalex.train import cli
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--model-parallel", "4"])
    assert exit_info.value.code == 2
    assert "--model-parallel: expected 1, or 2 (the 2012 paper's two columns), got '4'" in capsys.readouterr().err


# --- with MPI ------------------------------------------------------------------------------
def _assert_same_updates(key, got, want, initial, rtol):
    """The update that `got` holds (got - initial) equals `want`'s to `rtol` in norm. A
    gradient with a column's part lost or doubled is off by a whole update."""
    update = np.linalg.norm(want - initial)
    assert update > 0 and np.linalg.norm(got - want) <= rtol * update, \
        (key, np.linalg.norm(got - want) / update)


def _joined(saved, key, replica=0):
    """The twin's array `key` from the columns of `replica` (files saved by the ranks)."""
    ranks = sorted((s for s in saved if int(s["replica"]) == replica), key=lambda s: int(s["column"]))
    return np.concatenate([s[key] for s in ranks])


def test_two_columns_step_as_the_one_process_twin_and_replicas_add_bit_for_bit(tmp_path):
    """2 SGD steps in float64 on a batch of 4 in micro-batches of 2: the twin in one process;
    2 ranks (one column each); 4 ranks (2 columns x 2 replicas, one micro-batch each).
    Columns vs twin: the same losses and updates to float64 rounding (a layer that reads
    both columns adds its input gradient in two parts, the twin's GEMM in one); 2 vs 4
    ranks: every bit (the replicas' sums meet in the micro-batches' order)."""
    mpiexec = _mpiexec()
    runs = {}
    for name, ranks in (("twin", 1), ("columns", 2), ("replicas", 4)):
        out = tmp_path / name
        out.mkdir()
        launcher = [] if ranks == 1 else [mpiexec, "-n", str(ranks)]
        subprocess.run([*launcher, sys.executable, SCRIPT, str(out), "2", "4", "2", "float64"], env=_env(),
                       timeout=600, check=True)
        runs[name] = [np.load(out / f"rank{r}.npz") for r in range(ranks)]
    twin = runs["twin"][0]
    keys = [k for k in twin.files if k.startswith("param/")]
    for saved in runs["columns"] + runs["replicas"]:
        np.testing.assert_allclose(saved["losses"], twin["losses"], rtol=1e-12)
    for key in keys:
        columns = _joined(runs["columns"], key)
        _assert_same_updates(key, columns, twin[key], twin["init/" + key[6:]], rtol=1e-9)
        for replica in (0, 1):
            np.testing.assert_array_equal(_joined(runs["replicas"], key, replica), columns, err_msg=key)
    for saved in runs["columns"]:                                   # half the parameters each
        assert sum(saved[k].size for k in keys) == pytest.approx(sum(twin[k].size for k in keys) / 2, rel=1e-3)


def _make_images(root, train=8, val=4):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for label, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((256, 256, 3)) * 80 + label * 120).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def _train_args(images, out, *extra):
    return ["-m", "tinyalex", "train", "--dataset", f"imagefolder:{images}", "--model", "alexnet2012",
            "--model-parallel", "2", "--epochs", "1", "--batch-size", "2", "--lr", "0.002",
            "--device", "cpu", "--seed", "1", "--out", str(out), *extra]


def test_mpiexec_columns_stop_together_on_ctrl_c_resume_bit_for_bit_and_end_as_the_twin(tmp_path):
    """`mpiexec -n 2 tinyalex train --model-parallel 2` on 16 RGB images (8 steps of 2):
    Ctrl-C stops both ranks at one batch and rank 0 saves the whole model; --resume (each
    rank reading its rows) finishes the epoch with every bit of an uninterrupted 2-rank
    run. That run is the one-process twin's to float32 rounding, which 8 steps amplify to
    2% of conv1's update (float64 steps agree to 1e-13, the test above), and `tinyalex
    eval` reads its checkpoint as the twin."""
    mpiexec = _mpiexec()
    images, stopped, whole, twin = (tmp_path / name for name in ("images", "stopped", "whole", "twin"))
    _make_images(images)
    job = subprocess.Popen([mpiexec, "-n", "2", sys.executable, *_train_args(images, stopped)], env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in job.stdout:                       # two steps done: stop it
            if line.startswith("epoch 1/1") and " 2/8 " in line:
                break
        job.send_signal(signal.SIGINT)
        rest = job.communicate(timeout=120)[0]
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, rest
    assert rest.count("interrupted: saved") == 1
    from tinyalex.train.checkpoint import load_checkpoint, read_checkpoint_meta
    meta = read_checkpoint_meta(stopped / "checkpoint.npz")
    assert 2 <= meta["batch"] < 8 and meta["config"]["model_parallel"] == 2
    for command, out in (([mpiexec, "-n", "2", sys.executable, *_train_args(images, stopped, "--resume")], stopped),
                         ([mpiexec, "-n", "2", sys.executable, *_train_args(images, whole)], whole),
                         ([sys.executable, *_train_args(images, twin)], twin)):
        done = subprocess.run(command, env=_env(), timeout=600, capture_output=True, text=True)
        assert done.returncode == 0, (out, done.stderr)
    timing = ("images_per_sec", "seconds")
    (resumed,), (uninterrupted,), (alone,) = (_metrics(d) for d in (stopped, whole, twin))
    assert {k: v for k, v in resumed.items() if k not in timing} == \
        {k: v for k, v in uninterrupted.items() if k not in timing}
    for key in ("train_loss", "test_loss"):
        assert uninterrupted[key] == pytest.approx(alone[key], rel=1e-4), key
    (weights_resumed, _, _), (weights_whole, optim_whole, _), (weights_twin, optim_twin, _) = (
        load_checkpoint(d / "checkpoint.npz") for d in (stopped, whole, twin))
    from tinyalex import random as _random
    _random.manual_seed(1)                                          # the runs' init (loop.build)
    initial = models.create_model("alexnet2012", 2, model_parallel=2).state_dict()
    assert list(weights_whole) == list(weights_twin)
    for key, array in weights_twin.items():
        np.testing.assert_array_equal(weights_resumed[key], weights_whole[key], err_msg=key)
        assert weights_whole[key].shape == array.shape
        _assert_same_updates(key, weights_whole[key], array, initial[key].array, rtol=5e-2)
    assert sorted(optim_whole["state"]) == sorted(optim_twin["state"])
    done = subprocess.run([sys.executable, "-m", "tinyalex", "eval", "--checkpoint", str(stopped / "best.npz")],
                          env=_env(), timeout=300, capture_output=True, text=True)
    assert done.returncode == 0 and "8 test images" in done.stdout, done.stderr


def test_a_rank_count_that_2_does_not_divide_is_refused(tmp_path):
    mpiexec = _mpiexec()
    images = tmp_path / "images"
    _make_images(images, train=2, val=1)
    done = subprocess.run([mpiexec, "-n", "3", sys.executable, *_train_args(images, tmp_path / "out")],
                          env=_env(), timeout=300, capture_output=True, text=True)
    assert done.returncode == 2
    assert "--model-parallel 2: expected a number of ranks that 2 divides" in done.stderr
