"""The first `tinyalex train`: from an empty Numba cache against a warm one.

A new user's first run compiles every numba kernel it calls. This script measures what
that costs the quick start (`tinyalex train`: cpu-alexnet, float32, batch 64 in
micro-batches of 32, 938 batches an epoch), for one or more checkouts in one run, so that
a change and the code before it are measured side by side on the same machine.

Method, in one run:

1. Check before timing: for each checkout, a short run (--limit-train 640, 10 batches)
   from an empty cache and again from the cache it filled. Their metrics (timings left
   out) and their checkpoints must be bitwise the same, and the same across checkouts: a
   first run may compile in another order (tinyalex/kernels/numba/precompile.py), never
   give other numbers.
2. For each checkout, interleaved with the others: `tinyalex train --epochs 1` from a NEW
   empty NUMBA_CACHE_DIR ("cold"), then the same command on the cache that run filled
   ("warm"). Each in a fresh process, its output read as it comes: seconds from launch to
   the first batch done (the first progress line) and to the end of epoch 1's training
   pass (its 100% line), CPU seconds of the process and its children (compile workers
   included), and how many functions the cold run compiled: the `.nbi` index files it
   wrote (one per jitted function; a parallel kernel has two since it is a ufunc, its loop
   and the ufunc's wrapper around it; before, a prange kernel had two as well, its serial
   and its parallel version), and the units its compile progress counted. The two runs'
   checkpoints are compared as in 1.
3. The ratio cold / warm of the time to the end of epoch 1 (goal: at most 1.15) and the
   first batch from an empty cache (goal: within 8 s).

With --profile it measures instead what each kernel of the quick start costs to compile:
its CPU seconds (a fresh, uncached compile, the best of 2, after the kernels it calls are
compiled), and the import times.

    PYTHONPATH=. python benchmarks/bench_coldstart.py --checkout before=/tmp/before \\
        --checkout after=. --out benchmarks/results/coldstart.md
    PYTHONPATH=. python benchmarks/bench_coldstart.py --limit-train 6400   # 100 batches: quicker
    PYTHONPATH=. python benchmarks/bench_coldstart.py --profile

Timings on a shared 2-core machine are only comparable when nothing else runs: the report
gives the load average at the start and the end.
"""
import argparse
import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tinyalex.train.checkpoint import load_checkpoint  # noqa: E402

TIMING_KEYS = ("images_per_sec", "seconds")
GOAL_FIRST_BATCH_S, GOAL_EPOCH_RATIO = 8.0, 1.15
COMPILE_LINE = re.compile(r"compiling CPU kernels \(first run only\): (\d+)/(\d+)")


def run_train(checkout, cache, out, limit_train, limit_test):
    """One `tinyalex train --epochs 1` of `checkout` with NUMBA_CACHE_DIR=cache: the seconds
    to the first batch and to the end of the training pass, CPU seconds, compile units."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=checkout)
    command = [sys.executable, "-m", "tinyalex.train.cli", "train", "--epochs", "1", "--out", out,
               "--limit-test", str(limit_test)] + (["--limit-train", str(limit_train)] if limit_train else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    first = end = None
    units = 0
    lines = []
    for line in process.stdout:
        now = time.perf_counter() - start
        lines.append(line)
        if line.startswith("epoch 1/1:") and first is None and "%" in line:
            first = now
        if line.startswith("epoch 1/1: 100%"):
            end = now
        found = COMPILE_LINE.search(line)
        if found:
            units = int(found.group(2))
    if process.wait() != 0 or first is None or end is None:
        raise SystemExit(f"{' '.join(command)} failed:\n{''.join(lines[-20:])}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(first_s=first, epoch_s=end, cpu_s=cpu, units=units)


def result_of(out):
    """What a run computed: its checkpoint's arrays and its metrics without timings."""
    model, optimizer, meta = load_checkpoint(os.path.join(out, "checkpoint.npz"))
    arrays = {f"model.{k}": np.asarray(v) for k, v in model.items()}
    arrays.update(_flatten("optimizer", optimizer))
    history = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in meta["history"]]
    return arrays, history


def _flatten(prefix, value):
    if isinstance(value, dict):
        return {k2: v2 for k, v in value.items() for k2, v2 in _flatten(f"{prefix}.{k}", v).items()}
    if isinstance(value, (list, tuple)):
        return {k2: v2 for i, v in enumerate(value) for k2, v2 in _flatten(f"{prefix}.{i}", v).items()}
    return {prefix: np.asarray(value)}


def same_result(a, b):
    """'' if the runs in `a` and `b` computed the same bits, else what differs."""
    (arrays_a, history_a), (arrays_b, history_b) = result_of(a), result_of(b)
    if history_a != history_b:
        return f"metrics differ: {history_a} != {history_b}"
    if arrays_a.keys() != arrays_b.keys():
        return f"checkpoint entries differ: {sorted(arrays_a.keys() ^ arrays_b.keys())}"
    differ = [k for k in arrays_a if not np.array_equal(arrays_a[k], arrays_b[k], equal_nan=True)]
    return f"checkpoint arrays differ: {differ[:5]}" if differ else ""


def nbi_files(cache):
    return sum(name.endswith(".nbi") for _, _, names in os.walk(cache) for name in names)


def check(checkouts, work):
    """Step 1: short cold and warm runs of every checkout compute the same bits."""
    reference = None
    for name, checkout in checkouts:
        cache = tempfile.mkdtemp(prefix="numba-cache-", dir=work)
        runs = []
        for kind in ("cold", "warm"):
            out = os.path.join(work, f"check-{name}-{kind}")
            run_train(checkout, cache, out, 640, 256)
            runs.append(out)
        for a, b in ((runs[0], runs[1]), (reference or runs[0], runs[0])):
            problem = same_result(a, b)
            if problem:
                raise SystemExit(f"check failed, {name}: {a} and {b}: {problem}")
        reference = reference or runs[0]
        print(f"check {name}: cold and warm runs give the same bits (and the same as the first checkout)",
              file=sys.stderr, flush=True)


def measure(checkouts, work, limit_train, limit_test, repeat):
    """Step 2, interleaved over the checkouts: {name: [(cold, warm, nbi files), ...]}."""
    results = {name: [] for name, _ in checkouts}
    for _ in range(repeat):
        for name, checkout in checkouts:
            cache = tempfile.mkdtemp(prefix="numba-cache-", dir=work)
            outs = [os.path.join(work, f"{name}-{kind}-{len(results[name])}") for kind in ("cold", "warm")]
            cold = run_train(checkout, cache, outs[0], limit_train, limit_test)
            compiled = nbi_files(cache)
            warm = run_train(checkout, cache, outs[1], limit_train, limit_test)
            problem = same_result(*outs)
            if problem:
                raise SystemExit(f"{name}: the cold and the warm epoch differ: {problem}")
            results[name].append((cold, warm, compiled))
            print(f"{name}: cold first batch {cold['first_s']:.1f} s, epoch {cold['epoch_s']:.1f} s;"
                  f" warm first batch {warm['first_s']:.1f} s, epoch {warm['epoch_s']:.1f} s;"
                  f" {compiled} functions compiled", file=sys.stderr, flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    return results


def table_lines(results):
    lines = ["| checkout | run | first batch s (cold) | first batch s (warm) | end of epoch 1 s (cold)"
             " | end of epoch 1 s (warm) | cold / warm | CPU s (cold) | CPU s (warm) | functions compiled"
             " (.nbi) | units in the compile progress |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, runs in results.items():
        for i, (cold, warm, compiled) in enumerate(runs):
            lines.append(f"| {name} | {i + 1} | {cold['first_s']:.1f} | {warm['first_s']:.1f} |"
                         f" {cold['epoch_s']:.1f} | {warm['epoch_s']:.1f} |"
                         f" {cold['epoch_s'] / warm['epoch_s']:.3f} | {cold['cpu_s']:.1f} |"
                         f" {warm['cpu_s']:.1f} | {compiled} | {cold['units'] or '-'} |")
    return lines


def goal_lines(results):
    lines = []
    for name, runs in results.items():
        first = min(cold["first_s"] for cold, _, _ in runs)
        ratio = min(cold["epoch_s"] / warm["epoch_s"] for cold, warm, _ in runs)
        lines.append(f"- {name}: first batch from an empty cache {first:.1f} s (goal <= {GOAL_FIRST_BATCH_S:.0f} s:"
                     f" {'met' if first <= GOAL_FIRST_BATCH_S else 'not met'}); epoch 1 cold / warm"
                     f" {ratio:.3f} (goal <= {GOAL_EPOCH_RATIO}: {'met' if ratio <= GOAL_EPOCH_RATIO else 'not met'})"
                     + (" (best of the runs)" if len(runs) > 1 else ""))
    return lines


def machine_lines():
    spec = importlib.util.spec_from_file_location("bench_ops_cpu", os.path.join(HERE, "bench_ops_cpu.py"))
    ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ops)
    return ops.machine_lines()


def quick_start_units(rows):
    """The precompile units of the quick start's training step (cpu-alexnet) with
    cross-entropy over `rows` rows, all compiled."""
    from tinyalex.kernels.numba import precompile
    from tinyalex.train.config import TrainConfig
    from tinyalex.train.loop import build
    model = build(TrainConfig(model="cpu-alexnet", lr=0.02, lr_schedule="none"), 10)[0]
    ops = precompile.model_ops(model, True) + [precompile.cross_entropy_op(rows, 10), "sgd"]
    units = precompile.plan(ops, "float32", backward=True)
    for unit in units:
        precompile.compile_unit(unit)
    return units


def profile_lines():
    """Compile CPU seconds of each kernel the quick start calls."""
    import numba
    from tinyalex.kernels.numba.parallel_kernel import ParallelKernel
    units = quick_start_units(rows=32)       # the kernels they call, compiled once
    rows = []
    for unit in units:
        kernel = unit.dispatcher()
        seconds = []
        for _ in range(2):
            start = time.process_time()
            if isinstance(kernel, ParallelKernel):
                kernel.compile(unit.dtype, cache=False)
            else:
                options = {k: v for k, v in kernel.targetoptions.items() if k not in ("cache", "nopython")}
                numba.njit(kernel.py_func, cache=False, **options).compile(unit.signature())
            seconds.append(time.process_time() - start)
        rows.append((unit.kernel, "parallel" if isinstance(kernel, ParallelKernel) else "plain", min(seconds)))
    by_kind = {}
    for _, kind, seconds in rows:
        by_kind[kind] = by_kind.get(kind, 0.0) + seconds
    lines = ["| kernel | kind | compile CPU s |", "|---|---|---:|"]
    lines += [f"| {kernel} | {kind} | {seconds:.2f} |" for kernel, kind, seconds in rows]
    lines += ["", "- totals: " + ", ".join(f"{kind} {s:.1f} s" for kind, s in by_kind.items())]
    imports = subprocess.run([sys.executable, "-X", "importtime", "-c",
                              "import tinyalex.train.cli, tinyalex.kernels.numba"],
                             env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True).stderr
    cumulative = {line.split("|")[2].strip(): int(line.split("|")[1]) for line in imports.splitlines()
                  if line.startswith("import time:") and line.split("|")[1].strip().isdigit()}
    lines.append("- import times (cumulative, one run): " + ", ".join(
        f"{name} {cumulative[name] / 1e6:.2f} s" for name in ("numpy", "numba", "tinyalex", "tinyalex.train.cli",
                                                             "tinyalex.kernels.numba") if name in cumulative))
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", metavar="NAME=PATH",
                        help="a source checkout to measure (repeat for several; default: this one)")
    parser.add_argument("--limit-train", type=int, default=None,
                        help="training images of the timed epoch (default: all 60000, 938 batches)")
    parser.add_argument("--limit-test", type=int, default=256,
                        help="test images evaluated after it (default: %(default)s; not timed)")
    parser.add_argument("--repeat", type=int, default=1, help="cold + warm pairs per checkout")
    parser.add_argument("--skip-check", action="store_true", help="leave out step 1 (for a quick look only)")
    parser.add_argument("--profile", action="store_true",
                        help="instead: the compile time of each kernel")
    parser.add_argument("--out", help="write the report (markdown) here")
    args = parser.parse_args(argv)
    checkouts = [item.split("=", 1) for item in args.checkout or [f"this={ROOT}"]]
    args.checkouts = [(name, os.path.abspath(path)) for name, path in checkouts]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.profile:
        print("\n".join(["## Compile time of the quick start's kernels (CPU seconds)", ""] + machine_lines()
                        + [""] + profile_lines()))
        return
    load_average = os.getloadavg()
    work = tempfile.mkdtemp(prefix="bench-coldstart-")
    try:
        if not args.skip_check:
            check(args.checkouts, work)
        results = measure(args.checkouts, work, args.limit_train, args.limit_test, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    batches = -(-(args.limit_train or 60000) // 64)
    report = [f"## Cold start: `tinyalex train --epochs 1` (cpu-alexnet, float32, {batches} batches of 64)"
              " from an empty Numba cache and from a warm one", ""]
    report += machine_lines()
    report += [f"- load average (1, 5, 15 min) at the start: {', '.join(f'{a:.2f}' for a in load_average)};"
               f" at the end: {', '.join(f'{a:.2f}' for a in os.getloadavg())}",
               "- checkouts: " + ", ".join(f"{name} = {path}" for name, path in args.checkouts),
               f"- command: `{' '.join([os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:]))}`",
               "- checked first: " + ("skipped (--skip-check)" if args.skip_check else
                                     "short cold and warm runs of each checkout give the same bits"),
               "- each timed cold epoch gave the same bits as its warm epoch", ""]
    report += table_lines(results) + ["", "### Goals", ""] + goal_lines(results)
    text = "\n".join(report) + "\n"
    print(text, end="")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as out:
            out.write(text)
        os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
