"""Compiling a run's numba kernels before it calls them: in worker processes, into Numba's
disk cache, the cheap serial versions first.

With an empty cache Numba compiles each kernel on its first call, one after the other in
the calling process: the first `tinyalex train` on a 2-core machine sat 25 s on its first
batch (benchmarks/results/coldstart.md). For a run whose kernels are known (plan()):

1. Compiler() starts worker processes at once; they import numba and tinyalex while the
   caller loads its data, then wait for a plan;
2. prepare(units) loads what the disk cache already holds. Of the rest, the run needs
   now the serial version of each prange kernel (tinyalex/kernels/numba/parallel_kernel.py,
   about a third of the parallel version's compile time) and the plain kernels: the
   caller and the workers compile them, each unit claimed by whoever takes it first, and
   prepare returns once all are in, reporting progress as it goes;
3. the workers go on with the parallel versions while the run starts on the serial ones
   (one core runs, the others compile). When they are all in, a thread loads them and
   switches the kernels over. Both versions give the same bits, so the switch may fall
   anywhere in a run.

Nothing here is needed for a correct result: a kernel not in the cache compiles on its
first call, as it would without this module. Run as `python -m
tinyalex.kernels.numba.precompile`, this module is a worker.
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

#: The arguments each jitted kernel a run calls from Python takes, in Numba's notation with
#: {f} for the run's float type (float32 or float64). Keys are "module.name" in this set.
SIGNATURES = {
    "relu._relu_forward": "{f}[::1], {f}[::1]",
    "relu._relu_backward": "{f}[::1], {f}[::1], {f}[::1]",
    "dropout._dropout_forward": "{f}[::1], float64, uint64, uint64, {f}, {f}[::1], boolean[::1]",
    "dropout._dropout_backward": "{f}[::1], boolean[::1], {f}, {f}[::1]",
    "blas._tasks_i64": "{f}[::1], {f}[::1], {f}[::1], boolean, boolean, int64, int64, int64, float64,"
                       " int64, int64, int64, int64, int64[::1], int64[::1], int64[::1], int64[::1], boolean",
    "blas._tasks_i32": "{f}[::1], {f}[::1], {f}[::1], boolean, boolean, int64, int64, int64, float64,"
                       " int64, int64, int64, int64, int64[::1], int64[::1], int64[::1], int64[::1], boolean",
    "conv._im2col_into": "{f}[:, :, :, ::1], int64, int64, int64, int64, int64, int64, int64, int64,"
                         " {f}[:, :, ::1], boolean",
    "conv._from_batch_inner": "{f}[:, :, ::1], {f}[::1], {f}[:, :, ::1]",
    "conv._transpose_and_sum": "{f}[:, :, ::1], {f}[:, :, ::1], float64[::1]",
    "conv._col2im_into": "{f}[:, :, ::1], int64, int64, int64, int64, int64, int64, int64, int64,"
                         " {f}[:, :, :, ::1], boolean",
    "conv_winograd._transform_filter": "{f}[:, :, :, ::1], {f}[:, ::1], {f}[:, :, ::1]",
    "conv_winograd._pad_channels_last": "{f}[:, :, :, ::1], int64, int64, {f}[:, :, :, ::1]",
    "conv_winograd._transform_input": "{f}[:, :, :, ::1], int64, int64, int64, {f}[:, ::1], {f}[:, :, ::1]",
    "conv_winograd._transform_output": "{f}[:, :, ::1], {f}[:, ::1], {f}[::1], int64, int64,"
                                       " {f}[:, :, :, ::1]",
    "conv_winograd._transform_output_adjoint": "{f}[:, :, :, ::1], {f}[:, ::1], int64, int64, {f}[:, :, ::1]",
    "conv_winograd._transform_filter_adjoint": "{f}[:, :, ::1], {f}[:, ::1], {f}[:, :, :, ::1]",
    "lrn._lrn_forward": "{f}[:, :, :, ::1], int64, float64, float64, float64, {f}[:, :, :, ::1],"
                        " {f}[:, :, :, ::1]",
    "lrn._lrn_backward": "{f}[:, :, :, ::1], {f}[:, :, :, ::1], {f}[:, :, :, ::1], int64, float64,"
                         " float64, {f}[:, :, :, ::1]",
    "pool._max_pool_forward": "{f}[:, ::1], int64, int64, int64, int64, int64, int64, int64, int64,"
                              " int64, int64, {f}[:, ::1], int32[:, ::1]",
    "pool._max_pool_backward": "{f}[:, ::1], int32[:, ::1], {f}[:, ::1]",
    "pool._avg_pool_forward": "{f}[:, ::1], int64, int64, int64, int64, int64, int64, int64, int64,"
                              " {f}[:, ::1], {f}[:, :, ::1]",
    "pool._avg_pool_backward": "{f}[:, :, ::1], int64, int64, int64, int64, int64, int64, int64, int64,"
                               " {f}[:, ::1]",
    "cross_entropy._first_bad_target": "int64[::1], int64, int64",
    "cross_entropy._ordered_sum": "float64[::1],",
    "cross_entropy._class_losses_serial": "{f}[:, ::1], int64[::1], {f}[::1], int64, float64, float64[::1],"
                                          " float64[::1], float64[::1], float64[::1]",
    "cross_entropy._class_losses_parallel": "{f}[:, ::1], int64[::1], {f}[::1], int64, float64, float64[::1],"
                                            " float64[::1], float64[::1], float64[::1]",
    "cross_entropy._class_gradient_serial": "{f}[:, ::1], int64[::1], {f}[::1], int64, float64, float64,"
                                            " float64[::1], float64[::1], float64[::1], {f}[:, ::1]",
    "cross_entropy._class_gradient_parallel": "{f}[:, ::1], int64[::1], {f}[::1], int64, float64, float64,"
                                              " float64[::1], float64[::1], float64[::1], {f}[:, ::1]",
    "sgd._sgd": "{f}[::1], {f}[::1], {f}[::1], {f}, {f}, {f}, {f}, boolean, boolean, boolean, boolean, boolean",
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

#: The parallel versions that gain the quick start's step most, compiled first after the
#: run has started (serial against parallel time, per kernel: benchmarks/results/coldstart.md);
#: the others follow in the order of first call.
PARALLEL_FIRST = ("blas._tasks_i64", "blas._tasks_i32", "conv._im2col_into", "lrn._lrn_forward",
                  "lrn._lrn_backward", "conv_winograd._transform_input", "conv_winograd._transform_output",
                  "pool._max_pool_forward")

#: At most this many workers: more would each get little left to compile.
MAX_WORKERS = 3


@dataclasses.dataclass(frozen=True)
class Unit:
    """One compilation: kernel ("module.name"), its version ("serial", "parallel" or "" for
    a plain njit kernel) and the float type (a numpy dtype name)."""
    kernel: str
    version: str
    dtype: str

    def dispatcher(self):
        module, name = self.kernel.split(".")
        kernel = getattr(importlib.import_module(f"tinyalex.kernels.numba.{module}"), name)
        return getattr(kernel, self.version) if self.version else kernel

    def signature(self):
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
    kernel once, in the order of first call; a prange kernel gives its serial and its
    parallel version."""
    from tinyalex.kernels.numba.parallel_kernel import ParallelKernel
    kernels = []
    for op in ops:
        forward, back = OPS[op]
        kernels += forward + (back if backward else [])
    units = []
    for kernel in dict.fromkeys(kernels):
        kernel = _gemm_kernel() if kernel == GEMM else kernel
        if kernel is None:
            continue
        if isinstance(Unit(kernel, "", dtype).dispatcher(), ParallelKernel):
            units += [Unit(kernel, "serial", dtype), Unit(kernel, "parallel", dtype)]
        else:
            units.append(Unit(kernel, "", dtype))
    return units


def _gemm_kernel():
    from tinyalex.kernels.numba import blas
    if not blas.ON_NUMBA_POOL:
        return None                                     # numpy.matmul: nothing to compile
    return "blas._tasks_i64" if blas._names[4] == 64 else "blas._tasks_i32"


def load_cached(unit):
    """True if the unit is compiled in this process, now or by loading it from Numba's disk
    cache; False if it would have to be compiled. Dispatcher.compile() compiles on a cache
    miss; this is only its cache branch (Numba's internals: a Numba that changes them gives
    False, which costs time, not correctness)."""
    dispatcher, signature = unit.dispatcher(), unit.signature()
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
    unit.dispatcher().compile(unit.signature())


def cache_usable():
    """Whether Numba can write its disk cache here (otherwise workers would compile in vain)."""
    from tinyalex.kernels.numba import relu
    return relu._relu_forward.parallel.stats.cache_path is not None


def default_workers():
    """One worker per core but the caller's, at most MAX_WORKERS (none on one core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_WORKERS))


class Compiler:
    """The worker processes of one run and what they have compiled (module docstring).

    Compiler() starts them (with start=False, prepare() does if anything must be
    compiled); prepare() gives them a plan. They are stopped when they are done, by
    close(), when the Compiler is dropped before prepare() (a run that failed to start),
    or at exit. With no workers (one core) the caller compiles alone, and the prange
    kernels keep their serial versions, which lose nothing on one core.
    """

    def __init__(self, workers=None, start=True):
        self.workers = default_workers() if workers is None else workers
        if self.workers and not cache_usable():
            self.workers = 0                    # nothing a worker compiled would reach us
        self.processes, self.folder = [], None
        self.reports = _Reports()
        self.finished = threading.Event()       # set once every kernel runs its final version
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

    def prepare(self, units, progress=None, serial_first=True):
        """Make `units` run without compiling in this process; returns when the run may start.

        With serial_first, a prange kernel whose parallel version is not in the cache runs
        its serial version until the workers have compiled the parallel one (the module
        docstring); without, the parallel versions are compiled before returning.
        progress(done, total) is called as units come in, if any must be compiled."""
        now, later, deferred = [], [], []
        for unit in units:
            if unit.version == "serial":
                continue                                # decided with its parallel version
            if unit.version == "":
                if not load_cached(unit):
                    now.append(unit)
                continue
            kernel = Unit(unit.kernel, "", unit.dtype).dispatcher()
            serial = dataclasses.replace(unit, version="serial")
            if load_cached(unit):
                kernel.run = kernel.parallel
            elif serial_first:
                kernel.run = kernel.serial
                if not load_cached(serial):
                    now.append(serial)
                if self.workers:
                    later.append(unit)
                    deferred.append(kernel)
            else:
                now.append(unit)
        pairs = sorted(zip(later, deferred), key=lambda pair: _priority(pair[0]))   # stable sort
        later, deferred = [unit for unit, _ in pairs], [kernel for _, kernel in pairs]
        if (now or later) and self.workers and not self.processes:
            self._start()
        for process in self.processes:
            try:
                process.stdin.write(json.dumps(dict(now=[dataclasses.astuple(u) for u in now],
                                                    later=[dataclasses.astuple(u) for u in later],
                                                    folder=self.folder)) + "\n")
                process.stdin.close()                   # a worker with nothing to do ends
            except OSError:                             # one that died: the others, or we, go on
                pass
        self._compile_now(now, progress)
        if later:   # the thread holds this Compiler, and so its workers, until they are done
            threading.Thread(target=self._switch_when_compiled, args=(deferred, later),
                             daemon=True).start()
        else:
            self.finished.set()
            self.close()

    def _compile_now(self, now, progress):
        """Compile `now` with the workers: we take units from the front, they from the back."""
        if not now:
            return
        reports, ours, everyone = self.reports, set(), len(self.processes)

        def done():
            return ours | reports.indices("now")

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

    def _switch_when_compiled(self, kernels, units):
        """Thread: as the workers report each parallel version, load it and switch its kernel."""
        switched = set()
        while True:
            ready = self.reports.wait_for_new("later", switched, len(units), len(self.processes))
            for index in sorted(ready):
                if load_cached(units[index]):
                    kernels[index].run = kernels[index].parallel
            switched |= ready
            if not ready:
                break
        self.finished.set()
        self.close()

    def close(self):
        """Stop the workers still running and remove their folder."""
        if self._stop is not None:
            self._stop()


class _Reports:
    """What the workers reported: (phase, index) of each unit compiled, and how many ended.
    Their reader threads hold this, not the Compiler, so a dropped Compiler is collected."""

    def __init__(self):
        self.condition = threading.Condition()
        self.compiled, self.exited = set(), 0

    def read(self, process):
        """Thread: record what one worker reports, until it ends."""
        for line in process.stdout:
            phase, index = line.split()
            with self.condition:
                self.compiled.add((phase, int(index)))
                self.condition.notify_all()
        process.wait()
        with self.condition:
            self.exited += 1
            self.condition.notify_all()

    def indices(self, phase):
        with self.condition:
            return {i for p, i in self.compiled if p == phase}

    def wait_beyond(self, count, workers):
        """Wait until the workers reported more than `count` units of 'now'; False if they
        all ended instead."""
        with self.condition:
            self.condition.wait_for(lambda: len(self.indices("now")) > count or self.exited == workers)
            return len(self.indices("now")) > count

    def wait_for_new(self, phase, known, count, workers):
        """The indices of `phase` reported beyond `known`, once there are any; an empty set
        once all `count` are known or the workers all ended."""
        with self.condition:
            self.condition.wait_for(lambda: self.indices(phase) - known or len(known) == count
                                    or self.exited == workers)
            return self.indices(phase) - known


def _priority(unit):
    """Where a parallel version comes in PARALLEL_FIRST (after it if not in it)."""
    return PARALLEL_FIRST.index(unit.kernel) if unit.kernel in PARALLEL_FIRST else len(PARALLEL_FIRST)


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
    """A worker: read a plan from stdin; compile the units of `now` not yet claimed, from the
    last (the caller starts from the first), then those of `later`; report each on stdout."""
    line = sys.stdin.readline()
    if not line.strip():
        return
    plan = json.loads(line)
    now = [Unit(*u) for u in plan["now"]]
    later = [Unit(*u) for u in plan["later"]]
    for index in reversed(range(len(now))):
        if _claim(plan["folder"], f"now{index}"):
            compile_unit(now[index])
            print("now", index, flush=True)
    if later and hasattr(os, "nice"):
        os.nice(19)     # from here on the run has started: take only the cores it leaves idle
    for index, unit in enumerate(later):
        if _claim(plan["folder"], f"later{index}"):
            compile_unit(unit)
            print("later", index, flush=True)


if __name__ == "__main__":
    _work()
