"""PyTorch's training images/s for the GPU default model, the baseline of `tinyalex train`.

The model is the one `tinyalex train --device cuda` picks (tinyalex.train.config.choose_defaults:
fashion-alexnet at batch 128 on Fashion-MNIST), rebuilt layer for layer in PyTorch with
the same weights (benchmarks/bench_cpu.py's torch_twin), and trained with the same SGD
settings. Three rates, in images/s:

- torch_end_to_end: PyTorch training fed by tinyalex's own DataLoader and transforms (the
  same images, order and resizing as `tinyalex train`), reading the loss and the
  predictions back every step as tinyalex.train does, over the first --batches batches of
  an epoch. It is the number to set beside the images_per_sec of tinyalex's metrics.jsonl;
- tinyalex_step and torch_step: one training step (forward, loss, backward, SGD) on a
  fixed batch already on the GPU, so the data pipeline is out of the picture;
- loader: the loader alone over as many batches, no model: the ceiling of both end-to-end
  rates (on a GPU, resizing 28 px images to 224 on the CPU may well be the bottleneck).

Method: check before timing (dropout off, same weights, same batch: the two losses must
agree to a relative 1e-3, else the exit status is 1, after the timings); strict fp32 on
both sides (torch.backends TF32 flags off, TINYALEX_TF32=0) and cuDNN autotuning off;
warm-up steps (and a few warm-up batches of PyTorch's epoch) before anything is timed;
each timed step ends in loss.item(), which waits for the GPU. The last line is
`THROUGHPUT {json}`, which benchmarks/gpu_check.py reads.

    PYTHONPATH=. python benchmarks/gpu_train_throughput.py [--data-dir DIR] [--limit-train 25600] [--batches 50]
    PYTHONPATH=. python benchmarks/gpu_train_throughput.py --device cpu ...   # the script itself, on the CPU
"""
import argparse
import importlib.util
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK_RTOL = 1e-3               # float32 losses of ~2.3 after a forward of ~1 GFLOP per image


def load_benchmark(name):
    """A module of benchmarks/ by file name (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strict_fp32():
    """No TF32 on either side and no cuDNN autotuning in (or before) the timings."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    os.environ["TINYALEX_TF32"] = "0"


def setup(data_dir, limit_train, device):
    """(config, train set, tinyalex model, torch twin with the same weights, loader)."""
    import tinyalex
    from tinyalex.train import models
    from tinyalex.utils.data.loader import DataLoader
    from tinyalex.train.config import TrainConfig, choose_defaults
    from tinyalex.train.data.run_data import load_datasets, transforms_for
    config, _ = choose_defaults(TrainConfig(device=device, data_dir=data_dir, limit_train=limit_train))
    train_set, _ = load_datasets(config)
    tinyalex.manual_seed(config.seed)
    ours = models.create_model(config.model, len(train_set.classes))
    theirs = load_benchmark("bench_cpu").torch_twin(ours).to(device)
    ours.to(device)
    loader = DataLoader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                        transform=transforms_for(config.model, train=True))
    return config, train_set, ours, theirs, loader


def eval_losses(ours, theirs, images, labels, device):
    """Both models' loss on one batch in eval mode (dropout off): the check before timing."""
    import torch

    import tinyalex
    import tinyalex.functional as F
    ours.eval()
    theirs.eval()
    with tinyalex.no_grad(), torch.no_grad():
        loss_ours = F.cross_entropy(ours(tinyalex.tensor(images, device=device)),
                                    tinyalex.tensor(labels, device=device)).item()
        loss_theirs = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(images).to(device)),
                                                        torch.from_numpy(labels).to(device)).item()
    ours.train()
    theirs.train()
    return loss_ours, loss_theirs


def step_rate(trainer, batch, warmup, repeats):
    """images/s of trainer.step() (one training step ending in loss.item()), after warm-up
    steps that compile or load kernels, create cuBLAS/cuDNN handles and grow the memory pools."""
    for _ in range(warmup):
        trainer.step()
    start = time.perf_counter()
    for _ in range(repeats):
        trainer.step()
    return repeats * batch / (time.perf_counter() - start)


def step_rates(config, ours, theirs, images, labels, device, warmup, repeats):
    """{'tinyalex_step': images/s, 'torch_step': images/s} on one fixed batch on the device."""
    import torch

    import tinyalex
    import tinyalex.functional as F
    from tinyalex import optim
    Trainer = load_benchmark("bench_cpu").Trainer          # one step, written once for both libraries
    settings = dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    mine = Trainer(ours, optim.SGD(ours.parameters(), **settings), F.cross_entropy,
                   tinyalex.tensor(images, device=device), tinyalex.tensor(labels, device=device))
    torch_trainer = Trainer(theirs, torch.optim.SGD(theirs.parameters(), **settings),
                            torch.nn.functional.cross_entropy,
                            torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device))
    return {"tinyalex_step": step_rate(mine, len(labels), warmup, repeats),
            "torch_step": step_rate(torch_trainer, len(labels), warmup, repeats)}


def torch_epoch_rate(config, theirs, loader, epoch, device, compute=True, batches=None):
    """images/s over one epoch of `loader` (or its first `batches`), training `theirs` the way
    tinyalex.train's loop trains (loss and predictions read back every step), or, with
    compute=False, only loading."""
    import torch
    optimizer = torch.optim.SGD(theirs.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    loader.set_epoch(epoch)
    seen, start = 0, time.perf_counter()
    for batch, (images, labels) in enumerate(loader):
        if batches is not None and batch == batches:
            break
        if compute:
            logits = theirs(torch.from_numpy(images).to(device))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
            int((logits.argmax(dim=1).cpu().numpy() == labels).sum())
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def measure(data_dir, limit_train, device="cuda", warmup=3, repeats=10, batches=50):
    """The check and the four rates, as a dict (see the module docstring)."""
    import math
    strict_fp32()
    config, train_set, ours, theirs, loader = setup(data_dir, limit_train, device)
    images, labels = next(iter(loader))
    loss_ours, loss_theirs = eval_losses(ours, theirs, images, labels, device)
    difference = abs(loss_ours - loss_theirs) / abs(loss_theirs)
    print(f"check: loss tinyalex {loss_ours:.6f}, PyTorch {loss_theirs:.6f}", flush=True)
    rates = step_rates(config, ours, theirs, images, labels, device, warmup, repeats)
    print(f"step only: {rates}", flush=True)
    torch_epoch_rate(config, theirs, loader, 0, device, batches=warmup)
    rates["torch_end_to_end"] = torch_epoch_rate(config, theirs, loader, 1, device, batches=batches)
    rates["loader"] = torch_epoch_rate(config, theirs, loader, 2, device, compute=False, batches=batches)
    return dict(model=config.model, batch=config.batch_size, device=device,
                images=min(batches * config.batch_size, len(train_set)),
                loss_tinyalex=loss_ours, loss_torch=loss_theirs, loss_difference=difference,
                check_passed=bool(math.isfinite(loss_ours) and difference <= CHECK_RTOL),
                **{k: float(v) for k, v in rates.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="Fashion-MNIST's folder (default: tinyalex's)")
    parser.add_argument("--limit-train", type=int, default=25600,
                        help="use only the first N training images, as `tinyalex train --limit-train`")
    parser.add_argument("--batches", type=int, default=50, help="batches in the timed end-to-end runs")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (what it is for); cpu runs the same code on the CPU default model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (and batches) first")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps on the fixed batch")
    args = parser.parse_args(argv)
    if min(args.limit_train, args.repeats, args.batches) < 1 or args.warmup < 0:
        parser.error("--limit-train, --repeats and --batches must be >= 1, --warmup >= 0")
    result = measure(args.data_dir, args.limit_train, args.device, args.warmup, args.repeats, args.batches)
    print("THROUGHPUT " + json.dumps(result), flush=True)
    return 0 if result["check_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
