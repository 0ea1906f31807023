"""The training loop: AlexNet with the 2012 paper's recipe. SGD with momentum 0.9 and weight
decay 5e-4, learning rate 0.01 divided by 10 when the test error stops improving (or on a
step schedule), top-1 and top-5 evaluated every epoch.

Everything random is a function of ``--seed``: the init, the data order and augmentation
of each (epoch, batch), and the dropout masks (tinyalex's global generator, saved in every
checkpoint). So ``--resume`` continues exactly the loss curve of an uninterrupted run.

The way through, in the order :func:`train` calls it: the settings that need no --out are
checked (config.py, check_config); the run directory (run_dir.py, which owns every file in
--out, the checkpoint format, the lock and the write order that makes a kill at any instant
lose nothing) gives the checkpoint to resume or refuses an existing run; the settings are
settled against that checkpoint (config.py, settle: the one return to a file already left,
since a resumed run's settings are the checkpoint's); then the data (data/run_data.py), the model
and optimizer (:func:`build`, models.py), and the epochs (:class:`_Run`: a training pass of
:func:`one_step` per batch, evaluation.py, the writes through the run directory). With
several ranks the step is parallel/data_parallel.py's, and parallel/distributed.py carries
the collectives; with --model-parallel across ranks, each rank holds one column of the model
and trains with its column's replicas as its world (parallel/model_parallel.py).

The loop calls what a test may replace through :class:`Parts`, an explicit parameter of
:func:`train`, never through this module's globals.
"""
import dataclasses
import math
import os
import time

import numpy as np

from tinyalex import device as _device
from tinyalex import functional as F
from tinyalex import random as _random
from tinyalex.errors import TrainingError
from tinyalex.optim import SGD, lr_scheduler
from tinyalex.tensor import tensor
from tinyalex.train import compile_kernels, models
from tinyalex.train.config import DEFAULTS, ON_RESUME, check_config, flag, settle
from tinyalex.train.data.image_folder import UnreadableImageError
from tinyalex.train.evaluation import evaluate
from tinyalex.train.interrupt import DeferredInterrupt
from tinyalex.train.parallel import distributed as _dist
from tinyalex.train.parallel import model_parallel
from tinyalex.train.parallel.data_parallel import (BatchGradient, allreduce_sums, distributed_step,
                                                   optimizer_step, step_from_sums)
from tinyalex.train.progress import Progress
from tinyalex.train.data.run_data import Shard, load_datasets, skipped_images, transforms_for
from tinyalex.train.run_dir import RunDir
from tinyalex.train.step_log import StepLog, check_tensorboard, steps_every
from tinyalex.utils.data.loader import DataLoader, split_units


#: Test images per evaluation batch.
EVAL_BATCH = 256


def build(config, num_classes, columns=None):
    """Model, optimizer and schedule for a config (weights from config.seed); settings not
    given take DEFAULTS. columns: this rank's model_parallel.Columns, to keep one column
    of the model (built whole first, so its weights are the one-process run's)."""
    config = dataclasses.replace(config, **{k: v for k, v in DEFAULTS.items() if getattr(config, k) is None})
    _random.manual_seed(config.seed)
    model = models.create_model(config.model, num_classes, config.model_parallel)
    if columns is not None:
        model = model_parallel.column_model(model, columns)
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


def one_step(model, optimizer, images, labels, device, stats, gradient=None):
    """One SGD step on a batch; returns (mean loss, number of correct predictions).
    `gradient`: a BatchGradient when --micro-batch cuts the batch (the gradient is then its
    micro-batches' sum in the order K ranks sum them, parallel/data_parallel.py)."""
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


@dataclasses.dataclass(frozen=True)
class Parts:
    """The collaborators the loop calls: the defaults, or a test's stand-in for one
    (``Parts(step=my_step)``)."""
    load_datasets: object = load_datasets       # (config, log) -> (train set, test set)
    data_loader: object = DataLoader            # the DataLoader class
    step: object = one_step                     # one-process step, as one_step
    distributed_step: object = distributed_step  # a rank's step, as data_parallel.distributed_step
    evaluate: object = evaluate                 # (model, loader, device, ten_crop_size, reduce=)


def train(config, log=print, parts=Parts()):
    """Train as configured; returns the list of per-epoch metrics.

    In order: the settings are checked (config.py) before any data is read or --out is
    touched; the run directory (run_dir.py) gives the checkpoint to resume, or refuses an
    --out that holds a run unless config.overwrite; the settings are settled against it
    (those not given are the checkpoint's, changed ones follow ON_RESUME); --out is opened
    (writable, locked, cleaned); then the data, the model and the epochs (_Run)."""
    check_config(config)
    world = _dist.world()
    main = world is None or world.is_main
    if not main:
        log = _quiet                      # only rank 0 prints and writes
    run_dir = RunDir(config.out, writes=main)
    meta = run_dir.resume_meta(config.resume, config.overwrite)
    config, changes = settle(config, meta, log)
    if main and config.tensorboard is not None:
        check_tensorboard(config.tensorboard, config.out)
    if world is not None and config.device == "cuda":
        _dist.select_gpu(world)
    with run_dir.open(log):
        if meta is not None:
            run_dir.restore(meta, log)
            if config.epochs == meta["epoch"] and meta["batch"] == 0:
                log(f"nothing to do: the run in {config.out} has done its {config.epochs} epochs; "
                    "give a larger --epochs to train on")
                if "steps_per_epoch" in meta:  # a kill may have cut steps.jsonl or the events
                    StepLog.of_checkpoint(run_dir, meta, config.tensorboard).close()
                run_dir.write_curves(meta["history"], meta.get("steps_per_epoch"))
                return meta["history"]
        run = _Run(config, log, run_dir, world, parts)
        run.start(meta, changes)
        with DeferredInterrupt() as ctrl_c, run.steps:
            for epoch in range(run.start_epoch, config.epochs):
                run.train_epoch(epoch, ctrl_c)
                run.end_epoch(epoch)
        run_dir.write_curves(run.history, len(run.train_loader))
        if run.stats is not None:
            run_dir.write("grad_stats.png", run.stats.plot)
            if any("act_hist" in row for row in run.stats.samples):
                run_dir.write("grad_hist.png", run.stats.plot_histograms)
        if world is not None:
            world.barrier()               # no rank leaves while rank 0 still writes
    return run.history


def _quiet(*args, **kwargs):
    """The log of ranks other than 0: they print nothing."""


class _Run:
    """The state of one training run: data, model, optimizer, schedule, and where it is."""

    def __init__(self, config, log, run_dir, world=None, parts=Parts()):
        self.config, self.log, self.run_dir, self.world, self.parts = config, log, run_dir, world, parts
        self.main = world is None or world.is_main
        self.columns = model_parallel.split_world(world, config)
        if self.columns is not None:   # the data-parallel world: the ranks holding this column
            world = self.world = self.columns.replicas
            self.parts = parts = dataclasses.replace(parts, distributed_step=self.columns.agreeing(
                parts.distributed_step))
            # the columns exchange maps during backward, on the main thread: no allreduce beside it
            self.config = config = dataclasses.replace(config, overlap=False)
        rank, size = (0, 1) if world is None else (world.rank, world.size)
        compiler = compile_kernels.start(config.device, world)   # its workers start as the data loads
        self.train_set, self.test_set = parts.load_datasets(config, log)
        channels = models.MODELS[config.model][1][0]
        sample = self.train_set.get_batch(np.arange(1))[0]
        found = 1 if sample.ndim == 3 else sample.shape[-1]
        if found != channels:
            raise TrainingError(f"--model {config.model}: expected {channels}-channel images, got "
                                f"{found}-channel ones in {config.dataset}")
        self.model, self.optimizer, self.scheduler = build(config, len(self.train_set.classes), self.columns)
        if config.batch_size < size:
            raise TrainingError(f"--batch-size: expected at least one image per rank ({size} ranks), "
                                f"got {config.batch_size}")
        micro, share = config.micro_batch, -(-config.batch_size // size)
        if micro is not None and micro > share:   # a micro-batch never spans ranks or batches
            log(f"micro-batch {share}: each of the {size} ranks' share of a batch of {config.batch_size}"
                if size > 1 else f"micro-batch {share}: the whole batch")
            micro = share
        self.train_loader = parts.data_loader(self.train_set, config.batch_size, shuffle=True, seed=config.seed,
                                       transform=transforms_for(config.model, train=True),
                                       workers=config.workers, rank=rank, world_size=size,
                                       rank_unit=micro or 1)
        # evaluation: a shard of whole test batches each, so each batch is the one-process run's
        first, stop = split_units(len(self.test_set), EVAL_BATCH, size, rank)
        self.test_loader = parts.data_loader(Shard(self.test_set, first, stop), EVAL_BATCH, transform=transforms_for(
            config.model, train=False, ten_crop=config.ten_crop), workers=config.workers)
        compile_kernels.prepare(compiler, self.model, True, [micro or share, EVAL_BATCH],
                                len(self.train_set.classes))
        self.gradient = None         # one-process runs with whole-batch steps need no flat buffer
        if world is not None or (micro is not None and micro < config.batch_size):
            self.gradient = BatchGradient(self.model, micro)
        self.ten_crop_size = models.MODELS[config.model][1][1] if config.ten_crop and channels == 3 else None
        n = len(self.train_loader)  # steps.jsonl's interval is the run's first (kept on resume)
        self.meta = dict(config=dataclasses.asdict(config), classes=list(self.train_set.classes),
                         world_size=size * (1 if self.columns is None else self.columns.count),
                         steps_per_epoch=n, steps_every=steps_every(config.epochs * n))
        self.history, self.start_epoch, self.start_batch, self.partial = [], 0, 0, None
        self.stats, self.reported_skips = None, 0

    def start(self, meta, changes):
        """Continue from `meta` (the checkpoint's) and apply `changes`, or start afresh
        (deleting an old run's files first with --overwrite, now that the data loaded)."""
        if meta is not None:
            self._resume(changes)
        else:
            if self.config.overwrite:
                self.run_dir.delete_run()
            self.run_dir.write_metrics([])
        self.best = max((m["test_acc"] for m in self.history), default=-1.0)
        self.steps = StepLog(self.run_dir, self.meta["steps_every"], len(self.train_loader),
                             self.start_epoch * len(self.train_loader) + self.start_batch, self.history,
                             self.config.tensorboard)
        _dist.broadcast_parameters(self.world, self.model, self.optimizer)  # every rank: rank 0's
        if self.config.grad_stats and self.main:
            from tinyalex.train.stats import GradStats
            self.stats = GradStats(self.model, self.run_dir.paths["grad_stats.jsonl"],
                                   self.config.epochs * len(self.train_loader),
                                   start_step=self.start_epoch * len(self.train_loader) + self.start_batch,
                                   start_epoch=self.start_epoch, summed_loss=self.gradient is not None)

    def _resume(self, changes):
        model_state, optim_state, meta = (self.run_dir.load_checkpoint() if self.columns is None
                                          else self.columns.load_checkpoint(self.run_dir))
        if meta["classes"] != self.meta["classes"]:
            raise TrainingError(f"--resume: expected the checkpoint's classes {meta['classes']}, got "
                                f"{self.meta['classes']} in {self.config.dataset}")
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
        if self.scheduler is not None and meta.get("scheduler"):
            self.scheduler.load_state_dict(meta["scheduler"])
        _random.set_rng_state(meta["rng"])
        self.history, self.start_epoch = meta["history"], meta["epoch"]
        self.meta["steps_every"] = meta.get("steps_every", self.meta["steps_every"])
        self.start_batch, self.partial = meta["batch"], meta["partial"]
        self.log(f"resumed from {self.run_dir.paths['checkpoint.npz']} at epoch {self.start_epoch + 1}, "
                 f"batch {self.start_batch}")
        saved_size, size = meta.get("world_size", 1), self.meta["world_size"]
        if saved_size != size:  # nothing depends on the rank count (tinyalex.train.parallel.distributed)
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

    def _save(self, name, **position):
        """checkpoint.npz or best.npz of the run as it stands at `position` (epoch, batch,
        partial sums of an unfinished epoch)."""
        self.steps.sync()  # the rows this checkpoint counts are on disk before it
        state = dict(self.meta, history=self.history, rng=_random.get_rng_state(),
                     best=self.best, **position)
        if self.columns is None:
            self.run_dir.save_checkpoint(name, self.model, self.optimizer, self.scheduler, state)
        else:  # rank 0 writes the whole model, the other columns' rows streamed in
            self.columns.save_checkpoint(self.run_dir, name, self.model, self.optimizer, self.scheduler, state)

    def train_epoch(self, epoch, ctrl_c):
        """One pass over the training set (from start_batch when resuming mid-epoch), then a
        checkpoint, so that a failing evaluation costs no training."""
        config, path = self.config, self.run_dir.paths["checkpoint.npz"]
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
                    loss_value, correct, count, stop = self.parts.distributed_step(
                        self, images, labels, self.train_loader.rows(batch)[0], ctrl_c.requested)
                if count == 0:  # --skip-bad-images left out a whole batch
                    done = batch + 1
                    if stop:
                        raise _dist.mark_collective(KeyboardInterrupt())
                    continue
                if self.world is None:
                    try:
                        loss_value, correct = self.parts.step(self.model, self.optimizer, images, labels,
                                                    config.device, self.stats, self.gradient)
                    except OSError as exc:  # grad_stats.jsonl could not be written
                        raise self.run_dir.write_error("grad_stats.jsonl", exc) from exc
                if not math.isfinite(loss_value):  # with ranks: the global loss, so all stop here
                    raise _dist.mark_collective(TrainingError(
                        f"the loss became {loss_value} at epoch {epoch + 1}, batch {batch}: training "
                        f"stopped; the last good checkpoint ({path}) is intact. Try a lower --lr."))
                running["loss_sum"] += loss_value * count
                running["correct"] += correct
                running["seen"] += count
                done = batch + 1
                self.steps.record(epoch, batch, running["seen"], loss_value, correct / count,
                                  self.optimizer.param_groups[0]["lr"])
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
        finite = _weights_finite(self.model)
        if self.columns is not None:     # each column rank holds other weights: all stop, or none
            finite = not self.columns.any(not finite)
        if not finite:  # the epoch's last update overflowed
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
        is the best (RunDir.restore mends a kill between the two), then metrics.jsonl, which
        is rewritten from the checkpoint's history on every start."""
        running, path = self.running, self.run_dir.paths["checkpoint.npz"]
        try:
            reduce = {} if self.world is None else dict(reduce=allreduce_sums(self.world))
            test_loss, test_acc, test_top5 = self.parts.evaluate(self.model, self.test_loader, self.config.device,
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
        self.steps.end_epoch(metrics)
        if self.scheduler is not None:
            self.scheduler.step(test_acc) if self.config.lr_schedule == "plateau" else self.scheduler.step()
        improved = test_acc > self.best
        self.best = max(self.best, test_acc)
        if self.stats is not None:
            self.stats.end_epoch(epoch + 1)
        self._save("checkpoint.npz", epoch=epoch + 1, batch=0, partial=None)
        if improved:
            self._save("best.npz", epoch=epoch + 1, batch=0, partial=None)
        self.run_dir.write_metrics(self.history)
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
