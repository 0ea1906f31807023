"""steps.jsonl and ``--tensorboard DIR``: the training curve step by step.

Every `every` steps (sampling_interval: about STEP_POINTS rows per run, every step of a
short one; fixed at a run's start and kept in its checkpoint, so a resume with a new
--epochs keeps it), one JSON row goes to steps.jsonl::

    {"step": 940, "epoch": 2, "images": 60160, "loss": 0.41, "acc": 0.84, "lr": 0.02, "time": 1.7e9}

``step`` counts the steps of the run from 0 (grad_stats.jsonl's numbering: epoch e's steps
are (e-1)*n .. e*n-1 for n batches an epoch), ``epoch`` is 1-based as in metrics.jsonl,
``images`` counts the training images seen so far, this step's included, ``loss`` and
``acc`` are the step's batch's (all ranks'), ``lr`` the rate the step used and ``time``
the Unix time it ended.

Resume: the rows are appended (and flushed) as they come, and fsynced before each
checkpoint, so the checkpoint at step P never has fewer rows on disk than it covers. On
start, rows from step P on (written after it, before a kill) are dropped: the resumed run
writes them again, the same. So steps.jsonl holds each sampled step once.

TensorBoard: the same scalars (STEP_TAGS per sampled step, EPOCH_TAGS per epoch at the
epoch's last step), written with tensorboardX (the ``tensorboard`` extra). The events are a
view of steps.jsonl and the checkpoint's history: on every start this run's event files
in DIR are deleted and written again from them, then training appends. So after a kill
and --resume no step is duplicated or missing, without relying on TensorBoard's purge of
a restarted run (``purge_step``), which not every reader applies. This run's files are
known by their name's suffix, made from --out's path; a DIR holding other event files is
refused (TensorBoard would mix the two runs' curves).
"""
import hashlib
import importlib.util
import json
import os
import sys
import time

from tinyalex.errors import TrainingError
from tinyalex.train.run_dir import read_rows
from tinyalex.train.stats import sampling_interval

#: Rows per run the interval aims at: a run of 200 to 449 steps gets a row each, a longer
#: one 225 to 375 rows.
STEP_POINTS = 300
#: steps.jsonl key -> TensorBoard tag, per sampled step.
STEP_TAGS = {"loss": "loss/train", "acc": "accuracy/train", "lr": "lr"}
#: metrics.jsonl key -> TensorBoard tag, per epoch.
EPOCH_TAGS = {"train_loss": "loss/train_epoch", "test_loss": "loss/test", "train_acc": "accuracy/train_epoch",
              "test_acc": "accuracy/test", "test_top5": "accuracy/test_top5",
              "images_per_sec": "speed/images_per_sec", "seconds": "speed/epoch_seconds"}
#: Seconds between TensorBoard's writes to disk while training (a kill loses none: see above).
FLUSH_SECONDS = 10
INSTALL_HINT = "pip install 'tinyalex[tensorboard]'"


def steps_every(total_steps):
    """Steps between two rows of steps.jsonl for a run of `total_steps`."""
    return sampling_interval(total_steps, STEP_POINTS)


def images_in(history):
    """Training images of the epochs in `history` (each metrics row's rate times its time:
    exact, since the rate is the count divided by that time)."""
    return sum(round(m["images_per_sec"] * m["seconds"]) for m in history)


class StepLog:
    """steps.jsonl of the run in `run_dir` (and DIR's TensorBoard events if `tensorboard`),
    from step `start_step` on: the checkpoint's position, epoch * steps_per_epoch + batch.
    Nothing is written where run_dir does not write (ranks other than 0). Use it as a
    context manager: leaving closes the TensorBoard writer."""

    def __init__(self, run_dir, every, steps_per_epoch, start_step, history, tensorboard=None):
        self.run_dir, self.every, self.per_epoch = run_dir, every, steps_per_epoch
        self.path, self.board = run_dir.path("steps.jsonl"), None
        self.images_before = images_in(history)  # of the epochs done
        if not run_dir.writes:
            return
        rows = read_rows(self.path, before_step=start_step)
        run_dir.write("steps.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())
        if tensorboard is not None:
            self.board = _Board(tensorboard, run_dir.out, rows, history, steps_per_epoch)

    def record(self, epoch, batch, seen, loss, acc, lr):
        """Step `batch` of `epoch` (0-based) is done: `seen` images so far in the epoch, the
        batch's mean `loss` and accuracy `acc`, at rate `lr`. Written every `every` steps."""
        step = epoch * self.per_epoch + batch
        if step % self.every or not self.run_dir.writes:
            return
        row = dict(step=step, epoch=epoch + 1, images=self.images_before + seen, loss=loss, acc=acc,
                   lr=lr, time=round(time.time(), 3))
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise self.run_dir.write_error("steps.jsonl", exc) from exc
        if self.board is not None:
            self.board.add_step(row)

    def end_epoch(self, metrics):
        """Epoch metrics['epoch'] is evaluated: its scalars go to TensorBoard."""
        self.images_before += images_in([metrics])
        if self.board is not None:
            self.board.add_epoch(metrics, self.per_epoch)

    def sync(self):
        """Make the rows written so far durable (before a checkpoint that counts them), and
        hand TensorBoard's events to the OS (for a live TensorBoard; a kill loses none, as
        the next start writes them again)."""
        if self.run_dir.writes and os.path.exists(self.path):
            with open(self.path, "a") as f:
                os.fsync(f.fileno())
        if self.board is not None:
            self.board.writer.flush()

    @classmethod
    def of_checkpoint(cls, run_dir, meta, tensorboard=None):
        """The log at the position of a checkpoint's `meta` (a finished run resumed with
        nothing to do: its files as the checkpoint counts them)."""
        n = meta["steps_per_epoch"]
        return cls(run_dir, meta["steps_every"], n, meta["epoch"] * n + meta["batch"], meta["history"],
                   tensorboard)

    def close(self):
        """Write the TensorBoard events still queued, and close the writer."""
        if self.board is not None:
            self.board.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_tensorboard(directory, out):
    """Refuse `--tensorboard DIR` before any data is read: tensorboardX missing, DIR not a
    directory that can be created, or DIR holding event files of another run."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise TrainingError(f"--tensorboard {directory}: expected the tensorboardX package, got none "
                            f"installed ({INSTALL_HINT})")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"--tensorboard {directory}: expected a directory this user can create "
                            f"and write, got [Errno {exc.errno}] {exc.strerror or exc}") from exc
    suffix = _suffix(out)
    others = sorted(name for name in os.listdir(directory) if "tfevents" in name and not name.endswith(suffix))
    if others:
        raise TrainingError(f"--tensorboard {directory}: expected a directory without other runs' event "
                            f"files, got {len(others)} ({', '.join(others[:2])}{', ...' if len(others) > 2 else ''}); "
                            "give each run its own directory (TensorBoard shows each subdirectory of "
                            "its --logdir as one run)")


def _suffix(out):
    """The end of this run's event file names: a digest of --out's real path."""
    return ".tinyalex-" + hashlib.sha1(os.path.realpath(out).encode()).hexdigest()[:12]


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch: tensorboardX imports torch where
    it is installed (seconds, and hundreds of MB) only to accept torch tensors, and this log
    passes Python floats. None in sys.modules makes `import torch` raise ImportError."""
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if blocked:
            del sys.modules["torch"]
    return SummaryWriter


class _Board:
    """A tensorboardX SummaryWriter on DIR that starts from steps.jsonl's kept `rows` and the
    epochs of `history`, after deleting this run's earlier event files."""

    def __init__(self, directory, out, rows, history, steps_per_epoch):
        SummaryWriter = _summary_writer_class()
        suffix = _suffix(out)
        for name in os.listdir(directory):
            if "tfevents" in name and name.endswith(suffix):
                os.unlink(os.path.join(directory, name))
        self.writer = SummaryWriter(directory, flush_secs=FLUSH_SECONDS, filename_suffix=suffix)
        for row in rows:
            self.add_step(row)
        for metrics in history:  # at the time of the epoch's last row, if it has one
            times = [row["time"] for row in rows if row["epoch"] == metrics["epoch"]]
            self.add_epoch(metrics, steps_per_epoch, walltime=max(times, default=None))

    def add_step(self, row):
        for key, tag in STEP_TAGS.items():
            self.writer.add_scalar(tag, row[key], row["step"], walltime=row["time"])

    def add_epoch(self, metrics, steps_per_epoch, walltime=None):
        last_step = metrics["epoch"] * steps_per_epoch - 1
        for key, tag in EPOCH_TAGS.items():
            self.writer.add_scalar(tag, metrics[key], last_step, walltime=walltime)
