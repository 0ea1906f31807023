"""Compiling a run's numba kernels before it calls them: in worker processes, into Numba's
disk cache, while the caller loads its data.

With an empty cache Numba compiles each kernel on its first call, one after the other in
the calling process: the first `tinyalex train` on a 2-core machine sat 25 s on its first
batch (benchmarks/results/coldstart.md). For a run whose kernels are known (plan()):

1. Compiler() starts worker processes at once; they import numba and tinyalex while the
   caller loads its data, then wait for a plan;
2. prepare(units) loads what the disk cache already holds. The rest the caller and the
   workers compile together, each unit claimed by whoever takes it first (the caller from
   the front of the plan, the workers from the back), and prepare returns once all are in,
   reporting progress as it goes. The caller loads what a worker compiled from the cache
   on its first call.

Each parallel kernel is compiled once per float type (tinyalex/kernels/numba/parallel_kernel.py),
so there is nothing left to compile once the run has started. Nothing here is needed for a
correct result: a kernel not in the cache compiles on its first call, as it would without
this module. Run as `python -m tinyalex.kernels.numba.precompile`, this module is a worker.
"""
import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref

from numba.core import sigutils
from numba.core.compiler_lock import global_compiler_lock

#: The arguments each plain jitted kernel a run calls from Python takes, in Numba's notation
#: with {f} for the run's float type (float32 or float64). Keys are "module.name" in this
#: set. A parallel kernel carries its own (tinyalex/kernels/numba/parallel_kernel.py).
SIGNATURES = {
    "cross_entropy._first_bad_target": "int64[::1], int64, int64",
    "cross_entropy._ordered_sum": "float64[::1],",
    "cross_entropy._class_losses_serial": "{f}[:, ::1], int64[::1], {f}[::1], int64, float64, float64[::1],"
                                          " float64[::1], float64[::1], float64[::1]",
    "cross_entropy._class_gradient_serial": "{f}[:, ::1], int64[::1], {f}[::1], int64, float64, float64,"
                                            " float64[::1], float64[::1], float64[::1], {f}[:, ::1]",
}

GEMM = "blas.gemm"   # stands for the task kernel of this machine's BLAS (_gemm_kernel)

#: op -> (the kernels its forward calls, those its backward adds), in the order a step
#: calls them. cross_entropy is with class-index targets, as training has them.
OPS = {
    "conv2d": (["conv._im2col_into", GEMM, "conv._from_batch_inner"],
               ["conv._transpose_and_sum", "conv._col2im_into"]),
    "conv2d_winograd": (["conv_winograd._transform_filter", "conv_winograd._pad_channels_last",
                         "conv_winograd._transform_input", GEMM, "conv_winograd._transform_output"],
                        ["conv_winograd._transform_output_adjoint", "conv_winograd._transform_filter_adjoint"]),
    "relu": (["relu._relu_forward"], ["relu._relu_backward"]),
    "local_response_norm": (["lrn._lrn_forward"], ["lrn._lrn_backward"]),
    "max_pool2d": (["pool._max_pool_forward"], ["pool._max_pool_backward"]),
    "avg_pool2d": (["pool._avg_pool_forward"], ["pool._avg_pool_backward"]),
    "dropout": (["dropout._dropout_forward"], ["dropout._dropout_backward"]),
    "linear": ([GEMM], []),
    "cross_entropy": (["cross_entropy._first_bad_target", "cross_entropy._class_losses_serial",
                       "cross_entropy._ordered_sum"], ["cross_entropy._class_gradient_serial"]),
    "cross_entropy_parallel": (["cross_entropy._first_bad_target", "cross_entropy._class_losses_parallel",
                                "cross_entropy._ordered_sum"], ["cross_entropy._class_gradient_parallel"]),
    "sgd": (["sgd._sgd"], []),
}

#: At most this many workers: more would each get little left to compile.
MAX_WORKERS = 3


@dataclasses.dataclass(frozen=True)
class Unit:
    """One compilation: kernel ("module.name") for a float type (a numpy dtype name)."""
    kernel: str
    dtype: str

    def dispatcher(self):
        """The kernel: a ParallelKernel, or a plain Numba dispatcher."""
        module, name = self.kernel.split(".")
        return getattr(importlib.import_module(f"tinyalex.kernels.numba.{module}"), name)

    def signature(self):
        """The Numba types of the kernel's arguments."""
        from tinyalex.kernels.numba.parallel_kernel import ParallelKernel
        kernel = self.dispatcher()
        if isinstance(kernel, ParallelKernel):
            return kernel.arguments(self.dtype)
        return sigutils.normalize_signature(SIGNATURES[self.kernel].format(f=self.dtype))[0]


def model_ops(model, training):
    """The OPS a forward (and with `training` a backward) of `model`'s layers runs."""
    from tinyalex import nn
    from tinyalex.kernels import conv_algorithms
    from tinyalex.kernels.numba import CONV2D_ALGORITHMS
    layers = {nn.ReLU: "relu", nn.LocalResponseNorm: "local_response_norm", nn.MaxPool2d: "max_pool2d",
              nn.AvgPool2d: "avg_pool2d", nn.AdaptiveAvgPool2d: "avg_pool2d", nn.Linear: "linear"}
    ops = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            wanted = module.algorithm or conv_algorithms.get_conv_algorithm()
            if wanted == "auto":       # the output size is not known here: taken as large enough
                wanted = conv_algorithms.choose(module.weight.shape, module.stride, module.dilation,
                                                module.groups, (conv_algorithms.MIN_OUTPUT,) * 2,
                                                CONV2D_ALGORITHMS)
            ops.append("conv2d_winograd" if wanted == "winograd" else "conv2d")
        elif isinstance(module, nn.Dropout):
            if training and module.p > 0:
                ops.append("dropout")
        elif type(module) in layers:
            ops.append(layers[type(module)])
    return list(dict.fromkeys(ops))


def cross_entropy_op(rows, classes):
    """The OPS entry of a cross-entropy over (rows, classes) logits."""
    from tinyalex.kernels.numba.cross_entropy import PARALLEL_MIN_ELEMENTS
    return "cross_entropy_parallel" if rows * classes >= PARALLEL_MIN_ELEMENTS else "cross_entropy"


def plan(ops, dtype, backward):
    """The units of the kernels `ops` run in `dtype` (forward, and backward if asked), each
    kernel once, in the order of first call."""
    kernels = []
    for op in ops:
        forward, back = OPS[op]
        kernels += forward + (back if backward else [])
    kernels = (_gemm_kernel() if kernel == GEMM else kernel for kernel in dict.fromkeys(kernels))
    return [Unit(kernel, dtype) for kernel in kernels if kernel is not None]


def _gemm_kernel():
    from tinyalex.kernels.numba import blas
    if not blas.ON_NUMBA_POOL:
        return None                                     # numpy.matmul: nothing to compile
    return "blas._tasks_i64" if blas._names[4] == 64 else "blas._tasks_i32"


def load_cached(unit):
    """True if the unit is compiled in this process, now or by loading it from Numba's disk
    cache; False if it would have to be compiled. Numba's internals (its cache branch of
    compiling): a Numba that changes them gives False, which costs time, not correctness."""
    from tinyalex.kernels.numba.parallel_kernel import ParallelKernel
    dispatcher = unit.dispatcher()
    if isinstance(dispatcher, ParallelKernel):
        if not dispatcher.cached(unit.dtype):
            return False
        dispatcher.build(unit.dtype)
        return True
    signature = unit.signature()
    if signature in dispatcher.overloads:
        return True
    try:
        with global_compiler_lock:
            result = dispatcher._cache.load_overload(signature, dispatcher.targetctx)
            if result is None:
                return False
            dispatcher.targetctx.insert_user_function(result.entry_point, result.fndesc, [result.library])
            dispatcher.add_overload(result)
        return True
    except AttributeError:
        return False


def compile_unit(unit):
    from tinyalex.kernels.numba.parallel_kernel import ParallelKernel
    dispatcher = unit.dispatcher()
    if isinstance(dispatcher, ParallelKernel):
        dispatcher.build(unit.dtype)
    else:
        dispatcher.compile(unit.signature())


def cache_usable():
    """Whether Numba can write its disk cache here (otherwise workers would compile in vain).
    The parallel kernels' ufuncs cache by the same rules as this plain kernel."""
    from tinyalex.kernels.numba import cross_entropy
    return cross_entropy._ordered_sum.stats.cache_path is not None


def default_workers():
    """One worker per core but the caller's, at most MAX_WORKERS (none on one core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_WORKERS))


class Compiler:
    """The worker processes of one run and what they have compiled (module docstring).

    Compiler() starts them (with start=False, prepare() does if anything must be
    compiled); prepare() gives them a plan. They are stopped when they are done, by
    close(), when the Compiler is dropped before prepare() (a run that failed to start),
    or at exit. With no workers (one core) the caller compiles alone.
    """

    def __init__(self, workers=None, start=True):
        self.workers = default_workers() if workers is None else workers
        if self.workers and not cache_usable():
            self.workers = 0                    # nothing a worker compiled would reach us
        self.processes, self.folder = [], None
        self.reports = _Reports()
        self._stop = None
        if self.workers and start:
            self._start()

    def _start(self):
        import tinyalex
        self.folder = tempfile.mkdtemp(prefix="tinyalex-compile-")
        root = os.path.dirname(os.path.dirname(os.path.abspath(tinyalex.__file__)))
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)  # this tinyalex
        for k in range(self.workers):
            with open(os.path.join(self.folder, f"worker{k}.log"), "wb") as log:
                process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=log, env=env, text=True)
            self.processes.append(process)
            threading.Thread(target=self.reports.read, args=(process,), daemon=True).start()
        self._stop = weakref.finalize(self, _stop, self.processes, self.folder)

    def prepare(self, units, progress=None):
        """Make `units` run without compiling in this process; returns when they are all in
        Numba's cache (or compiled here). progress(done, total) is called as units come in,
        if any must be compiled."""
        now = [unit for unit in units if not load_cached(unit)]
        if now and self.workers and not self.processes:
            self._start()
        for process in self.processes:
            try:
                process.stdin.write(json.dumps(dict(now=[dataclasses.astuple(u) for u in now],
                                                    folder=self.folder)) + "\n")
                process.stdin.close()                   # a worker with nothing to do ends
            except OSError:                             # one that died: the others, or we, go on
                pass
        try:
            self._compile_now(now, progress)
        finally:
            self.close()

    def _compile_now(self, now, progress):
        """Compile `now` with the workers: we take units from the front, they from the back."""
        if not now:
            return
        reports, ours, everyone = self.reports, set(), len(self.processes)

        def done():
            return ours | reports.indices()

        def report():
            if progress:
                progress(len(done()), len(now))

        report()
        for index, unit in enumerate(now):
            if index not in done() and _claim(self.folder, f"now{index}"):
                compile_unit(unit)
                ours.add(index)
                report()
        while len(done()) < len(now) and reports.wait_beyond(len(done()) - len(ours), everyone):
            report()
        for index in sorted(set(range(len(now))) - done()):   # the workers ended before these
            compile_unit(now[index])
            ours.add(index)
            report()

    def close(self):
        """Stop the workers still running and remove their folder."""
        if self._stop is not None:
            self._stop()


class _Reports:
    """The indices of the units the workers reported compiled, and how many workers ended.
    Their reader threads hold this, not the Compiler, so a dropped Compiler is collected."""

    def __init__(self):
        self.condition = threading.Condition()
        self.compiled, self.exited = set(), 0

    def read(self, process):
        """Thread: record what one worker reports, until it ends."""
        for line in process.stdout:
            with self.condition:
                self.compiled.add(int(line))
                self.condition.notify_all()
        process.wait()
        with self.condition:
            self.exited += 1
            self.condition.notify_all()

    def indices(self):
        with self.condition:
            return set(self.compiled)

    def wait_beyond(self, count, workers):
        """Wait until the workers reported more than `count` units; False if they all ended
        instead."""
        with self.condition:
            self.condition.wait_for(lambda: len(self.compiled) > count or self.exited == workers)
            return len(self.compiled) > count


def _stop(processes, folder):
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def _claim(folder, name):
    """True for the first process to claim `name` (a file created exclusively)."""
    if folder is None:
        return True
    try:
        os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _work():
    """A worker: read a plan from stdin; compile the units not yet claimed, from the last
    (the caller starts from the first); report the index of each on stdout."""
    line = sys.stdin.readline()
    if not line.strip():
        return
    plan = json.loads(line)
    now = [Unit(*u) for u in plan["now"]]
    for index in reversed(range(len(now))):
        if _claim(plan["folder"], f"now{index}"):
            compile_unit(now[index])
            print(index, flush=True)


if __name__ == "__main__":
    _work()
