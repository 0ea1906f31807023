"""Measure a data-parallel training step on CPU ranks: compute (forward + backward),
allreduce of the flat gradient buffer, and the SGD update, for 1 and 2 ranks; and the
training step itself with the allreduce after backward and overlapped with it.

Run it plain to measure everything and write benchmarks/results/dist_cpu.json:

    PYTHONPATH=. python benchmarks/bench_dist.py --out benchmarks/results/dist_cpu.json

It starts `mpiexec -n 1` and `mpiexec -n 2` runs of itself (``--rank-run``) for each model,
at a fixed global batch, with the threads tinyalex gives each rank (cores / ranks). Each
rank times its own step parts; rank 0 reports the medians. A separate allreduce
microbenchmark (two sizes, ranks synchronised by a barrier first) gives the bandwidth and
latency that benchmarks/scaling_model.py uses to predict the 2-rank step.

Then the training step as `tinyalex train` runs it (data_parallel.distributed_step, or the
one-process step on 1 rank), with the allreduce after backward (--no-overlap) and
overlapped with it, alternating A B B A ... in one run so that a change in the machine's
load hits both alike: wall and CPU seconds (the process's, all its threads) per step. The
first step of each is checked: both give the same parameters, bit for bit. On 1 rank it
also records when each parameter's gradient is complete, relative to the start of
backward: the shape of backward that scaling_model.py uses to predict the overlapped step.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

MODELS = {"cpu-alexnet": (64, 6), "alexnet2012": (8, 3)}   # model -> (global batch, timed steps)
AB_ROUNDS = 4          # A/B: rounds of A B B A (4 steps each way per round) after one warm-up of each


def rank_run(model_name, batch, steps):
    import numpy as np

    import tinyalex  # noqa: F401
    from tinyalex.train.parallel import distributed
    from tinyalex.utils.data.loader import split_rows
    from tinyalex.train import models
    from tinyalex import random as _random
    from tinyalex.optim import SGD
    world = distributed.world()
    rank, size = (0, 1) if world is None else (world.rank, world.size)
    _random.manual_seed(0)
    classes = 10 if model_name == "cpu-alexnet" else 1000
    model = models.create_model(model_name, classes)
    optimizer = SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    shape = models.MODELS[model_name][1]
    rng = np.random.default_rng(1)
    # pixels as the data sets give them: uniform in [0, 1], normalised (standard normal
    # inputs ran some steps several times slower, with subnormal intermediates)
    images = ((rng.random((batch, *shape)) - 0.45) / 0.25).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    first, stop = split_rows(batch, size, rank)
    result = step_parts(world, model, optimizer, images, labels, first, stop, steps)
    result.update(ranks=size, global_batch=batch,
                  threads=os.environ.get("NUMBA_NUM_THREADS", "all cores"))
    result["training_step"] = overlap_ab(world, model, optimizer, images, labels, first, stop)
    if world is None:
        result["backward_timeline"] = backward_timeline(model, images, labels, steps)
    else:
        result["link"] = link_microbenchmark(world)
    if rank == 0:
        print(json.dumps(result))


def step_parts(world, model, optimizer, images, labels, first, stop, steps):
    """Medians of a hand-written step's parts: compute, pack, allreduce, update."""
    import numpy as np

    from tinyalex import functional as F
    from tinyalex import random as _random
    from tinyalex.tensor import tensor
    from tinyalex.train.parallel import distributed
    batch = len(labels)
    buffer = distributed.FlatBuffer(list(model.parameters()), np, np.float32)
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
    result["gradient_bytes"] = buffer.nbytes
    return result


def overlap_ab(world, model, optimizer, images, labels, first, stop):
    """The training step of `tinyalex train` (one micro-batch per rank), with the allreduce
    after backward ("after") and overlapped with it ("overlapped"), interleaved A B B A;
    on one rank, the one-process step. Medians of wall and CPU seconds, and whether the
    first step of each gave the same parameters."""
    import types

    import numpy as np

    from tinyalex import random as _random
    from tinyalex.train.parallel.data_parallel import BatchGradient
    start_state = ([p.array.copy() for p in model.parameters()], _random.get_rng_state())
    momentum = {p: dict(s) for p, s in optimizer.state.items()}
    run = types.SimpleNamespace(model=model, optimizer=optimizer, world=world, stats=None,
                                config=types.SimpleNamespace(device="cpu", overlap=False),
                                gradient=BatchGradient(model))
    kinds = ("after", "overlapped") if world is not None else ("one process",)
    order = [kinds[0], kinds[-1], kinds[-1], kinds[0]] * AB_ROUNDS
    first_step = {}
    for kind in kinds:                     # warm-up, and the check: the same step, the same bits
        for p, array in zip(model.parameters(), start_state[0]):
            p.array[...] = array
        optimizer.state = {p: {k: v.copy() for k, v in s.items()} for p, s in momentum.items()}
        _random.set_rng_state(start_state[1])
        _one_step(run, kind, images, labels, first, stop)
        first_step[kind] = [p.array.copy() for p in model.parameters()]
    same = all(all(np.array_equal(a, b) for a, b in zip(first_step[kinds[0]], first_step[k])) for k in kinds)
    times = {k: {"wall_s": [], "cpu_s": []} for k in kinds}
    for kind in order:
        if world is not None:
            world.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        _one_step(run, kind, images, labels, first, stop)
        times[kind]["wall_s"].append(time.perf_counter() - t0)
        times[kind]["cpu_s"].append(time.process_time() - c0)
    result = {k: {m: float(np.median(v)) for m, v in t.items()} for k, t in times.items()}
    result["same_bits"] = bool(same)
    result["steps_each"] = len(order) // len(kinds)
    return result


def _one_step(run, kind, images, labels, first, stop):
    from tinyalex.train.parallel.data_parallel import distributed_step, step_from_sums
    if run.world is None:
        run.gradient.accumulate(images, labels, "cpu")
        step_from_sums(run.gradient.buffer, run.optimizer, None)
    else:
        run.config.overlap = kind == "overlapped"
        distributed_step(run, images[first:stop], labels[first:stop], first, False)


def backward_timeline(model, images, labels, steps):
    """Forward and backward seconds of the whole batch on one rank, and for each parameter
    (in model order) the seconds from the start of backward until its gradient is complete:
    medians over `steps` steps after one warm-up."""
    import numpy as np

    from tinyalex import functional as F
    from tinyalex.tensor import tensor
    params = list(model.parameters())
    done = {}
    handles = [p.register_post_accumulate_grad_hook(lambda t: done.__setitem__(id(t), time.perf_counter()))
               for p in params]
    rows = {"forward_s": [], "backward_s": [], "ready_s": []}
    for step in range(steps + 1):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(tensor(images)), tensor(labels), reduction="sum")
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if step:
            rows["forward_s"].append(t1 - t0)
            rows["backward_s"].append(t2 - t1)
            rows["ready_s"].append([done[id(p)] - t1 for p in params])
    for handle in handles:
        handle.remove()
    return {"forward_s": float(np.median(rows["forward_s"])), "backward_s": float(np.median(rows["backward_s"])),
            "param_bytes": [int(p.array.nbytes) for p in params],
            "ready_s": [float(v) for v in np.median(np.array(rows["ready_s"]), axis=0)]}


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
            ab = result["training_step"]
            print(f"{'':12s} training step: " + ", ".join(
                f"{kind} {t['wall_s'] * 1e3:.1f} ms (CPU {t['cpu_s'] * 1e3:.1f} ms)"
                for kind, t in ab.items() if isinstance(t, dict))
                + f"; medians of {ab['steps_each']} each; same bits: {ab['same_bits']}", flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
