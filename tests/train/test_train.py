"""The trainer and the ``tinyalex`` command, end to end on a tiny synthetic Fashion-MNIST.

The data set is 256 training and 64 test images whose class is easy to learn: a bright
horizontal bar whose height encodes the label, over dim noise. Two epochs at batch 32 (16
SGD steps) are enough to see the loss fall, and cheap enough to train a few times:

- ``full_run``: 2 epochs uninterrupted, the reference every resumed run must reproduce;
- ``one_epoch_run``: the same settings stopped after epoch 1, copied by the tests that
  resume it, so the fixture itself stays untouched.

Runs are deterministic (the seed fixes init, data order, augmentation and dropout), so
resumed runs are compared with ``==``, not approximately.
"""
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import time
import types

import numpy as np
import pytest
from PIL import Image

from tinyalex import device as _device
from tinyalex import nn
from tinyalex.train.cli import main
from tinyalex.train.data.fashion_mnist import FASHION_MNIST_CLASSES
from tinyalex.train.data.idx import write_idx
from tinyalex.train.models import cpu_alexnet
from tinyalex.train.config import TrainConfig
from tinyalex.errors import TrainingError
from tinyalex.train.loop import Parts, build, one_step, train
from tinyalex.utils.data.loader import DataLoader
from tinyalex.train.checkpoint import load_checkpoint, save_checkpoint

N_TRAIN, N_TEST, BATCH, EPOCHS = 256, 64, 32, 2
MICRO = 16  # two micro-batches per step: the resume and interrupt tests cover that path
LR = 0.02  # the cpu-alexnet preset's, above the paper's 0.01: 16 steps visibly lower the loss
METRIC_KEYS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5",
               "images_per_sec", "seconds"}
TIMING_KEYS = {"images_per_sec", "seconds"}  # the only metrics allowed to differ between runs
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- fixtures

def bar_images(labels, rng):
    """28x28 uint8 images of dim noise with a bright bar in rows 2+2c to 4+2c for label c.
    The bar spans columns 4-23, symmetric, so training's random horizontal flip keeps it."""
    images = rng.integers(0, 64, (len(labels), 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        image[2 + 2 * label:5 + 2 * label, 4:24] = 255
    return images


def write_split(directory, prefix, n, rng):
    """PREFIX-images-idx3-ubyte.gz and PREFIX-labels-idx1-ubyte.gz, balanced classes."""
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    for kind, array in (("images-idx3", bar_images(labels, rng)), ("labels-idx1", labels)):
        raw = directory / f"{prefix}-{kind}-ubyte"
        write_idx(raw, array)
        raw.with_name(raw.name + ".gz").write_bytes(gzip.compress(raw.read_bytes()))
        raw.unlink()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    rng = np.random.default_rng(2012)
    write_split(directory, "train", N_TRAIN, rng)
    write_split(directory, "t10k", N_TEST, rng)
    return directory


def make_config(data_dir, out, **overrides):
    """The settings every run here shares (explicit, so no default is chosen)."""
    settings = dict(model="cpu-alexnet", data_dir=str(data_dir), batch_size=BATCH, micro_batch=MICRO,
                    epochs=EPOCHS, lr=LR, lr_schedule="plateau", lr_step=30, device="cpu", out=str(out), seed=0)
    return TrainConfig(**dict(settings, **overrides))


def train_argv(data_dir, out, *extra, epochs=EPOCHS):
    """`tinyalex train` arguments equal to make_config(data_dir, out, epochs=epochs)."""
    return ["train", "--model", "cpu-alexnet", "--data-dir", str(data_dir), "--batch-size", str(BATCH),
            "--micro-batch", str(MICRO), "--epochs", str(epochs), "--lr", str(LR), "--lr-schedule", "plateau", "--lr-step", "30",
            "--device", "cpu", "--out", str(out), "--seed", "0", *extra]


@pytest.fixture(scope="session")
def full_run(data_dir, tmp_path_factory):
    """2 epochs uninterrupted: (out directory, returned history, logged lines)."""
    out = tmp_path_factory.mktemp("full-run")
    log = []
    history = train(make_config(data_dir, out), log=log.append)
    return types.SimpleNamespace(out=out, history=history, log=log)


@pytest.fixture(scope="session")
def one_epoch_run(data_dir, tmp_path_factory):
    """The same run stopped after epoch 1 (copy it before resuming)."""
    out = tmp_path_factory.mktemp("one-epoch-run")
    train(make_config(data_dir, out, epochs=1), log=lambda line: None)
    return out


def copy_run(out, tmp_path):
    return shutil.copytree(out, tmp_path / "run")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(history):
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in history]


def assert_same_checkpoint_state(path, expected_path):
    """Model weights, momentum buffers, schedule and RNG state are bitwise equal."""
    model, optim, meta = load_checkpoint(path)
    model_ref, optim_ref, meta_ref = load_checkpoint(expected_path)
    assert model.keys() == model_ref.keys()
    for key in model_ref:
        np.testing.assert_array_equal(model[key], model_ref[key], err_msg=key)
    assert optim["state"].keys() == optim_ref["state"].keys()
    for i in optim_ref["state"]:
        np.testing.assert_array_equal(optim["state"][i]["momentum_buffer"],
                                      optim_ref["state"][i]["momentum_buffer"], err_msg=f"momentum {i}")
    for key in ("epoch", "batch", "rng", "scheduler", "param_groups"):
        assert meta[key] == meta_ref[key], key


# ---------------------------------------------------------------------------- outputs

def test_a_run_writes_metrics_checkpoints_and_curves(full_run):
    rows = read_jsonl(full_run.out / "metrics.jsonl")
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert METRIC_KEYS <= row.keys() <= METRIC_KEYS | {"lr"}
        assert all(math.isfinite(v) for v in row.values())
        assert 0 <= row["test_acc"] <= row["test_top5"] <= 1 and 0 <= row["train_acc"] <= 1
        assert row["images_per_sec"] > 0 and row["seconds"] > 0
    assert rows == full_run.history  # the file holds exactly what train() returned
    for name in ("checkpoint.npz", "best.npz"):
        load_checkpoint(full_run.out / name)
    assert (full_run.out / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert not [name for name in os.listdir(full_run.out) if name.startswith(".")], "temporary files left"


def without_time(rows):
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


def test_steps_jsonl_holds_each_step_and_adds_up_to_metrics_jsonl(full_run):
    """16 steps: a row each (a short run), whose batch losses and accuracies average to
    the epoch's, and whose images count on across the epochs."""
    rows = read_jsonl(full_run.out / "steps.jsonl")
    steps = N_TRAIN // BATCH
    assert [row["step"] for row in rows] == list(range(EPOCHS * steps))
    assert [row["epoch"] for row in rows] == [1] * steps + [2] * steps
    assert [row["images"] for row in rows] == [BATCH * (i + 1) for i in range(EPOCHS * steps)]
    for m in full_run.history:
        epoch = [row for row in rows if row["epoch"] == m["epoch"]]
        assert sum(row["loss"] * BATCH for row in epoch) / N_TRAIN == pytest.approx(m["train_loss"], rel=1e-12)
        assert sum(row["acc"] * BATCH for row in epoch) / N_TRAIN == pytest.approx(m["train_acc"], rel=1e-12)
        assert {row["lr"] for row in epoch} == {m["lr"]}
    assert len({row["loss"] for row in rows}) == len(rows)
    assert all(0 < b["time"] - a["time"] < 600 for a, b in zip(rows, rows[1:]))


def test_training_on_learnable_data_lowers_the_loss(full_run):
    first, last = full_run.history[0], full_run.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["test_loss"] < first["test_loss"] and last["test_loss"] < math.log(10)  # chance: log 10
    assert last["test_acc"] > 0.1  # above chance


def test_explicit_settings_log_no_choices(full_run):
    assert not [line for line in full_run.log if line.startswith("chose")]
    assert [line.split(":")[0] for line in full_run.log] == ["epoch 1/2", "epoch 2/2"]


# ---------------------------------------------------------------------------- resume

def test_resume_after_an_epoch_continues_the_same_loss_curve(full_run, one_epoch_run, data_dir, tmp_path):
    run = copy_run(one_epoch_run, tmp_path)
    log = []
    history = train(make_config(data_dir, run, resume=True), log=log.append)
    assert log[0].startswith(f"resumed from {run / 'checkpoint.npz'} at epoch 2, batch 0")
    assert without_timing(read_jsonl(run / "metrics.jsonl")) == without_timing(full_run.history)
    assert without_timing(history) == without_timing(full_run.history)
    assert without_time(read_jsonl(run / "steps.jsonl")) == without_time(read_jsonl(full_run.out / "steps.jsonl"))
    assert_same_checkpoint_state(run / "checkpoint.npz", full_run.out / "checkpoint.npz")


def test_interrupt_mid_epoch_saves_a_checkpoint_that_resumes_exactly(one_epoch_run, data_dir, tmp_path,
                                                                      monkeypatch, capsys):
    run, interrupt_at = tmp_path / "run", 3
    real_step, steps = one_step, []

    def step_until_ctrl_c(*args):
        """Ctrl-C arriving as batch `interrupt_at` of epoch 1 starts (before its update)."""
        if len(steps) == interrupt_at:
            raise KeyboardInterrupt
        steps.append(1)
        return real_step(*args)

    log = []
    with pytest.raises(KeyboardInterrupt):
        train(make_config(data_dir, run, epochs=1), log=log.append, parts=Parts(step=step_until_ctrl_c))
    assert f"(epoch 1, batch {interrupt_at}); continue with --resume" in log[-1]
    _, _, meta = load_checkpoint(run / "checkpoint.npz")
    assert (meta["epoch"], meta["batch"]) == (0, interrupt_at)
    assert meta["partial"]["seen"] == interrupt_at * BATCH
    assert read_jsonl(run / "metrics.jsonl") == []
    assert [row["step"] for row in read_jsonl(run / "steps.jsonl")] == list(range(interrupt_at))

    assert main(train_argv(data_dir, run, "--resume", epochs=1)) == 0
    assert "resumed from" in capsys.readouterr().out
    expected = read_jsonl(one_epoch_run / "metrics.jsonl")
    assert without_timing(read_jsonl(run / "metrics.jsonl")) == without_timing(expected)
    assert without_time(read_jsonl(run / "steps.jsonl")) == without_time(read_jsonl(one_epoch_run / "steps.jsonl"))
    assert_same_checkpoint_state(run / "checkpoint.npz", one_epoch_run / "checkpoint.npz")


def test_interrupt_while_waiting_for_a_batch_saves_a_consistent_position(data_dir, tmp_path, monkeypatch):
    """Ctrl-C often lands while the loop waits for the next batch (slow JPEG decoding): then
    batches 0..k-1 are done and in the weights, so the checkpoint must say "resume at k"."""
    interrupt_at = 2

    class LoaderInterruptedAt(DataLoader):
        def __iter__(self):
            for b, batch in enumerate(super().__iter__(), start=self.start_batch):
                if self.shuffle and b == interrupt_at:  # the training loader only
                    raise KeyboardInterrupt
                yield batch

    assert main(train_argv(data_dir, tmp_path, epochs=1), parts=Parts(data_loader=LoaderInterruptedAt)) == 130  # the shell's code for Ctrl-C
    _, _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["partial"]["seen"] == interrupt_at * BATCH
    assert (meta["epoch"], meta["batch"]) == (0, interrupt_at), \
        "the checkpoint would replay a batch already in its weights"


def test_resume_refuses_a_checkpoint_from_other_settings(one_epoch_run, data_dir, tmp_path):
    run = copy_run(one_epoch_run, tmp_path)
    with pytest.raises(TrainingError, match=r"--batch-size cannot change .*expected the checkpoint.s 32, got 16"):
        train(make_config(data_dir, run, resume=True, batch_size=16), log=lambda line: None)


def test_resume_into_another_models_run_says_so_first_and_names_every_refused_setting(
        one_epoch_run, data_dir, tmp_path):
    run = copy_run(one_epoch_run, tmp_path)
    with pytest.raises(TrainingError) as info:
        train(make_config(data_dir, run, resume=True, model="fashion-alexnet", batch_size=16, seed=3),
              log=lambda line: None)
    message = str(info.value)
    assert message.startswith(f"--resume: --out {run} holds a run of model 'cpu-alexnet' and the command "
                              "asks for 'fashion-alexnet'")
    assert "3 settings cannot change" in message
    for name, old, new in (("--model", "'cpu-alexnet'", "'fashion-alexnet'"), ("--batch-size", 32, 16),
                           ("--seed", 0, 3)):
        assert f"{name} cannot change" in message and f"expected the checkpoint's {old}, got {new}" in message


# ---------------------------------------------------------------------------- failures

@pytest.mark.parametrize("bad_loss", [math.nan, math.inf])
def test_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(one_epoch_run, data_dir, tmp_path,
                                                                       monkeypatch, bad_loss):
    run = copy_run(one_epoch_run, tmp_path)
    saved = {name: hashlib.sha256((run / name).read_bytes()).hexdigest()
             for name in ("checkpoint.npz", "best.npz", "metrics.jsonl")}
    real_step = one_step

    def diverging_step(*args):
        real_step(*args)  # the weights really change, as in a divergence
        return bad_loss, 0

    with pytest.raises(TrainingError) as info:
        train(make_config(data_dir, run, resume=True), log=lambda line: None, parts=Parts(step=diverging_step))
    message = str(info.value)
    assert f"loss became {bad_loss}" in message and "epoch 2, batch 0" in message
    assert "intact" in message and "--lr" in message
    assert {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in saved} == saved


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the inf weights, on purpose
def test_weights_that_turn_non_finite_in_an_epochs_last_step_are_not_saved(data_dir, tmp_path, monkeypatch):
    """The loss is computed before the update, so an update that overflows the weights in the
    last step of an epoch shows only in the evaluation: that must stop training too."""
    real_step, steps = one_step, []

    def overflowing_step(model, *args):
        result = real_step(model, *args)
        steps.append(1)
        if len(steps) == 4:  # the last step of epoch 2 (2 batches per epoch)
            model.classifier[6].weight.array[...] = np.inf
        return result

    with pytest.raises(TrainingError, match="weights became non-finite in the last step of epoch 2"):
        train(make_config(data_dir, tmp_path, limit_train=2 * BATCH, limit_test=32), log=lambda line: None,
              parts=Parts(step=overflowing_step))
    model, _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 1 and all(np.isfinite(w).all() for w in model.values())
    assert [row["epoch"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [1]


@pytest.mark.parametrize("crash", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_checkpoint_writes_are_atomic(data_dir, tmp_path, monkeypatch, crash):
    model, optimizer, scheduler = build(make_config(data_dir, tmp_path), num_classes=10)
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, optimizer, scheduler, dict(epoch=1))
    old = path.read_bytes()

    def savez_then_crash(file, **arrays):
        file.write(b"PK\x03\x04 the first bytes of a zip archive")
        raise crash

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(type(crash)):
        save_checkpoint(path, model, optimizer, scheduler, dict(epoch=2))
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["checkpoint.npz"], "a temporary file was left behind"
    assert load_checkpoint(path)[2]["epoch"] == 1


def damaged(good, how):
    if how == "truncated":
        return good[:len(good) // 2]
    if how == "bytes-flipped":  # the zip directory survives; a member's CRC fails
        middle = len(good) // 2
        return good[:middle] + bytes(b ^ 0xFF for b in good[middle:middle + 64]) + good[middle + 64:]
    if how == "empty":
        return b""
    return b"this is not a checkpoint\n" * 40


@pytest.mark.parametrize("how", ["truncated", "bytes-flipped", "empty", "not-a-zip"])
def test_a_damaged_checkpoint_gives_a_clear_error(full_run, tmp_path, capsys, how):
    bad = tmp_path / "best.npz"
    bad.write_bytes(damaged((full_run.out / "best.npz").read_bytes(), how))
    with pytest.raises(TrainingError, match="truncated or corrupt"):
        load_checkpoint(bad)
    assert main(["eval", "--checkpoint", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tinyalex eval: error: checkpoint: {bad} is truncated or corrupt")
    assert "Traceback" not in err


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    missing = tmp_path / "nothing.npz"
    assert main(["eval", "--checkpoint", str(missing), "--device", "cpu"]) == 2
    assert f"{missing} does not exist" in capsys.readouterr().err


def test_a_missing_dataset_says_how_to_install_it(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainingError) as info:
        train(make_config(empty, tmp_path / "out"), log=lambda line: None)
    assert "apt-get" in str(info.value) and "--data-dir" in str(info.value)
    assert main(train_argv(empty, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "--data-dir" in err


@pytest.mark.parametrize("gzipped", [True, False], ids=["gz", "raw"])
def test_a_truncated_idx_file_is_named(data_dir, tmp_path, capsys, gzipped):
    broken = shutil.copytree(data_dir, tmp_path / "broken")
    gz = broken / "train-images-idx3-ubyte.gz"
    raw = gz.read_bytes() if gzipped else gzip.decompress(gz.read_bytes())
    cut = broken / (gz.name if gzipped else gz.stem)
    gz.unlink()
    cut.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(TrainingError, match="truncated") as info:
        train(make_config(broken, tmp_path / "out"), log=lambda line: None)
    assert str(cut) in str(info.value)
    assert main(train_argv(broken, tmp_path / "out")) == 2
    assert str(cut) in capsys.readouterr().err


def test_an_unwritable_out_is_refused_before_loading_data(data_dir, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "afile"  # root may write anywhere, but never under a regular file
    blocker.write_text("a file, not a directory")
    out = blocker / "out"

    def load_datasets(config, log=None):
        pytest.fail("the data was loaded before --out was checked")

    with pytest.raises(TrainingError, match="cannot write") as info:
        train(make_config(data_dir, out), log=lambda line: None, parts=Parts(load_datasets=load_datasets))
    assert f"--out {out}" in str(info.value)
    assert main(train_argv(data_dir, out), parts=Parts(load_datasets=load_datasets)) == 2
    assert f"--out {out}: cannot write" in capsys.readouterr().err


# ---------------------------------------------------------------------------- eval, predict

def test_eval_reports_the_best_epochs_accuracy(full_run, capsys):
    best = max(full_run.history, key=lambda m: m["test_acc"])  # the first best, as training keeps
    assert main(["eval", "--checkpoint", str(full_run.out / "best.npz"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"{N_TEST} test images, loss {best['test_loss']:.4f}, " in out
    assert f"top-1 accuracy {best['test_acc']:.4f}, top-5 accuracy {best['test_top5']:.4f}" in out


def test_predict_prints_class_probabilities(full_run, tmp_path, capsys):
    images = bar_images(np.array([1, 7]), np.random.default_rng(5))
    gray, rgb = tmp_path / "gray.png", tmp_path / "rgb.png"
    Image.fromarray(images[0], "L").save(gray)
    Image.fromarray(np.stack([images[1]] * 3, axis=-1), "RGB").save(rgb)
    checkpoint = str(full_run.out / "best.npz")
    assert main(["predict", str(gray), str(rgb), "--checkpoint", checkpoint, "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for path, line in zip((gray, rgb), lines):
        assert line.startswith(f"{path}: ")
        ranking = [entry.rsplit(" ", 1) for entry in line[len(f"{path}: "):].split(", ")]
        names, probs = [name for name, _ in ranking], [float(p) for _, p in ranking]
        assert len(set(names)) == 5 and set(names) <= set(FASHION_MNIST_CLASSES)
        assert probs == sorted(probs, reverse=True) and 0 <= probs[-1] and sum(probs) <= 1.003


@pytest.mark.parametrize("content", [b"plain text, not an image\n", None], ids=["not-an-image", "missing"])
def test_predict_refuses_what_is_not_an_image(full_run, tmp_path, capsys, content):
    path = tmp_path / "photo.png"
    if content is not None:
        path.write_bytes(content)
    checkpoint = str(full_run.out / "best.npz")
    assert main(["predict", str(path), "--checkpoint", checkpoint, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tinyalex predict: error: predict: {path}: cannot read the image")


# ---------------------------------------------------------------------------- grad stats

def test_grad_stats_logs_every_layer(data_dir, tmp_path):
    out = tmp_path / "run"
    argv = train_argv(data_dir, out, "--grad-stats", "--limit-train", "64", "--limit-test", "32", epochs=1)
    assert main(argv) == 0
    rows = read_jsonl(out / "grad_stats.jsonl")
    layers = [name for name, m in cpu_alexnet().named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    steps = -(-64 // BATCH)                          # a short run: every step is sampled
    assert [row["layer"] for row in rows] == layers * steps
    assert [row["step"] for row in rows] == [step for step in range(steps) for _ in layers]
    for row in rows:
        stats = {"act_mean", "act_std", "grad_mean", "grad_std", "update_ratio", "act_grad_abs_mean",
                 "act_grad_norm"}
        if row["layer"] == "classifier.6":  # the output layer: no ReLU follows it
            assert "relu_zero_frac" not in row and "dead_frac" not in row
        else:
            stats |= {"relu_zero_frac", "dead_frac"}
        assert stats <= row.keys(), row["layer"]
        assert all(math.isfinite(row[key]) for key in stats), row
        assert row["act_std"] > 0 and row["grad_std"] > 0 and 0 < row["update_ratio"] < 1, row
        assert 0 < row.get("relu_zero_frac", 0.5) < 1 and 0 <= row.get("dead_frac", 0) < 1, row
        assert row["act_grad_norm"] > 0 and "act_hist" in row and "act_grad_hist" in row, row
    for name in ("grad_stats.png", "grad_hist.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


# ---------------------------------------------------------------------------- default choices

class StopBeforeData(Exception):
    """Raised instead of loading data: the choices are made and logged before that."""


@pytest.mark.parametrize("cuda, device, model, epochs", [(False, "cpu", "cpu-alexnet", 3),
                                                         (True, "cuda", "fashion-alexnet", 10)])
def test_default_choices_are_logged_with_reasons(data_dir, tmp_path, monkeypatch,
                                                 cuda, device, model, epochs):
    def load_datasets(config, log=None):
        raise StopBeforeData

    monkeypatch.setattr(_device, "cuda_is_available", lambda: cuda)
    log = []
    with pytest.raises(StopBeforeData):
        train(TrainConfig(device=None, data_dir=str(data_dir), out=str(tmp_path / "out")), log=log.append,
              parts=Parts(load_datasets=load_datasets))
    assert [line.split(":")[0] for line in log] == [f"chose device {device}", f"chose model {model}",
                                                    f"chose the {model} preset"]
    assert re.search(rf"\bepochs {epochs}\b", log[2])
    for line in log:
        assert len(line.split(": ", 1)[1]) > 10, f"no reason given: {line!r}"
    assert ("no CUDA GPU found" if device == "cpu" else "a CUDA GPU is available") in log[0]


def test_a_real_sigint_mid_step_finishes_the_step_then_saves_and_resumes_exactly(
        one_epoch_run, data_dir, tmp_path, monkeypatch):
    """A real Ctrl-C (SIGINT) arriving inside an SGD step: the step completes, the loop stops
    at the next batch boundary, and the checkpoint resumes to the uninterrupted curve.

    Hermetic: the test installs Python's default handler first (a process started with
    SIGINT ignored, as background jobs and nohup are, would otherwise keep ignoring it), and
    the step that sends the signal waits until the trainer's handler has run, so the signal
    lands inside that step however loaded the machine is."""
    import signal
    run, signal_at = tmp_path / "run", 2
    real_step, steps = one_step, []

    def step_with_sigint(*args):
        steps.append(1)
        if len(steps) == signal_at + 1:  # during batch `signal_at`, before its update
            ctrl_c = signal.getsignal(signal.SIGINT).__self__  # the trainer's DeferredInterrupt
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 30
            while not ctrl_c.requested:  # Python runs the handler between bytecodes, soon
                assert time.monotonic() < deadline, "the SIGINT handler never ran"
                time.sleep(0.001)
        return real_step(*args)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(make_config(data_dir, run, epochs=1), log=lambda line: None, parts=Parts(step=step_with_sigint))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    finally:
        signal.signal(signal.SIGINT, previous)
    _, _, meta = load_checkpoint(run / "checkpoint.npz")
    assert (meta["epoch"], meta["batch"]) == (0, signal_at + 1)  # that step was applied whole
    train(make_config(data_dir, run, epochs=1, resume=True), log=lambda line: None)
    expected = read_jsonl(one_epoch_run / "metrics.jsonl")
    assert without_timing(read_jsonl(run / "metrics.jsonl")) == without_timing(expected)
    assert_same_checkpoint_state(run / "checkpoint.npz", one_epoch_run / "checkpoint.npz")


def test_imagefolder_rgb_training_with_ten_crop_eval_and_predict(tmp_path, capsys):
    """The RGB path: ImageFolder JPEGs, the paper's crops/flips/PCA lighting, alexnet2012,
    10-crop evaluation, eval and predict through the CLI."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for label, name in enumerate(("cat", "dog")):
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((270, 300, 3)) * 80 + label * 120).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "images" / split / name / f"{i}.jpg")
    out = tmp_path / "out"
    argv = ["train", "--dataset", f"imagefolder:{tmp_path / 'images'}", "--epochs", "1",
            "--batch-size", "4", "--ten-crop", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert "chose model alexnet2012" in capsys.readouterr().out
    (row,) = read_jsonl(out / "metrics.jsonl")
    assert METRIC_KEYS <= row.keys() and math.isfinite(row["test_loss"])
    assert main(["eval", "--checkpoint", str(out / "best.npz"), "--ten-crop"]) == 0
    assert "4 test images" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "images" / "val" / "dog" / "0.jpg"),
                 "--checkpoint", str(out / "best.npz")]) == 0
    assert re.search(r"0\.jpg: (cat|dog) [01]\.\d{3}, (cat|dog) [01]\.\d{3}", capsys.readouterr().out)
