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

The loop lives here: build (model, optimizer, schedule), train (the order of the checks,
the lock and the epochs), _Run (one run's state, an epoch, the writes after it) and _step.
Each part with a concern of its own lives beside it, and every name it defines is imported
here too, so ``tinyalex.train.load_checkpoint`` and the like keep working:

- tinyalex.train_config: TrainConfig, DEFAULTS, the setting checks, ON_RESUME
- tinyalex.train_data: --dataset, --limit-*, --skip-bad-images, transforms_for
- tinyalex.run_dir: the files in --out, OutLock, atomic run writes, repair_best
- tinyalex.data_parallel: the step with several ranks (_distributed_step)
- tinyalex.checkpoint (checkpoint files, atomic writes), tinyalex.evaluation,
  tinyalex.progress (the progress bar), tinyalex.interrupt (Ctrl-C between batches),
  tinyalex.viz.plot_curves, tinyalex.models.PRESETS, tinyalex.errors.TrainingError.

The loop looks up load_datasets, DataLoader, evaluate, _step and _distributed_step in this
module's globals, so a test that replaces ``tinyalex.train.<name>`` changes what it calls.
"""
import dataclasses
import math
import os
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
from .data import transforms as T  # noqa: F401
from .data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_fashion_mnist  # noqa: F401
from .data.image_folder import ImageFolder, UnreadableImageError  # noqa: F401
from .data.loader import DataLoader
from .data_parallel import (BatchGradient, _allreduce_sums, _distributed_step, _nccl,  # noqa: F401
                            _skip_dropout_seeds, optimizer_step, step_from_sums)
from .errors import TrainingError
from .evaluation import evaluate
from .interrupt import DeferredInterrupt
from .models import PRESETS  # noqa: F401
from .optim import SGD, lr_scheduler
from .progress import Progress
from .run_dir import (RUN_FILES, OutLock, _metrics_text, _NoLock, _position, _write_curves,  # noqa: F401
                      _write_error, _write_run_file, best_epoch, check_writable, checkpoint_to_resume,
                      refuse_existing_run, remove_orphans, repair_best, run_paths)
from .train_config import (DEFAULTS, LR_SCHEDULES, NUMBER_RULES, ON_RESUME, TrainConfig,  # noqa: F401
                           check_config, check_data_location, check_device, check_epochs_on_resume,
                           check_number, choose_defaults, flag, settings_on_resume)
from .train_data import (_drop_unreadable, _limit, _Shard, _Subset, load_datasets,  # noqa: F401
                         skipped_images, transforms_for)
from .viz import plot_curves  # noqa: F401


#: Test images per evaluation batch.
EVAL_BATCH = 256


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
        micro, share = config.micro_batch, -(-config.batch_size // size)
        if micro is not None and micro > share:   # a micro-batch never spans ranks or batches
            log(f"micro-batch {share}: each of the {size} ranks' share of a batch of {config.batch_size}"
                if size > 1 else f"micro-batch {share}: the whole batch")
            micro = share
        self.train_loader = DataLoader(self.train_set, config.batch_size, shuffle=True, seed=config.seed,
                                       transform=transforms_for(config.model, train=True),
                                       workers=config.workers, rank=rank, world_size=size,
                                       rank_unit=micro or 1)
        # evaluation: a shard of whole test batches each, so each batch is the one-process run's
        first, stop = _dist.split_units(len(self.test_set), EVAL_BATCH, size, rank)
        self.test_loader = DataLoader(_Shard(self.test_set, first, stop), EVAL_BATCH, transform=transforms_for(
            config.model, train=False, ten_crop=config.ten_crop), workers=config.workers)
        self.gradient = None         # one-process runs with whole-batch steps need no flat buffer
        if world is not None or (micro is not None and micro < config.batch_size):
            self.gradient = BatchGradient(self.model, micro)
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
                                                    config.device, self.stats, self.gradient)
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


def _step(model, optimizer, images, labels, device, stats, gradient=None):
    """One SGD step on a batch; returns (mean loss, number of correct predictions).
    `gradient`: a BatchGradient when --micro-batch cuts the batch (the gradient is then its
    micro-batches' sum in the order K ranks sum them, tinyalex.data_parallel)."""
    if gradient is not None:
        gradient.accumulate(images, labels, device)
        return step_from_sums(gradient.buffer, optimizer, stats)[:2]
    logits = model(tensor(images, device=device))
    loss = F.cross_entropy(logits, tensor(labels, device=device))
    optimizer.zero_grad()
    loss.backward()
    optimizer_step(optimizer, stats)
    predictions = _device.to_device(logits.array.argmax(axis=1), "cpu")
    return loss.item(), int((predictions == labels).sum())
