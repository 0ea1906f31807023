"""Measure a data-parallel training step on CPU ranks: compute (forward + backward),
allreduce of the flat gradient buffer, and the SGD update, for 1 and 2 ranks.

Run it plain to measure everything and write benchmarks/results/dist_cpu.json:

    PYTHONPATH=. python benchmarks/bench_dist.py --out benchmarks/results/dist_cpu.json

It starts `mpiexec -n 1` and `mpiexec -n 2` runs of itself (``--rank-run``) for each model,
at a fixed global batch, with the threads tinyalex gives each rank (cores / ranks). Each
rank times its own step parts; rank 0 reports the medians. A separate allreduce
microbenchmark (two sizes, ranks synchronised by a barrier first) gives the bandwidth and
latency that benchmarks/scaling_model.py uses to predict the 2-rank step.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

MODELS = {"cpu-alexnet": (64, 6), "alexnet2012": (8, 3)}   # model -> (global batch, timed steps)


def rank_run(model_name, batch, steps):
    import numpy as np

    import tinyalex  # noqa: F401
    from tinyalex.train.parallel import distributed
    from tinyalex.utils.data.loader import split_rows
    from tinyalex.train import models
    from tinyalex import functional as F
    from tinyalex import random as _random
    from tinyalex.tensor import tensor
    from tinyalex.optim import SGD
    world = distributed.world()
    rank, size = (0, 1) if world is None else (world.rank, world.size)
    _random.manual_seed(0)
    classes = 10 if model_name == "cpu-alexnet" else 1000
    model = models.create_model(model_name, classes)
    optimizer = SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    params = list(model.parameters())
    buffer = distributed.FlatBuffer(params, np, np.float32)
    shape = models.MODELS[model_name][1]
    rng = np.random.default_rng(1)
    # pixels as the data sets give them: uniform in [0, 1], normalised (standard normal
    # inputs ran some steps several times slower, with subnormal intermediates)
    images = ((rng.random((batch, *shape)) - 0.45) / 0.25).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    first, stop = split_rows(batch, size, rank)
    parts = {k: [] for k in ("compute_s", "pack_s", "allreduce_s", "update_s", "step_s")}
    warm = 2
    for step in range(steps + warm):                         # warm-up: JIT, caches, buffers
        if world is not None:
            world.barrier()
        t0 = time.perf_counter()
        optimizer.zero_grad()
        with _random.batch_rows(first):
            logits = model(tensor(images[first:stop]))
        loss = F.cross_entropy(logits, tensor(labels[first:stop]), reduction="sum")
        loss.backward()
        t1 = time.perf_counter()
        buffer.pack(dict(loss_sum=loss.item(), correct=0, count=stop - first, stop=0))
        t2 = time.perf_counter()
        if world is not None:
            world.allreduce_(buffer.flat)
        t3 = time.perf_counter()
        buffer.unpack(1.0 / batch)
        t4 = time.perf_counter()
        optimizer.step()
        t5 = time.perf_counter()
        if step >= warm:
            for key, value in (("compute_s", t1 - t0), ("pack_s", (t2 - t1) + (t4 - t3)),
                               ("allreduce_s", t3 - t2), ("update_s", t5 - t4), ("step_s", t5 - t0)):
                parts[key].append(value)
    result = {k: float(np.median(v)) for k, v in parts.items()}
    result.update(ranks=size, global_batch=batch, gradient_bytes=buffer.nbytes,
                  threads=os.environ.get("NUMBA_NUM_THREADS", "all cores"))
    if world is not None:
        result["link"] = link_microbenchmark(world)
    if rank == 0:
        print(json.dumps(result))


def link_microbenchmark(world, sizes=(2**18, 2**24), repeats=5):
    """Fit t = 2 (K-1)/K * bytes / bandwidth + 2 (K-1) * latency to allreduces of two sizes."""
    import numpy as np
    times = {}
    for n in sizes:
        buffer = np.ones(n, np.float32)
        samples = []
        for _ in range(repeats + 1):
            world.barrier()
            t0 = time.perf_counter()
            world.allreduce_(buffer)
            samples.append(time.perf_counter() - t0)
        times[n * 4] = float(np.median(samples[1:]))
    (b0, t0), (b1, t1) = sorted(times.items())
    k = world.size
    per_byte = (t1 - t0) / (b1 - b0) / (2 * (k - 1) / k)
    latency = max(t0 - 2 * (k - 1) / k * b0 * per_byte, 0.0) / (2 * (k - 1))
    return {"bandwidth": 1 / per_byte, "latency": latency, "samples": {str(b): t for b, t in times.items()}}


def machine():
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                python=platform.python_version(), load_before=load,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank-run", nargs=3, metavar=("MODEL", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args()
    if args.rank_run:
        model, batch, steps = args.rank_run
        return rank_run(model, int(batch), int(steps))
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    report = dict(machine=machine(), models={})
    for model in args.models:
        batch, steps = MODELS[model]
        report["models"][model] = {}
        for ranks in (1, 2):
            done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--rank-run",
                                   model, str(batch), str(steps)], env=env, capture_output=True,
                                  text=True, timeout=1800)
            if done.returncode:
                raise SystemExit(f"{model} on {ranks} ranks failed:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            report["models"][model][str(ranks)] = result
            if "link" in result:
                report["link"] = result.pop("link")
            print(f"{model:12s} {ranks} rank{'s' if ranks > 1 else ' '} batch {batch}: step "
                  f"{result['step_s'] * 1e3:8.1f} ms = compute {result['compute_s'] * 1e3:8.1f} + "
                  f"allreduce {result['allreduce_s'] * 1e3:6.1f} + pack {result['pack_s'] * 1e3:5.1f} + "
                  f"update {result['update_s'] * 1e3:6.1f} ms ({result['gradient_bytes'] / 1e6:.1f} MB)",
                  flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
