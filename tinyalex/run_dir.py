"""A run's directory (--out): which files a run keeps there (RUN_FILES), the checks that
come before any training (check_writable, refuse_existing_run, checkpoint_to_resume), the
lock that keeps a second run out (OutLock), the clean-up of a killed save's temporaries
(remove_orphans), and the writes that keep the directory resumable at any instant:
_write_run_file (atomic, with an error that says which checkpoint is intact), the
metrics.jsonl and curves.png contents, and repair_best, which mends the one state a kill
between checkpoint.npz and best.npz can leave (see tinyalex.train._Run.end_epoch for the
write order). The checkpoint file format itself is tinyalex.checkpoint's.

tinyalex.train imports every name here, so ``tinyalex.train.OutLock`` keeps working.
"""
import json
import os
import shutil
import tempfile

from .checkpoint import TEMP_PREFIX, atomic_write, read_checkpoint_meta
from .errors import TrainingError
from .viz import plot_curves


#: The files of a run in --out; --overwrite deletes them.
RUN_FILES = ("checkpoint.npz", "best.npz", "metrics.jsonl", "curves.png", "grad_stats.jsonl",
             "grad_stats.png")


def check_writable(out):
    """Refuse an --out directory that cannot be created or written, before any training."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=TEMP_PREFIX + "write-test-"):
            pass
    except OSError as exc:
        raise TrainingError(f"--out {out}: cannot write there ({exc.strerror or exc}), expected a "
                            "directory this user can create and write") from exc


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


def remove_orphans(out, log):
    """Delete the temporary files that a killed save left in --out (never anything else)."""
    names = [name for name in os.listdir(out)
             if name.startswith(TEMP_PREFIX) or name == "metrics.jsonl.tmp"
             or (name.startswith(".checkpoint-") and name.endswith(".npz"))]  # older versions'
    for name in names:
        os.unlink(os.path.join(out, name))
    if names:
        log(f"removed {len(names)} temporary file{'s' if len(names) > 1 else ''} left in {out} "
            f"by an interrupted save: {', '.join(sorted(names))}")


class _NoLock:
    """Ranks other than 0 never write in --out, so they take no lock on it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_paths(out):
    """{file name: path} of the files of a run in --out."""
    return {name: os.path.join(out, name) for name in RUN_FILES}


def checkpoint_to_resume(config, paths):
    """The meta of OUT/checkpoint.npz, or a TrainingError saying why there is none."""
    path = paths["checkpoint.npz"]
    if not os.path.exists(path):
        hint = ("start it again without --resume: it was stopped before its first checkpoint"
                if os.path.isdir(config.out) else "check --out")
        raise TrainingError(f"--resume: expected a checkpoint at {path}, got no such file; {hint}")
    return read_checkpoint_meta(path)


def refuse_existing_run(config, paths):
    """A new run must not write over a run's results: refuse unless config.overwrite."""
    found = [name for name in ("checkpoint.npz", "best.npz") if os.path.exists(paths[name])]
    metrics = paths["metrics.jsonl"]
    if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
        found.append("metrics.jsonl")
    if not found or config.overwrite:
        return
    progress = ""
    if "checkpoint.npz" in found:
        try:
            meta = read_checkpoint_meta(paths["checkpoint.npz"])
            progress = f", {meta['epoch']} of {meta['config']['epochs']} epochs done"
        except (TrainingError, KeyError, TypeError):
            progress = ""
    raise TrainingError(f"--out {config.out}: expected a directory without a run, got one "
                        f"({', '.join(found)}{progress}); pass --resume to continue it, or "
                        "--overwrite to delete it and start over")


def best_epoch(history):
    """The epoch (1-based) best.npz must hold: the first with the highest test accuracy."""
    best = None
    for metrics in history:
        if best is None or metrics["test_acc"] > best["test_acc"]:
            best = metrics
    return None if best is None else best["epoch"]


def repair_best(paths, meta, log):
    """Make best.npz hold the best epoch of the checkpoint's history.

    The invariant: best.npz holds the state after best_epoch(history), for the history in
    checkpoint.npz. end_epoch writes checkpoint.npz and then best.npz, so the only state a
    kill can leave that breaks it is a checkpoint at the end of a new best epoch with an
    older best.npz (or none, or an orphaned temporary). That checkpoint holds exactly what
    best.npz should (both are written from the same state), so it is copied."""
    best = best_epoch(meta["history"])
    if best is None or meta["batch"] != 0 or meta["epoch"] != best:
        return
    path = paths["best.npz"]
    try:
        current = read_checkpoint_meta(path)["epoch"] if os.path.exists(path) else None
    except TrainingError:
        current = None
    if current == best:
        return

    def copy(f):
        with open(paths["checkpoint.npz"], "rb") as source:
            shutil.copyfileobj(source, f)
    _write_run_file(paths, "best.npz", copy, meta)
    log(f"repaired {path}: it now holds epoch {best}, the best so far (a stop had cut its write)")


def _position(meta):
    """Where a checkpoint stands (its meta, or just its epoch and batch), in words."""
    if meta is None:
        return None
    if meta["batch"] == 0:
        return f"after epoch {meta['epoch']}"
    return f"epoch {meta['epoch'] + 1}, batch {meta['batch']}"


def _write_run_file(paths, name, content, last_saved):
    """Write a file of the run atomically; an OSError becomes one line that names the file
    and says what is intact. content: bytes, or a function that writes to a binary file."""
    write = content if callable(content) else (lambda f: f.write(content))
    try:
        atomic_write(paths[name], write)
    except OSError as exc:
        raise _write_error(paths, name, exc, last_saved) from exc


def _write_error(paths, name, exc, last_saved):
    """The TrainingError for an OSError writing file `name` of a run (a full disk, a
    read-only or vanished --out): the path, the reason, and which checkpoint is intact."""
    where = _position(last_saved)
    intact = (f"the last checkpoint, {paths['checkpoint.npz']} ({where}), is intact: free some "
              "space (or fix --out), then run again with --resume" if where else
              "no checkpoint had been written yet: free some space (or fix --out), then run again")
    return TrainingError(f"--out {os.path.dirname(paths[name]) or '.'}: cannot write {name}, expected "
                         f"a writable directory with free space, got [Errno {exc.errno}] "
                         f"{exc.strerror or exc}; {intact}")


def _metrics_text(history):
    """metrics.jsonl's content: one JSON object per epoch done, as bytes."""
    return "".join(json.dumps(m) + "\n" for m in history).encode()


def _write_curves(paths, history, last_saved):
    """curves.png, atomically (none before the first epoch)."""
    if history:
        _write_run_file(paths, "curves.png", lambda f: plot_curves(history, f), last_saved)
