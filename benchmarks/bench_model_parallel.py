"""Peak memory of each rank of the two-column alexnet2012 (`--model-parallel 2`, two MPI
ranks) against its one-process twin, at the paper's 1000 classes, for a few SGD steps.

    PYTHONPATH=. python benchmarks/bench_model_parallel.py --out benchmarks/results/model_parallel.md

It runs the twin alone (as `tinyalex train` steps it, and with the ranks' flat gradient
buffer), then `mpiexec -n 2` of the columns, each process with one thread
(so the two compare like for like on a 2-core machine). Each process reports its resident
memory (Linux /proc/self/status) after the imports and a first small step (which loads the
kernels), its peak while it builds the model and
optimizer (a rank builds the whole twin first, so that its init draws the one-process
numbers, then keeps its column), and its peak over the training steps alone (VmHWM reset by
/proc/self/clear_refs after the build). Check before measuring: the first step's loss of the
two runs must agree to float32 rounding. Step times are printed too; on a shared machine
they are noise, not a result.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

CLASSES = 1000


def status_kib(field):
    """A VmRSS / VmHWM line of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak():
    """Make VmHWM the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rank_run(batch, steps, out, flat):
    import types

    import numpy as np

    import tinyalex  # noqa: F401  (thread settings before numpy's BLAS loads)
    from tinyalex import random as _random
    from tinyalex.optim import SGD
    from tinyalex.train import models
    from tinyalex.train.loop import one_step
    from tinyalex.train.parallel import distributed, model_parallel
    from tinyalex.train.parallel.data_parallel import BatchGradient, distributed_step
    from tinyalex import functional as F
    from tinyalex.tensor import tensor
    small = models.create_model("cpu-alexnet", 10)          # load every kernel the steps use
    F.cross_entropy(small(tensor(np.zeros((2, 1, 28, 28), np.float32))), tensor(np.arange(2))).backward()
    del small
    rss_imported = status_kib("VmRSS")
    world = distributed.world()
    columns = model_parallel.split_world(world, types.SimpleNamespace(model_parallel=2, grad_stats=False))
    _random.manual_seed(0)
    model = models.create_model("alexnet2012", CLASSES, model_parallel=2)
    if columns is not None:
        model = model_parallel.column_model(model, columns)
    optimizer = SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    gradient = BatchGradient(model) if columns is not None or flat else None
    parameter_bytes = sum(p.array.nbytes for p in model.parameters())
    peak_build, rss_built = status_kib("VmHWM"), status_kib("VmRSS")
    rng = np.random.default_rng(1)
    images = ((rng.random((batch, 3, 227, 227)) - 0.45) / 0.25).astype(np.float32)
    labels = rng.integers(0, CLASSES, batch)
    reset = reset_peak()
    losses, wall, cpu = [], [], []
    run = types.SimpleNamespace(model=model, optimizer=optimizer, world=None if columns is None else columns.replicas,
                                stats=None, config=types.SimpleNamespace(device="cpu", overlap=False), gradient=gradient)
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        if columns is None:
            losses.append(one_step(model, optimizer, images, labels, "cpu", None, gradient)[0])
        else:
            losses.append(columns.agreeing(distributed_step)(run, images, labels, 0, False)[0])
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    result = dict(column=None if columns is None else columns.column, flat=gradient is not None, rss_imported_kib=rss_imported,
                  peak_build_kib=peak_build, rss_built_kib=rss_built, peak_train_kib=status_kib("VmHWM") if reset else None,
                  parameter_bytes=parameter_bytes, losses=losses, step_wall_s=wall, step_cpu_s=cpu,
                  threads=os.environ.get("NUMBA_NUM_THREADS"))
    rank = 0 if world is None else world.rank
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def machine():
    return dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                python=platform.python_version(), load_before=os.getloadavg(),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def run(batch, steps):
    """[twin], [twin with a flat gradient buffer], [rank 0, rank 1]: their results."""
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    results = []
    for launcher, flat in (([], "0"), ([], "1"), ([mpiexec, "-n", "2"], "0")):
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([*launcher, sys.executable, __file__, "--rank-run", str(batch), str(steps), out, flat],
                           env=env, check=True, timeout=3600)
            results.append([json.load(open(os.path.join(out, name))) for name in sorted(os.listdir(out))])
    return results


def report(twin, twin_flat, ranks, batch, steps, info):
    mib = lambda kib: f"{kib / 1024:.0f}"                      # noqa: E731
    lines = ["# Two-column alexnet2012: memory per rank against the one-process twin", "",
             f"Measured by `PYTHONPATH=. python benchmarks/bench_model_parallel.py --batch {batch} "
             f"--steps {steps} --out benchmarks/results/model_parallel.md` on {info['date']}: "
             f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, load average "
             f"{info['load_before'][0]:.1f} before. alexnet2012 with {CLASSES} classes, float32, "
             f"batch {batch} of 3x227x227, {steps} SGD steps (momentum 0.9), one thread per process; "
             "MiB of resident memory (Linux VmRSS / VmHWM).", "",
             "| process | parameters | after imports | peak while building | after building | "
             "peak over the steps | steps' peak above imports |",
             "|---|---|---|---|---|---|---|"]
    for name, r in [("one process (twin)", twin), ("one process (twin), flat gradient buffer", twin_flat)] + [(f"rank {i} (column {r['column']})", r) for i, r in enumerate(ranks)]:
        train = r["peak_train_kib"]
        lines.append(f"| {name} | {r['parameter_bytes'] / 2**20:.0f} | {mib(r['rss_imported_kib'])} | "
                     f"{mib(r['peak_build_kib'])} | {mib(r['rss_built_kib'])} | {mib(train) if train else 'n/a'} | "
                     f"{mib(train - r['rss_imported_kib']) if train else 'n/a'} |")
    if twin["peak_train_kib"]:
        for label, one in (("the one-process twin's", twin), ("the twin's with a flat gradient buffer", twin_flat)):
            above = [(r["peak_train_kib"] - r["rss_imported_kib"]) / (one["peak_train_kib"] - one["rss_imported_kib"])
                     for r in ranks]
            lines += ["", "Each rank's peak over the steps, above what the imports take, is "
                      + " and ".join(f"{a:.2f}" for a in above) + f" of {label}."]
    lines += ["", "A rank's step keeps the gradient twice: in the parameters' .grad and in the flat "
              "buffer that the data-parallel allreduce sums (parallel/data_parallel.py's "
              "BatchGradient, used whenever there are ranks). The one-process twin keeps it once, "
              "unless --micro-batch makes it sum micro-batches in that buffer too: hence the two "
              "twin rows."]
    lines += ["", "The first step's loss: twin "
              f"{twin['losses'][0]:.7f}, ranks " + ", ".join(f"{r['losses'][0]:.7f}" for r in ranks) + ".",
              "Step times (wall / CPU seconds, median; a shared machine: not a result): twin "
              f"{sorted(twin['step_wall_s'])[len(twin['step_wall_s']) // 2]:.1f} / "
              f"{sorted(twin['step_cpu_s'])[len(twin['step_cpu_s']) // 2]:.1f}, ranks "
              + ", ".join(f"{sorted(r['step_wall_s'])[len(r['step_wall_s']) // 2]:.1f} / "
                          f"{sorted(r['step_cpu_s'])[len(r['step_cpu_s']) // 2]:.1f}" for r in ranks) + "."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank-run", nargs=4, metavar=("BATCH", "STEPS", "OUT", "FLAT"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help="images per step (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="SGD steps (default: %(default)s)")
    parser.add_argument("--out", help="write the Markdown report here")
    args = parser.parse_args()
    if args.rank_run:
        return rank_run(int(args.rank_run[0]), int(args.rank_run[1]), args.rank_run[2], args.rank_run[3] == "1")
    info = machine()
    (twin,), (twin_flat,), ranks = run(args.batch, args.steps)
    for r in ranks + [twin_flat]:    # check before measuring: the same computation, to rounding
        if abs(r["losses"][0] - twin["losses"][0]) > 1e-5 * abs(twin["losses"][0]):
            raise SystemExit(f"the columns' first loss {r['losses'][0]} is not the twin's {twin['losses'][0]}")
    text = report(twin, twin_flat, ranks, args.batch, args.steps, info)
    print(text)
    if args.out:
        from tinyalex.train.checkpoint import atomic_write
        atomic_write(args.out, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
