"""What makes a timing fair, checked without a GPU: like-for-like float modes, warm-up
outside the timed region, a synchronised read of CUDA events, cached Numba machine code,
and thread pools that do not spin on each other's cores (docs/pitfalls.md, "Performance
without wrong answers")."""
import ast
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_modes_compare_like_with_like(monkeypatch):
    """fp32 turns TF32 off on both sides, tf32 on on both; cuDNN never autotunes."""
    bench = load_benchmark("bench_cuda")
    monkeypatch.setenv("TINYALEX_TF32", "unset")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    try:
        for mode, tf32 in (("fp32", False), ("tf32", True)):
            torch.backends.cudnn.benchmark = True
            bench.set_mode(mode)
            assert torch.backends.cuda.matmul.allow_tf32 is tf32
            assert torch.backends.cudnn.allow_tf32 is tf32
            assert torch.backends.cudnn.benchmark is False
            assert os.environ["TINYALEX_TF32"] == ("1" if tf32 else "0")
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def fake_cupy(log):
    """Enough of CuPy for bench_cuda.Timer, recording the order of what it is asked to do."""
    class Event:
        def record(self):
            log.append(f"record {self.name}")

        def synchronize(self):
            log.append(f"synchronize {self.name}")

    class Buffer:
        def fill(self, value):
            log.append("flush L2")

    def elapsed(start, end):
        log.append("read elapsed")
        return 1.0

    events = iter(["start", "end"] * 100)                              # Timer makes them in pairs

    def make_event():
        event = Event()
        event.name = next(events)
        return event
    return types.SimpleNamespace(empty=lambda *a, **k: Buffer(),
                                 cuda=types.SimpleNamespace(Event=make_event, get_elapsed_time=elapsed))


def test_gpu_timer_warms_up_first_and_synchronises_before_reading(monkeypatch):
    bench = load_benchmark("bench_cuda")
    log = []
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(log))
    timer = bench.Timer(warmup=2, repeat=3)
    assert timer.median_ms(lambda: log.append("call")) == 1.0
    assert log[:2] == ["call", "call"], "warm-up (JIT, NVRTC) must run before any timing"
    timed = log[2:]
    assert timed == ["flush L2", "record start", "call", "record end", "synchronize end",
                     "read elapsed"] * 3


def test_every_numba_kernel_caches_its_machine_code():
    """@njit(..., cache=True) or @parallel_kernel (whose ufuncs Numba caches): a second
    process loads the compiled kernel from disk."""
    uncached, kernels = [], 0
    for path in sorted((ROOT / "tinyalex" / "kernels" / "numba").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            for decorator in getattr(node, "decorator_list", []):
                name = getattr(getattr(decorator, "func", decorator), "id", None)
                kernels += name in ("njit", "parallel_kernel")
                if name == "njit" and not any(k.arg == "cache" and getattr(k.value, "value", False)
                                              for k in getattr(decorator, "keywords", [])):
                    uncached.append(f"{path.name}: {node.name}")
    assert kernels >= 40, f"found only {kernels} numba kernels: has tinyalex/kernels/numba moved?"
    assert not uncached, uncached


def spin_settings_after_import(env, code="import tinyalex"):
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")} | env
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get("
                           "'GOMP_SPINCOUNT'), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"],
                          env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_spin_waits_are_shortened_unless_the_user_chose():
    assert spin_settings_after_import({}) == ["10000", "4"]
    assert spin_settings_after_import({"OPENBLAS_THREAD_TIMEOUT": "7"}) == ["10000", "7"]
    assert spin_settings_after_import({"OMP_WAIT_POLICY": "passive"}) == ["None", "4"]
    # OpenBLAS reads its setting once, when numpy loads it: too late to set it after that.
    assert spin_settings_after_import({}, "import numpy, tinyalex") == ["10000", "None"]


def test_bench_cpu_out_replaces_its_own_section_and_keeps_the_steady_runs(tmp_path):
    bench = load_benchmark("bench_cpu")
    path = tmp_path / "cpu.md"
    old_run = "## CPU training step: old\n\n| 16 | 0.70 |\n\n### Notes on this run\n\n- old notes\n"
    steady = "## Steady steps: 20 single steps (one)\n\n- spread 1.08\n\n## Steady steps: (two)\n\n- 1.10\n"
    path.write_text(old_run + "\n" + steady)
    new_run = "## CPU training step: new\n\n| 16 | 0.68 |\n"
    bench.replace_step_section(str(path), new_run)
    assert path.read_text() == new_run + "\n" + steady
    fresh = tmp_path / "new" / "cpu.md"
    bench.replace_step_section(str(fresh), new_run)
    assert fresh.read_text() == new_run
    only_steady = tmp_path / "steady.md"
    only_steady.write_text(steady)
    bench.replace_step_section(str(only_steady), new_run)
    assert only_steady.read_text() == new_run + "\n" + steady
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.md", "new", "steady.md"], "a .tmp was left"
