"""steps.jsonl, curves.png and --tensorboard: the interval gives 200-500 rows a run, each row
says where it stands (step, epoch, images), a resume keeps each step once, curves.png draws
every row with the epochs marked, and TensorBoard reads back the same scalars.

The kill-at-any-point checks of steps.jsonl and the event files are in test_faults.py;
steps.jsonl against metrics.jsonl and across a resume in test_train.py."""
import json
import os
import subprocess
import sys
import shutil

import numpy as np
import pytest

from test_train import PNG_MAGIC, read_jsonl, write_split

from tinyalex import use_kernels
from tinyalex.train.cli import main
from tinyalex.train.curves import curves_figure, plot_curves, smooth, smoothing_weight
from tinyalex.train.run_dir import RunDir, read_rows
from tinyalex.train.step_log import EPOCH_TAGS, STEP_TAGS, StepLog, images_in, steps_every


def test_the_interval_gives_200_to_500_rows_or_every_step():
    for total in list(range(1, 3000)) + [2814, 5625, 93800, 10**6, 10**7 + 3]:
        every = steps_every(total)
        rows = -(-total // every)  # steps 0, every, 2*every, ... below total
        assert rows == total if total < 200 else 200 <= rows <= 500, (total, every, rows)


def test_smooth_is_the_debiased_moving_average():
    values = np.random.default_rng(0).normal(size=50).tolist()
    weight, ema, expected = 0.9, 0.0, []
    for i, v in enumerate(values):
        ema = weight * ema + (1 - weight) * v
        expected.append(ema / (1 - weight ** (i + 1)))
    np.testing.assert_allclose(smooth(values, weight), expected, rtol=1e-13)
    np.testing.assert_allclose(smooth([2.5] * 7, 0.9), [2.5] * 7, rtol=1e-13)  # no pull toward 0
    assert smooth(values, 0.0) == values
    assert smoothing_weight(5) == smoothing_weight(30) == 0.0
    assert smoothing_weight(300) == pytest.approx(0.9)
    assert smoothing_weight(10**6) == 0.98


def test_read_rows_keeps_earlier_steps_and_leaves_out_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text("".join(json.dumps(dict(step=s)) + "\n" for s in (0, 3, 6, 9)) + '{"step": 12, "lo')
    assert [row["step"] for row in read_rows(path)] == [0, 3, 6, 9]
    assert [row["step"] for row in read_rows(path, before_step=7)] == [0, 3, 6]
    assert read_rows(tmp_path / "none.jsonl") == []


def one_epoch(log, epoch, batches, batch=4):
    """Record `batches` steps of `epoch` with distinct losses (loss = step / 100)."""
    for b in range(batches):
        step = epoch * batches + b
        log.record(epoch, b, (b + 1) * batch, step / 100, (b % 4) / 4, 0.1 / (epoch + 1))


def metrics(epoch, images, seconds=3.0):
    return dict(epoch=epoch, train_loss=1.0, train_acc=0.5, test_loss=0.9, test_acc=0.6 + epoch / 100,
                test_top5=0.9, images_per_sec=images / seconds, seconds=seconds, lr=0.1)


def test_step_log_writes_every_kth_step_and_a_resume_keeps_each_step_once(tmp_path):
    run_dir = RunDir(str(tmp_path))
    log = StepLog(run_dir, every=3, steps_per_epoch=5, start_step=0, history=[])
    assert (tmp_path / "steps.jsonl").read_text() == ""
    one_epoch(log, 0, 5)
    log.end_epoch(metrics(1, 20))
    one_epoch(log, 1, 5)
    rows = read_jsonl(tmp_path / "steps.jsonl")
    assert [(r["step"], r["epoch"], r["images"], r["lr"]) for r in rows] == \
        [(0, 1, 4, 0.1), (3, 1, 16, 0.1), (6, 2, 28, 0.05), (9, 2, 40, 0.05)]
    assert [r["loss"] for r in rows] == [0.0, 0.03, 0.06, 0.09]
    assert set(rows[0]) == {"step", "epoch", "images", "loss", "acc", "lr", "time"}

    # killed after step 9 was written; the checkpoint is at epoch 1, batch 2 (step 7), and
    # the kill cut a line short: the resumed log drops steps 7.. and the cut line
    with open(tmp_path / "steps.jsonl", "a") as f:
        f.write('{"step": 12, "ep')
    log = StepLog(run_dir, every=3, steps_per_epoch=5, start_step=7, history=[metrics(1, 20)])
    assert [r["step"] for r in read_jsonl(tmp_path / "steps.jsonl")] == [0, 3, 6]
    for b in range(2, 5):
        log.record(1, b, (b + 1) * 4, (5 + b) / 100, 0.0, 0.05)
    assert [(r["step"], r["images"]) for r in read_jsonl(tmp_path / "steps.jsonl")] == \
        [(0, 4), (3, 16), (6, 28), (9, 40)]


def test_only_the_writing_rank_writes_rows(tmp_path):
    log = StepLog(RunDir(str(tmp_path), writes=False), every=1, steps_per_epoch=4, start_step=0, history=[])
    one_epoch(log, 0, 4)
    log.sync()
    assert os.listdir(tmp_path) == []


def test_images_of_done_epochs_come_back_exactly_from_rate_and_time():
    history = [metrics(e, 59_999 + e, seconds=s) for e, s in ((1, 77.123456789), (2, 1e-3), (3, 12345.6))]
    assert images_in(history) == 3 * 59_999 + 6


def rows_for(epochs, per_epoch, every):
    return [dict(step=s, epoch=s // per_epoch + 1, images=8 * (s + 1), loss=2.0 / (1 + s), acc=s / 100,
                 lr=0.1 if s < per_epoch else 0.01, time=1.0 * s)
            for s in range(0, epochs * per_epoch, every)]


def test_curves_draw_every_row_the_epochs_and_the_learning_rate(tmp_path):
    history = [metrics(1, 80), metrics(2, 80)]
    rows = rows_for(2, 50, 2)  # 50 rows: smoothed
    fig = curves_figure(history, rows, 50)
    ax_loss, ax_acc, ax_lr = fig.axes[:3]
    lines = {line.get_label(): line for line in ax_loss.get_lines()}
    np.testing.assert_array_equal(lines["train, each step"].get_xdata(), [r["step"] for r in rows])
    np.testing.assert_array_equal(lines["train, each step"].get_ydata(), [r["loss"] for r in rows])
    smoothed = next(line for label, line in lines.items() if label.startswith("train, smoothed"))
    np.testing.assert_allclose(smoothed.get_ydata(), smooth([r["loss"] for r in rows], smoothing_weight(50)))
    np.testing.assert_array_equal(lines["test, each epoch"].get_xdata(), [49, 99])  # each epoch's last step
    acc_lines = {line.get_label() for line in ax_acc.get_lines()}
    assert {"test, each epoch", "test top-5, each epoch", "train, each step"} <= acc_lines
    for ax in (ax_loss, ax_acc, ax_lr):  # one boundary between the two epochs, on every panel
        bounds = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert bounds == [49.5]
    assert ax_lr.get_yscale() == "log"  # 0.1 then 0.01
    assert [t.get_text() for t in ax_loss.child_axes[0].get_xticklabels()] == ["epoch 1", "epoch 2"]
    import matplotlib.pyplot as plt
    plt.close(fig)
    plot_curves(history, rows, 50, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_MAGIC)


def test_a_run_without_steps_jsonl_is_drawn_per_epoch(tmp_path):
    history = [metrics(1, 80), metrics(2, 80), metrics(3, 80)]
    fig = curves_figure(history, [], None)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    np.testing.assert_array_equal(lines["train, each epoch"].get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(lines["test, each epoch"].get_xdata(), [0, 1, 2])
    import matplotlib.pyplot as plt
    plt.close(fig)


# ------------------------------------------------------------------------- --tensorboard

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-fashion-mnist")
    rng = np.random.default_rng(1)
    write_split(directory, "train", 32, rng)
    write_split(directory, "t10k", 16, rng)
    return directory


def argv(data, out, *extra, epochs=2):
    """`epochs` epochs of 4 batches of 8 (4 steps an epoch, a row each)."""
    return ["train", "--model", "cpu-alexnet", "--data-dir", str(data), "--epochs", str(epochs),
            "--batch-size", "8", "--limit-train", "32", "--limit-test", "16", "--lr", "0.02",
            "--lr-schedule", "step", "--lr-step", "1", "--device", "cpu", "--seed", "0",
            "--out", str(out), *extra]


def train(*args, **kwargs):
    with use_kernels("numpy"):
        return main(argv(*args, **kwargs))


def read_events(directory):
    """{tag: [(step, value)]} of the event files in `directory`, read by TensorBoard's own
    loader (every event kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_events(out, per_epoch):
    """What the event files must hold: steps.jsonl's and metrics.jsonl's scalars, float32."""
    expected = {tag: [(r["step"], np.float32(r[key])) for r in read_jsonl(out / "steps.jsonl")]
                for key, tag in STEP_TAGS.items()}
    for key, tag in EPOCH_TAGS.items():
        expected[tag] = [(m["epoch"] * per_epoch - 1, np.float32(m[key])) for m in read_jsonl(out / "metrics.jsonl")]
    return expected


@pytest.fixture(scope="module")
def board_run(tiny_data, tmp_path_factory):
    pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
    pytest.importorskip("tensorboard", reason="the test extra's tensorboard is not installed")
    root = tmp_path_factory.mktemp("board")
    assert train(tiny_data, root / "run", "--tensorboard", str(root / "tb")) == 0
    return root


def test_tensorboard_reads_back_the_scalars_of_steps_jsonl_and_metrics_jsonl(board_run):
    rows = read_jsonl(board_run / "run" / "steps.jsonl")
    assert [r["step"] for r in rows] == list(range(8))
    assert [r["lr"] for r in rows] == pytest.approx([0.02] * 4 + [0.002] * 4)  # --lr-step 1
    events = read_events(board_run / "tb")
    assert events == expected_events(board_run / "run", per_epoch=4)
    assert len(os.listdir(board_run / "tb")) == 1


def test_a_resume_with_a_new_tensorboard_dir_writes_the_past_steps_there_too(board_run, tiny_data, tmp_path,
                                                                            capsys):
    run = shutil.copytree(board_run / "run", tmp_path / "run")
    assert train(tiny_data, run, "--resume", "--tensorboard", str(tmp_path / "tb2"), epochs=3) == 0
    assert "resume: --tensorboard" in capsys.readouterr().out
    assert [r["step"] for r in read_jsonl(run / "steps.jsonl")] == list(range(12))
    assert read_events(tmp_path / "tb2") == expected_events(run, per_epoch=4)


def test_another_runs_event_files_are_refused_before_any_training(board_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "other-run"
    assert train(tiny_data, out, "--tensorboard", str(board_run / "tb")) == 2
    err = capsys.readouterr().err
    assert f"--tensorboard {board_run / 'tb'}: expected a directory without other runs' event files, got 1" in err
    assert not (out / "checkpoint.npz").exists()


def test_tensorboard_without_tensorboardx_says_what_to_install(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    assert train(tiny_data, tmp_path / "run", "--tensorboard", str(tmp_path / "tb")) == 2
    err = capsys.readouterr().err
    assert "--tensorboard" in err and "pip install 'tinyalex[tensorboard]'" in err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_the_writer_does_not_import_torch(tmp_path):
    """tensorboardX imports torch where installed (seconds): the log keeps it out."""
    pytest.importorskip("tensorboardX")
    code = ("import sys; from tinyalex.train.step_log import _summary_writer_class; _summary_writer_class(); "
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=root))
    assert done.stdout.strip() == "False"


def test_a_resume_keeps_the_interval_the_run_started_with(tiny_data, tmp_path):
    """The interval comes from the first start's length (kept in the checkpoint), so a
    resume with another --epochs neither thins nor thickens the rows already there."""
    out = tmp_path / "run"
    assert train(tiny_data, out, epochs=1) == 0
    checkpoint = dict(np.load(out / "checkpoint.npz"))
    meta = json.loads(str(checkpoint["meta"]))
    assert (meta["steps_every"], meta["steps_per_epoch"]) == (1, 4)
    checkpoint["meta"] = np.array(json.dumps(dict(meta, steps_every=3)))  # as a long run's would be
    np.savez(out / "checkpoint.npz", **checkpoint)
    assert train(tiny_data, out, "--resume", epochs=2) == 0
    assert [r["step"] for r in read_jsonl(out / "steps.jsonl")] == [0, 1, 2, 3, 6]
