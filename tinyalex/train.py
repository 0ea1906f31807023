"""Training AlexNet with the 2012 paper's recipe: SGD with momentum 0.9 and weight decay
5e-4, learning rate 0.01 divided by 10 when the test error stops improving (or on a step
schedule), top-1 and top-5 evaluated every epoch.

Everything random is a function of ``--seed``: the init, the data order and augmentation
of each (epoch, batch), and the dropout masks (tinyalex's global generator, saved in every
checkpoint). So ``--resume`` continues exactly the loss curve of an uninterrupted run.

Files in ``--out``: ``checkpoint.npz`` (after each training pass, after each evaluation,
and on Ctrl-C), ``best.npz`` (the best test accuracy so far), ``metrics.jsonl`` (one JSON
object per epoch), ``curves.png`` (loss and accuracy), and ``grad_stats.jsonl`` with
``--grad-stats``. Each is written atomically, in an order that lets a run killed at any
instant resume with nothing lost (see _Run.end_epoch and repair_best).

The run directory, the settings and the loop live here; the parts with a concern of their
own live beside it, and the names they define are imported here too, so
``tinyalex.train.load_checkpoint`` and the like keep working: checkpoint files and atomic
writes (tinyalex.checkpoint), evaluation (tinyalex.evaluation), the progress bar
(tinyalex.progress), Ctrl-C between batches (tinyalex.interrupt), the loss curves
(tinyalex.viz.plot_curves), each model's training preset (tinyalex.models.PRESETS) and
TrainingError (tinyalex.errors).
"""
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time

import numpy as np

from . import device as _device
from . import distributed as _dist
from . import functional as F
from . import models
from . import random as _random
from .autograd import tensor
from .checkpoint import (CHECKPOINT_FORMAT, TEMP_PREFIX, atomic_write, checkpoint_arrays,  # noqa: F401
                         load_checkpoint, read_checkpoint_meta, save_checkpoint)
from .data import transforms as T
from .data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_fashion_mnist
from .data.image_folder import ImageFolder, UnreadableImageError
from .data.loader import DataLoader
from .errors import TrainingError
from .evaluation import evaluate
from .interrupt import DeferredInterrupt
from .models import PRESETS
from .optim import SGD, lr_scheduler
from .progress import Progress
from .viz import plot_curves

@dataclasses.dataclass
class TrainConfig:
    """A run's settings. None means "not given": a new run takes the model's preset (PRESETS)
    or DEFAULTS; a resumed run (--resume) takes the checkpoint's value (see ON_RESUME)."""
    model: str = None            # None: chosen for the device (see choose_defaults)
    dataset: str = None          # "fashion-mnist" or "imagefolder:PATH" (PATH/train and PATH/val)
    data_dir: str = None
    epochs: int = None           # None: the model's preset (PRESETS), and likewise below
    batch_size: int = None
    lr: float = None
    momentum: float = None       # None: DEFAULTS, and likewise below
    weight_decay: float = None
    lr_schedule: str = None      # "plateau" (the paper's), "step", or "none"
    lr_step: int = None          # epochs between divisions with --lr-schedule step
    device: str = None           # None: cuda when available, else cpu
    out: str = "runs/tinyalex"
    seed: int = None
    resume: bool = False         # continue the run in `out` from its checkpoint.npz
    overwrite: bool = False      # delete the run in `out` and start over
    ten_crop: bool = None        # RGB models: average the paper's 10 crops at test time
    grad_stats: bool = None
    skip_bad_images: bool = None  # leave undecodable images out (counted) instead of refusing
    workers: int = None          # worker processes that decode and augment (0: in-process)
    limit_train: int = None      # use only the first N training images (quick runs, tests)
    limit_test: int = None


#: The settings no preset decides (the paper's SGD recipe and the data set).
DEFAULTS = dict(dataset="fashion-mnist", momentum=0.9, weight_decay=5e-4, seed=0,
                ten_crop=False, grad_stats=False, skip_bad_images=False, workers=0)

LR_SCHEDULES = ("plateau", "step", "none")

#: setting -> (type, accepted?, what the error message says is expected). Checked before
#: anything is loaded, by train() and by the CLI's argument parser (tinyalex.cli).
NUMBER_RULES = {
    "epochs": (int, lambda v: v >= 1, "an integer >= 1"),
    "batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "lr": (float, lambda v: 0 < v < math.inf, "a finite number > 0"),
    "momentum": (float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (float, lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "lr_step": (int, lambda v: v >= 1, "an integer >= 1"),
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "limit_train": (int, lambda v: v >= 1, "an integer >= 1"),
    "limit_test": (int, lambda v: v >= 1, "an integer >= 1"),
    "workers": (int, lambda v: v >= 0, "an integer >= 0"),
}

#: What --resume does with a setting given a value other than the checkpoint's: "refuse"
#: (and say why), or "apply" from now on and log it, as a torch user who edits
#: param_group['lr'] between epochs expects. A setting not given takes the checkpoint's.
ON_RESUME = {
    "model": ("refuse", "the checkpoint's weights have its model's shapes"),
    "dataset": ("refuse", "the classes and the images of an epoch come from it"),
    "batch_size": ("refuse", "the position in the epoch is counted in batches of its size"),
    "seed": ("refuse", "the data order, augmentation and dropout masks are drawn from it"),
    "limit_train": ("refuse", "it decides which images an epoch holds"),
    "lr_schedule": ("refuse", "the saved schedule state belongs to its rule; --lr can still "
                              "set the rate"),
    "lr_step": ("refuse", "the saved step schedule counts epochs in its steps; --lr can "
                          "still set the rate"),
    "epochs": ("apply", "trains to the new total; not below the epochs already done"),
    "lr": ("apply", "sets every parameter group's lr now, as editing param_group['lr'] "
                    "does; the schedule divides it from there"),
    "momentum": ("apply", "sets the parameter groups' momentum; the buffers are kept"),
    "weight_decay": ("apply", "sets the parameter groups' weight decay"),
    "data_dir": ("apply", "reads the same data set from its new place"),
    "limit_test": ("apply", "evaluates on that many test images from now on"),
    "ten_crop": ("apply", "evaluates that way from now on"),
    "grad_stats": ("apply", "logs per-layer statistics from now on, or stops"),
    "skip_bad_images": ("apply", "decides what undecodable images do from now on"),
    "device": ("apply", "moves the run; results then match a run that stayed only to "
                        "rounding"),
    "workers": ("apply", "loads data with that many processes; the batches are the same"),
}

#: The files of a run in --out; --overwrite deletes them.
RUN_FILES = ("checkpoint.npz", "best.npz", "metrics.jsonl", "curves.png", "grad_stats.jsonl",
             "grad_stats.png")


def flag(name):
    """The command-line spelling of a TrainConfig field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def check_number(name, value):
    """The error message for a numeric setting out of range (or of the wrong type), else None."""
    kind, accepted, expected = NUMBER_RULES[name]
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and (kind is float or isinstance(value, int)) and accepted(value))
    return None if ok else f"{flag(name)}: expected {expected}, got {value!r}"


def check_config(config):
    """Refuse a setting that cannot work, naming it: every check that needs no data, so a
    mistake costs nothing (no data loaded, no --out touched). None means "not given"."""
    for name in NUMBER_RULES:
        value = getattr(config, name)
        if value is not None and check_number(name, value):
            raise TrainingError(check_number(name, value))
    if config.model is not None and config.model not in models.MODELS:
        raise TrainingError(f"--model: expected one of {', '.join(models.MODELS)}, got {config.model!r}")
    if config.lr_schedule is not None and config.lr_schedule not in LR_SCHEDULES:
        raise TrainingError(f"--lr-schedule: expected one of {', '.join(LR_SCHEDULES)}, "
                            f"got {config.lr_schedule!r}")
    if config.resume and config.overwrite:
        raise TrainingError("--resume and --overwrite: expected at most one of them, got both "
                            "(--resume continues the run in --out, --overwrite deletes it)")
    if not config.out:
        raise TrainingError(f"--out: expected a directory, got {config.out!r}")
    check_data_location(config.dataset, config.data_dir)
    if config.device is not None:
        check_device(config.device)


def check_data_location(dataset, data_dir):
    """Refuse a data set name or place that does not exist, before anything is read."""
    if dataset is None or dataset == "fashion-mnist":
        if data_dir is not None and not os.path.isdir(data_dir):
            raise TrainingError(f"--data-dir: expected a directory holding the Fashion-MNIST "
                                f"files, got {data_dir!r}, which is not a directory")
    elif dataset.startswith("imagefolder:"):
        root = dataset.split(":", 1)[1]
        for split in ("train", "val"):
            if not os.path.isdir(os.path.join(root, split)):
                raise TrainingError(f"--dataset imagefolder:{root}: expected class folders under "
                                    f"{os.path.join(root, split)}, got no such directory")
    elif dataset.startswith("shards:"):
        root = dataset.split(":", 1)[1]
        for split in ("train", "val"):
            manifest = os.path.join(root, split, "manifest.json")
            if not os.path.isfile(manifest):
                raise TrainingError(f"--dataset shards:{root}: expected shards written by "
                                    f"`tinyalex prepare`, got no {manifest}")
    else:
        raise TrainingError(f"--dataset: expected 'fashion-mnist', 'imagefolder:PATH' or "
                            f"'shards:PATH', got {dataset!r}")


def check_device(device, option="--device cuda"):
    """'cpu' or 'cuda' for a device spec; refuses cuda on a machine without a usable GPU
    (`option`: how the error names what asked for it)."""
    try:
        device = _device.parse_device(device)
    except ValueError as exc:
        raise TrainingError(f"--device: expected 'cpu' or 'cuda', got {device!r}") from exc
    if device == "cuda" and not _device.cuda_is_available():
        try:
            _device.cupy_module()
            reason = "it vanished"
        except RuntimeError as exc:
            reason = str(exc)
        raise TrainingError(f"{option}: expected a usable CUDA GPU, got none ({reason})")
    return device


def choose_defaults(config):
    """Fill in device, model, the preset and DEFAULTS; returns (config, [reasons to print])."""
    reasons = []
    if config.device is None:
        config.device = _device.default_device()
        reasons.append(f"device {config.device}: " + (
            "a CUDA GPU is available" if config.device == "cuda" else "no CUDA GPU found"))
    config.device = check_device(config.device)
    if config.dataset is None:
        config.dataset = DEFAULTS["dataset"]
    if config.model is None:
        if config.dataset != "fashion-mnist":
            config.model = "alexnet2012"
            reasons.append("model alexnet2012: the 2012 paper's network for RGB image folders")
        elif config.device == "cuda":
            config.model = "fashion-alexnet"
            reasons.append("model fashion-alexnet: d2l's AlexNet on Fashion-MNIST at 224 px fits a GPU")
        else:
            config.model = "cpu-alexnet"
            reasons.append("model cpu-alexnet: AlexNet's 8 layers scaled to 28 px, so a 2-core CPU "
                           "trains it in minutes (fashion-alexnet at 224 px needs ~5.6 GFLOP per image)")
    if config.model not in models.MODELS:
        raise TrainingError(f"--model: expected one of {', '.join(models.MODELS)}, got {config.model!r}")
    preset = {k: v for k, v in PRESETS[config.model].items() if getattr(config, k) is None}
    for key, value in preset.items():
        setattr(config, key, value)
    if preset:
        reasons.append(f"the {config.model} preset: " + ", ".join(f"{k} {v}" for k, v in preset.items()))
    for key, value in DEFAULTS.items():
        if getattr(config, key) is None:
            setattr(config, key, value)
    return config, reasons


# --- data --------------------------------------------------------------------------------
def load_datasets(config, log=None):
    """(train, test) datasets for config.dataset, limited if asked. An ImageFolder's files
    are checked first (ImageFolder.find_unreadable): any undecodable image refuses the run,
    listed, unless config.skip_bad_images, which leaves them out and logs how many."""
    check_data_location(config.dataset, config.data_dir)
    if config.dataset == "fashion-mnist":
        try:
            train, test = (load_fashion_mnist(split, config.data_dir) for split in ("train", "test"))
        except (OSError, ValueError) as exc:  # missing, unreadable or corrupt files: say which
            raise TrainingError(str(exc)) from exc
    elif config.dataset.startswith("shards:"):
        from .data.shards import ShardDataset
        root = config.dataset.split(":", 1)[1]
        try:
            train, test = (ShardDataset(os.path.join(root, split)) for split in ("train", "val"))
        except (OSError, ValueError, KeyError) as exc:
            raise TrainingError(f"--dataset {config.dataset}: {exc}") from exc
    else:
        root = config.dataset.split(":", 1)[1]
        try:
            train, test = (ImageFolder(os.path.join(root, split), skip_bad=bool(config.skip_bad_images))
                           for split in ("train", "val"))
        except (OSError, ValueError) as exc:
            raise TrainingError(str(exc)) from exc
        for folder in (train, test):
            _drop_unreadable(folder, config, log or (lambda line: None))
    return _limit(train, config.limit_train), _limit(test, config.limit_test)


def _drop_unreadable(folder, config, log):
    """Refuse an ImageFolder holding undecodable images, or leave them out with a warning."""
    bad = folder.find_unreadable()
    if not bad:
        return
    listed = ", ".join(f"{path} ({reason})" if i == 0 else path for i, (path, reason) in enumerate(bad[:3]))
    listed += f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    if not config.skip_bad_images:
        raise TrainingError(f"--dataset {config.dataset}: expected only decodable images, got "
                            f"{len(bad)} that {'is' if len(bad) == 1 else 'are'} not: {listed}; "
                            "remove them, or pass --skip-bad-images to train without them")
    folder.remove(path for path, _ in bad)
    if not folder.samples:
        raise TrainingError(f"--dataset {config.dataset}: expected decodable images in "
                            f"{folder.root}, got none")
    log(f"warning: --skip-bad-images: left out {len(bad)} undecodable image"
        f"{'' if len(bad) == 1 else 's'} of {folder.root}: {listed}")


def skipped_images(dataset):
    """{path: reason} of the images an ImageFolder (or a limit of one) left out mid-epoch."""
    return getattr(getattr(dataset, "dataset", dataset), "skipped", {})


class _Subset:
    def __init__(self, dataset, n):
        self.dataset, self.n, self.classes = dataset, n, dataset.classes

    def __len__(self):
        return self.n

    def get_batch(self, indices):
        return self.dataset.get_batch(indices)


class _Shard:
    """Samples [first, stop) of a dataset: one rank's part of the test set."""

    def __init__(self, dataset, first, stop):
        self.dataset, self.first, self.stop = dataset, first, stop
        self.classes = dataset.classes

    def __len__(self):
        return self.stop - self.first

    def get_batch(self, indices):
        return self.dataset.get_batch(np.asarray(indices) + self.first)


def _limit(dataset, n):
    return dataset if n is None or n >= len(dataset) else _Subset(dataset, n)


def transforms_for(model_name, train, ten_crop=False):
    """The preprocessing of each model: normalise, resize or crop, augment in training.
    With ten_crop the test images stay whole (256 px) for TenCrop after the loader."""
    channels, height, _ = models.MODELS[model_name][1]
    if channels == 1:  # Fashion-MNIST, as d2l prepares it: normalised, resized, no augmentation
        steps = [T.ToFloat(FASHION_MNIST_MEAN, FASHION_MNIST_STD)]
        return T.Compose(steps + ([T.Resize(height)] if height != 28 else []))
    # RGB (ImageFolder gives 256x256): the paper's random crops, flips and PCA lighting
    crop = [T.RandomCrop(height)] if train else ([] if ten_crop else [T.CenterCrop(height)])
    steps = crop + ([T.RandomHorizontalFlip()] if train else []) + [T.ToFloat()]
    steps += [T.PCALighting()] if train else []
    return T.Compose(steps + [T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)])


# --- the training loop -------------------------------------------------------------------
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


def build(config, num_classes):
    """Model, optimizer and schedule for a config (weights from config.seed); settings not
    given take DEFAULTS."""
    config = dataclasses.replace(config, **{k: v for k, v in DEFAULTS.items() if getattr(config, k) is None})
    _random.manual_seed(config.seed)
    model = models.create_model(config.model, num_classes)
    model.to(config.device)
    optimizer = SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                    weight_decay=config.weight_decay)
    if config.lr_schedule == "plateau":
        scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, "max", factor=0.1, patience=1)
    elif config.lr_schedule == "step":
        scheduler = lr_scheduler.StepLR(optimizer, config.lr_step, gamma=0.1)
    elif config.lr_schedule == "none":
        scheduler = None
    else:
        raise TrainingError(f"--lr-schedule: expected plateau, step or none, got {config.lr_schedule!r}")
    return model, optimizer, scheduler


def train(config, log=print):
    """Train as configured; returns the list of per-epoch metrics.

    Every setting is checked before any data is read or --out is touched. A new run refuses
    an --out that holds a run unless config.overwrite; config.resume continues it (settings
    not given are the checkpoint's, changed ones follow ON_RESUME). The files in --out are
    written so that a kill at any instant loses nothing (see _Run.end_epoch)."""
    check_config(config)
    world = _dist.world()
    main = world is None or world.is_main
    if not main:
        log = _quiet                      # only rank 0 prints and writes
    paths = run_paths(config.out)
    meta = changes = None
    if config.resume:
        meta = checkpoint_to_resume(config, paths)
        changes = settings_on_resume(config, meta)
    else:
        refuse_existing_run(config, paths)
    config, reasons = choose_defaults(config)
    for reason in reasons:
        log("chose " + reason)
    if meta is not None:
        check_epochs_on_resume(config, meta)
        if meta["config"].get("device") not in (None, config.device):
            changes.append(("device", meta["config"]["device"], config.device))
    if world is not None and config.device == "cuda":
        _dist.select_gpu(world)
    if main:
        check_writable(config.out)
    with OutLock(config.out) if main else _NoLock():
        if main:
            remove_orphans(config.out, log)
        if meta is not None:
            if main:
                repair_best(paths, meta, log)
                _write_run_file(paths, "metrics.jsonl", _metrics_text(meta["history"]), meta)
            if config.epochs == meta["epoch"] and meta["batch"] == 0:
                log(f"nothing to do: the run in {config.out} has done its {config.epochs} epochs; "
                    "give a larger --epochs to train on")
                if main:
                    _write_curves(paths, meta["history"], meta)
                return meta["history"]
        run = _Run(config, log, world)
        run.start(meta, changes)
        with DeferredInterrupt() as ctrl_c:
            for epoch in range(run.start_epoch, config.epochs):
                run.train_epoch(epoch, ctrl_c)
                run.end_epoch(epoch)
        if main:
            _write_curves(paths, run.history, run.position)
        if run.stats is not None:
            run.write(os.path.join(config.out, "grad_stats.png"), run.stats.plot)
        if world is not None:
            world.barrier()               # no rank leaves while rank 0 still writes
    return run.history


def _quiet(*args, **kwargs):
    """The log of ranks other than 0: they print nothing."""


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


def settings_on_resume(config, meta):
    """Settings not given (None) take the checkpoint's; a changed one is refused or applied
    as ON_RESUME says. Returns [(name, checkpoint's value, new value)] to apply."""
    saved, changes = meta["config"], []
    for name, (rule, why) in ON_RESUME.items():
        old, new = saved.get(name), getattr(config, name)
        if new is None:
            if name != "device":  # the device is this machine's choice (choose_defaults)
                setattr(config, name, old)
        elif new != old:
            if rule == "refuse":
                raise TrainingError(f"--resume: {flag(name)} cannot change ({why}), expected the "
                                    f"checkpoint's {old!r}, got {new!r}")
            if name != "device":  # logged once the device is chosen, in train()
                changes.append((name, old, new))
    return changes


def check_epochs_on_resume(config, meta):
    """--epochs on resume may grow or shrink the run, but not below what is done."""
    done, started = meta["epoch"], meta["batch"] > 0
    minimum = done + 1 if started else done
    if config.epochs < minimum:
        raise TrainingError(f"--epochs: expected at least {minimum}, the epochs the checkpoint has "
                            f"{'started' if started else 'done'}, got {config.epochs}")


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


class _Run:
    """The state of one training run: data, model, optimizer, schedule, and where it is."""

    def __init__(self, config, log, world=None):
        self.config, self.log, self.world = config, log, world
        self.main = world is None or world.is_main
        rank, size = (0, 1) if world is None else (world.rank, world.size)
        self.paths = run_paths(config.out)
        self.train_set, self.test_set = load_datasets(config, log)
        channels = models.MODELS[config.model][1][0]
        sample = self.train_set.get_batch(np.arange(1))[0]
        found = 1 if sample.ndim == 3 else sample.shape[-1]
        if found != channels:
            raise TrainingError(f"--model {config.model}: expected {channels}-channel images, got "
                                f"{found}-channel ones in {config.dataset}")
        self.model, self.optimizer, self.scheduler = build(config, len(self.train_set.classes))
        if config.batch_size < size:
            raise TrainingError(f"--batch-size: expected at least one image per rank ({size} ranks), "
                                f"got {config.batch_size}")
        self.train_loader = DataLoader(self.train_set, config.batch_size, shuffle=True, seed=config.seed,
                                       transform=transforms_for(config.model, train=True),
                                       workers=config.workers, rank=rank, world_size=size)
        first, stop = _dist.split_rows(len(self.test_set), size, rank)  # evaluation: one shard each
        self.test_loader = DataLoader(_Shard(self.test_set, first, stop), 256, transform=transforms_for(
            config.model, train=False, ten_crop=config.ten_crop), workers=config.workers)
        self.buffer = None
        if world is not None:
            params = list(self.model.parameters())
            self.buffer = _dist.FlatBuffer(params, _device.array_module(params[0].array), params[0].array.dtype)
        self.ten_crop_size = models.MODELS[config.model][1][1] if config.ten_crop and channels == 3 else None
        self.meta = dict(config=dataclasses.asdict(config), classes=list(self.train_set.classes),
                         world_size=size)
        self.history, self.start_epoch, self.start_batch, self.partial = [], 0, 0, None
        self.position, self.stats, self.reported_skips = None, None, 0

    def start(self, meta, changes):
        """Continue from `meta` (the checkpoint's) and apply `changes`, or start afresh
        (deleting an old run's files first with --overwrite, now that the data loaded)."""
        if meta is not None:
            self._resume(changes)
        else:
            if self.config.overwrite and self.main:
                for name in RUN_FILES:  # checkpoint first: a half-deleted run cannot be resumed
                    if os.path.exists(self.paths[name]):
                        os.unlink(self.paths[name])
            self.write("metrics.jsonl", _metrics_text([]))
        self.best = max((m["test_acc"] for m in self.history), default=-1.0)
        _dist.broadcast_parameters(self.world, self.model, self.optimizer)  # every rank: rank 0's
        if self.config.grad_stats and self.main:
            from .stats import GradStats
            self.stats = GradStats(self.model, self.paths["grad_stats.jsonl"],
                                   self.config.epochs * len(self.train_loader),
                                   start_step=self.start_epoch * len(self.train_loader) + self.start_batch,
                                   start_epoch=self.start_epoch)

    def _resume(self, changes):
        model_state, optim_state, meta = load_checkpoint(self.paths["checkpoint.npz"])
        if meta["classes"] != self.meta["classes"]:
            raise TrainingError(f"--resume: expected the checkpoint's classes {meta['classes']}, got "
                                f"{self.meta['classes']} in {self.config.dataset}")
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
        if self.scheduler is not None and meta.get("scheduler"):
            self.scheduler.load_state_dict(meta["scheduler"])
        _random.set_rng_state(meta["rng"])
        self.history, self.start_epoch = meta["history"], meta["epoch"]
        self.start_batch, self.partial, self.position = meta["batch"], meta["partial"], meta
        self.log(f"resumed from {self.paths['checkpoint.npz']} at epoch {self.start_epoch + 1}, "
                 f"batch {self.start_batch}")
        saved_size, size = meta.get("world_size", 1), self.meta["world_size"]
        if saved_size != size:  # nothing depends on the rank count (tinyalex.distributed)
            self.log(f"resume: {size} rank{'s' if size > 1 else ''} (the checkpoint had {saved_size}): "
                     "the batches, masks and augmentation are the same, so the run continues "
                     "as it would have, to float rounding")
        for name, old, new in changes:
            self._apply(name, old, new)

    def _apply(self, name, old, new):
        """Apply one setting changed on resume (ON_RESUME says which can be) and log it."""
        if name in ("lr", "momentum", "weight_decay"):
            old = self.optimizer.param_groups[0][name]  # the rate now, after any schedule step
            for group in self.optimizer.param_groups:
                group[name] = new
            if name == "lr" and isinstance(self.scheduler, lr_scheduler.StepLR):
                # StepLR computes base * gamma ** (epoch // step): rebase it so the rate is
                # `new` now and is divided from here at the usual epochs
                decay = self.scheduler.gamma ** (self.scheduler.last_epoch // self.scheduler.step_size)
                self.scheduler.base_lrs = [new / decay for _ in self.scheduler.base_lrs]
        self.log(f"resume: {flag(name)} {new} (the checkpoint had {old}): {ON_RESUME[name][1]}")

    def write(self, name, content):
        """Write a file of the run atomically (name: a RUN_FILES name or a path in --out).
        Only rank 0 writes."""
        if not self.main:
            return
        paths = dict(self.paths)
        if name not in paths:
            paths[os.path.basename(name)] = name
            name = os.path.basename(name)
        _write_run_file(paths, name, content, self.position)

    def _save(self, name, **position):
        if not self.main:
            if name == "checkpoint.npz":
                self.position = dict(position)
            return
        state = dict(self.meta, history=self.history, rng=_random.get_rng_state(),
                     best=self.best, **position)
        arrays = checkpoint_arrays(self.model, self.optimizer, self.scheduler, state)
        self.write(name, lambda f: np.savez(f, **arrays))
        if name == "checkpoint.npz":
            self.position = dict(position)

    def train_epoch(self, epoch, ctrl_c):
        """One pass over the training set (from start_batch when resuming mid-epoch), then a
        checkpoint, so that a failing evaluation costs no training."""
        config, path = self.config, self.paths["checkpoint.npz"]
        self.train_loader.set_epoch(epoch, self.start_batch)
        running = self.partial or dict(loss_sum=0.0, correct=0, seen=0, seconds=0.0)
        progress = Progress(epoch, config.epochs, len(self.train_loader),
                            stream=None if self.main else open(os.devnull, "w"))
        first = done = self.start_batch  # batches whose updates are in the weights and in `running`
        tick = time.perf_counter()
        try:
            for batch, (images, labels) in enumerate(self.train_loader, start=self.start_batch):
                stop = False
                if self.world is None:
                    ctrl_c.raise_if_requested()
                    count = len(labels)
                else:  # a Ctrl-C on any rank travels in the allreduce: all stop after this batch
                    loss_value, correct, count, stop = _distributed_step(
                        self, images, labels, self.train_loader.rows(batch)[0], ctrl_c.requested)
                if count == 0:  # --skip-bad-images left out a whole batch
                    done = batch + 1
                    if stop:
                        raise _dist.mark_collective(KeyboardInterrupt())
                    continue
                if self.world is None:
                    try:
                        loss_value, correct = _step(self.model, self.optimizer, images, labels,
                                                    config.device, self.stats)
                    except OSError as exc:  # grad_stats.jsonl could not be written
                        raise _write_error(self.paths, "grad_stats.jsonl", exc, self.position) from exc
                if not math.isfinite(loss_value):  # with ranks: the global loss, so all stop here
                    raise _dist.mark_collective(TrainingError(
                        f"the loss became {loss_value} at epoch {epoch + 1}, batch {batch}: training "
                        f"stopped; the last good checkpoint ({path}) is intact. Try a lower --lr."))
                running["loss_sum"] += loss_value * count
                running["correct"] += correct
                running["seen"] += count
                done = batch + 1
                if stop:
                    raise _dist.mark_collective(KeyboardInterrupt())
                elapsed = running["seconds"] + time.perf_counter() - tick
                progress.update(done, running["loss_sum"] / running["seen"],
                                running["correct"] / running["seen"], running["seen"] / max(elapsed, 1e-9))
        except KeyboardInterrupt:
            running["seconds"] += time.perf_counter() - tick
            self._save("checkpoint.npz", epoch=epoch, batch=done, partial=running)
            self.log(f"\ninterrupted: saved {path} (epoch {epoch + 1}, batch {done}); "
                     "continue with --resume")
            raise
        except UnreadableImageError as exc:  # only without --skip-bad-images
            running["seconds"] += time.perf_counter() - tick
            self._save("checkpoint.npz", epoch=epoch, batch=done, partial=running)
            raise TrainingError(f"{exc}; training stopped at epoch {epoch + 1}, batch {done}, saved "
                                f"in {path}: remove the file or pass --skip-bad-images, then run "
                                "again with --resume") from exc
        running["seconds"] += time.perf_counter() - tick
        if not _weights_finite(self.model):  # the epoch's last update overflowed
            raise _dist.mark_collective(TrainingError(
                f"the weights became non-finite in the last step of epoch {epoch + 1}: training "
                f"stopped; the last good checkpoint ({path}) is intact. Try a lower --lr."))
        if done > first:
            self._save("checkpoint.npz", epoch=epoch, batch=done, partial=running)
        self.start_batch, self.partial, self.running = 0, None, running

    def end_epoch(self, epoch):
        """Evaluate, log metrics, step the schedule, write the files.

        The write order is what makes a kill at any instant lose nothing (with atomic
        writes, each file is either old or new): checkpoint.npz, then best.npz if the epoch
        is the best (repair_best mends a kill between the two), then metrics.jsonl, which
        is rewritten from the checkpoint's history on every start."""
        running, path = self.running, self.paths["checkpoint.npz"]
        try:
            reduce = {} if self.world is None else dict(reduce=_allreduce_sums(self.world))
            test_loss, test_acc, test_top5 = evaluate(self.model, self.test_loader, self.config.device,
                                                      self.ten_crop_size, **reduce)
        except UnreadableImageError as exc:
            raise TrainingError(f"{exc}; epoch {epoch + 1}'s training is saved in {path}: remove the "
                                "file or pass --skip-bad-images, then run again with --resume to "
                                "evaluate it") from exc
        if not math.isfinite(test_loss):  # the last update overflowed: keep the last good checkpoint
            raise _dist.mark_collective(TrainingError(
                f"the test loss became {test_loss} after epoch {epoch + 1}: training stopped; the last "
                f"good checkpoint ({path}) is intact. Try a lower --lr."))
        metrics = dict(epoch=epoch + 1, train_loss=running["loss_sum"] / running["seen"],
                       train_acc=running["correct"] / running["seen"], test_loss=test_loss,
                       test_acc=test_acc, test_top5=test_top5,
                       images_per_sec=running["seen"] / running["seconds"],
                       seconds=running["seconds"], lr=self.optimizer.param_groups[0]["lr"])
        self.history.append(metrics)
        if self.scheduler is not None:
            self.scheduler.step(test_acc) if self.config.lr_schedule == "plateau" else self.scheduler.step()
        improved = test_acc > self.best
        self.best = max(self.best, test_acc)
        if self.stats is not None:
            self.stats.end_epoch(epoch + 1)
        self._save("checkpoint.npz", epoch=epoch + 1, batch=0, partial=None)
        if improved:
            self._save("best.npz", epoch=epoch + 1, batch=0, partial=None)
        self.write("metrics.jsonl", _metrics_text(self.history))
        self.log(f"epoch {epoch + 1}/{self.config.epochs}: train loss {metrics['train_loss']:.4f} "
                 f"acc {metrics['train_acc']:.4f} | test loss {test_loss:.4f} acc {test_acc:.4f} "
                 f"top-5 {test_top5:.4f} | {metrics['images_per_sec']:.0f} img/s, {metrics['seconds']:.0f} s")
        self._report_skipped()

    def _report_skipped(self):
        """With --skip-bad-images: count the images that failed to decode mid-epoch."""
        skipped = {**skipped_images(self.train_set), **skipped_images(self.test_set)}
        if len(skipped) > self.reported_skips:
            new = sorted(skipped)[self.reported_skips:]
            self.reported_skips = len(skipped)
            self.log(f"warning: --skip-bad-images: left out {len(skipped)} image"
                     f"{'s' if len(skipped) > 1 else ''} that failed to decode so far: "
                     + ", ".join(new[:3]) + (f" and {len(new) - 3} more" if len(new) > 3 else ""))


def _weights_finite(model):
    """True if no parameter holds an inf or a nan."""
    return all(bool(_device.array_module(p.array).isfinite(p.array).all()) for p in model.parameters())


def _allreduce_sums(world):
    """A reduce for evaluate(): the four sums over the ranks, in float64."""
    def reduce(values):
        return [float(v) for v in world.allreduce_(np.asarray(values, dtype=np.float64))]
    return reduce


def _distributed_step(run, images, labels, first_row, stop):
    """One data-parallel SGD step on this rank's rows [first_row, ...) of a global batch:
    backward of the summed loss, one allreduce of the flat buffer (gradient sums and the
    EXTRAS), gradients divided by the global count, then the update. Returns (global mean
    loss, global correct, global count, whether any rank asked to stop)."""
    model, optimizer, device, buffer = run.model, run.optimizer, run.config.device, run.buffer
    optimizer.zero_grad()
    count, loss_sum, correct = len(labels), 0.0, 0
    if count:
        with _random.batch_rows(first_row):       # dropout: this slice's masks of the whole batch
            logits = model(tensor(images, device=device))
        loss = F.cross_entropy(logits, tensor(labels, device=device), reduction="sum")
        loss.backward()
        loss_sum = loss.item()
        predictions = _device.to_device(logits.array.argmax(axis=1), "cpu")
        correct = int((predictions == labels).sum())
    else:  # an empty slice (a last batch smaller than the ranks): keep the seed stream in step
        _skip_dropout_seeds(model)
    buffer.pack(dict(loss_sum=loss_sum, correct=correct, count=count, stop=float(bool(stop))))
    if buffer.xp is np:
        run.world.allreduce_(buffer.flat)
    else:
        nccl = _nccl(run)
        nccl.allreduce_(buffer.flat, buffer.buckets(nccl.bucket_bytes))
    totals = buffer.extras()
    total = int(round(totals["count"]))
    if total:
        buffer.unpack(1.0 / total)
        if run.stats is not None:
            run.stats.before_step()
        optimizer.step()
        if run.stats is not None:
            run.stats.after_step()
    mean = totals["loss_sum"] / total if total else 0.0
    return mean, int(round(totals["correct"])), total, totals["stop"] > 0


def _nccl(run):
    """The run's NCCL communicator (made on first use: GPU ranks)."""
    if getattr(run, "nccl", None) is None:
        run.nccl = _dist.NcclAllreduce(run.world)
    return run.nccl


def _skip_dropout_seeds(model):
    """Draw the seeds the model's dropout layers would draw in a forward, as a rank with no
    rows must, so that its generator stays in step with the other ranks'."""
    from .nn import Dropout
    for module in model.modules():
        if isinstance(module, Dropout) and module.training and module.p > 0:
            _random.next_seed()


def _step(model, optimizer, images, labels, device, stats):
    """One SGD step on a batch; returns (loss, number of correct predictions)."""
    logits = model(tensor(images, device=device))
    loss = F.cross_entropy(logits, tensor(labels, device=device))
    optimizer.zero_grad()
    loss.backward()
    if stats is not None:
        stats.before_step()
    optimizer.step()
    if stats is not None:
        stats.after_step()
    predictions = _device.to_device(logits.array.argmax(axis=1), "cpu")
    return loss.item(), int((predictions == labels).sum())
