"""Training AlexNet with the 2012 paper's recipe: SGD with momentum 0.9 and weight decay
5e-4, learning rate 0.01 divided by 10 when the test error stops improving (or on a step
schedule), top-1 and top-5 evaluated every epoch.

Everything random is a function of ``--seed``: the init, the data order and augmentation
of each (epoch, batch), and the dropout masks (tinyalex's global generator, saved in every
checkpoint). So ``--resume`` continues exactly the loss curve of an uninterrupted run.

Files in ``--out``: ``checkpoint.npz`` (written atomically every epoch and on Ctrl-C),
``best.npz`` (the best test accuracy so far), ``metrics.jsonl`` (one JSON object per
epoch), ``curves.png`` (loss and accuracy), and ``grad_stats.jsonl`` with ``--grad-stats``.
"""
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from . import device as _device
from . import functional as F
from . import models
from . import random as _random
from .autograd import no_grad, tensor
from .data import transforms as T
from .data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_fashion_mnist
from .data.image_folder import ImageFolder
from .data.loader import DataLoader
from .optim import SGD, lr_scheduler

CHECKPOINT_FORMAT = 1


class TrainingError(Exception):
    """A problem the user can fix (bad data, unwritable output, divergence); the CLI prints
    it without a traceback."""


@dataclasses.dataclass
class TrainConfig:
    model: str = None            # None: chosen for the device (see choose_defaults)
    dataset: str = "fashion-mnist"   # or "imagefolder:PATH" (PATH/train and PATH/val)
    data_dir: str = None
    epochs: int = None           # None: the model's preset (PRESETS), and likewise below
    batch_size: int = None
    lr: float = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = None      # "plateau" (the paper's), "step", or "none"
    lr_step: int = None          # epochs between divisions with --lr-schedule step
    device: str = None           # None: cuda when available, else cpu
    out: str = "runs/tinyalex"
    seed: int = 0
    resume: bool = False
    ten_crop: bool = False       # RGB models: average the paper's 10 crops at test time
    grad_stats: bool = False
    limit_train: int = None      # use only the first N training images (quick runs, tests)
    limit_test: int = None


_PAPER = dict(batch_size=128, lr=0.01, lr_schedule="plateau", lr_step=30)
#: model -> the settings it trains with unless told otherwise. The paper's recipe, except
#: cpu-alexnet, which must reach 0.88 on Fashion-MNIST within minutes on 2 cores: more,
#: smaller steps (batch 64, lr 0.02) and one epoch at lr/10 at the end.
PRESETS = {
    "cpu-alexnet": dict(epochs=3, batch_size=64, lr=0.02, lr_schedule="step", lr_step=2),
    "fashion-alexnet": dict(_PAPER, epochs=10),
    "alexnet2012": dict(_PAPER, epochs=90),
    "torchvision-alexnet": dict(_PAPER, epochs=90),
}


def choose_defaults(config):
    """Fill in device, model and epochs; returns (config, [reasons to print])."""
    reasons = []
    if config.device is None:
        config.device = _device.default_device()
        reasons.append(f"device {config.device}: " + (
            "a CUDA GPU is available" if config.device == "cuda" else "no CUDA GPU found"))
    config.device = _device.parse_device(config.device)
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
        raise TrainingError(f"--model: expected one of {sorted(models.MODELS)}, got {config.model!r}")
    preset = {k: v for k, v in PRESETS[config.model].items() if getattr(config, k) is None}
    for key, value in preset.items():
        setattr(config, key, value)
    if preset:
        reasons.append(f"the {config.model} preset: " + ", ".join(f"{k} {v}" for k, v in preset.items()))
    return config, reasons


# --- data --------------------------------------------------------------------------------
def load_datasets(config):
    """(train, test) datasets for config.dataset, limited if asked."""
    if config.dataset == "fashion-mnist":
        try:
            train, test = (load_fashion_mnist(split, config.data_dir) for split in ("train", "test"))
        except (FileNotFoundError, ValueError) as exc:  # missing or corrupt files: say which
            raise TrainingError(str(exc)) from exc
    elif config.dataset.startswith("imagefolder:"):
        root = config.dataset.split(":", 1)[1]
        for split in ("train", "val"):
            if not os.path.isdir(os.path.join(root, split)):
                raise TrainingError(f"--dataset imagefolder:{root}: expected class folders under "
                                    f"{os.path.join(root, split)}")
        try:
            train, test = (ImageFolder(os.path.join(root, split)) for split in ("train", "val"))
        except ValueError as exc:
            raise TrainingError(str(exc)) from exc
    else:
        raise TrainingError(f"--dataset: expected 'fashion-mnist' or 'imagefolder:PATH', got {config.dataset!r}")
    return _limit(train, config.limit_train), _limit(test, config.limit_test)


class _Subset:
    def __init__(self, dataset, n):
        self.dataset, self.n, self.classes = dataset, n, dataset.classes

    def __len__(self):
        return self.n

    def get_batch(self, indices):
        return self.dataset.get_batch(indices)


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


# --- checkpoints -------------------------------------------------------------------------
def save_checkpoint(path, model, optimizer, scheduler, meta):
    """Write model, optimizer and run state to `path` atomically: a temporary file in the
    same directory, flushed to disk, then renamed over the old one. A crash leaves either
    the old checkpoint or the new one, never half of one."""
    arrays = {f"model/{k}": _device.to_device(v.array, "cpu") for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for i, state in opt_state["state"].items():
        arrays[f"optim/{i}/momentum_buffer"] = state["momentum_buffer"]
    meta = dict(meta, format=CHECKPOINT_FORMAT, param_groups=opt_state["param_groups"],
                scheduler=scheduler.state_dict() if scheduler else None)
    arrays["meta"] = np.array(json.dumps(meta))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path):
    """(model state, optimizer state, meta) from a checkpoint; a clear error if the file is
    missing, truncated or not a tinyalex checkpoint."""
    if not os.path.exists(path):
        raise TrainingError(f"checkpoint: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:
        raise TrainingError(f"checkpoint: {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"checkpoint: {path}: expected format {CHECKPOINT_FORMAT}, got {meta.get('format')}")
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim_state = {"param_groups": meta["param_groups"],
                   "state": {int(k.split("/")[1]): {"momentum_buffer": v}
                             for k, v in arrays.items() if k.startswith("optim/")}}
    return model_state, optim_state, meta


# --- evaluation --------------------------------------------------------------------------
def evaluate(model, loader, device, ten_crop_size=None):
    """(mean loss, top-1 accuracy, top-5 accuracy) over a loader, in eval mode. With
    ten_crop_size, each image's logits average its 10 crops (paper section 4.1)."""
    model.eval()
    loss_sum, top1, top5, seen = 0.0, 0, 0, 0
    with no_grad():
        for images, labels in loader:
            if ten_crop_size:
                crops = T.TenCrop(ten_crop_size)(images)
                logits = T.average_ten_crops(_device.to_device(
                    model(tensor(crops, device=device)).array, "cpu"))
                logits_t = tensor(logits)
            else:
                logits_t = model(tensor(images, device=device))
                logits = _device.to_device(logits_t.array, "cpu")
            loss = F.cross_entropy(logits_t, tensor(labels, device=logits_t.device), reduction="sum")
            loss_sum += loss.item()
            ranked = np.argsort(-logits, axis=1)[:, :5]
            top1 += int((ranked[:, 0] == labels).sum())
            top5 += int((ranked == labels[:, None]).any(axis=1).sum())
            seen += len(labels)
    model.train()
    return loss_sum / seen, top1 / seen, top5 / seen


# --- the training loop -------------------------------------------------------------------
class Progress:
    """One status line: epoch, batch, loss, accuracy and images/s; redrawn in place on a
    terminal, printed every 20% otherwise (logs stay short)."""

    def __init__(self, epoch, epochs, total, stream=None):
        self.epoch, self.epochs, self.total = epoch, epochs, total
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()
        self.last_draw, self.last_fifth = 0.0, -1

    def update(self, batch, loss, acc, images_per_sec, final=False):
        now = time.monotonic()
        fifth = 5 * batch // max(self.total, 1)
        if self.tty and (final or now - self.last_draw > 0.25):
            width = 24
            filled = int(width * batch / max(self.total, 1))
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\repoch {self.epoch + 1}/{self.epochs} [{bar}] {batch}/{self.total} "
                              f"loss {loss:.4f} acc {acc:.4f} {images_per_sec:.0f} img/s")
            self.stream.write("\n" if final else "")
            self.stream.flush()
            self.last_draw = now
        elif not self.tty and (final or fifth > self.last_fifth):
            self.stream.write(f"epoch {self.epoch + 1}/{self.epochs} {batch}/{self.total} "
                              f"loss {loss:.4f} acc {acc:.4f} {images_per_sec:.0f} img/s\n")
            self.stream.flush()
            self.last_fifth = fifth


class DeferredInterrupt:
    """Turn Ctrl-C into a request honoured between batches, so a checkpoint never holds a
    half-applied SGD step; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def raise_if_requested(self):
        if self.requested:
            raise KeyboardInterrupt


def check_writable(out):
    """Refuse an --out directory that cannot be created or written, before any training."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise TrainingError(f"--out {out}: cannot write there ({exc.strerror or exc})") from exc


def build(config, num_classes):
    """Model, optimizer and schedule for a config (weights from config.seed)."""
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
    """Train as configured; returns the list of per-epoch metrics."""
    config, reasons = choose_defaults(config)
    for reason in reasons:
        log("chose " + reason)
    check_writable(config.out)
    run = _Run(config, log)
    with DeferredInterrupt() as ctrl_c:
        for epoch in range(run.start_epoch, config.epochs):
            run.train_epoch(epoch, ctrl_c)
            run.end_epoch(epoch)
    plot_curves(run.history, run.paths["curves.png"])
    if run.stats is not None:
        run.stats.plot(os.path.join(config.out, "grad_stats.png"))
    return run.history


class _Run:
    """The state of one training run: data, model, optimizer, schedule, and where it is."""

    def __init__(self, config, log):
        self.config, self.log = config, log
        self.paths = {name: os.path.join(config.out, name) for name in
                      ("checkpoint.npz", "best.npz", "metrics.jsonl", "curves.png", "grad_stats.jsonl")}
        train_set, test_set = load_datasets(config)
        channels = models.MODELS[config.model][1][0]
        sample = train_set.get_batch(np.arange(1))[0]
        found = 1 if sample.ndim == 3 else sample.shape[-1]
        if found != channels:
            raise TrainingError(f"--model {config.model} expects {channels}-channel images; "
                                f"{config.dataset} has {found}")
        self.model, self.optimizer, self.scheduler = build(config, len(train_set.classes))

        self.history, self.start_epoch, self.start_batch, self.partial = [], 0, 0, None
        if config.resume:
            self._resume()
            log(f"resumed from {self.paths['checkpoint.npz']} at epoch {self.start_epoch + 1}, "
                f"batch {self.start_batch}")
        _rewrite_metrics(self.paths["metrics.jsonl"], self.history)

        self.stats = None
        if config.grad_stats:
            from .stats import GradStats
            self.stats = GradStats(self.model, self.paths["grad_stats.jsonl"], append=config.resume)
        self.train_loader = DataLoader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                                       transform=transforms_for(config.model, train=True))
        self.test_loader = DataLoader(test_set, 256, transform=transforms_for(
            config.model, train=False, ten_crop=config.ten_crop))
        self.ten_crop_size = models.MODELS[config.model][1][1] if config.ten_crop and channels == 3 else None
        self.meta = dict(config=dataclasses.asdict(config), classes=list(train_set.classes))
        self.best = max((m["test_acc"] for m in self.history), default=-1.0)

    def _resume(self):
        model_state, optim_state, meta = load_checkpoint(self.paths["checkpoint.npz"])
        saved = meta["config"]
        for key in ("model", "dataset", "batch_size", "seed", "limit_train"):
            if saved[key] != getattr(self.config, key):
                raise TrainingError(f"--resume: the checkpoint was trained with {key}={saved[key]!r}, "
                                    f"but this run asks for {getattr(self.config, key)!r}")
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
        if self.scheduler is not None and meta.get("scheduler"):
            self.scheduler.load_state_dict(meta["scheduler"])
        _random.set_rng_state(meta["rng"])
        self.history, self.start_epoch = meta["history"], meta["epoch"]
        self.start_batch, self.partial = meta["batch"], meta["partial"]

    def _save(self, path, **position):
        save_checkpoint(path, self.model, self.optimizer, self.scheduler,
                        dict(self.meta, history=self.history, rng=_random.get_rng_state(),
                             best=self.best, **position))

    def train_epoch(self, epoch, ctrl_c):
        """One pass over the training set (from start_batch when resuming mid-epoch)."""
        config, path = self.config, self.paths["checkpoint.npz"]
        self.train_loader.set_epoch(epoch, self.start_batch)
        running = self.partial or dict(loss_sum=0.0, correct=0, seen=0, seconds=0.0)
        progress = Progress(epoch, config.epochs, len(self.train_loader))
        done = self.start_batch  # batches whose updates are in the weights and in `running`
        tick = time.perf_counter()
        try:
            for batch, (images, labels) in enumerate(self.train_loader, start=self.start_batch):
                ctrl_c.raise_if_requested()
                loss_value, correct = _step(self.model, self.optimizer, images, labels,
                                            config.device, self.stats)
                if not math.isfinite(loss_value):
                    raise TrainingError(
                        f"the loss became {loss_value} at epoch {epoch + 1}, batch {batch}: training "
                        f"stopped; the last good checkpoint ({path}) is intact. Try a lower --lr.")
                running["loss_sum"] += loss_value * len(labels)
                running["correct"] += correct
                running["seen"] += len(labels)
                done = batch + 1
                elapsed = running["seconds"] + time.perf_counter() - tick
                progress.update(done, running["loss_sum"] / running["seen"],
                                running["correct"] / running["seen"], running["seen"] / max(elapsed, 1e-9))
        except KeyboardInterrupt:
            running["seconds"] += time.perf_counter() - tick
            self._save(path, epoch=epoch, batch=done, partial=running)
            self.log(f"\ninterrupted: saved {path} (epoch {epoch + 1}, batch {done}); "
                     "continue with --resume")
            raise
        running["seconds"] += time.perf_counter() - tick
        self.start_batch, self.partial, self.running = 0, None, running

    def end_epoch(self, epoch):
        """Evaluate, log metrics, step the schedule, write the checkpoints."""
        running, path = self.running, self.paths["checkpoint.npz"]
        test_loss, test_acc, test_top5 = evaluate(self.model, self.test_loader, self.config.device,
                                                  self.ten_crop_size)
        if not math.isfinite(test_loss):  # the last update overflowed: keep the last good checkpoint
            raise TrainingError(
                f"the test loss became {test_loss} after epoch {epoch + 1}: training stopped; the last "
                f"good checkpoint ({path}) is intact. Try a lower --lr.")
        metrics = dict(epoch=epoch + 1, train_loss=running["loss_sum"] / running["seen"],
                       train_acc=running["correct"] / running["seen"], test_loss=test_loss,
                       test_acc=test_acc, test_top5=test_top5,
                       images_per_sec=running["seen"] / running["seconds"],
                       seconds=running["seconds"], lr=self.optimizer.param_groups[0]["lr"])
        self.history.append(metrics)
        with open(self.paths["metrics.jsonl"], "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self.log(f"epoch {epoch + 1}/{self.config.epochs}: train loss {metrics['train_loss']:.4f} "
                 f"acc {metrics['train_acc']:.4f} | test loss {test_loss:.4f} acc {test_acc:.4f} "
                 f"top-5 {test_top5:.4f} | {metrics['images_per_sec']:.0f} img/s, {metrics['seconds']:.0f} s")
        if self.scheduler is not None:
            self.scheduler.step(test_acc) if self.config.lr_schedule == "plateau" else self.scheduler.step()
        improved = test_acc > self.best
        self.best = max(self.best, test_acc)
        self._save(path, epoch=epoch + 1, batch=0, partial=None)
        if improved:
            self._save(self.paths["best.npz"], epoch=epoch + 1, batch=0, partial=None)
        if self.stats is not None:
            self.stats.end_epoch(epoch + 1)


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


def _rewrite_metrics(path, history):
    """metrics.jsonl holds exactly the epochs done (a resumed run drops any later lines)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in history)
    os.replace(tmp, path)


def plot_curves(history, path):
    """Loss and accuracy per epoch, train and test, as a PNG."""
    if not history:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):
        ax_loss.plot(epochs, [m[f"{split}_loss"] for m in history], marker="o", label=split)
        ax_acc.plot(epochs, [m[f"{split}_acc"] for m in history], marker="o", label=split)
    ax_acc.plot(epochs, [m["test_top5"] for m in history], marker=".", linestyle=":", label="test top-5")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
