"""Compiling a run's numba kernels ahead of it (tinyalex/kernels/numba/precompile.py): the
plan is exactly what a training step and an evaluation call, a first run compiles them with
worker processes, a second run finds everything in Numba's cache, also when tinyalex is
installed read-only."""
import importlib
import os
import pkgutil
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from numba.core.dispatcher import Dispatcher

from tinyalex import functional as F
from tinyalex.autograd import no_grad
import tinyalex.kernels.numba as numba_kernels
from tinyalex.kernels.numba import precompile
from tinyalex.kernels.numba.parallel_kernel import ParallelKernel
from tinyalex.tensor import tensor
from tinyalex.train.config import TrainConfig
from tinyalex.train.loop import build, one_step
from tinyalex.train.parallel.data_parallel import BatchGradient

ROOT = Path(__file__).resolve().parents[2]


def all_kernels():
    """"module.name" of every plain kernel precompile.SIGNATURES lists and every parallel kernel."""
    names = set(precompile.SIGNATURES)
    for module in pkgutil.iter_modules(numba_kernels.__path__):
        for name, value in vars(importlib.import_module(f"{numba_kernels.__name__}.{module.name}")).items():
            if isinstance(value, ParallelKernel):
                names.add(f"{module.name}.{name}")
    return names


def record_kernel_calls(monkeypatch):
    """{(kernel, argument types)} of every call of a kernel of all_kernels()."""
    calls = set()
    for key in all_kernels():
        module_name, name = key.split(".")
        module = importlib.import_module(f"tinyalex.kernels.numba.{module_name}")
        kernel = getattr(module, name)

        def recorder(*args, kernel=kernel, key=key):
            calls.add((key, tuple(numba.typeof(a) for a in args)))
            return kernel(*args)
        monkeypatch.setattr(module, name, recorder)
    return calls


def test_the_plan_of_a_training_run_is_what_its_steps_and_evaluation_call(monkeypatch):
    """The quick start's run, cpu-alexnet in float32 (batch 64 in micro-batches of 32, test
    batches of 256): nothing it calls is left out of the plan, nothing planned goes unused."""
    model, optimizer, _ = build(TrainConfig(model="cpu-alexnet", lr=0.02, lr_schedule="none"), 10)
    ops = precompile.model_ops(model, training=True) + [
        precompile.cross_entropy_op(32, 10), precompile.cross_entropy_op(256, 10), "sgd"]
    planned = {(u.kernel, u.signature()) for u in precompile.plan(ops, "float32", backward=True)}
    calls = record_kernel_calls(monkeypatch)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    one_step(model, optimizer, images, labels, "cpu", None, BatchGradient(model, 32))
    model.eval()
    with no_grad():
        F.cross_entropy(model(tensor(np.concatenate([images] * 4))), tensor(np.tile(labels, 4)),
                        reduction="none")
    assert calls - planned == set(), "called, not planned"
    assert planned - calls == set(), "planned, not called"


def test_every_planned_kernel_is_a_kernel_of_the_set_with_its_signature():
    """A name in OPS that is no kernel, or a plain one without an entry in SIGNATURES, would
    stop a first run; the argument types must parse for both float types. OPS leaves out
    only mse_loss's kernels and the cross-entropy with probability targets (no training
    run calls them)."""
    left_out = {"mse_loss._squared_error", "mse_loss._scale", "cross_entropy._probability_losses_parallel",
                "cross_entropy._probability_gradient_parallel", "blas._tasks_i32", "blas._tasks_i64"}
    for dtype in ("float32", "float64"):
        units = precompile.plan(list(precompile.OPS), dtype, backward=True)
        assert {u.kernel for u in units} | left_out == all_kernels()
        for unit in units:
            assert isinstance(unit.dispatcher(), (Dispatcher, ParallelKernel)), unit
            assert all(isinstance(t, numba.types.Type) for t in unit.signature()), unit


def test_a_forward_only_plan_leaves_out_the_backward_kernels():
    model, _, _ = build(TrainConfig(model="cpu-alexnet", lr=0.02, lr_schedule="none"), 10)
    kernels = {u.kernel for u in precompile.plan(precompile.model_ops(model, training=False), "float32",
                                                 backward=False)}
    assert "lrn._lrn_forward" in kernels and "conv_winograd._transform_input" in kernels
    assert not any(k.endswith(("_backward", "_adjoint", "_col2im_into", "_transpose_and_sum")) for k in kernels)
    assert "dropout._dropout_forward" not in kernels                # eval mode: no mask


RUN = textwrap.dedent("""
    import json, os, sys, numpy as np
    from tinyalex.kernels.numba import cross_entropy, precompile, relu
    if os.environ.get("READ_ONLY"):                  # make sure the install is read-only to us
        try:
            open(os.path.join(os.environ["READ_ONLY"], "probe"), "w")
            sys.exit("the install is writable")
        except OSError:
            pass
    reported = []
    compiler = precompile.Compiler(start=False)
    units = precompile.plan(["relu", "linear"], "float32", backward=True)
    compiler.prepare(units, lambda done, total: reported.append([done, total]))
    in_cache = all(u.dispatcher().cached("float32") for u in units)
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    right = bool(np.array_equal(relu.relu_forward(x)[0], np.maximum(x, 0)))
    print(json.dumps(dict(reported=reported, workers=len(compiler.processes), in_cache=in_cache,
                          right=right, workers_left=[p.poll() is None for p in compiler.processes],
                          cache=cross_entropy._ordered_sum.stats.cache_path)))
""")


def run_in_subprocess(env, cwd, wrapper=()):
    done = subprocess.run([*wrapper, sys.executable, "-c", RUN], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json
    return json.loads(done.stdout.splitlines()[-1])


def fresh_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    return dict(env, NUMBA_NUM_THREADS="2", **extra)


def test_a_first_run_compiles_with_a_worker_a_second_finds_everything_in_the_cache(tmp_path):
    """The kernels are compiled by the caller and a worker, into Numba's disk cache, before
    prepare() returns, and the worker has ended; a second run compiles nothing."""
    env = fresh_env(NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    first = run_in_subprocess(env, tmp_path)
    assert first["reported"][0] == [0, 3] and first["reported"][-1] == [3, 3]   # relu's two and the GEMM's
    assert (first["in_cache"], first["right"], first["workers"] >= 1) == (True, True, True)
    assert not any(first["workers_left"])
    again = run_in_subprocess(env, tmp_path)
    assert again == dict(first, reported=[], workers=0, workers_left=[])      # nothing left to compile,
    # the GEMM kernel included (a closure over its cblas functions missed the cache every run)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith("tinyalex-compile")]


def read_only(site):
    """A command prefix that runs its command with `site` read-only: for root, whom file modes
    do not stop, under a read-only bind mount in a mount namespace of its own (unshare)."""
    for path in [site, *site.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    if os.geteuid() != 0:
        return ()
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("as root, a read-only install needs `unshare -m` (a mount namespace) to test")
    return ("unshare", "-m", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"', str(site))


def test_a_read_only_install_caches_in_the_user_cache_directory(tmp_path):
    """tinyalex copied into a site-packages it cannot write, as pip installs a wheel for a
    user without rights on it: Numba caches in the user's cache directory instead, the
    workers too, and the second run compiles nothing."""
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "tinyalex", site / "tinyalex", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        wrapper = read_only(site)
        env = fresh_env(PYTHONPATH=str(site), HOME=str(tmp_path / "home"), READ_ONLY=str(site / "tinyalex"),
                        XDG_CACHE_HOME=str(tmp_path / "user-cache"))
        first = run_in_subprocess(env, tmp_path, wrapper)
        again = run_in_subprocess(env, tmp_path, wrapper)
    finally:
        for path in [site, *site.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert first["cache"].startswith(str(tmp_path / "user-cache" / "numba"))
    assert (first["in_cache"], first["right"], first["reported"][-1]) == (True, True, [3, 3])
    assert (again["reported"], again["workers"]) == ([], 0)
    assert not list(site.rglob("*.nbi")), "nothing is written into the install"
