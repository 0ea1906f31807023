"""The one-shot GPU check (benchmarks/gpu_check.sh), tested where CI runs: on the CPU.

What needs no GPU is tested here: the plan and its caps, --dry-run, the report (every
status, partial and final), the step runner's caps and planned Ctrl-C, the readers of
pytest's and compute-sanitizer's output, the smoke driver's coverage of the kernel
contract, the synthetic data, and the throughput script run on the CPU. Whether the
kernels pass the sanitizers, and the GPU numbers, only a GPU run can tell.
"""
import dataclasses
import datetime
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import pytest

import tinyalex.kernels.cupy
from tinyalex.kernels.contract import KERNEL_API
from tinyalex.kernels import load_kernel_set

ROOT = Path(__file__).resolve().parents[2]


def load(name):
    """A module of benchmarks/ by file name (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load("gpu_check")
smoke = load("gpu_kernels_smoke")


def context(tmp_path, **changes):
    """A check context writing under tmp_path, for a GPU named 'NVIDIA H200'."""
    ctx = gpu_check.Context(python=sys.executable, device_name="NVIDIA H200", date="2026-11-30",
                            out_dir=str(tmp_path / "results"), work_dir=str(tmp_path / "work"),
                            data_dir=str(tmp_path / "data"), synthetic=False,
                            fashion_mnist_dir=str(tmp_path / "data"), budget_s=gpu_check.DEFAULT_BUDGET_S,
                            sanitizer="")
    return dataclasses.replace(ctx, **changes)


def archived_log(ctx, step_name):
    """A step's log, from the archive the check leaves beside its report."""
    with tarfile.open(ctx.archive_path) as tar:
        member = f"{os.path.basename(ctx.logs_dir)}/{step_name}.log"
        return tar.extractfile(member).read().decode()


def today():
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


# --- the plan ---------------------------------------------------------------------------------

def test_the_plan_runs_every_step_of_the_issue_with_caps_inside_the_budget(tmp_path):
    steps = gpu_check.plan_steps(context(tmp_path))
    assert [s.name for s in steps] == ["environment", "smoke", "pytest", "memcheck", "racecheck", "initcheck",
                                       "synccheck", "bench-fp32", "bench-tf32", "ncu", "torch-throughput", "train"]
    assert steps[0].cap_s <= 30 and steps[1].command[-1] == "benchmarks/gpu_kernels_smoke.py", \
        "a short environment step, then the unsanitized smoke run, before anything long"
    assert all(s.cap_s > 0 for s in steps)
    assert sum(s.cap_s for s in steps) + gpu_check.RESERVE_S <= gpu_check.DEFAULT_BUDGET_S
    assert gpu_check.DEFAULT_BUDGET_S <= 540, "one command may run 10 minutes on the GPU machine"
    gpu_check.check_plan(steps, gpu_check.DEFAULT_BUDGET_S)
    with pytest.raises(ValueError, match=r"expected at most the budget, got 300 s"):
        gpu_check.check_plan(steps, 300)
    assert [s.name for s in steps if s.takes_rest] == ["train"], "only the training step grows into the rest"
    bench = {s.name: s.command for s in steps if s.name.startswith("bench")}
    assert bench["bench-fp32"][bench["bench-fp32"].index("--modes") + 1] == "fp32"
    assert bench["bench-tf32"][bench["bench-tf32"].index("--modes") + 1] == "tf32"
    train = next(s for s in steps if s.name == "train").command
    assert train[train.index("--device") + 1] == "cuda" and "--model" not in train, \
        "the training step must train the model tinyalex picks for the GPU"
    pytest_step = next(s for s in steps if s.name == "pytest").command
    assert pytest_step[pytest_step.index("-k") + 3] == "not cuda_emulated and not network"
    assert pytest_step[pytest_step.index("-n") + 1] == str(min(gpu_check.PYTEST_WORKERS, os.cpu_count()))
    assert pytest_step[pytest_step.index("--timeout") + 1] == str(gpu_check.PYTEST_TEST_TIMEOUT_S)
    for step in steps[3:7]:
        assert step.command[step.command.index("--launch-timeout") + 1] == str(gpu_check.SANITIZER_LAUNCH_TIMEOUT_S)
        assert step.command[step.command.index("--report-api-errors") + 1] == "no"


def test_the_pytest_step_does_without_the_plugins_it_lacks(tmp_path):
    steps = gpu_check.plan_steps(context(tmp_path, pytest_plugins=()))
    command = next(s for s in steps if s.name == "pytest").command
    assert "-n" not in command and "--timeout" not in command
    lines = gpu_check.plan_lines(steps, context(tmp_path, pytest_plugins=("timeout",)))
    assert "pytest-xdist not installed here: the pytest step runs in one process" in lines


def test_no_test_of_the_gpu_selection_needs_the_network():
    """The GPU check's selection, collected: the wheel build (network) is out of it."""
    steps = gpu_check.plan_steps(context(ROOT))
    command = list(next(s for s in steps if s.name == "pytest").command)
    for option in ("-n", "--timeout"):
        if option in command:
            del command[command.index(option):command.index(option) + 2]
    command = [sys.executable if part == gpu_check.sys.executable else part for part in command]
    done = subprocess.run(command[:1] + ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
                          + command[command.index("-k"):], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    collected = done.stdout
    assert "test_cuda_sources.py::test_compiles_with_nvrtc_as_cupy_does" in collected
    assert "test_packaging" not in collected, "building a wheel needs the network"


def test_dry_run_prints_the_plan_and_the_report_path_and_writes_a_labelled_sample(tmp_path):
    sample = tmp_path / "sample.md"
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--device-name",
                           "NVIDIA H200", "--out", str(out), "--sample-report", str(sample)],
                          capture_output=True, text=True, timeout=60, env=dict(env, PYTHON=sys.executable))
    assert done.returncode == 0, done.stderr
    assert f"report:  {out}/gpu-nvidia-h200-{today()}.md" in done.stdout
    assert "(--out: $OUT is not set; on a lent machine set it, only $OUT comes back)" in done.stdout
    steps = gpu_check.plan_steps(context(tmp_path))
    for i, step in enumerate(steps, 1):                     # every step with its cap and its command
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"{i:2}. {step.name} "))
        assert f"cap {'>= ' if step.takes_rest else ''}{step.cap_s} s" in " ".join(line.split())
        assert gpu_check.display_command(step.command[1:3], context(tmp_path)) in line
    assert not out.exists(), "a dry run writes no report"
    dest = tmp_path / "dest"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--device-name",
                           "NVIDIA H200"], capture_output=True, text=True, timeout=60,
                          env=dict(env, PYTHON=sys.executable, OUT=str(dest)))
    assert f"destination: $OUT = {dest}" in done.stdout
    assert f"report:  $OUT/gpu-nvidia-h200-{today()}.md" in done.stdout
    assert f"archive: $OUT/gpu-nvidia-h200-{today()}-logs.tar.gz" in done.stdout
    text = sample.read_text()
    assert text.startswith("# GPU check (SAMPLE): SAMPLE GPU")
    assert "**SAMPLE REPORT.**" in text and "Nothing here was measured" in text


def test_dry_run_refuses_a_budget_smaller_than_the_caps(tmp_path):
    assert gpu_check.main(["--dry-run", "--budget-s", "120", "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("name, slug", [("NVIDIA H200", "nvidia-h200"), ("NVIDIA H200 NVL", "nvidia-h200-nvl"),
                                        ("Tesla V100-SXM2-16GB", "tesla-v100-sxm2-16gb"), ("  ", "unknown-gpu")])
def test_device_slug(name, slug):
    assert gpu_check.device_slug(name) == slug


# --- the report -------------------------------------------------------------------------------

def test_the_report_shows_every_status_and_says_when_it_is_partial(tmp_path):
    ctx = context(tmp_path)
    steps = gpu_check.plan_steps(ctx)
    report = gpu_check.Report(ctx, steps, "bash benchmarks/gpu_check.sh")
    report.start(steps[0])
    text = report.render()
    assert "**Partial report**: written while step 1 (environment) was running" in text
    assert "| 1 | environment | running |" in text and "| 3 | pytest | pending |" in text

    report.add(gpu_check.StepResult(steps[0], "pass", 2.5, 15, "GPU ok", tail=[]))
    report.add(gpu_check.StepResult(steps[1], "pass", 3.0, 30, "SMOKE OK", tail=[]))
    report.add(gpu_check.StepResult(steps[2], "fail", 40.0, 90, "2 failed | 100 passed",
                                    tail=["FAILED tests/test_ops.py::test_relu[cupy]"]))
    report.add(gpu_check.StepResult(steps[3], "timeout", 55.0, 55, "killed at its 55 s cap", tail=["last words"]))
    report.add(gpu_check.StepResult(steps[4], "skipped", cap_s=55, key="compute-sanitizer is not installed"))
    text = report.render()
    assert "**Partial report**: 5 of 12 steps done." in text
    assert "| 3 | pytest | **fail** | 40.0 | 90 | 2 failed \\| 100 passed |" in text
    assert "| 4 | memcheck | **timeout** | 55.0 | 55 |" in text
    assert "| 5 | racecheck | skipped |  | 55 |" in text
    assert "```text\nFAILED tests/test_ops.py::test_relu[cupy]\n```" in text
    assert "**Overall: FAIL**: 2 passed, 1 failed, 1 timed out, 1 skipped, of 12 steps" in text
    assert "`gpu-nvidia-h200-2026-11-30-logs/pytest.log` in gpu-nvidia-h200-2026-11-30-logs.tar.gz" in text

    report.finished = True
    path = report.write()
    assert path == str(tmp_path / "results" / "gpu-nvidia-h200-2026-11-30.md")
    assert "Partial report" not in Path(path).read_text()


def test_a_report_of_passes_says_pass_and_shows_no_output(tmp_path):
    ctx = context(tmp_path)
    steps = gpu_check.plan_steps(ctx)[:2]
    report = gpu_check.Report(ctx, steps, "bash benchmarks/gpu_check.sh")
    for step in steps:
        report.add(gpu_check.StepResult(step, "pass", 1.0, step.cap_s, "ok"))
    report.finished = True
    text = report.render()
    assert "**Overall: PASS**: 2 passed, 0 failed, 0 timed out, 0 skipped, of 2 steps" in text
    assert "```" not in text and "Partial" not in text and not report.failed()


def test_the_throughput_table_sets_tinyalex_beside_pytorch(tmp_path):
    ctx = context(tmp_path)
    steps = {s.name: s for s in gpu_check.plan_steps(ctx)}
    results = {"torch-throughput": gpu_check.StepResult(
        steps["torch-throughput"], "pass", data=dict(model="fashion-alexnet", batch=128, torch_end_to_end=300.0,
                                                     torch_step=400.0, tinyalex_step=100.0, loader=500.0)),
        "train": gpu_check.StepResult(steps["train"], "pass", data=dict(images_per_s=150.0, how="epoch 1"))}
    text = "\n".join(gpu_check.throughput_section(results))
    assert "(fashion-alexnet, batch 128, strict fp32)" in text
    assert "| 150 | 300 | 2.00 |" in text, "end to end: tinyalex train's rate beside PyTorch's, time ratio 2"
    assert "| 100 | 400 | 4.00 |" in text
    assert gpu_check.throughput_section({}) == []


# --- running steps ----------------------------------------------------------------------------

def is_running(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_the_step_runner_kills_a_step_and_what_it_started_at_the_cap(tmp_path):
    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print('pids', os.getpid(), child.pid, flush=True)\n"
              "time.sleep(60)\n")
    start = time.monotonic()
    run = gpu_check.run_command([sys.executable, "-c", script], 2.0, str(tmp_path / "step.log"))
    assert run.timed_out and not run.interrupted
    assert time.monotonic() - start < 2.0 + gpu_check.KILL_GRACE_S + 2
    pids = [int(p) for p in run.output.split("pids", 1)[1].split()[:2]]
    time.sleep(0.2)
    assert not any(is_running(pid) for pid in pids), "the step and its child must both be gone"


def test_the_step_runner_sends_the_planned_ctrl_c_and_lets_the_step_finish(tmp_path):
    script = ("import signal, sys, time\n"
              "def stop(*_):\n    print('saving', flush=True); sys.exit(130)\n"
              "signal.signal(signal.SIGINT, stop)\nprint('training', flush=True)\ntime.sleep(60)\n")
    run = gpu_check.run_command([sys.executable, "-c", script], 5.0, str(tmp_path / "step.log"), interrupt_s=3.5)
    assert run.interrupted and not run.timed_out and run.returncode == 130
    assert run.output == "training\nsaving\n" and run.wall_s < 3.5


def test_a_command_that_cannot_start_is_a_failed_step(tmp_path):
    ctx = context(tmp_path)
    step = gpu_check.Step("missing", "missing", "nothing", 5, ("/nonexistent/tool",), gpu_check.summarize_pytest)
    run = gpu_check.run_command(list(step.command), 5, str(tmp_path / "missing.log"))
    result = gpu_check.step_result(step, run, ctx, 5)
    assert result.status == "fail" and "could not start /nonexistent/tool" in result.key


def test_run_check_rewrites_the_report_around_every_step(tmp_path):
    """Three fake steps: one passes, one reads the report while it runs, one fails."""
    ctx = context(tmp_path, budget_s=60)

    def passed_if_zero(run, ctx):
        return gpu_check.Summary("pass" if run.returncode == 0 else "fail", f"status {run.returncode}")
    steps = [gpu_check.Step("first", "first", "it runs", 10, (sys.executable, "-c", "print('one')"), passed_if_zero),
             gpu_check.Step("peek", "peek", "the report exists while a step runs", 10,
                            ("cat", ctx.report_path), passed_if_zero),
             gpu_check.Step("broken", "broken", "a failure is recorded", 10,
                            (sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"), passed_if_zero)]
    os.makedirs(ctx.work_dir)
    assert gpu_check.run_check(ctx, steps, "bash benchmarks/gpu_check.sh") == 1
    assert sorted(os.listdir(ctx.out_dir)) == sorted(map(os.path.basename, (ctx.report_path, ctx.archive_path)))
    seen_while_running = archived_log(ctx, "peek")
    assert "written while step 2 (peek) was running, 1 of 3 steps done" in seen_while_running
    assert "| 1 | first | pass |" in seen_while_running
    final = Path(ctx.report_path).read_text()
    assert "**Overall: FAIL**: 2 passed, 1 failed" in final and "Partial" not in final
    assert "| 3 | broken | **fail** |" in final and "```text\nboom\n```" in final
    assert not os.path.exists(ctx.work_dir), "the temporary folder is removed"


def test_a_check_stopped_by_sigterm_stops_its_step_and_leaves_a_report(tmp_path):
    ctx = context(tmp_path, budget_s=60)
    script = ("import os, signal, time\nprint(os.getpid(), flush=True)\n"
              "os.kill(os.getppid(), signal.SIGTERM)\ntime.sleep(30)\n")   # the check, stopped from outside
    steps = [gpu_check.Step("stopper", "stopper", "-", 20, (sys.executable, "-c", script), None),
             gpu_check.Step("never", "never", "-", 20, (sys.executable, "-c", "pass"), None)]
    os.makedirs(ctx.work_dir)
    start = time.monotonic()
    assert gpu_check.run_check(ctx, steps, "bash benchmarks/gpu_check.sh") == 1
    assert time.monotonic() - start < 10
    step_pid = int(archived_log(ctx, "stopper").split()[0])
    assert not is_running(step_pid)
    text = Path(ctx.report_path).read_text()
    assert "| 1 | stopper | **timeout** |" in text and "the check itself was stopped (signal 15)" in text
    assert "| 2 | never | pending |" in text and "**Partial report**: 1 of 2 steps done." in text


# --- reading the steps' output ----------------------------------------------------------------

PYTEST_WITHOUT_GPU = """\
........ssssssssssssssss                                                 [100%]
SKIPPED [1] tests/test_ops.py:79: cupy kernels need a CUDA GPU: device 'cuda' is not available: \
ModuleNotFoundError: No module named 'cupy' (install cupy-cuda13x on a machine with an NVIDIA GPU)
SKIPPED [4] tests/test_ops.py:132: cupy kernels need a CUDA GPU: device 'cuda' is not available: \
ModuleNotFoundError: No module named 'cupy' (install cupy-cuda13x on a machine with an NVIDIA GPU)
SKIPPED [14] tests/test_cuda_sources.py:115: CuPy with its NVRTC library is not installed
22 passed, 106 skipped, 502 deselected in 6.04s
"""


def test_pytest_step_fails_when_tests_were_skipped_for_want_of_a_gpu(tmp_path):
    run = gpu_check.CommandRun(0, 6.0, PYTEST_WITHOUT_GPU)
    summary = gpu_check.summarize_pytest(run, context(tmp_path))
    assert summary.status == "fail" and summary.key.startswith("19 tests skipped for want of a GPU")
    assert summary.data == {"passed": 22, "skipped": 106, "deselected": 502}
    on_a_gpu = "....s\nSKIPPED [1] tests/test_autograd.py:120: a GPU is present\n127 passed, 1 skipped in 30.00s\n"
    assert gpu_check.summarize_pytest(gpu_check.CommandRun(0, 30.0, on_a_gpu), None).status == "pass"
    failed = "FAILED tests/test_ops.py::test_relu_matches_torch[cupy] - AssertionError\n1 failed, 126 passed in 3s\n"
    summary = gpu_check.summarize_pytest(gpu_check.CommandRun(1, 30.0, failed), None)
    assert summary.status == "fail"
    assert summary.details[0].startswith("- `FAILED tests/test_ops.py::test_relu_matches_torch[cupy]")


MEMCHECK_OUTPUT = """\
========= COMPUTE-SANITIZER
ok im2col float32 (max relative error 0.0e+00)
========= Invalid __global__ read of size 4 bytes
=========     at void relu_forward<float>(const T1 *, T1 *, long long)+0x70
=========     by thread (236,0,0) in block (3,0,0)
=========     Address 0x7f3e5a000fb4 is out of bounds
=========     and is 1 bytes after the nearest allocation at 0x7f3e5a000000 of size 4020 bytes
=========     Saved host backtrace up to driver entry point at kernel launch time
=========         Host Frame: [0x2f1b3a] in libcuda.so.1
=========
========= Invalid __global__ write of size 8 bytes
=========     at void cross_entropy_forward<double>(const T1 *, const long long *, T1 *, T1 *, int, int)+0x1b0
=========     by thread (31,0,0) in block (4,0,0)
=========
========= Program hit cudaErrorLaunchFailure (error 719) due to "unspecified launch failure" on CUDA API call \
to cudaDeviceSynchronize.
=========     Saved host backtrace up to driver entry point at error
=========
SMOKE FAILED: 1 problem(s): relu float32: raised CUDARuntimeError
========= Target application returned an error
========= ERROR SUMMARY: 3 errors
"""


def test_the_sanitizer_reader_counts_errors_and_names_the_kernels():
    report = gpu_check.parse_sanitizer_output(MEMCHECK_OUTPUT, gpu_check.tinyalex_kernel_names())
    assert (report.summaries, report.errors, report.warnings, report.in_our_kernels, report.unlocated) == \
        (1, 3, 0, 2, 1)
    assert report.findings[0] == "Invalid __global__ read of size 4 bytes (in relu_forward<float>)"
    assert report.findings[1].endswith("(in cross_entropy_forward<double>)")
    assert report.findings[2].startswith("Program hit cudaErrorLaunchFailure")

    race = ("========= Error: Race reported between Write access at void cross_entropy_forward<float>(...)+0x90\n"
            "=========     and Read access at void cross_entropy_forward<float>(...)+0xa0 [32 hazards]\n"
            "========= RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)\n")
    report = gpu_check.parse_sanitizer_output(race, gpu_check.tinyalex_kernel_names())
    assert (report.summaries, report.errors, report.warnings, len(report.findings)) == (1, 1, 1, 1)
    assert report.in_our_kernels == 1 and report.findings[0].endswith("(in cross_entropy_forward<float>)")
    assert gpu_check.parse_sanitizer_output("========= ERROR SUMMARY: 0 errors\n").errors == 0


# initcheck over CuPy's own kernel and cuBLAS's, past the print limit: only the summary line counts.
OTHERS_OUTPUT = """\
========= COMPUTE-SANITIZER
========= Uninitialized __global__ memory read of size 4 bytes
=========     at cupy_copy__float_float+0x60
=========     by thread (0,0,0) in block (0,0,0)
=========
========= Uninitialized __global__ memory read of size 4 bytes
=========     at void gemmSN_NN_kernel<float, 256, 4, 2, 8, 4, 4, false>(cublasGemmSmallNParams<float>)+0x2a0
=========
========= 1 error was not printed
SMOKE OK: 21 functions of the cupy set
========= ERROR SUMMARY: 3 errors
"""


def test_the_sanitizer_reader_anchors_on_the_summary_and_counts_only_our_kernels(tmp_path):
    report = gpu_check.parse_sanitizer_output(OTHERS_OUTPUT, gpu_check.tinyalex_kernel_names())
    assert (report.summaries, report.errors, report.not_printed, report.in_our_kernels, report.unlocated) == \
        (1, 3, 1, 0, 0), "'1 error was not printed' is neither a summary nor a finding"
    assert report.findings[1].endswith("(in gemmSN_NN_kernel<float, 256, 4, 2, 8, 4, 4, false>)")
    printed = OTHERS_OUTPUT.replace("========= 1 error was not printed\n", "").replace("3 errors", "2 errors")
    summary = gpu_check.summarize_sanitizer(gpu_check.CommandRun(0, 9.0, printed), context(tmp_path))
    assert summary.status == "pass", "findings in CuPy's and cuBLAS's kernels are listed, not counted"
    assert summary.key.startswith("0 findings in tinyalex's kernels or unlocated, 2 in other kernels (not counted)")
    summary = gpu_check.summarize_sanitizer(gpu_check.CommandRun(0, 9.0, OTHERS_OUTPUT), context(tmp_path))
    assert summary.status == "fail" and "1 not printed (their kernels unknown)" in summary.key


def test_a_sanitizer_step_passes_only_with_a_clean_summary_and_the_driver_ok(tmp_path):
    ctx = context(tmp_path)
    clean = "========= COMPUTE-SANITIZER\nSMOKE OK: 15 functions\n========= ERROR SUMMARY: 0 errors\n"
    assert gpu_check.summarize_sanitizer(gpu_check.CommandRun(0, 9.0, clean), ctx).status == "pass"
    summary = gpu_check.summarize_sanitizer(gpu_check.CommandRun(1, 9.0, MEMCHECK_OUTPUT), ctx)
    assert summary.status == "fail" and summary.key.startswith("3 findings in tinyalex's kernels or unlocated;")
    cut_off = "========= COMPUTE-SANITIZER\nok im2col float32\n"
    summary = gpu_check.summarize_sanitizer(gpu_check.CommandRun(-15, 55.0, cut_off, timed_out=True), ctx)
    assert summary.status == "fail" and summary.key.startswith("no sanitizer summary line")


def test_the_bench_reader_takes_the_ratios_from_the_benchmark_table(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "PREDICTED_JSON", str(tmp_path / "none.json"))
    output = ("               conv1  forward fp32: tinyalex    1.000 ms  torch    0.500 ms  ratio  2.00  ok\n"
              "| case | direction | tinyalex ms | torch ms | tinyalex rate | torch rate | tinyalex / torch"
              " | check |\n"
              "|---|---|---:|---:|---:|---:|---:|---|\n"
              "| conv1 | forward | 1.000 | 0.500 | 1.00 TFLOP/s | 2.00 TFLOP/s | 2.00 | ok (1.0e-06) |\n"
              "| relu1 | forward | 0.100 | 0.200 | 100.00 GB/s | 50.00 GB/s | 0.50 | **MISMATCH** (1.0e-01) |\n"
              "| relu1 | backward | 0.100 | 0.100 | 100.00 GB/s | 100.00 GB/s | 1.00 | ok (0.0e+00) |\n")
    summary = gpu_check.summarize_bench(gpu_check.CommandRun(1, 30.0, output), context(tmp_path))
    assert summary.status == "fail"
    assert summary.key == ("3 timings, time ratio tinyalex / torch: median 1.00 (from 0.50 to 2.00);"
                           " 1 mismatches against torch")
    assert summary.details[2].startswith("| case |")
    assert "No prediction to compare with" in "\n".join(summary.details)


def test_the_fp32_bench_sets_each_measured_time_beside_its_prediction_and_torchs(tmp_path, monkeypatch):
    predicted = {"batch": 128, "cases": {"relu1 forward": {"predicted_us": 50.0, "ideal_us": 40.0, "kernels": {}},
                                         "conv1 forward": {"predicted_us": 1000.0, "ideal_us": 500.0, "kernels": {}}}}
    (tmp_path / "predicted.json").write_text(json.dumps(predicted))
    monkeypatch.setattr(gpu_check, "PREDICTED_JSON", str(tmp_path / "predicted.json"))
    output = ("| case | direction | tinyalex ms | torch ms | tinyalex rate | torch rate | tinyalex / torch | check |\n"
              "|---|---|---:|---:|---:|---:|---:|---|\n"
              "| conv1 | forward | 3.000 | 0.500 | 1.00 TFLOP/s | 2.00 TFLOP/s | 6.00 | ok (1.0e-06) |\n"
              "| relu1 | forward | 0.100 | 0.080 | 100.00 GB/s | 50.00 GB/s | 1.25 | ok (0.0e+00) |\n"
              "| sgd | step | 1.000 | 2.000 | 100.00 GB/s | 50.00 GB/s | 0.50 | ok (0.0e+00) |\n")
    summary = gpu_check.summarize_bench(gpu_check.CommandRun(0, 30.0, output), context(tmp_path))
    assert summary.status == "pass" and summary.key.endswith("; measured / predicted: median 2.50")
    details = "\n".join(summary.details)
    assert "| conv1 | forward | 3.000 | 1.000 | 3.00 | 0.500 | 0.500 |" in details
    assert "| relu1 | forward | 0.100 | 0.050 | 2.00 | 0.040 | 0.080 |" in details
    assert "| sgd | step | 1.000 | no prediction | | | 2.000 |" in details
    tf32 = gpu_check.summarize_bench(gpu_check.CommandRun(0, 30.0, output), context(tmp_path), mode="tf32")
    assert "measured / predicted" not in tf32.key, "the prediction is for strict fp32 GEMMs"


NCU_HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size",'
              '"Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')


def ncu_rows(launch_id, kernel, **values):
    """ncu --csv rows of one launch, as the details page prints them."""
    return [f'"{launch_id}","1","python","host","void {kernel}<float>(const T1 *, T1 *, int)","1","7","(256, 1, 1)",'
            f'"(4, 1, 1)","0","9.0","Command line profiler metrics","{gpu_check.NCU_METRICS[q]}","sector","{v:,}"'
            for q, v in values.items()]


def ncu_output(launches, profiled):
    lines = ["==PROF== Connected to process 1"] + [f"LAUNCH {c} | {d} | {k}" for c, d, k in launches]
    lines += ["LAUNCHES OK %d" % len(launches), "==PROF== Disconnected from process 1", NCU_HEADER]
    for i, (kernel, values) in enumerate(profiled):
        lines += ncu_rows(i, kernel, **values)
    return "\n".join(lines) + "\n"


def test_the_ncu_reader_gives_each_launch_its_case_and_sets_sectors_beside_the_emulators(tmp_path, monkeypatch):
    predicted = {"cases": {"lrn1 forward": {"kernels": {"lrn_forward": {"load_sectors_per_request": 4.66,
                                                                        "store_sectors_per_request": 4.0,
                                                                        "replays": 0}}}}}
    (tmp_path / "predicted.json").write_text(json.dumps(predicted))
    monkeypatch.setattr(gpu_check, "PREDICTED_JSON", str(tmp_path / "predicted.json"))
    full = dict(load_requests=1000, load_sectors=4700, store_requests=200, store_sectors=800,
                load_bank_conflicts=0, store_bank_conflicts=0)
    launches = [("lrn1", "setup", "lrn_forward"), ("lrn1", "forward", "lrn_forward"),
                ("lrn1", "backward", "lrn_backward")]
    profiled = [("lrn_forward", full), ("lrn_forward", full), ("lrn_backward", dict(full, load_bank_conflicts=3))]
    summary = gpu_check.summarize_ncu(gpu_check.CommandRun(0, 9.0, ncu_output(launches, profiled)), context(tmp_path))
    assert summary.status == "pass", summary.key
    assert summary.key == "3 launches profiled and attributed to 2 kernels of 1 cases"
    details = "\n".join(summary.details)
    assert "| lrn1 | forward | lrn_forward | 4.70 | 4.66 | 4.00 | 4.00 | 0 | 0 |" in details
    assert "| lrn1 | backward | lrn_backward | 4.70 |  | 4.00 |  | 3 |  |" in details
    mismatched = ncu_output(launches, profiled[:2])
    assert gpu_check.summarize_ncu(gpu_check.CommandRun(0, 9.0, mismatched), context(tmp_path)).status == "fail"
    denied = "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters"
    skipped = gpu_check.summarize_ncu(gpu_check.CommandRun(1, 2.0, denied), context(tmp_path))
    assert skipped.status == "skipped" and "ERR_NVGPUCTRPERM" in skipped.key
    assert gpu_check.summarize_ncu(gpu_check.CommandRun(1, 2.0, "crash\n"), context(tmp_path)).status == "fail"


@pytest.mark.cuda_emulated
def test_the_ncu_stand_in_prints_the_emulators_counts_as_ncu_does(tmp_path):
    """The rehearsal's ncu: the driver on the emulated CuPy set, counted, printed as ncu's CSV,
    read back by the step's reader."""
    ctx = context(tmp_path, rehearsal=True)
    step = next(s for s in gpu_check.plan_steps(ctx) if s.name == "ncu")
    driver = step.command.index("benchmarks/gpu_kernel_launches.py")
    command = [str(ROOT / "benchmarks" / "rehearsal" / "bin" / "ncu"), *step.command[1:driver + 1],
               "--batch", "1", "--only", "relu6", "cross"]
    env = dict(gpu_check.child_environment(), TINYALEX_GPU_REHEARSAL="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks" / "rehearsal"), env["PYTHONPATH"]])
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = gpu_check.summarize_ncu(gpu_check.CommandRun(0, 9.0, done.stdout), ctx)
    assert summary.status == "pass", summary.key
    assert summary.key == "6 launches profiled and attributed to 4 kernels of 2 cases"
    assert "| relu6/7 | forward | relu_forward | 4.00 |" in "\n".join(summary.details)
    refused = subprocess.run([command[0], "--csv", "--metrics", "dram__bytes.sum", "true"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "expected --metrics among" in refused.stderr


def test_the_train_reader_takes_images_per_second_after_the_warm_up_epoch(tmp_path):
    ctx = context(tmp_path)
    os.makedirs(ctx.train_dir)
    epochs = [dict(epoch=e, train_loss=2.0 / e, train_acc=0.5, test_loss=1.0, test_acc=0.6, test_top5=0.9,
                   images_per_sec=rate, seconds=10.0, lr=0.01) for e, rate in ((1, 100.0), (2, 300.0), (3, 500.0))]
    Path(ctx.train_dir, "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in epochs))
    output = "chose model fashion-alexnet: d2l's AlexNet\ninterrupted: saved checkpoint.npz\n"
    summary = gpu_check.summarize_train(gpu_check.CommandRun(130, 90.0, output, interrupted=True), ctx)
    assert summary.status == "pass"
    assert summary.data == {"model": "fashion-alexnet", "images_per_s": 400.0, "how": "median of epochs 2-3"}
    crashed = gpu_check.summarize_train(gpu_check.CommandRun(1, 90.0, output), ctx)
    assert crashed.status == "fail", "a run that was not stopped by the planned Ctrl-C and did not exit 0"
    os.remove(Path(ctx.train_dir, "metrics.jsonl"))
    summary = gpu_check.summarize_train(gpu_check.CommandRun(1, 9.0, output), ctx)
    assert summary.status == "fail"
    assert summary.key == "fashion-alexnet: exited with status 1 before an epoch finished"


def test_the_environment_step_fails_without_a_gpu(tmp_path):
    if gpu_check.detect_gpu_name(sys.executable, probe_cupy=False):
        pytest.skip("this machine has a GPU")
    env = gpu_check.child_environment()
    run = gpu_check.run_command([sys.executable, "benchmarks/gpu_check.py", "--part", "environment"], 60,
                                str(tmp_path / "environment.log"), env=env)
    summary = gpu_check.summarize_environment(run, context(tmp_path))
    assert run.returncode == 1 and summary.status == "fail"
    assert summary.key.startswith("missing: cupy") and "MISSING cupy: RuntimeError: device 'cuda'" in run.output
    assert "numba" not in summary.data["missing"] and "numba: " in run.output, "numba works with this numpy"


# --- the kernels' smoke driver ----------------------------------------------------------------

def test_the_smoke_run_covers_the_kernel_contract_and_the_fused_sgd_step():
    assert set(smoke.SMOKE_FUNCTIONS) == set(KERNEL_API) | {"sgd_update"} == set(tinyalex.kernels.cupy.__all__) - {"CONV2D_ALGORITHMS"}
    declared = {name for _, names in smoke.CASES.values() for name in names}
    assert declared == set(smoke.SMOKE_FUNCTIONS), "a kernel added to the contract needs a smoke case"


def reference_with_sgd(**replacements):
    """The numpy set's smoke functions: a CPU stand-in for the cupy set's."""
    reference = load_kernel_set("numpy")
    functions = {name: getattr(reference, name) for name in smoke.SMOKE_FUNCTIONS}
    return types.SimpleNamespace(**dict(functions, **replacements))


def test_the_smoke_run_calls_every_function_and_compares_with_the_reference():
    problems, called = smoke.run_smoke(reference_with_sgd(), log=lambda line: None)
    assert problems == [] and called == set(smoke.SMOKE_FUNCTIONS)


def test_the_smoke_run_catches_a_wrong_kernel():
    reference = load_kernel_set("numpy")

    def leaky_relu_forward(x):                          # a kernel that forgot to clamp
        _, cache = reference.relu_forward(x)
        return x.copy(), cache
    problems, _ = smoke.run_smoke(reference_with_sgd(relu_forward=leaky_relu_forward), log=lambda line: None)
    assert len(problems) == 2 and all(p.startswith("relu float") and "relative error" in p for p in problems)


def test_the_smoke_run_records_which_compiled_kernels_the_launchers_ask_for():
    from tinyalex.kernels.cupy import loader, relu
    launchers, original = ("conv", "pool", "lrn", "relu", "dropout", "cross_entropy", "sgd"), loader.get_kernel
    with smoke.kernel_requests() as requested:
        for name in launchers:
            module = sys.modules[f"tinyalex.kernels.cupy.{name}"]
            assert module.get_kernel is not original, f"tinyalex.kernels.cupy.{name}'s launches are not recorded"
        try:
            relu.get_kernel("relu.cu", "relu_forward", np.float32)
        except RuntimeError:                            # no GPU here: the request is recorded all the same
            pass
    assert requested == {("relu_forward", "float32")}
    assert relu.get_kernel is loader.get_kernel is original, "the launchers are restored afterwards"
    expected = smoke.expected_kernel_requests()
    assert len(expected) == 2 * sum(len(names) for names in loader.KERNEL_FILES.values())
    assert ("sgd_update", "float64") in expected and ("dropout", "float32") in expected


def test_the_smoke_driver_runs_on_the_cpu_reference_set():
    done = subprocess.run([sys.executable, "benchmarks/gpu_kernels_smoke.py", "--kernels", "numpy"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=gpu_check.child_environment())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith(f"SMOKE OK: {len(smoke.SMOKE_FUNCTIONS)} functions of the numpy set")


# --- data and the throughput script -----------------------------------------------------------

def test_synthetic_data_has_fashion_mnist_shape_and_learnable_labels(tmp_path):
    from tinyalex.train.data.fashion_mnist import load_fashion_mnist
    gpu_check.write_synthetic_fashion_mnist(tmp_path, 300, 50)
    assert gpu_check.has_fashion_mnist(tmp_path) and not gpu_check.has_fashion_mnist(tmp_path / "nothing")
    train = load_fashion_mnist("train", tmp_path)
    images, labels = train.get_batch(np.arange(300))
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert len(load_fashion_mnist("test", tmp_path)) == 50
    brightest_band = images.astype(float).mean(axis=2)[:, 4:24].reshape(300, 10, 2).mean(axis=2).argmax(axis=1)
    assert (brightest_band == labels).all(), "each label must be visible in its image"


def test_the_throughput_script_runs_on_the_cpu_and_the_check_reads_it(tmp_path):
    gpu_check.write_synthetic_fashion_mnist(tmp_path, 64, 16)
    # one batch of cpu-alexnet (batch 64), the numpy kernels (no numba compilation), one thread
    env = dict(gpu_check.child_environment(), TINYALEX_CPU="numpy", OMP_NUM_THREADS="1")
    run = gpu_check.run_command([sys.executable, "benchmarks/gpu_train_throughput.py", "--device", "cpu",
                                 "--data-dir", str(tmp_path), "--limit-train", "64", "--warmup", "0",
                                 "--repeats", "1"], 120, str(tmp_path / "throughput.log"), env=env)
    summary = gpu_check.summarize_throughput(run, context(tmp_path))
    assert run.returncode == 0 and summary.status == "pass", run.output
    assert summary.data["model"] == "cpu-alexnet" and summary.data["loss_difference"] < 1e-5
    assert all(summary.data[k] > 0 for k in ("torch_end_to_end", "torch_step", "tinyalex_step", "loader"))


@pytest.mark.cuda_emulated
def test_the_smoke_run_passes_on_the_emulated_cupy_set(emulated_cuda):
    """The driver the sanitizers run, end to end through the real launchers and the emulator:
    every contract function and sgd_update, every compiled kernel in both dtypes."""
    with smoke.kernel_requests() as requested:
        problems, called = smoke.run_smoke(load_kernel_set("cupy"), "cuda", log=lambda line: None)
    assert problems == []
    assert set(called) == set(KERNEL_API) | {"sgd_update"}
    assert requested == smoke.expected_kernel_requests()


# --- what comes back from a lent machine, and the rehearsal -----------------------------------

def test_a_step_gets_the_default_sigint_even_when_the_check_ignores_it(tmp_path):
    """A check started from a background job inherits an ignored SIGINT; the training step's
    planned Ctrl-C must still reach its process as KeyboardInterrupt."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = gpu_check.run_command([sys.executable, "-c", probe], 30, str(tmp_path / "probe.log"))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert run.output.strip() == "True"


def test_the_commit_comes_from_tinyalex_commit_without_a_git_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "ROOT", str(tmp_path))          # a copy of the tree, without .git
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("TINYALEX_COMMIT", "0123abc")
    assert gpu_check.git_commit() == "0123abc (from TINYALEX_COMMIT: no git checkout here)"
    monkeypatch.delenv("TINYALEX_COMMIT")
    assert gpu_check.git_commit() == "unknown (not a git checkout, and TINYALEX_COMMIT is not set)"


def test_the_archive_holds_every_log_and_cuts_a_runaway_one(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "LOG_ARCHIVE_KEEP_BYTES", 1000)
    ctx = context(tmp_path)
    os.makedirs(os.path.join(ctx.logs_dir, "bench-fp32"))
    Path(ctx.logs_dir, "pytest.log").write_text("short\n")
    Path(ctx.logs_dir, "bench-fp32", "cuda.md").write_text("| table |\n")
    Path(ctx.logs_dir, "train.log").write_text("first line\n" + "x" * 5000 + "\nlast line\n")
    gpu_check.write_archive(ctx)
    assert os.listdir(ctx.out_dir) == [os.path.basename(ctx.archive_path)]
    assert archived_log(ctx, "pytest") == "short\n"
    train = archived_log(ctx, "train")
    assert train.startswith("first line") and train.endswith("last line\n") and len(train) < 2100
    assert "[... cut by gpu_check.py: 5022 bytes in all ...]" in train
    with tarfile.open(ctx.archive_path) as tar:
        assert f"{os.path.basename(ctx.logs_dir)}/bench-fp32/cuda.md" in tar.getnames()


def rehearsal_report(rows, banner=True):
    lines = ["> **REHEARSAL** ...", "", f"**Overall: PASS**: ..., of {len(rows)} steps;", "",
             "| # | step | status | wall s | cap s | result |", "|---:|---|---|---:|---:|---|"]
    lines += [f"| {i} | {name} | {status} | 1.0 | 10 | ok |" for i, (name, status) in enumerate(rows, 1)]
    lines += ["- " + gpu_check.NETWORK_CUT]
    return "\n".join(lines if banner else lines[1:]) + "\n"


def test_the_rehearsal_checks_what_would_come_back(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "gpu-x-2026-01-01.md").write_text(rehearsal_report([("environment", "pass"), ("bench", "skipped")]))
    logs = tmp_path / "gpu-x-2026-01-01-logs"
    logs.mkdir()
    (logs / "environment.log").write_text("ok\n")
    with tarfile.open(out / "gpu-x-2026-01-01-logs.tar.gz", "w:gz") as tar:
        tar.add(logs, logs.name)
    assert gpu_check.check_out(str(out), 480, 100.0) == []

    problems = gpu_check.check_out(str(out), 60, 100.0)
    assert problems == ["expected the check to finish within its 60 s budget, it took 100 s"]
    (out / "gpu-x-2026-01-01.md").write_text(rehearsal_report([("environment", "pass"), ("pytest", "**fail**"),
                                                               ("train", "running")], banner=False))
    for i in range(7):
        (out / f"extra{i}.txt").write_text("x")
    (out / "bad name.txt").write_text("x")
    problems = gpu_check.check_out(str(out), 480, 100.0)
    assert "expected at most 8 files in $OUT, got 10" in problems
    assert "step 2 (pytest): expected pass or skipped, got fail" in problems
    assert "step 3 (train): expected pass or skipped, got running" in problems
    assert any(p.startswith("bad name.txt: expected at most 2 folders deep") for p in problems)
    assert "the report does not show the rehearsal's banner ('**REHEARSAL**')" in problems


@pytest.mark.rehearsal
def test_the_rehearsal_runs_the_whole_check_with_the_network_cut(tmp_path):
    """bash benchmarks/gpu_check.sh --rehearse, as CI runs it: every step of the plan on the
    emulated CuPy set, stand-ins for nvidia-smi and compute-sanitizer, unshare -n, $OUT set."""
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out))
    start = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--rehearse"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=gpu_check.DEFAULT_BUDGET_S + 120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert time.monotonic() - start < gpu_check.DEFAULT_BUDGET_S
    assert done.stdout.splitlines()[-1].startswith("rehearsal OK: ")
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and names[1].endswith(".md") and names[0] == names[1][:-3] + "-logs.tar.gz", names
    text = (out / names[1]).read_text()
    steps = gpu_check.plan_steps(context(tmp_path))
    for i, step in enumerate(steps, 1):
        assert f"| {i} | {step.name} | " in text
    for name in ("smoke", "pytest", "memcheck", "racecheck", "initcheck", "synccheck", "train"):
        assert f"| {name} | pass |" in text, f"{name} did not pass in the rehearsal"
    assert "stopped by the planned Ctrl-C" in text
    assert "| bench-fp32 | skipped |" in text and "its command with --dry-run ran (exit 0)" in text
    assert "TINYALEX_COMMIT" not in text, "in a git checkout the commit comes from git"
