"""The ``tinyalex`` command: train, eval, predict, export, show, gradcheck, exercise, graph,
bench.

A mistake the user can fix (a bad option, a missing file, a full disk, no GPU) ends the
command with exit code 2 and one line on stderr, ``tinyalex COMMAND: error: ...``, saying
what was expected and what was given. Every option is checked before any data is read. A
bug in tinyalex itself still shows its traceback.
"""
import argparse
import dataclasses
import importlib
import os
import re
import sys
import textwrap

import numpy as np

from tinyalex import __version__


DEFAULT_CHECKPOINT = "runs/tinyalex/best.npz"


def _train(args, parts):
    from tinyalex.train.config import TrainConfig
    from tinyalex.train.loop import Parts, train
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    train(config, parts=parts or Parts())
    return 0


def _prepare(args):
    from tinyalex.train.data.shards import prepare
    from tinyalex.errors import TrainingError
    try:
        prepare(args.source, args.out, size=args.size, shard_images=args.shard_images,
                workers=args.workers or 0, skip_bad=args.skip_bad_images,
                log=lambda line: print(line, file=sys.stderr))
    except (OSError, ValueError) as exc:
        raise TrainingError(" ".join(str(exc).split())) from exc
    print(f"wrote {args.out}; train on it with --dataset shards:{args.out}")
    return 0


def _load_for_inference(checkpoint, device):
    from tinyalex.train import models
    from tinyalex.train.checkpoint import load_checkpoint
    model_state, _, meta = load_checkpoint(checkpoint)
    name = meta["config"]["model"]
    model = models.create_model(name, len(meta["classes"]), meta["config"].get("model_parallel"))
    model.load_state_dict(model_state)
    model.to(device).eval()
    return model, meta


def _load_weights_for_inference(args, labels, device):
    """--weights FILE --model NAME: the model with the state dict's number of classes, and
    the class names of --labels (else 'class 0', 'class 1', ...)."""
    import zipfile

    from tinyalex.train import models
    from tinyalex.errors import TrainingError
    model = models.create_model(args.model, 1000)                   # ImageNet's, as a rule
    last = [k for k in model.state_dict() if k.endswith(".weight")][-1]   # the output layer's
    try:
        state = models.read_weights(args.weights)
        if not isinstance(state, dict) or last not in state or len(state[last].shape) != 2:
            raise ValueError(f"expected a state dict of {args.model} with {last!r} (classes x "
                             f"features), got a {type(state).__name__} without it")
        num_classes = state[last].shape[0]
        if num_classes != 1000:
            model = models.create_model(args.model, num_classes)
        model.load_state_dict(state)
    except (OSError, ValueError, KeyError, TypeError, ImportError, EOFError, zipfile.BadZipFile) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TrainingError(f"--weights {args.weights}: cannot load it ({reason}); expected a "
                            f"state dict of {args.model} in a .pth, .pt, .safetensors or .npz file") from exc
    classes = labels if labels is not None else [f"class {i}" for i in range(num_classes)]
    if len(classes) != num_classes:
        raise TrainingError(f"--labels: expected one name per class of --weights, {num_classes} "
                            f"lines, got {len(classes)}")
    model.to(device).eval()
    return model, {"classes": classes, "config": {"model": args.model}}


def _read_labels(path):
    """--labels FILE: one class name per line (blank lines left out)."""
    from tinyalex.errors import TrainingError
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TrainingError(f"--labels {path}: cannot read it, expected a text file of class "
                            f"names, one a line, got {reason}") from exc


def _device_for(args):
    """The --device asked for (refused if it cannot be used), or this machine's default."""
    from tinyalex import device as _device
    from tinyalex.train.config import check_device
    return check_device(args.device) if args.device else _device.default_device()


def _eval(args):
    from tinyalex.train import models
    from tinyalex.train.data.image_folder import UnreadableImageError
    from tinyalex.utils.data.loader import DataLoader
    from tinyalex.train.config import TrainConfig, check_data_location
    from tinyalex.errors import TrainingError
    from tinyalex.train.evaluation import evaluate
    from tinyalex.train.data.run_data import load_datasets, transforms_for
    from tinyalex.train import compile_kernels
    device = _device_for(args)
    check_data_location(args.dataset, args.data_dir)
    compiler = compile_kernels.start(device)          # its workers start as the data loads
    model, meta = _load_for_inference(args.checkpoint, device)
    saved = meta["config"]
    config = TrainConfig(model=saved["model"], dataset=args.dataset or saved["dataset"],
                         data_dir=args.data_dir or saved["data_dir"], limit_test=args.limit_test,
                         skip_bad_images=args.skip_bad_images)
    _, test_set = load_datasets(config, log=lambda line: print(line, file=sys.stderr))
    size = models.MODELS[config.model][1]
    ten_crop = args.ten_crop and size[0] == 3
    loader = DataLoader(test_set, 256, transform=transforms_for(config.model, False, ten_crop=ten_crop))
    compile_kernels.prepare(compiler, model, False, [256], len(meta["classes"]))
    try:
        loss, top1, top5 = evaluate(model, loader, device, size[1] if ten_crop else None)
    except UnreadableImageError as exc:  # a file that passed the up-front check
        raise TrainingError(f"{exc}; remove the file or pass --skip-bad-images") from exc
    print(f"{args.checkpoint}: {len(test_set)} test images, loss {loss:.4f}, "
          f"top-1 accuracy {top1:.4f}, top-5 accuracy {top5:.4f}")
    return 0


def _open_images(paths, channels=None, command="predict"):
    """Open every image (channels None: read the headers only, a fast check before the model
    loads; else decode each to uint8 at the model's input size). One error lists the files
    that cannot be read, naming the first with its reason (after `command`)."""
    from PIL import Image

    from tinyalex.errors import TrainingError
    arrays, bad = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                if channels is not None:
                    image = image.convert("L" if channels == 1 else "RGB")
                    # Fashion-MNIST models read 28 px images (then resize as in training);
                    # RGB models read 256 px images and center-crop, like the validation set
                    side = 28 if channels == 1 else 256
                    arrays.append(np.asarray(image.resize((side, side), Image.BILINEAR)))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            bad.append((path, reason))
    if bad:
        more = (f"; {len(bad) - 1} more cannot be read either: " + ", ".join(p for p, _ in bad[1:4])
                + (" ..." if len(bad) > 4 else "")) if len(bad) > 1 else ""
        raise TrainingError(f"{command}: {bad[0][0]}: cannot read the image, expected an image file, "
                            f"got {bad[0][1]}{more}")
    return arrays


def _predict(args):
    from tinyalex import device as _device
    from tinyalex.train import models
    from tinyalex.autograd import no_grad
    from tinyalex.tensor import tensor
    from tinyalex.train.data.run_data import transforms_for
    from tinyalex.errors import TrainingError
    if args.weights is not None and args.checkpoint is not None:
        raise TrainingError("--weights: expected either --weights or --checkpoint, got both")
    if (args.weights is None) != (args.model is None):
        raise TrainingError("--model: expected --model and --weights together (a checkpoint "
                            f"names its model), got only {'--model' if args.weights is None else '--weights'}")
    from tinyalex.train import compile_kernels
    device = _device_for(args)
    _open_images(args.images)
    compiler = compile_kernels.start(device)          # its workers start as the model loads
    labels = None if args.labels is None else _read_labels(args.labels)
    if args.weights is not None:
        model, meta = _load_weights_for_inference(args, labels, device)
    else:
        model, meta = _load_for_inference(args.checkpoint or DEFAULT_CHECKPOINT, device)
        if labels is not None:
            if len(labels) != len(meta["classes"]):
                raise TrainingError(f"--labels: expected one name per class of the checkpoint, "
                                    f"{len(meta['classes'])} lines, got {len(labels)}")
            meta = {**meta, "classes": labels}
    compile_kernels.prepare(compiler, model, False, [1])
    channels = models.MODELS[meta["config"]["model"]][1][0]
    transform = transforms_for(meta["config"]["model"], train=False)
    for path, array in zip(args.images, _open_images(args.images, channels)):
        x = transform(array[None], np.random.default_rng(0))
        with no_grad():
            logits = _device.to_device(model(tensor(x, device=device)).array, "cpu")[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:min(5, len(probs))]
        print(f"{path}: " + ", ".join(f"{meta['classes'][i]} {probs[i]:.3f}" for i in top))
    return 0


def _export(args):
    """The checkpoint's model as ONNX (tinyalex.onnx.export), batch axis dynamic, traced on
    --batch inputs of the model's size."""
    from tinyalex import onnx as tinyalex_onnx
    from tinyalex.errors import TrainingError
    from tinyalex.tensor import tensor
    from tinyalex.train import models
    try:                                             # refused before the checkpoint is read
        importlib.import_module("onnx")
    except ImportError as exc:
        raise TrainingError(f"--onnx needs the onnx package, expected it installed (pip install "
                            f"'tinyalex[onnx]'), got {type(exc).__name__}: {exc}") from exc
    model, meta = _load_for_inference(args.checkpoint, "cpu")
    name = meta["config"]["model"]
    shape = (args.batch, *models.MODELS[name][1])
    x = tensor(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    try:
        tinyalex_onnx.export(model, x, args.onnx, input_names=["input"], output_names=["logits"],
                             dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except OSError as exc:
        raise TrainingError(f"--onnx {args.onnx}: cannot write the ONNX file, expected a writable "
                            f"path, got [Errno {exc.errno}] {exc.strerror or exc}") from exc
    print(f"wrote {args.onnx}: {name}, input 'input' (batch, {', '.join(map(str, shape[1:]))}) float32,"
          f" output 'logits' (batch, {len(meta['classes'])}), ONNX opset {tinyalex_onnx.OPSET}")
    return 0


def _write_png(path, write):
    """Write a PNG atomically; an OSError becomes one line naming --out."""
    from tinyalex.errors import TrainingError
    from tinyalex.train.checkpoint import atomic_write
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise TrainingError(f"--out {path}: cannot write the PNG, expected a writable path, got "
                            f"[Errno {exc.errno}] {exc.strerror or exc}") from exc
    print(f"wrote {path}")


def _show(args):
    from tinyalex.train import models, show
    from tinyalex.train.data.run_data import transforms_for
    if args.picture == "activations":
        _open_images([args.image], command="activations")  # before the model loads
    model, meta = _load_for_inference(args.checkpoint, "cpu")
    out = args.out or os.path.join(os.path.dirname(args.checkpoint), f"{args.picture}.png")
    if args.picture == "filters":
        name, conv = show.first_conv(model)
        weights = conv.weight.array
        kind = ("colour tiles (input channels as R, G, B)" if weights.shape[1] == 3 else
                "grey tiles" if weights.shape[1] == 1 else "grey tiles of the mean over the input channels")
        image = show.filter_grid(weights)
        _write_png(out, lambda f: f.write(show.png_bytes(image)))
        print(f"{name}: the first conv layer's weights, {'x'.join(map(str, weights.shape))} "
              f"(filters x input channels x height x width), as {weights.shape[0]} {kind}, each "
              f"normalised to its own min..max, scaled {show.filter_scale(weights.shape[2:])}x; "
              f"a {image.shape[1]}x{image.shape[0]} px image")
        return 0
    channels = models.MODELS[meta["config"]["model"]][1][0]
    array = _open_images([args.image], channels, command="activations")[0]
    x = transforms_for(meta["config"]["model"], train=False)(array[None], np.random.default_rng(0))
    logits, layers = show.activation_maps(model, x)
    logits = logits[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    best = int(probs.argmax())
    title = (f"{os.path.basename(args.image)} through {args.checkpoint} "
             f"({meta['config']['model']}): {meta['classes'][best]} {probs[best]:.3f}")
    _write_png(out, lambda f: show.plot_activations(x[0], layers, title, f))
    for name, after_relu, maps in layers:
        print(f"{name}: {'x'.join(map(str, maps.shape))} maps {'after ReLU' if after_relu else '(no ReLU)'}"
              f", {min(len(maps), show.MAX_MAPS)} shown")
    return 0


def _gradcheck(args):
    from tinyalex.train import opcheck
    if args.kernels == "cupy":
        from tinyalex.train.config import check_device
        check_device("cuda", option="--kernels cupy")
    results = opcheck.run_checks(args.kernels, args.dtype, [args.op] if args.op else None)
    print(f"tinyalex gradcheck: kernels {args.kernels}, {args.dtype}")
    print(opcheck.format_table(results))
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _exercise(args):
    from tinyalex.train import exercise
    return exercise.check(args.file, train=not args.no_train, train_images=args.train_images,
                          test_images=args.test_images, data_dir=args.data_dir)


def _graph(args):
    from tinyalex import functional as F
    from tinyalex.train import models
    from tinyalex import viz
    from tinyalex.tensor import tensor
    from tinyalex.errors import TrainingError
    model = models.create_model(args.model, num_classes=10)
    x = np.random.default_rng(0).standard_normal((args.batch_size, *models.MODELS[args.model][1]))
    loss = F.cross_entropy(model(tensor(x.astype(np.float32))), tensor(np.arange(args.batch_size) % 10))
    dot = viz.graph(loss, params=dict(model.named_parameters()))
    if args.out:
        try:
            with open(args.out, "w") as f:
                f.write(dot)
        except OSError as exc:
            raise TrainingError(f"--out {args.out}: cannot write the DOT file, expected a writable "
                                f"path, got [Errno {exc.errno}] {exc.strerror or exc}") from exc
    else:
        print(dot, end="")
    if args.png:
        try:
            viz.render(dot, args.png)
        except RuntimeError as exc:  # no Graphviz: the DOT text is still there
            kept = f"the DOT text is in {args.out}" if args.out else "pass --out FILE to keep the DOT text"
            raise TrainingError(f"--png {args.png}: Graphviz's `dot` program was not found (install it"
                                f" with `apt-get install graphviz`); {kept}") from exc
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def _bench(args):
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above tinyalex/train/
    script = os.path.join(checkout, "benchmarks",
                          "bench_cpu.py" if args.device == "cpu" else "bench_cuda.py")
    if not os.path.exists(script):
        from tinyalex.errors import TrainingError
        raise TrainingError(f"{script} not found, expected a source checkout (benchmarks/ is not "
                            "part of the wheel)")
    import runpy
    if args.device == "cpu":   # compiled here, so that no timing sees a compilation
        from tinyalex.train import compile_kernels
        compile_kernels.prepare_ops(compile_kernels.BENCH_CPU_OPS)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    sys.argv = [script] + rest
    runpy.run_path(script, run_name="__main__")
    return 0


# --- the parser ---------------------------------------------------------------------------
class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps option help without splitting names at hyphens ("cpu-alexnet 3" stays whole);
    the description and epilog keep the lines they were given."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """argparse, with every error as one line: ``PROG: error: MESSAGE`` (no usage block)."""

    def error(self, message):
        message = " ".join(message.replace("argument ", "").split())
        choice = re.fullmatch(r"(.*): invalid choice: (.*) \(choose from (.*)\)", message)
        if choice:
            what, got, names = choice.groups()
            message = f"{what}: expected one of {names.replace(chr(39), '')}, got {got}"
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(name):
    """An argparse type for the numeric setting `name`, checked against train_config.NUMBER_RULES."""
    from tinyalex.train.config import NUMBER_RULES, check_number
    kind, _, expected = NUMBER_RULES[name]

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if check_number(name, value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _one_of(names):
    """An argparse type accepting one of `names` (says which when it does not)."""
    names = list(names)

    def parse(text):
        if text not in names:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(names)}, got {text!r}")
        return text
    return parse


def _kernel_set(text):
    """--kernels: a built-in set's name, or a .py file of your own kernels, checked against
    the contract now (so a mistake is one line before any op runs)."""
    if text.endswith(".py"):
        from tinyalex.kernels import use_kernels
        try:
            with use_kernels(text):
                pass
        except (ValueError, OSError, SyntaxError, ImportError) as exc:
            raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from exc
        return text
    return _one_of(("numpy", "numba", "cupy"))(text)


def _per_model(key):
    """'cpu-alexnet 3, fashion-alexnet 10, ...': a preset value for each model."""
    from tinyalex.train.models import PRESETS
    return ", ".join(f"{model} {preset.get(key, 'none')}" for model, preset in PRESETS.items())


def _resume_table(width=88):
    """The --help epilog: what --resume does with each changed setting (train_config.ON_RESUME)."""
    from tinyalex.train.config import ON_RESUME, flag
    column = max(len(flag(name)) for name in ON_RESUME) + 6
    lines = textwrap.wrap("--resume continues the run in --out from its checkpoint.npz. A setting "
                          "not given takes the checkpoint's value; a setting given a new value is:",
                          width)
    for rule, title in (("refuse", "refused (the run would no longer be the same run):"),
                        ("apply", "applied from now on, and logged:")):
        lines.append("  " + title)
        for name, (r, why) in ON_RESUME.items():
            if r == rule:
                lines += textwrap.wrap(why, width, initial_indent=f"    {flag(name):<{column - 4}}",
                                       subsequent_indent=" " * column, break_on_hyphens=False)
    return "\n".join(lines)


def _add_train(sub):
    from tinyalex.train import models
    from tinyalex.train.config import DEFAULTS, LR_SCHEDULES, TrainConfig
    preset = "default: the model's preset: "
    train = sub.add_parser(
        "train", help="train AlexNet (defaults chosen for this machine)",
        formatter_class=_HelpFormatter, epilog=_resume_table(),
        description=textwrap.fill("Train AlexNet. Without --model, a GPU trains fashion-alexnet and "
                                  "a CPU cpu-alexnet (alexnet2012 for an image folder); the model's "
                                  "preset then fills in the settings not given.", 88,
                                  break_on_hyphens=False))
    train.add_argument("--model", type=_one_of(models.MODELS), metavar="{" + ",".join(models.MODELS) + "}",
                       help="the network (default: chosen for the device and data set, see above)")
    train.add_argument("--dataset", metavar="NAME", help="fashion-mnist, shards:PATH (tinyalex prepare) or imagefolder:PATH (PATH/train/CLASS/*.jpg and "
                                         f"PATH/val/CLASS/*.jpg; default: {DEFAULTS['dataset']})")
    train.add_argument("--data-dir", metavar="DIR", help="where the Fashion-MNIST .gz files are "
                                          "(default: /usr/share/datasets/fashion-mnist)")
    train.add_argument("--epochs", metavar="N", type=_number("epochs"), help=f"epochs to train ({preset}{_per_model('epochs')})")
    train.add_argument("--batch-size", metavar="N", type=_number("batch_size"),
                       help=f"images per SGD step ({preset}{_per_model('batch_size')})")
    train.add_argument("--micro-batch", metavar="M", type=_number("micro_batch"),
                       help="images per forward and backward; each batch's gradient adds its "
                            "micro-batches' in a fixed order, so `mpiexec -n K` trains bit for bit "
                            "the one-process run with the same M when each rank gets a power-of-two "
                            "number of them; none: a rank's whole share at once "
                            f"({preset}{_per_model('micro_batch')})")
    train.add_argument("--no-overlap", dest="overlap", action="store_false", default=None,
                       help="with several ranks: sum the gradients over the ranks after backward "
                            "instead of in buckets during it, last layers first (default: during; "
                            "the results are the same bits, only the speed differs)")
    train.add_argument("--model-parallel", metavar="C", type=_number("model_parallel"),
                       help="2: alexnet2012 in the 2012 paper's two columns, one per rank under "
                            "`mpiexec -n 2` (2R ranks: R data-parallel replicas), each holding half "
                            "of every layer; in one process, both columns (the same model, to "
                            "rounding) (default: 1, the whole model on each rank; see "
                            "docs/model-parallel.md)")
    train.add_argument("--lr", metavar="LR", type=_number("lr"), help=f"SGD learning rate ({preset}{_per_model('lr')})")
    train.add_argument("--momentum", metavar="M", type=_number("momentum"),
                       help=f"SGD momentum, in [0, 1) (default: {DEFAULTS['momentum']})")
    train.add_argument("--weight-decay", metavar="WD", type=_number("weight_decay"),
                       help=f"L2 penalty added to each gradient (default: {DEFAULTS['weight_decay']})")
    train.add_argument("--lr-schedule", type=_one_of(LR_SCHEDULES), metavar="{" + ",".join(LR_SCHEDULES) + "}",
                       help="plateau: lr/10 when the test accuracy stops improving (the paper's); "
                            f"step: lr/10 every --lr-step epochs; none ({preset}{_per_model('lr_schedule')})")
    train.add_argument("--lr-step", metavar="N", type=_number("lr_step"),
                       help=f"epochs between /10 with --lr-schedule step ({preset}{_per_model('lr_step')})")
    train.add_argument("--device", type=_one_of(("cpu", "cuda")), metavar="{cpu,cuda}",
                       help="where to train (default: cuda if a CUDA GPU is usable, else cpu)")
    train.add_argument("--out", metavar="DIR", help=f"the run directory (default: {TrainConfig.out}): checkpoint.npz, "
                                     "best.npz, metrics.jsonl, steps.jsonl, curves.png")
    train.add_argument("--seed", metavar="S", type=_number("seed"),
                       help=f"seeds the init, data order, augmentation and dropout (default: {DEFAULTS['seed']})")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", default=None,
                       help="continue the run in --out from its checkpoint.npz (see below; default: off)")
    again.add_argument("--overwrite", action="store_true", default=None,
                       help="delete the run in --out and start over (default: off; without --resume "
                            "or --overwrite, an --out that holds a run is refused)")
    train.add_argument("--ten-crop", action="store_true", default=None,
                       help="RGB models: average the paper's 10 test crops (default: off)")
    train.add_argument("--grad-stats", action="store_true", default=None,
                       help="log per-layer statistics to grad_stats.jsonl, plotted to grad_stats.png and "
                            "grad_hist.png (default: off)")
    train.add_argument("--tensorboard", metavar="DIR",
                       help="also write the curves of steps.jsonl and metrics.jsonl as TensorBoard "
                            "event files in DIR, one directory per run (needs tinyalex[tensorboard]; "
                            "default: none)")
    train.add_argument("--skip-bad-images", action="store_true", default=None,
                       help="image folders: leave undecodable images out and count them, instead "
                            "of refusing to start (default: off)")
    train.add_argument("--workers", metavar="N", type=_number("workers"),
                       help="worker processes that decode and augment the images, through shared "
                            f"memory; the batches are the same for any N (default: {DEFAULTS['workers']})")
    train.add_argument("--limit-train", metavar="N", type=_number("limit_train"),
                       help="use only the first N training images (default: all)")
    train.add_argument("--limit-test", metavar="N", type=_number("limit_test"),
                       help="use only the first N test images (default: all)")
    train.set_defaults(run=_train)


def build_parser():
    from tinyalex.train import models
    parser = _Parser(prog="tinyalex", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"tinyalex {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)

    evaluate = sub.add_parser("eval", help="evaluate a checkpoint on its test set")
    evaluate.add_argument("--checkpoint", default="runs/tinyalex/best.npz",
                          help="a checkpoint written by tinyalex train (default: %(default)s)")
    evaluate.add_argument("--dataset", help="the data set to test on (default: the checkpoint's)")
    evaluate.add_argument("--data-dir", help="where the Fashion-MNIST files are (default: the checkpoint's)")
    evaluate.add_argument("--device", type=_one_of(("cpu", "cuda")), metavar="{cpu,cuda}",
                          help="default: cuda if a CUDA GPU is usable, else cpu")
    evaluate.add_argument("--ten-crop", action="store_true", help="RGB models: average the 10 test crops")
    evaluate.add_argument("--skip-bad-images", action="store_true",
                          help="leave undecodable images out instead of refusing")
    evaluate.add_argument("--limit-test", metavar="N", type=_number("limit_test"),
                          help="use only the first N test images (default: all)")
    evaluate.set_defaults(run=_eval)

    predict = sub.add_parser("predict", help="classify images with a checkpoint or a state dict")
    predict.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    predict.add_argument("--checkpoint", default=None,
                         help=f"a checkpoint written by tinyalex train (default: {DEFAULT_CHECKPOINT})")
    predict.add_argument("--weights", metavar="FILE", default=None,
                         help="a state dict instead of a checkpoint: .pth/.pt (torch.save, read "
                              "without torch), .safetensors or .npz, e.g. torchvision's AlexNet "
                              "weights; needs --model (default: none)")
    predict.add_argument("--model", type=_one_of(models.MODELS), metavar="{" + ",".join(models.MODELS) + "}",
                         default=None, help="the network --weights is for (default: none)")
    predict.add_argument("--labels", metavar="FILE", default=None,
                         help="class names, one a line (e.g. ImageNet's 1000), instead of the "
                              "checkpoint's or 'class N' (default: none)")
    predict.add_argument("--device", type=_one_of(("cpu", "cuda")), metavar="{cpu,cuda}",
                         help="default: cuda if a CUDA GPU is usable, else cpu")
    predict.set_defaults(run=_predict)

    export = sub.add_parser("export", help="export a checkpoint's model to ONNX (needs tinyalex[onnx])")
    export.add_argument("checkpoint", help="a checkpoint written by tinyalex train (OUT/best.npz)")
    export.add_argument("--onnx", required=True, metavar="FILE", help="write the ONNX model here")
    export.add_argument("--batch", metavar="N", type=_number("batch_size"), default=1,
                        help="batch size of the traced example input; the exported batch axis is"
                             " dynamic (default: %(default)s)")
    export.set_defaults(run=_export)

    show = sub.add_parser("show", help="pictures of what a trained network learned (PNG)")
    pictures = show.add_subparsers(dest="picture", required=True, metavar="PICTURE")
    filters = pictures.add_parser("filters", help="the first conv layer's filters as an image grid "
                                  "(the 2012 paper's Figure 3)")
    maps = pictures.add_parser("activations", help="each conv layer's output maps (after ReLU) for one image")
    maps.add_argument("image", help="an image file (any format Pillow reads)")
    for picture in (filters, maps):
        picture.add_argument("--checkpoint", default="runs/tinyalex/best.npz",
                             help="a checkpoint written by tinyalex train (default: %(default)s)")
        picture.add_argument("--out", metavar="PNG", help=f"the PNG to write (default: "
                             f"{picture.prog.split()[-1]}.png beside the checkpoint)")
    show.set_defaults(run=_show)

    from tinyalex.train.opcheck import CASES
    ops = list(dict.fromkeys(case.op for case in CASES))
    check = sub.add_parser("gradcheck", help="check every op's backward (finite differences, torch)")
    which = check.add_mutually_exclusive_group(required=True)
    which.add_argument("--op", type=_one_of(ops), metavar="OP", help="one op: " + ", ".join(ops))
    which.add_argument("--all", action="store_true", help="every op")
    check.add_argument("--kernels", default=None, type=_kernel_set, metavar="{numpy,numba,cupy,FILE.py}",
                       help="kernel set, or a .py file of kernels of your own (any part of the"
                            " contract; the rest from numpy) (default: $TINYALEX_CPU or numba)")
    check.add_argument("--dtype", default="float64", type=_one_of(("float64", "float32")),
                       metavar="{float64,float32}", help="default: %(default)s")
    check.set_defaults(run=_gradcheck)

    exercise = sub.add_parser("exercise", help="grade a file of backward functions (docs/exercises)")
    grade = exercise.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "check", help="grade FILE: each op against the reference and gradcheck, then a short training run",
        description="Exit status: 0 every op correct, 1 one wrong (or training failed), 2 a usage "
                    "error, 3 none wrong but some still blank.")
    grade.add_argument("file", metavar="FILE", help="your copy of an exercise (docs/exercises/*.py)")
    grade.add_argument("--no-train", action="store_true", help="skip the training run")
    grade.add_argument("--train-images", metavar="N", type=_number("limit_train"), default=512,
                       help="Fashion-MNIST images to train one epoch on (default: %(default)s)")
    grade.add_argument("--test-images", metavar="N", type=_number("limit_test"), default=512,
                       help="test images to evaluate on (default: %(default)s)")
    grade.add_argument("--data-dir", metavar="DIR", help="where the Fashion-MNIST .gz files are "
                                                         "(default: /usr/share/datasets/fashion-mnist)")
    grade.set_defaults(run=_exercise)

    graph = sub.add_parser("graph", help="dump a model's recorded graph (forward and loss) as DOT")
    graph.add_argument("--model", default="cpu-alexnet", type=_one_of(models.MODELS),
                       metavar="{" + ",".join(models.MODELS) + "}", help="default: %(default)s")
    graph.add_argument("--batch-size", metavar="N", type=_number("batch_size"), default=2, help="default: %(default)s")
    graph.add_argument("--out", help="write the DOT text here (default: print it)")
    graph.add_argument("--png", help="also render it to this PNG (needs Graphviz's dot)")
    graph.set_defaults(run=_graph)

    bench = sub.add_parser("bench", help="run the benchmarks (source checkout)")
    bench.add_argument("--device", type=_one_of(("cpu", "cuda")), default="cpu", metavar="{cpu,cuda}",
                       help="default: %(default)s")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark script")
    bench.set_defaults(run=_bench)

    prepare = sub.add_parser("prepare", help="pack an image folder into memory-mapped uint8 shards")
    prepare.add_argument("source", help="an image folder: SOURCE/train/CLASS/*.jpg and SOURCE/val/CLASS/*.jpg")
    prepare.add_argument("out", help="where the shards go (then train with --dataset shards:OUT)")
    prepare.add_argument("--size", metavar="PX", type=_number("epochs"), default=256,
                         help="shorter side scaled to PX, then the central square (default: %(default)s)")
    prepare.add_argument("--shard-images", metavar="N", type=_number("epochs"), default=1024,
                         help="images per shard file (default: %(default)s)")
    prepare.add_argument("--workers", metavar="N", type=_number("workers"), default=0,
                         help="decoding processes (default: %(default)s, in this process)")
    prepare.add_argument("--skip-bad-images", action="store_true",
                         help="leave undecodable images out instead of refusing")
    prepare.set_defaults(run=_prepare)
    parser.commands = sub.choices  # command name -> its parser
    return parser


def main(argv=None, parts=None):
    """Run the ``tinyalex`` command on argv; returns the exit status. parts: what the training
    loop calls (tinyalex.train.loop.Parts), for a test that replaces one of them."""
    from tinyalex.errors import TrainingError
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, so the line starts "tinyalex COMMAND:"
        command = parser.commands.get(args.command, parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}, expected the options "
                      f"`{command.prog} --help` lists")
    if getattr(args, "kernels", "unset") is None:
        from tinyalex.kernels import cpu_kernel_set_name
        args.kernels = cpu_kernel_set_name()
    from tinyalex.train.parallel import distributed
    try:
        try:
            return args.run(args, parts) if args.run is _train else args.run(args)
        except BaseException as exc:  # under mpiexec: a rank's own error ends every rank now
            distributed.abort_on_error(exc, f"tinyalex {args.command}")
            raise
    except TrainingError as exc:
        if distributed.is_main_process():  # an error all ranks share is printed once
            print(f"tinyalex {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
