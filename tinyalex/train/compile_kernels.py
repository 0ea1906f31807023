"""A command's numba kernels, compiled before its first batch, with a progress bar.

On a first run (an empty Numba cache) `train`, `eval`, `predict` and `bench` show
"compiling CPU kernels (first run only): 12/26" instead of a first batch that sits for
half a minute. The work itself is tinyalex/kernels/numba/precompile.py's: worker processes
start while the data loads and compile with the caller. Where the numba set does not run on
the CPU in this one process (a GPU, another kernel set, MPI ranks), nothing happens here
and kernels compile on their first call as before.
"""
import numpy as np

from tinyalex.train.progress import CompileProgress


def start(device, world=None):
    """A precompile.Compiler whose workers start now, if this command's kernels are the
    numba set's on the CPU, in one process, and the cache lacks them; else None."""
    from tinyalex.kernels import cpu_kernel_set_name
    if device != "cpu" or world is not None or cpu_kernel_set_name() != "numba":
        return None
    from tinyalex.kernels.numba import precompile
    cold = not precompile.load_cached(precompile.Unit("relu._relu_forward", "float32"))
    return precompile.Compiler(start=cold)       # warm: workers only if something is missing


def prepare(compiler, model, training, rows, classes=None, stream=None):
    """Compile what a forward (and with `training` a backward and an SGD step) of `model`
    calls, with cross-entropy over (r, classes) logits for each r in `rows` if classes."""
    if compiler is None:
        return
    from tinyalex.kernels.numba import precompile
    ops = precompile.model_ops(model, training)
    if classes:
        ops += [precompile.cross_entropy_op(r, classes) for r in rows]
    if training:
        ops.append("sgd")
    dtype = np.dtype(next(iter(model.parameters())).dtype).name
    compiler.prepare(precompile.plan(ops, dtype, backward=training), CompileProgress(stream))


#: What benchmarks/bench_cpu.py's training step runs: fashion-alexnet with each conv algorithm.
BENCH_CPU_OPS = ["conv2d", "conv2d_winograd", "relu", "max_pool2d", "avg_pool2d", "dropout", "linear",
                 "cross_entropy", "sgd"]


def prepare_ops(ops, dtype="float32", stream=None):
    """Compile the kernels of `ops` (precompile.OPS names) before returning: for benchmarks,
    whose timings must not see a compilation."""
    from tinyalex.kernels import cpu_kernel_set_name
    if cpu_kernel_set_name() != "numba":
        return
    from tinyalex.kernels.numba import precompile
    compiler = precompile.Compiler()
    compiler.prepare(precompile.plan(ops, dtype, backward=True), CompileProgress(stream))
