"""A training run's settings and the rules they obey: TrainConfig, the values a new run
takes when a setting is not given (DEFAULTS, the model's preset in tinyalex.train.models.PRESETS,
choose_defaults), the checks that refuse a setting before any data is read or --out is
touched (NUMBER_RULES, check_config, check_data_location, check_device), and what --resume
does with a changed setting (ON_RESUME, settings_on_resume, check_epochs_on_resume).
:func:`settle` applies them all, once, into the config the run uses.

They live apart from the loop because the CLI's argument parser (cli.py) checks the same
rules, and each rule and its error message are then in one place.
"""
import dataclasses
import math
import os

from tinyalex import device as _device
from tinyalex.train import models
from tinyalex.errors import TrainingError
from tinyalex.train.models import PRESETS


@dataclasses.dataclass
class TrainConfig:
    """A run's settings. None means "not given": a new run takes the model's preset (PRESETS)
    or DEFAULTS; a resumed run (--resume) takes the checkpoint's value (see ON_RESUME)."""
    model: str = None            # None: chosen for the device (see choose_defaults)
    dataset: str = None          # "fashion-mnist" or "imagefolder:PATH" (PATH/train and PATH/val)
    data_dir: str = None
    epochs: int = None           # None: the model's preset (PRESETS), and likewise below
    batch_size: int = None
    micro_batch: int = None      # None: each rank's whole share of a batch in one forward/backward
    overlap: bool = None         # ranks: allreduce gradient buckets during backward (False: after
                                 # it); the same bits either way, so --resume does not keep it
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
    tensorboard: str = None      # a directory for TensorBoard event files (step_log.py)
    skip_bad_images: bool = None  # leave undecodable images out (counted) instead of refusing
    workers: int = None          # worker processes that decode and augment (0: in-process)
    limit_train: int = None      # use only the first N training images (quick runs, tests)
    limit_test: int = None


#: The settings no preset decides (the paper's SGD recipe and the data set).
DEFAULTS = dict(dataset="fashion-mnist", momentum=0.9, weight_decay=5e-4, seed=0,
                ten_crop=False, grad_stats=False, skip_bad_images=False, workers=0, overlap=True)

LR_SCHEDULES = ("plateau", "step", "none")

#: setting -> (type, accepted?, what the error message says is expected). Checked before
#: anything is loaded, by train() and by the CLI's argument parser (tinyalex.train.cli).
NUMBER_RULES = {
    "epochs": (int, lambda v: v >= 1, "an integer >= 1"),
    "batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "micro_batch": (int, lambda v: v >= 1, "an integer >= 1"),
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
    "micro_batch": ("apply", "sums each batch's gradient over micro-batches of that size from "
                             "now on; the run then matches an unchanged one to float rounding"),
    "lr": ("apply", "sets every parameter group's lr now, as editing param_group['lr'] "
                    "does; the schedule divides it from there"),
    "momentum": ("apply", "sets the parameter groups' momentum; the buffers are kept"),
    "weight_decay": ("apply", "sets the parameter groups' weight decay"),
    "data_dir": ("apply", "reads the same data set from its new place"),
    "limit_test": ("apply", "evaluates on that many test images from now on"),
    "ten_crop": ("apply", "evaluates that way from now on"),
    "grad_stats": ("apply", "logs per-layer statistics from now on, or stops"),
    "tensorboard": ("apply", "writes the run's TensorBoard events there, its past steps "
                             "included (rebuilt from steps.jsonl and metrics.jsonl)"),
    "skip_bad_images": ("apply", "decides what undecodable images do from now on"),
    "device": ("apply", "moves the run; results then match a run that stayed only to "
                        "rounding"),
    "workers": ("apply", "loads data with that many processes; the batches are the same"),
}


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
    if config.micro_batch is not None and config.batch_size is not None \
            and config.micro_batch > config.batch_size:
        raise TrainingError(f"--micro-batch: expected at most --batch-size {config.batch_size}, "
                            f"got {config.micro_batch}")
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


def settings_on_resume(config, meta):
    """Settings not given (None) take the checkpoint's; a changed one is refused or applied
    as ON_RESUME says. Returns [(name, checkpoint's value, new value)] to apply.

    Every refused change is named in one error, not just the first; when the model differs,
    the error says first that --out holds another model's run, since that explains the rest."""
    saved, changes, refused = meta["config"], [], []
    for name, (rule, why) in ON_RESUME.items():
        old, new = saved.get(name), getattr(config, name)
        if new is None:
            if name != "device":  # the device is this machine's choice (choose_defaults)
                setattr(config, name, old)
        elif new != old:
            if rule == "refuse":
                refused.append(f"{flag(name)} cannot change ({why}), expected the checkpoint's "
                               f"{old!r}, got {new!r}")
            elif name != "device":  # logged once the device is chosen, in train()
                changes.append((name, old, new))
    if refused:
        head = "--resume: "
        if config.model is not None and config.model != saved.get("model"):
            head += (f"--out {config.out} holds a run of model {saved.get('model')!r} and the command "
                     f"asks for {config.model!r} (start it in another --out, or pass --overwrite to "
                     "replace that run); ")
        if len(refused) > 1:
            head += f"{len(refused)} settings cannot change: "
        raise TrainingError(head + "; ".join(refused))
    return changes


def check_epochs_on_resume(config, meta):
    """--epochs on resume may grow or shrink the run, but not below what is done."""
    done, started = meta["epoch"], meta["batch"] > 0
    minimum = done + 1 if started else done
    if config.epochs < minimum:
        raise TrainingError(f"--epochs: expected at least {minimum}, the epochs the checkpoint has "
                            f"{'started' if started else 'done'}, got {config.epochs}")


def settle(config, meta, log):
    """The run's settings, resolved and checked once: a new TrainConfig with every field set,
    and [(name, checkpoint's value, new value)] for what --resume changes (ON_RESUME).

    `meta`: the checkpoint's, when resuming (RunDir.resume_meta), else None. Its settings
    fill the ones not given, which is why this comes after the run directory answered.
    check_config has refused what needs no --out before that."""
    config = dataclasses.replace(config)
    changes = [] if meta is None else settings_on_resume(config, meta)
    config, reasons = choose_defaults(config)
    for reason in reasons:
        log("chose " + reason)
    if meta is not None:
        check_epochs_on_resume(config, meta)
        if meta["config"].get("device") not in (None, config.device):
            changes.append(("device", meta["config"]["device"], config.device))
    return config, changes
