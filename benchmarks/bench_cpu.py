"""One full training step of the Fashion-MNIST AlexNet on the CPU: tinyalex vs PyTorch.

The step is what `tinyalex train` runs per batch: forward, softmax cross-entropy,
backward, and SGD (lr 0.01, momentum 0.9, weight decay 5e-4), in float32, on
`tinyalex.train.models.fashion_alexnet` (input 1x224x224, conv 96-256-384-384-256,
fc 4096-4096-10). Three libraries run it:

- ``numba``: tinyalex with the numba kernel set (the CPU default) and the default conv
  algorithm, 'auto' (tinyalex.kernels.conv_algorithms.choose picks per layer);
- ``numba-gemm``, ``numba-winograd``: the same with every conv on one algorithm, set per
  module ('winograd' where it applies: conv2-5; conv1, 11x11 stride 4, stays on GEMM);
- ``numpy``: tinyalex with the numpy reference kernels (``use_kernels("numpy")``; only
  with --libraries, it is slow);
- ``torch``: the same network built layer by layer in PyTorch, with the same weights.

Every process imports numpy BEFORE tinyalex (this file's imports), as most programs do:
tinyalex's speed must not depend on import order (tinyalex/kernels/numba/blas.py).

Method, in one run:
1. SGEMM: numpy.matmul on float32 2048x2048 matrices, the median of 10 after a warm-up.
   It is the ceiling for this step, whose FLOPs are nearly all GEMMs (im2col + GEMM in
   tinyalex), so each rate is also reported as a percentage of it.
2. Check before timing: with dropout off (eval mode) and the same weights
   and batch, every library's loss before and after one SGD step must agree with
   torch's to a relative 1e-4 (float32). This checks forward, backward and the update.
3. Each (library, batch) is measured in a fresh subprocess, so no library's thread pools
   or heap leftovers touch another's numbers. In it:
   - a warm-up step (JIT compilation or loading numba's cache, thread pools, lazy
     initialisation, the momentum buffers), then the gradients are freed;
   - memory: the garbage is collected, freed heap pages are handed back to the kernel
     (glibc's malloc_trim; both libraries allocate through glibc malloc) and the peak-RSS
     counter is reset (/proc/self/clear_refs); one step runs, and its peak is VmHWM minus
     the RSS before it. That counts everything the step adds on top of the model, its
     momentum buffers and the batch: activations, saved caches, workspaces (im2col
     buffers), gradients, and temporaries of the update, measured by the kernel the
     same way for both libraries. (tracemalloc would see NumPy's buffers but not
     torch's; ru_maxrss can carry the parent's peak across exec, VmHWM cannot);
   - time: the median wall time of --steps more steps (dropout on, as in training).
   The warm-up step's own time is reported too (numba's cache already filled), and, once
   per run, the first step of a process whose Numba cache directory is EMPTY
   (NUMBA_CACHE_DIR set to a new temporary directory): what a new user waits through.
   torch runs with as many threads as numba (torch.set_num_threads); OpenBLAS keeps its
   default of one thread per core: it never runs while numba's threads do.
4. FLOPs per image are counted from the layer shapes (see `layer_macs`); GFLOP/s is that
   count times the batch over the median step time.

Goals: tinyalex (numba, default algorithm) takes at most 0.85x torch's time per step and
at most 1.2x its peak memory, at batch 16, 32 and 64.

    PYTHONPATH=. python benchmarks/bench_cpu.py [--batches 16 32 64] [--steps 5] [--ops]
                          [--libraries numba numba-gemm ...] [--out benchmarks/results/cpu.md]
    PYTHONPATH=. python benchmarks/bench_cpu.py --quick      # batch 16, 2 timed steps
"""
import argparse
import collections
import contextlib
import ctypes
import dataclasses
import gc
import importlib.util
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

import tinyalex
import tinyalex.functional as F
import tinyalex.nn as nn
import tinyalex.optim as optim
from tinyalex.kernels.conv_algorithms import winograd_refusal
from tinyalex.kernels.numba import buffers
from tinyalex.train.checkpoint import atomic_write
from tinyalex.train.models import fashion_alexnet
from tinyalex.nn import AdaptiveAvgPool2d

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LIBRARIES = ("numba", "numba-gemm", "numba-winograd", "numpy", "torch")
DEFAULT_LIBRARIES = ("numba", "numba-gemm", "numba-winograd", "torch")
LABELS = {"numba": "tinyalex numba (auto)", "numba-gemm": "tinyalex numba gemm",
          "numba-winograd": "tinyalex numba winograd", "numpy": "tinyalex numpy", "torch": "torch"}
INPUT_SHAPE = (1, 224, 224)
NUM_CLASSES = 10
SGD_SETTINGS = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
SEED = 0
CHECK_RTOL = 1e-4                      # float32 losses of ~2.3 after a 938 M multiply-add forward
GOAL_TIME, GOAL_MEMORY = 0.85, 1.2     # tinyalex numba (default algorithm) / torch, at most
MB = 2**20


# --- 1. the machine's SGEMM rate -------------------------------------------------------

# sgemm_gflops lives in bench_ops_cpu.py (loaded as `ops` in main): one definition.


# --- 2. the FLOPs of one step ----------------------------------------------------------

def layer_macs(model, input_shape):
    """[(name, multiply-adds per image)] of every Conv2d and Linear of an AlexNet-shaped
    `model` (features, avgpool, classifier), in network order, for one (C, H, W) input.

    A conv does OH*OW*OC*(C/groups*kh*kw) multiply-adds, a linear layer in*out. For
    fashion_alexnet (input 1x224x224) that is:

        conv1  54x54 x  96 x (1*11*11)  =  33.9 M
        conv2  26x26 x 256 x (96*5*5)   = 415.3 M
        conv3  12x12 x 384 x (256*3*3)  = 127.4 M
        conv4  12x12 x 384 x (384*3*3)  = 191.1 M
        conv5  12x12 x 256 x (384*3*3)  = 127.4 M
        fc6    6400 x 4096              =  26.2 M
        fc7    4096 x 4096              =  16.8 M
        fc8    4096 x 10                =   0.04 M
        total                           = 938.1 M
    """
    c, h, w = input_shape
    macs = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            (kh, kw), (sh, sw), (ph, pw) = module.kernel_size, module.stride, module.padding
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            c = module.out_channels
            macs.append((f"conv{len(macs) + 1}", h * w * c * module.weight.shape[1] * kh * kw))
        elif isinstance(module, nn.MaxPool2d):
            k, s, p = module.kernel_size, module.stride, module.padding
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif isinstance(module, AdaptiveAvgPool2d):            # an int n means (n, n), as in torch
            size = module.output_size
            h, w = (size, size) if isinstance(size, int) else size
        elif isinstance(module, nn.Linear):
            macs.append((f"fc{len(macs) + 1}", module.in_features * module.out_features))
    return macs


def step_flops(macs):
    """(forward, backward) FLOPs of one image's training step, 2 flops per multiply-add.

    Forward: 2*M for every layer. Backward: the weight gradient gW is one GEMM the size
    of the forward's (2*M), and so is the input gradient gx, except in the first layer,
    whose input is the image and needs none. For fashion_alexnet:
        forward  = 2 * 938.1 M             = 1.88 GFLOP
        backward = 2 * (2 * 938.1 - 33.9) M = 3.68 GFLOP,  step = 5.56 GFLOP per image.
    Biases, ReLU, pooling, dropout, the loss and the SGD update (a few flops per
    parameter per step, not per image) are memory-bound extras and are not counted.
    """
    total = sum(m for _, m in macs)
    first = macs[0][1]
    return 2 * total, 2 * (2 * total - first)


# --- the step, the same code for both libraries ----------------------------------------

@dataclasses.dataclass
class Trainer:
    """One library's model, optimizer, loss and batch; `step` is the step being measured.

    tinyalex copies PyTorch's API, so the step is one piece of code for both (tinygrad's
    "one lambda, two libraries"); `kernels` picks tinyalex's CPU kernel set around it.
    """
    model: object
    optimizer: object
    cross_entropy: object
    x: object
    t: object
    kernels: object = contextlib.nullcontext

    def step(self):
        """Forward, loss, backward, SGD update; returns the loss before the update."""
        with self.kernels():
            self.optimizer.zero_grad()
            loss = self.cross_entropy(self.model(self.x), self.t)
            loss.backward()
            self.optimizer.step()
            return loss.item()


def make_batch(batch):
    """A reproducible float32 batch (batch, 1, 224, 224) of N(0, 1) pixels and its labels."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((batch, *INPUT_SHAPE), dtype=np.float32)
    return x, rng.integers(0, NUM_CLASSES, size=batch)


def make_model():
    """fashion_alexnet with the weights of seed SEED (every library starts from these)."""
    tinyalex.manual_seed(SEED)
    return fashion_alexnet(num_classes=NUM_CLASSES)


def torch_twin(model):
    """`model` (a tinyalex AlexNet) rebuilt layer for layer in torch, weights copied.

    The top level is a torch Sequential of features, avgpool, flatten, classifier, so its
    state_dict keys ('features.0.weight', ...) are tinyalex's.
    """
    import torch                    # only here: tinyalex's own runs never load torch
    from torch import nn as tnn

    def twin(layer):
        if isinstance(layer, nn.Sequential):
            return tnn.Sequential(*(twin(child) for child in layer))
        if isinstance(layer, nn.Conv2d):
            return tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                              layer.stride, layer.padding, groups=layer.groups)
        if isinstance(layer, nn.Linear):
            return tnn.Linear(layer.in_features, layer.out_features)
        if isinstance(layer, nn.ReLU):
            return tnn.ReLU()
        if isinstance(layer, nn.MaxPool2d):
            return tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        if isinstance(layer, nn.LocalResponseNorm):
            return tnn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
        if isinstance(layer, nn.Dropout):
            return tnn.Dropout(layer.p)
        if isinstance(layer, AdaptiveAvgPool2d):
            return tnn.AdaptiveAvgPool2d(layer.output_size)
        raise TypeError(f"torch_twin: no torch twin for layer {type(layer).__name__}")

    twin_model = tnn.Sequential(collections.OrderedDict(
        features=twin(model.features), avgpool=twin(model.avgpool), flatten=tnn.Flatten(),
        classifier=twin(model.classifier)))
    twin_model.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in model.state_dict().items()})
    return twin_model


def make_trainer(library, batch):
    """A Trainer for `library` ('numba', 'numpy' or 'torch') on the batch of `make_batch`."""
    model, (x, t) = make_model(), make_batch(batch)
    if library == "torch":
        import torch                # not at the top: tinyalex's workers never load torch
        torch.set_num_threads(numba.get_num_threads())
        model = torch_twin(model)
        optimizer = torch.optim.SGD(model.parameters(), **SGD_SETTINGS)
        return Trainer(model, optimizer, torch.nn.functional.cross_entropy,
                       torch.from_numpy(x), torch.from_numpy(t))
    if library not in LIBRARIES:
        raise ValueError(f"library: expected one of {LIBRARIES}, got {library!r}")
    kernel_set, _, algorithm = library.partition("-")
    for module in model.modules():          # per module: 'winograd' refuses conv1 (stride 4)
        if algorithm and isinstance(module, nn.Conv2d) and not winograd_refusal(
                module.kernel_size, module.stride, module.dilation):
            module.algorithm = algorithm

    @contextlib.contextmanager
    def kernels():
        with tinyalex.use_kernels(kernel_set), tinyalex.conv_algorithm("gemm" if algorithm else "auto"):
            yield

    optimizer = optim.SGD(model.parameters(), **SGD_SETTINGS)
    return Trainer(model, optimizer, F.cross_entropy, tinyalex.tensor(x), tinyalex.tensor(t),
                   kernels=kernels)


# --- 3. check, then measure ------------------------------------------------------------

def check_losses(batch, libraries):
    """{library: (loss, loss after one SGD step)} with dropout off (eval mode), the same
    weights and the same batch. Raises AssertionError if tinyalex's differ from torch's."""
    losses = {}
    for library in libraries:
        trainer = make_trainer(library, batch)
        trainer.model.eval()
        losses[library] = (trainer.step(), trainer.step())
        print(f"check {library:>5}: losses {losses[library]}", file=sys.stderr, flush=True)
    for library in (lib for lib in libraries if lib != "torch"):
        error = max_relative_difference(losses[library], losses["torch"])
        if error > CHECK_RTOL:
            raise AssertionError(f"check: {library} losses {losses[library]} differ from torch's"
                                 f" {losses['torch']} by a relative {error:.2g} > {CHECK_RTOL:g}")
    return losses


def max_relative_difference(values, expected):
    return max(abs(v - e) / abs(e) for v, e in zip(values, expected, strict=True))


def free_heap_and_reset_peak():
    """Free what is garbage, hand glibc's free heap pages back to the kernel, reset the
    peak-RSS counter (VmHWM) to the current RSS, and return that RSS in bytes."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")                                     # 5: reset the peak RSS
    return proc_status_bytes("VmRSS")


def proc_status_bytes(field):
    """A memory field of /proc/self/status ('VmRSS', 'VmHWM'), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024                # the kernel writes kB
    raise RuntimeError(f"/proc/self/status has no {field} field")


def measure(library, batch, steps):
    """Peak memory and step times of `library` at `batch`, in this (fresh) process.

    Per timed step: wall seconds, CPU seconds (user + system, all threads), system seconds
    and minor page faults (getrusage): a step that faults in fresh pages shows it in the
    last two. tinyalex's reused buffers (tinyalex/kernels/numba/buffers.py) are released
    before the memory step, so that step makes them again and its peak counts them."""
    start = time.perf_counter()
    trainer = make_trainer(library, batch)
    trainer.step()                          # warm-up: JIT, thread pools, momentum buffers
    first_s = time.perf_counter() - start
    trainer.optimizer.zero_grad()           # frees the gradients: the measured step makes its own
    if library != "torch":
        buffers.release_cached()
    rss_before = free_heap_and_reset_peak()
    trainer.step()
    peak = proc_status_bytes("VmHWM") - rss_before
    times, cpu, system, faults = [], [], [], []
    for _ in range(steps):
        usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)
        system.append(after.ru_stime - usage.ru_stime)
        faults.append(after.ru_minflt - usage.ru_minflt)
    return {"library": library, "batch": batch, "seconds": times, "cpu_seconds": cpu,
            "system_seconds": system, "minor_faults": faults, "first_s": first_s,
            "rss_before_mb": rss_before / MB, "peak_mb": peak / MB,
            "reuse_buffers": library != "torch" and buffers.pool.enabled,
            "pool_mb": buffers.pool.resident_bytes() / MB,
            "rss_end_mb": proc_status_bytes("VmRSS") / MB}


def measure_in_subprocess(library, batch, steps, numba_cache_dir=None, env_extra=None):
    """`measure` in a fresh Python process running this file with --worker (with
    numba_cache_dir: Numba compiles into and loads from that directory only; env_extra:
    more environment variables, set before anything loads)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.update(env_extra or {})
    if numba_cache_dir:
        env["NUMBA_CACHE_DIR"] = numba_cache_dir
    command = [sys.executable, os.path.abspath(__file__), "--worker", library,
               "--batches", str(batch), "--steps", str(steps)]
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


# --- report ----------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    """One library at one batch: step times in ms (median, fastest, slowest), peak MB."""
    library: str
    batch: int
    ms: float
    ms_min: float
    ms_max: float
    peak_mb: float
    first_s: float

    def images_per_s(self):
        return 1e3 * self.batch / self.ms

    def gflops(self, flops_per_image):
        return flops_per_image * self.images_per_s() / 1e9


def bench_ops_module():
    """benchmarks/bench_ops_cpu.py as a module: `tinyalex bench` runs this file with runpy,
    which does not put benchmarks/ on sys.path, so it is loaded by its path."""
    spec = importlib.util.spec_from_file_location("bench_ops_cpu", os.path.join(HERE, "bench_ops_cpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine_extra_lines(load_average, load_average_end):
    """The memory, and how busy the machine was when this run started (timings on a
    2-core machine are only comparable when nothing else runs)."""
    with open("/proc/meminfo") as meminfo:
        total_kb = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    return [f"- memory: {total_kb / 2**20:.1f} GiB",
            f"- load average (1, 5, 15 min) at the start: {', '.join(f'{a:.2f}' for a in load_average)};"
            f" at the end: {', '.join(f'{a:.2f}' for a in load_average_end)}"]


def method_lines(sgemm, flops, macs, losses, check_batch, steps):
    forward, backward = flops
    per_layer = ", ".join(f"{name} {m / 1e6:.1f}" for name, m in macs)
    loss_text = "; ".join(f"{LABELS[lib]} {a:.6f} -> {b:.6f}" for lib, (a, b) in losses.items())
    return [
        f"- SGEMM: numpy.matmul float32 2048^3, median of 10 (bench_ops_cpu.sgemm_gflops):"
        f" **{sgemm:.1f} GFLOP/s** (the denominator of '% of SGEMM')",
        f"- FLOPs per image: forward {forward / 1e9:.3f} + backward {backward / 1e9:.3f}"
        f" = {(forward + backward) / 1e9:.3f} GFLOP (2 per multiply-add; backward = gW for every"
        f" layer + gx for all but conv1). Multiply-adds per image, millions: {per_layer}",
        f"- check (dropout off: eval mode; same weights, same batch of {check_batch}; loss before"
        f" -> after one SGD step): {loss_text}; agree with torch within a relative {CHECK_RTOL:g}",
        f"- time: float32, dropout on (training mode); each library and batch in a fresh process;"
        f" one warm-up step (JIT) and one memory step untimed, then the median of {steps} steps",
        "- peak memory: in the same process, after the warm-up step and freeing the gradients:"
        " gc, glibc malloc_trim, reset of the kernel's peak RSS (/proc/self/clear_refs); then"
        " VmHWM during one step minus the RSS before it. Counted: activations, saved caches,"
        " workspaces, gradients, update temporaries; not counted: the model, its momentum"
        " buffers and the batch, which are there before the step in both libraries",
    ]


def table_lines(rows, flops_per_image, sgemm):
    torch_rows = {r.batch: r for r in rows if r.library == "torch"}
    lines = ["| library | batch | ms/step | min-max ms | images/s | GFLOP/s | % of SGEMM"
             " | time / torch | peak MB | memory / torch | first step s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gflops, base = r.gflops(flops_per_image), torch_rows[r.batch]
        lines.append(f"| {LABELS[r.library]} | {r.batch} | {r.ms:.0f} | {r.ms_min:.0f}-{r.ms_max:.0f} |"
                     f" {r.images_per_s():.1f} |"
                     f" {gflops:.1f} | {100 * gflops / sgemm:.0f}% | {r.ms / base.ms:.2f} |"
                     f" {r.peak_mb:.0f} | {r.peak_mb / base.peak_mb:.2f} | {r.first_s:.2f} |")
    return lines


def first_step_lines(cold, warm):
    """The first step of a new process with an empty Numba cache, against a warm cache."""
    return [f"- first step, from `make_trainer` to the end of step 1, {LABELS['numba']} at batch"
            f" {cold['batch']}: **{cold['first_s']:.1f} s with an empty Numba cache** (every kernel"
            f" compiled), {warm.first_s:.1f} s with the cache filled; a later step takes"
            f" {warm.ms / 1e3:.2f} s"]


def goal_lines(rows):
    by_key = {(r.library, r.batch): r for r in rows}
    lines = [f"| batch | time numba / torch (goal <= {GOAL_TIME}) | peak memory numba / torch (goal <= 1.2) |",
             "|---:|---|---|"]
    for batch in sorted({r.batch for r in rows}):
        ours, theirs = by_key["numba", batch], by_key["torch", batch]
        time_ratio, memory_ratio = ours.ms / theirs.ms, ours.peak_mb / theirs.peak_mb
        lines.append(f"| {batch} | {time_ratio:.2f} {verdict(time_ratio, GOAL_TIME)} |"
                     f" {memory_ratio:.2f} {verdict(memory_ratio, GOAL_MEMORY)} |")
    return lines


def verdict(ratio, goal):
    return "(met)" if ratio <= goal else "(**not met**)"


def ops_lines(ops):
    """bench_ops_cpu's per-op table, run here so its ratios come from this same run."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        ops.main(["--dtype", "float32"])
    return captured.getvalue().rstrip("\n").splitlines()


# --- steady steps: the spread of single steps (issue 23) -------------------------------

#: --steady's variants: name -> (library, environment of its process, label). The last two
#: control the OS's memory directly instead of reusing buffers, for comparison.
STEADY_VARIANTS = {
    "fresh": ("numba", {"TINYALEX_REUSE_BUFFERS": "0"}, "tinyalex numba, fresh arrays (before)"),
    "reuse": ("numba", {"TINYALEX_REUSE_BUFFERS": "1"}, "tinyalex numba, reused buffers"),
    "torch": ("torch", {}, "torch"),
    "fresh-no-thp": ("numba", {"TINYALEX_REUSE_BUFFERS": "0", "NUMPY_MADVISE_HUGEPAGE": "0"},
                     "tinyalex numba, fresh arrays, NUMPY_MADVISE_HUGEPAGE=0"),
    "fresh-heap": ("numba", {"TINYALEX_REUSE_BUFFERS": "0",
                             "GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"},
                   "tinyalex numba, fresh arrays, glibc keeps freed memory (mmap_max=0, no trim)"),
}
GOAL_SPREAD = 1.15                     # slowest / fastest of the timed steps, at most


def spread(result, key="seconds"):
    """Slowest / fastest of a process's timed steps (wall time, or with key="cpu_seconds"
    CPU time, which another process's load touches less)."""
    return max(result[key]) / min(result[key])


def median_ms(result, key="seconds"):
    return 1e3 * statistics.median(result[key])


def run_steady(batch, steps, rounds, variants):
    """{variant: [result per round]}: each variant in a fresh process, the variants
    alternated round after round, so that a change in the machine's load touches all."""
    results = {name: [] for name in variants}
    for round_index in range(rounds):
        for name in variants:
            library, env, _ = STEADY_VARIANTS[name]
            result = measure_in_subprocess(library, batch, steps, env_extra=env)
            results[name].append(result)
            print(f"round {round_index + 1} {name:>12}: median {median_ms(result):.0f} ms, spread"
                  f" {spread(result):.2f}, CPU {median_ms(result, 'cpu_seconds'):.0f} ms/step",
                  file=sys.stderr, flush=True)
    return results


def hugepage_line():
    settings = []
    for name in ("enabled", "defrag"):
        try:
            with open(f"/sys/kernel/mm/transparent_hugepage/{name}") as setting:
                settings.append(f"{name} = {setting.read().strip()}")
        except OSError:
            settings.append(f"{name}: unreadable")
    return f"- transparent huge pages: {'; '.join(settings)}"


def steady_lines(results, batch, steps, load_average, load_average_end, ops, losses):
    """The --steady report: a dated section with one row per process and a summary."""
    torch_ms = [median_ms(r) for r in results["torch"]] if "torch" in results else None
    lines = [f"## Steady steps: {steps} single steps at batch {batch} ({time.strftime('%Y-%m-%d')})", ""]
    lines += ops.machine_lines() + machine_extra_lines(load_average, load_average_end) + [hugepage_line()]
    loss_text = "; ".join(f"{LABELS[lib]} {a:.6f} -> {b:.6f}" for lib, (a, b) in losses.items())
    lines += [
        f"- check (eval mode, batch {batch}, loss before -> after one SGD step): {loss_text}",
        "- method: each row is one fresh process (fashion_alexnet, float32, SGD as above): a"
        f" warm-up step, the memory step, then {steps} steps timed one by one; the variants"
        " alternate, round after round. CPU = user + system time of all threads, CPU"
        " spread its slowest / fastest step"
        " (getrusage), faults = minor page faults; 'pool MB' is the part of the buffer pool's"
        " region ever used (tinyalex/kernels/numba/buffers.py): resident between steps,"
        " gradients included; the memory step starts without it, so its peak counts it", "",
        "| variant | round | median ms | min-max ms | spread max/min | CPU ms/step | CPU spread"
        " | system ms/step | faults/step | time / torch | peak MB | pool MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rounds in results.items():
        for index, r in enumerate(rounds):
            ms = [1e3 * t for t in r["seconds"]]
            ratio = f"{median_ms(r) / torch_ms[index]:.2f}" if torch_ms else "-"
            lines.append(f"| {STEADY_VARIANTS[name][2]} | {index + 1} | {median_ms(r):.0f} |"
                         f" {min(ms):.0f}-{max(ms):.0f} | {spread(r):.2f} |"
                         f" {median_ms(r, 'cpu_seconds'):.0f} | {spread(r, 'cpu_seconds'):.2f} |"
                         f" {median_ms(r, 'system_seconds'):.0f} |"
                         f" {statistics.median(r['minor_faults']):.0f} | {ratio} | {r['peak_mb']:.0f} |"
                         f" {r['pool_mb']:.0f} |")
    lines += ["", f"Summary (goal: spread <= {GOAL_SPREAD} in every round for reused buffers, and"
              " still faster than torch):", ""]
    for name, rounds in results.items():
        spreads = ", ".join(f"{spread(r):.2f}" for r in rounds)
        cpu_spreads = ", ".join(f"{spread(r, 'cpu_seconds'):.2f}" for r in rounds)
        text = (f"- {STEADY_VARIANTS[name][2]}: spread {spreads} (CPU {cpu_spreads}); median ms"
                f" {', '.join(f'{median_ms(r):.0f}' for r in rounds)}")
        if torch_ms and name != "torch":
            ratios = [median_ms(r) / t for r, t in zip(rounds, torch_ms)]
            text += f"; time / torch {', '.join(f'{x:.2f}' for x in ratios)}"
        lines.append(text)
    if "reuse" in results and "fresh" in results:
        ratios = [median_ms(a) / median_ms(b) for a, b in zip(results["reuse"], results["fresh"])]
        worst = max(spread(r) for r in results["reuse"])
        lines.append(f"- reused / fresh, median step time per round: {', '.join(f'{x:.2f}' for x in ratios)};"
                     f" worst spread with reused buffers {worst:.2f}"
                     f" {verdict(worst, GOAL_SPREAD)}")
    return lines


def steady_main(args):
    load_average = os.getloadavg()
    ops = bench_ops_module()
    batch = args.batches[0]
    losses = check_losses(batch, ["numba", "torch"])
    results = run_steady(batch, args.steps, args.rounds, args.variants)
    command = "PYTHONPATH=. python benchmarks/bench_cpu.py " + " ".join(args.argv)
    text = "\n".join(steady_lines(results, batch, args.steps, load_average, os.getloadavg(), ops, losses)
                     + ["", f"Command: `{command}`"]) + "\n"
    print(text, end="")
    if args.json:                                       # every step's numbers, for a closer look
        with open(args.json, "w") as out:
            json.dump({"command": command, "results": results}, out, indent=1)
    if args.append:
        with open(args.append, "a") as out:             # a dated section after what is there
            out.write("\n" + text)


# --- main ------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", help="default 16 32 64 (--steady: 32)")
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(DEFAULT_LIBRARIES),
                        help="'numba' and 'torch' are always run (the goal compares them)")
    parser.add_argument("--steps", type=int, help="timed steps per library and batch (default 5;"
                        " --steady: 20)")
    parser.add_argument("--quick", action="store_true", help="batch 16 only, 2 timed steps")
    parser.add_argument("--ops", action="store_true", help="also run bench_ops_cpu.py's per-op table")
    parser.add_argument("--out", help="also write the report to this markdown file, in place of its"
                                      " '## CPU training step' section (the --steady sections stay)")
    parser.add_argument("--steady", action="store_true",
                        help="per-step times and their spread (max/min) of --variants, alternated"
                             " over --rounds fresh processes each, at the first of --batches")
    parser.add_argument("--rounds", type=int, default=3, help="--steady: processes per variant")
    parser.add_argument("--variants", nargs="+", choices=list(STEADY_VARIANTS),
                        default=["fresh", "reuse", "torch"], help="--steady: what to compare")
    parser.add_argument("--append", help="--steady: append the report to this markdown file")
    parser.add_argument("--json", help="--steady: also write every step's numbers to this file")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)  # measure() in a subprocess
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.batches = args.batches or ([32] if args.steady else [16, 32, 64])
    args.steps = (20 if args.steady else 5) if args.steps is None else args.steps
    if args.quick:
        args.batches, args.steps = [16], 2
    args.libraries = [lib for lib in LIBRARIES if lib in set(args.libraries) | {"numba", "torch"}]
    if args.steps < 1 or min(args.batches) < 1 or args.rounds < 1:
        parser.error(f"--steps, --batches and --rounds: expected integers >= 1, got {args.steps},"
                     f" {args.batches} and {args.rounds}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.batches[0], args.steps)))
        return
    if args.steady:
        steady_main(args)
        return

    load_average = os.getloadavg()
    import torch                    # for the report's thread line and --ops, as numba's count
    torch.set_num_threads(numba.get_num_threads())
    ops = bench_ops_module()
    sgemm = ops.sgemm_gflops()
    print(f"SGEMM {sgemm:.1f} GFLOP/s", file=sys.stderr, flush=True)
    macs = layer_macs(make_model(), INPUT_SHAPE)
    flops = step_flops(macs)
    losses = check_losses(args.batches[0], args.libraries)
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as empty_cache:
        cold = measure_in_subprocess("numba", args.batches[0], 1, numba_cache_dir=empty_cache)
    print(f"first step with an empty Numba cache: {cold['first_s']:.1f} s", file=sys.stderr, flush=True)

    rows = []
    for batch in args.batches:
        for library in args.libraries:
            result = measure_in_subprocess(library, batch, args.steps)
            ms = [1e3 * s for s in result["seconds"]]
            rows.append(Row(library, batch, statistics.median(ms), min(ms), max(ms), result["peak_mb"],
                            result["first_s"]))
            print(f"{library:>5} batch {batch}: {rows[-1].ms:.0f} ms/step,"
                  f" peak +{result['peak_mb']:.0f} MB over {result['rss_before_mb']:.0f} MB",
                  file=sys.stderr, flush=True)

    report = [f"## CPU training step: Fashion-MNIST AlexNet {'x'.join(map(str, INPUT_SHAPE))},"
              " float32, SGD momentum 0.9, weight decay 5e-4", ""]
    report += ops.machine_lines() + machine_extra_lines(load_average, os.getloadavg())
    report += method_lines(sgemm, flops, macs, losses, args.batches[0], args.steps) + [""]
    report += table_lines(rows, sum(flops), sgemm) + [""]
    report += first_step_lines(cold, next(r for r in rows if r.library == "numba"))
    report += ["", "### Goals", ""] + goal_lines(rows)
    if args.ops:
        report += [""] + ops_lines(ops)
    text = "\n".join(report) + "\n"
    print(text, end="")
    if args.out:
        replace_step_section(args.out, text)


def replace_step_section(path, text):
    """Write `text` (a "## CPU training step" report) to `path` in place of the section of
    that name the file has (up to the next "## " heading), keeping the sections after it
    (--steady runs appended with --append); atomically, so an interrupted write leaves the
    old file."""
    old = open(path).read() if os.path.exists(path) else ""
    heading = text.split("\n", 1)[0].split(":", 1)[0] + ":"       # "## CPU training step:"
    lines = old.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    if starts:
        ends = [i for i, line in enumerate(lines) if i > starts[0] and line.startswith("## ")]
        before, after = lines[:starts[0]], lines[ends[0]:] if ends else []
    else:
        before, after = [], lines
    new = "".join(before) + text + ("\n" + "".join(after) if after else "")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda out: out.write(new.encode()))


if __name__ == "__main__":
    main()
