"""The ``tinyalex`` command: train, eval, predict, gradcheck, graph, bench."""
import argparse
import dataclasses
import os
import sys

import numpy as np


def _train(args):
    from .train import TrainConfig, train
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
    train(config)
    return 0


def _load_for_inference(checkpoint, device):
    from . import models
    from .train import load_checkpoint
    model_state, _, meta = load_checkpoint(checkpoint)
    name = meta["config"]["model"]
    model = models.create_model(name, len(meta["classes"]))
    model.load_state_dict(model_state)
    model.to(device).eval()
    return model, meta


def _eval(args):
    from . import device as _device
    from . import models
    from .data.loader import DataLoader
    from .train import TrainConfig, evaluate, load_datasets, transforms_for
    device = args.device or _device.default_device()
    model, meta = _load_for_inference(args.checkpoint, device)
    saved = meta["config"]
    config = TrainConfig(model=saved["model"], dataset=args.dataset or saved["dataset"],
                         data_dir=args.data_dir or saved["data_dir"], limit_test=args.limit_test)
    _, test_set = load_datasets(config)
    size = models.MODELS[config.model][1]
    ten_crop = args.ten_crop and size[0] == 3
    loader = DataLoader(test_set, 256, transform=transforms_for(config.model, False, ten_crop=ten_crop))
    loss, top1, top5 = evaluate(model, loader, device, size[1] if ten_crop else None)
    print(f"{args.checkpoint}: {len(test_set)} test images, loss {loss:.4f}, "
          f"top-1 accuracy {top1:.4f}, top-5 accuracy {top5:.4f}")
    return 0


def _predict(args):
    from PIL import Image

    from . import device as _device
    from . import models
    from .autograd import no_grad, tensor
    from .train import TrainingError, transforms_for
    device = args.device or _device.default_device()
    model, meta = _load_for_inference(args.checkpoint, device)
    channels, height, width = models.MODELS[meta["config"]["model"]][1]
    transform = transforms_for(meta["config"]["model"], train=False)
    for path in args.images:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                # Fashion-MNIST models read 28 px images (then resize as in training);
                # RGB models read 256 px images and center-crop, like the validation set
                side = 28 if channels == 1 else 256
                array = np.asarray(image.resize((side, side), Image.BILINEAR))
        except OSError as exc:
            raise TrainingError(f"predict: {path}: cannot read the image ({exc})") from exc
        x = transform(array[None], np.random.default_rng(0))
        with no_grad():
            logits = _device.to_device(model(tensor(x, device=device)).array, "cpu")[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:min(5, len(probs))]
        print(f"{path}: " + ", ".join(f"{meta['classes'][i]} {probs[i]:.3f}" for i in top))
    return 0


def _gradcheck(args):
    from . import opcheck
    results = opcheck.run_checks(args.kernels, args.dtype, [args.op] if args.op else None)
    print(f"tinyalex gradcheck: kernels {args.kernels}, {args.dtype}")
    print(opcheck.format_table(results))
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _graph(args):
    from . import functional as F
    from . import models, viz
    from .autograd import tensor
    model = models.create_model(args.model, num_classes=10)
    x = np.random.default_rng(0).standard_normal((args.batch_size, *models.MODELS[args.model][1]))
    loss = F.cross_entropy(model(tensor(x.astype(np.float32))), tensor(np.arange(args.batch_size) % 10))
    dot = viz.graph(loss, params=dict(model.named_parameters()))
    if args.out:
        with open(args.out, "w") as f:
            f.write(dot)
    else:
        print(dot, end="")
    if args.png:
        try:
            viz.render(dot, args.png)
        except RuntimeError as exc:  # no Graphviz: the DOT text is still there
            print(f"tinyalex graph: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def _bench(args):
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(os.path.dirname(here), "benchmarks",
                          "bench_cpu.py" if args.device == "cpu" else "bench_cuda.py")
    if not os.path.exists(script):
        raise SystemExit(f"bench: {script} not found: run from a source checkout "
                         "(benchmarks/ is not part of the wheel)")
    import runpy
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    sys.argv = [script] + rest
    runpy.run_path(script, run_name="__main__")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="tinyalex", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train AlexNet (defaults chosen for this machine)")
    train.add_argument("--model", help="cpu-alexnet, fashion-alexnet, alexnet2012 or torchvision-alexnet")
    train.add_argument("--dataset", help="fashion-mnist (default) or imagefolder:PATH")
    train.add_argument("--data-dir", help="where the Fashion-MNIST .gz files are")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--momentum", type=float)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--lr-schedule", choices=["plateau", "step", "none"])
    train.add_argument("--lr-step", type=int, help="epochs between /10 with --lr-schedule step")
    train.add_argument("--device", choices=["cpu", "cuda"])
    train.add_argument("--out", help="output directory (default runs/tinyalex)")
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    train.add_argument("--ten-crop", action="store_true", help="RGB models: 10-crop test averaging")
    train.add_argument("--grad-stats", action="store_true", help="log per-layer statistics")
    train.add_argument("--limit-train", type=int, help="use only the first N training images")
    train.add_argument("--limit-test", type=int, help="use only the first N test images")
    train.set_defaults(run=_train)

    evaluate = sub.add_parser("eval", help="evaluate a checkpoint on its test set")
    evaluate.add_argument("--checkpoint", default="runs/tinyalex/best.npz")
    evaluate.add_argument("--dataset")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--device", choices=["cpu", "cuda"])
    evaluate.add_argument("--ten-crop", action="store_true")
    evaluate.add_argument("--limit-test", type=int)
    evaluate.set_defaults(run=_eval)

    predict = sub.add_parser("predict", help="classify images with a checkpoint")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--checkpoint", default="runs/tinyalex/best.npz")
    predict.add_argument("--device", choices=["cpu", "cuda"])
    predict.set_defaults(run=_predict)

    check = sub.add_parser("gradcheck", help="check every op's backward (finite differences, torch)")
    which = check.add_mutually_exclusive_group(required=True)
    which.add_argument("--op", help="one op: conv2d, max_pool2d, local_response_norm, relu, "
                                    "dropout, linear, cross_entropy")
    which.add_argument("--all", action="store_true", help="every op")
    check.add_argument("--kernels", default=None, choices=["numpy", "numba", "cupy"],
                       help="kernel set (default: the CPU default, $TINYALEX_CPU or numba)")
    check.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    check.set_defaults(run=_gradcheck)

    graph = sub.add_parser("graph", help="dump a model's recorded graph (forward and loss) as DOT")
    graph.add_argument("--model", default="cpu-alexnet")
    graph.add_argument("--batch-size", type=int, default=2)
    graph.add_argument("--out", help="write the DOT text here (default: print it)")
    graph.add_argument("--png", help="also render it to this PNG (needs Graphviz's dot)")
    graph.set_defaults(run=_graph)

    bench = sub.add_parser("bench", help="run the benchmarks (source checkout)")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark script")
    bench.set_defaults(run=_bench)
    return parser


def main(argv=None):
    from .train import TrainingError
    args = build_parser().parse_args(argv)
    if getattr(args, "kernels", "unset") is None:
        from .dispatch import cpu_kernel_set_name
        args.kernels = cpu_kernel_set_name()
    try:
        return args.run(args)
    except TrainingError as exc:
        print(f"tinyalex {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
