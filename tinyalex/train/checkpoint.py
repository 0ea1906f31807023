"""Checkpoints of a training run, and the atomic writes every file of a run directory uses.

A checkpoint is an .npz: the model's state_dict (``model/<key>``), the SGD momentum buffers
(``optim/<i>/momentum_buffer``) and a JSON ``meta`` (settings, position in the run, history,
parameter groups, the schedule and RNG state), versioned by CHECKPOINT_FORMAT. Every file is
written through atomic_write, so a kill at any instant leaves the old file or the new one.
"""
import json
import os
import tempfile

import numpy as np

from tinyalex import device as _device
from tinyalex.errors import TrainingError

CHECKPOINT_FORMAT = 1

#: Every temporary file tinyalex writes in --out starts with this; train() removes the ones
#: a killed save left behind (and those of older versions, .checkpoint-*.npz).
TEMP_PREFIX = ".tmp-"


def atomic_write(path, write):
    """Write a file atomically: `write(f)` fills a temporary file (binary) in the same
    directory, which is flushed to disk, then renamed over `path`, and the rename is flushed
    too. A crash at any instant leaves either the old file or the new one, never half of
    one, plus at worst an orphaned TEMP_PREFIX file (removed on the next start)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.path.basename(path)}-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; these are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make a rename in `directory` durable (where the OS allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path, model, optimizer, scheduler, meta):
    """Write model, optimizer and run state to `path` atomically (atomic_write)."""
    arrays = checkpoint_arrays(model, optimizer, scheduler, meta)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def checkpoint_arrays(model, optimizer, scheduler, meta):
    """What a checkpoint holds, as the arrays of an .npz: the model's state, the momentum
    buffers, and `meta` with the parameter groups and schedule state, as JSON."""
    arrays = {f"model/{k}": _device.to_device(v.array, "cpu") for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for i, state in opt_state["state"].items():
        arrays[f"optim/{i}/momentum_buffer"] = state["momentum_buffer"]
    meta = dict(meta, format=CHECKPOINT_FORMAT, param_groups=opt_state["param_groups"],
                scheduler=scheduler.state_dict() if scheduler else None)
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def _open_checkpoint(path):
    """np.load of a checkpoint file, or a TrainingError saying why it cannot be one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TrainingError(f"checkpoint: {path} does not exist, expected a .npz file written by "
                            "tinyalex train (OUT/best.npz or OUT/checkpoint.npz)")
    if os.path.isdir(path):
        raise TrainingError(f"checkpoint: {path} is a directory, expected a .npz file written by "
                            "tinyalex train (OUT/best.npz or OUT/checkpoint.npz)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise TrainingError(f"checkpoint: {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc


def _parse_meta(path, raw):
    """The JSON meta of a checkpoint, checked to be of this CHECKPOINT_FORMAT."""
    try:
        meta = json.loads(str(raw))
    except Exception as exc:
        raise TrainingError(f"checkpoint: {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise TrainingError(f"checkpoint: {path}: expected format {CHECKPOINT_FORMAT}, got {got}")
    return meta


def read_checkpoint_meta(path):
    """A checkpoint's meta (settings, position, history) without reading its arrays."""
    try:
        with _open_checkpoint(path) as archive:
            raw = archive["meta"]
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(f"checkpoint: {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    return _parse_meta(path, raw)


def load_checkpoint(path, read=None):
    """(model state, optimizer state, meta) from a checkpoint; a clear error if the file is
    missing, truncated or not a tinyalex checkpoint. read(archive, key): how to read each
    array but 'meta' from the open np.load archive (default: whole; a model-parallel rank
    reads its own rows, parallel/model_parallel.py)."""
    try:
        with _open_checkpoint(path) as archive:
            arrays = {k: archive[k] if read is None or k == "meta" else read(archive, k)
                      for k in archive.files}
        raw = arrays.pop("meta")
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(f"checkpoint: {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    meta = _parse_meta(path, raw)
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim_state = {"param_groups": meta["param_groups"],
                   "state": {int(k.split("/")[1]): {"momentum_buffer": v}
                             for k, v in arrays.items() if k.startswith("optim/")}}
    return model_state, optim_state, meta
