"""A run's directory (--out): every file a run keeps there, and the order it writes them in.

:class:`RunDir` owns --out. Before any training: the checkpoint to resume or the refusal of
an existing run (:meth:`RunDir.resume_meta`), whether it can be written
(:meth:`RunDir.open`, which also takes the lock that keeps a second run out and removes a
killed save's temporaries). During training: every file, each written atomically
(checkpoint.py's atomic_write), with an error that says which checkpoint is intact. The
checkpoint format itself is checkpoint.py's; RunDir is its one caller for --out.

The write order is what makes a kill at any instant lose nothing (each file is either old or
new): checkpoint.npz after each training pass, after each evaluation and on Ctrl-C; then
best.npz when the epoch is the best so far; then metrics.jsonl, rewritten from the
checkpoint's history on every start. :meth:`RunDir.restore` mends the one state a kill
between checkpoint.npz and best.npz can leave. steps.jsonl is appended to between them and
cut back to the checkpoint's step on start (step_log.py).
"""
import contextlib
import json
import os
import shutil
import tempfile

import numpy as np

from tinyalex.errors import TrainingError
from tinyalex.train.checkpoint import TEMP_PREFIX, atomic_write, checkpoint_arrays, load_checkpoint, read_checkpoint_meta
from tinyalex.train.curves import plot_curves


#: The files of a run in --out; --overwrite deletes them.
RUN_FILES = ("checkpoint.npz", "best.npz", "metrics.jsonl", "steps.jsonl", "curves.png",
             "grad_stats.jsonl", "grad_stats.png", "grad_hist.png")


class RunDir:
    """--out of one run. `writes`: False on data-parallel ranks other than 0, which read the
    checkpoint to resume but never write, lock or clean (rank 0 does)."""

    def __init__(self, out, writes=True):
        self.out, self.writes = out, writes
        self.paths = {name: os.path.join(out, name) for name in RUN_FILES}
        self.last_saved = None      # where the last checkpoint.npz stands (its meta), for errors

    # --- before training -----------------------------------------------------------------
    def resume_meta(self, resume, overwrite):
        """With `resume`: the meta of OUT/checkpoint.npz, or a TrainingError saying why there
        is none. Without: None, after refusing an --out that holds a run unless `overwrite`."""
        path = self.paths["checkpoint.npz"]
        if resume:
            if not os.path.exists(path):
                hint = ("start it again without --resume: it was stopped before its first checkpoint"
                        if os.path.isdir(self.out) else "check --out")
                raise TrainingError(f"--resume: expected a checkpoint at {path}, got no such file; {hint}")
            return read_checkpoint_meta(path)
        found = [name for name in ("checkpoint.npz", "best.npz") if os.path.exists(self.paths[name])]
        metrics = self.paths["metrics.jsonl"]
        if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
            found.append("metrics.jsonl")
        if not found or overwrite:
            return None
        progress = ""
        if "checkpoint.npz" in found:
            try:
                meta = read_checkpoint_meta(path)
                progress = f", {meta['epoch']} of {meta['config']['epochs']} epochs done"
            except (TrainingError, KeyError, TypeError):
                progress = ""
        raise TrainingError(f"--out {self.out}: expected a directory without a run, got one "
                            f"({', '.join(found)}{progress}); pass --resume to continue it, or "
                            "--overwrite to delete it and start over")

    @contextlib.contextmanager
    def open(self, log):
        """Check that --out can be written, lock it for this run, and remove the temporaries
        a killed save left, before any training; unlock on leaving."""
        if not self.writes:
            yield self
            return
        self._check_writable()
        with OutLock(self.out):
            self._remove_orphans(log)
            yield self

    def _check_writable(self):
        """Refuse an --out directory that cannot be created or written, before any training."""
        out = self.out
        try:
            os.makedirs(out, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=out, prefix=TEMP_PREFIX + "write-test-"):
                pass
        except OSError as exc:
            raise TrainingError(f"--out {out}: cannot write there ({exc.strerror or exc}), expected a "
                                "directory this user can create and write") from exc

    def _remove_orphans(self, log):
        """Delete the temporary files that a killed save left in --out (never anything else)."""
        out = self.out
        names = [name for name in os.listdir(out)
                 if name.startswith(TEMP_PREFIX) or name == "metrics.jsonl.tmp"
                 or (name.startswith(".checkpoint-") and name.endswith(".npz"))]  # older versions'
        for name in names:
            os.unlink(os.path.join(out, name))
        if names:
            log(f"removed {len(names)} temporary file{'s' if len(names) > 1 else ''} left in {out} "
                f"by an interrupted save: {', '.join(sorted(names))}")

    def restore(self, meta, log):
        """On resume: make best.npz hold the best epoch of the checkpoint's history, and
        metrics.jsonl that history (a kill may have cut either's write).

        The invariant: best.npz holds the state after best_epoch(history), for the history
        in checkpoint.npz. The write order (checkpoint.npz, then best.npz) means the only
        state a kill can leave that breaks it is a checkpoint at the end of a new best epoch
        with an older best.npz (or none, or an orphaned temporary). That checkpoint holds
        exactly what best.npz should (both are written from the same state), so it is copied."""
        self.last_saved = meta
        if not self.writes:
            return
        self._repair_best(meta, log)
        self.write_metrics(meta["history"])

    def _repair_best(self, meta, log):
        best = best_epoch(meta["history"])
        if best is None or meta["batch"] != 0 or meta["epoch"] != best:
            return
        path = self.paths["best.npz"]
        try:
            current = read_checkpoint_meta(path)["epoch"] if os.path.exists(path) else None
        except TrainingError:
            current = None
        if current == best:
            return

        def copy(f):
            with open(self.paths["checkpoint.npz"], "rb") as source:
                shutil.copyfileobj(source, f)
        self.write("best.npz", copy)
        log(f"repaired {path}: it now holds epoch {best}, the best so far (a stop had cut its write)")

    def delete_run(self):
        """--overwrite: delete the old run's files, checkpoint first, so that a half-deleted
        run cannot be resumed."""
        if self.writes:
            for name in RUN_FILES:
                if os.path.exists(self.paths[name]):
                    os.unlink(self.paths[name])

    def path(self, name):
        """Where file `name` of the run lives (a RUN_FILES name, or another file in --out)."""
        return self.paths.get(name, os.path.join(self.out, name))

    # --- during training ------------------------------------------------------------------
    def load_checkpoint(self):
        """(model state, optimizer state, meta) of OUT/checkpoint.npz."""
        return load_checkpoint(self.paths["checkpoint.npz"])

    def save_checkpoint(self, name, model, optimizer, scheduler, meta):
        """checkpoint.npz or best.npz, holding the model, optimizer, schedule and `meta` (its
        epoch, batch and partial sums say where the run stands)."""
        if self.writes:
            arrays = checkpoint_arrays(model, optimizer, scheduler, meta)
            self.write(name, lambda f: np.savez(f, **arrays))
        if name == "checkpoint.npz":
            self.last_saved = meta

    def write_metrics(self, history):
        """metrics.jsonl: one JSON object per epoch done."""
        self.write("metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history).encode())

    def write_curves(self, history, steps_per_epoch=None):
        """curves.png from `history` and steps.jsonl, atomically (none before the first
        epoch). steps_per_epoch: where the epochs begin (None: a run from before
        steps.jsonl, drawn per epoch)."""
        if history:
            steps = read_rows(self.paths["steps.jsonl"]) if steps_per_epoch else []
            self.write("curves.png", lambda f: plot_curves(history, steps, steps_per_epoch, f))

    def write(self, name, content):
        """Write file `name` (a RUN_FILES name, or another file name in --out) atomically; an
        OSError becomes one line that names the file and says what is intact. content:
        bytes, or a function that writes to a binary file. Only the writing rank writes."""
        if not self.writes:
            return
        write = content if callable(content) else (lambda f: f.write(content))
        try:
            atomic_write(self.path(name), write)
        except OSError as exc:
            raise self.write_error(name, exc) from exc

    def write_error(self, name, exc):
        """The TrainingError for an OSError writing file `name` (a full disk, a read-only or
        vanished --out): the path, the reason, and which checkpoint is intact."""
        where = _position(self.last_saved)
        intact = (f"the last checkpoint, {self.paths['checkpoint.npz']} ({where}), is intact: free "
                  "some space (or fix --out), then run again with --resume" if where else
                  "no checkpoint had been written yet: free some space (or fix --out), then run again")
        folder = os.path.dirname(self.path(name)) or "."
        return TrainingError(f"--out {folder}: cannot write {name}, expected a writable "
                             f"directory with free space, got [Errno {exc.errno}] "
                             f"{exc.strerror or exc}; {intact}")


class OutLock:
    """An exclusive lock on OUT/.lock while a run uses --out, so that a second run cannot
    interleave its writes with the first's, or lose its temporary files to the first's
    clean-up. The OS drops the lock when the process dies, even by SIGKILL."""

    def __init__(self, out):
        self.path, self.file = os.path.join(out, ".lock"), None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.file.seek(0)
            holder = self.file.read().strip() or "?"
            self.file.close()
            raise TrainingError(f"--out {os.path.dirname(self.path)}: expected no other run using "
                                f"it, got one (process {holder} holds {self.path}); wait for it or "
                                "choose another --out") from exc
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            try:
                os.unlink(self.path)  # still holding the lock, so no other run is between
            except FileNotFoundError:  # --out was deleted meanwhile
                pass
            self.file.close()


def read_rows(path, before_step=None):
    """The rows of a JSON-lines file of the run (steps.jsonl, grad_stats.jsonl), or [] if
    there is none; with `before_step`, only those of earlier steps. A line cut short by a
    kill is left out."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if before_step is None or row.get("step", before_step) < before_step:
            rows.append(row)
    return rows


def best_epoch(history):
    """The epoch (1-based) best.npz must hold: the first with the highest test accuracy."""
    best = None
    for metrics in history:
        if best is None or metrics["test_acc"] > best["test_acc"]:
            best = metrics
    return None if best is None else best["epoch"]


def _position(meta):
    """Where a checkpoint stands (its meta, or just its epoch and batch), in words."""
    if meta is None:
        return None
    if meta["batch"] == 0:
        return f"after epoch {meta['epoch']}"
    return f"epoch {meta['epoch'] + 1}, batch {meta['batch']}"
