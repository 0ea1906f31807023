"""The one-shot GPU check: every GPU claim of tinyalex exercised once, in one report.

Few sessions are lent a GPU, and then for minutes, so this runs everything that needs
one, unattended, within a time budget (default 510 s, under the 10 minutes one command
may take there). Only files under $OUT come back from a lent machine (at most 8), so the
report and ONE archive of every step's full output are all it writes, into $OUT when it
is set, else into --out (default benchmarks/results):

    gpu-<device>-<date>.md             the report
    gpu-<device>-<date>-logs.tar.gz    every step's output, and the benchmark's own reports

 1. environment: each import the later steps need (numba against this numpy, cupy with a
    GPU and NVRTC, torch with CUDA and cuDNN, pytest's plugins, ...), said plainly when
    missing; a step that needs what is missing is skipped, naming it;
 2. smoke: every kernel once, both dtypes, against numpy, unsanitized: correctness is on
    record even if the sanitizers run out of time;
 3. pytest on the GPU: every test of the cupy kernel set and every test that touches
    device 'cuda' (not the emulated-CUDA, nvcc or network tests), spread over CPU cores
    with pytest-xdist and a per-test limit (pytest-timeout) where those are installed;
 4-7. compute-sanitizer memcheck, racecheck, initcheck and synccheck over
    benchmarks/gpu_kernels_smoke.py; only findings in tinyalex's own kernels count;
 8-9. benchmarks/bench_cuda.py in strict fp32 (every op) and in TF32 (the GEMM ops); the
    fp32 report sets each case's measured time beside the time benchmarks/cuda_predict.py
    predicted for it (results/cuda-predicted.json) and beside cuDNN's through torch;
10. where Nsight Compute (ncu) is installed: the sectors per request and the bank
    conflicts of every kernel of ours, launched once per AlexNet case by
    benchmarks/gpu_kernel_launches.py, beside the counts the emulator predicted;
11. PyTorch's images/s for the GPU default model (the twin of tinyalex's, same weights,
    same loader, same batch size), and both libraries' images/s for one step alone;
12. `tinyalex train --device cuda` on that model until the budget is spent: Ctrl-C at
    the end (tinyalex finishes the step and saves), images/s from its metrics.jsonl.

Each step runs as a subprocess in its own process group, with the default SIGINT
whatever this script inherited, and a time cap; a step past its cap is killed and
recorded as a timeout. The training step's cap is whatever the earlier steps left of the
budget. The report is rewritten before and after every step, and the archive after every
step, so a check cut off from outside still leaves what finished. The exit status is 1
if any step failed or timed out, else 0.

    PYTHONPATH=. TINYALEX_COMMIT=<sha> OUT=<dir> bash benchmarks/gpu_check.sh   # on a lent machine
    bash benchmarks/gpu_check.sh --dry-run [--sample-report PATH]   # the plan; no GPU needed
    bash benchmarks/gpu_check.sh --rehearse                         # the whole plan here, see below

--dry-run prints the plan (steps, caps, commands, where the report goes); --sample-report
also writes a report rendered from canned step results, labelled as a sample.

--rehearse runs the whole plan on this machine with the network cut (unshare -n, as root),
$OUT set (a temporary folder if it is not), and the emulated CuPy set (tests/cuda_emulator)
in every step's Python (benchmarks/rehearsal/sitecustomize.py); benchmarks/rehearsal/bin
stands in for nvidia-smi, compute-sanitizer and ncu (whose counts are then the emulator's). What cannot exist here (PyTorch on CUDA)
is skipped with that reason, and the training step trains a small model on a few images.
It then checks what would come back: the report in $OUT, at most 8 files there, each
under 16 MiB, every step with a final status and none failed, and the whole under the
budget; the exit status is 1 if any of these fails. Nothing is installed, ever: the
machine must already have what the environment step checks.
"""
import argparse
import dataclasses
import datetime
import functools
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DEFAULT_BUDGET_S = 510
RESERVE_S = 10                  # of the budget, kept for writing the report and process start-up
MIN_STEP_S = 10                 # a step given less than this is skipped, not started
KILL_GRACE_S = 3                # SIGTERM, then SIGKILL after this long
TRAIN_INTERRUPT_S = 25          # Ctrl-C this long before the training step's cap: time to finish and save
BENCH_REPEAT = 10               # bench_cuda.py's timed repeats (its default is 20)
PYTEST_WORKERS = 8              # xdist workers at most: each holds a CUDA context and compiles on a cold cache
PYTEST_TEST_TIMEOUT_S = 60      # pytest-timeout's limit for one test
SANITIZER_LAUNCH_TIMEOUT_S = 600    # for the program to reach CUDA; the default 10 s can pass while Python imports
SANITIZER_PRINT_LIMIT = 1000    # findings printed; CuPy's and cuBLAS's must not crowd out tinyalex's
PLAN_DEVICE_NAME = "NVIDIA H200"    # names the dry run's report when no GPU is visible
TAIL_LINES = 30                 # of output, shown for a step that did not pass
SANITIZER_TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")
#: What the ncu step asks Nsight Compute for, per kernel launch: global-memory requests and
#: sectors (loads, stores) and shared-memory bank conflicts, as the emulator counts them.
NCU_METRICS = {"load_requests": "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum",
               "load_sectors": "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
               "store_requests": "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum",
               "store_sectors": "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum",
               "load_bank_conflicts": "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
               "store_bank_conflicts": "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum"}
PREDICTED_JSON = os.path.join(HERE, "results", "cuda-predicted.json")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
REHEARSAL_VARIABLE = "TINYALEX_GPU_REHEARSAL"   # "1": the emulated CuPy set, see --rehearse
REHEARSAL_DIR = os.path.join(HERE, "rehearsal")
#: What comes back from a lent machine: files under $OUT, at most this many, each under this size.
OUT_MAX_FILES = 8
OUT_MAX_FILE_BYTES = 16 * 2**20
LOG_ARCHIVE_KEEP_BYTES = 2 * 2**20  # of a log longer than twice this, its head and tail go in the archive
STATUSES = ("pass", "fail", "timeout", "skipped", "running", "pending")


# --- the plan: steps as data ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """One step of the check: a command, its time cap, and how to read its output."""
    name: str                   # short id; also the name of its log file
    title: str
    purpose: str                # what a pass shows
    cap_s: int                  # the longest it may run (the training step: the least it gets)
    command: tuple
    summarize: object           # (CommandRun, Context) -> Summary
    takes_rest: bool = False    # its cap grows to whatever the budget has left
    interrupt_s: int = 0        # Ctrl-C this long before the cap: the planned end, not a timeout
    requires: str = ""          # an executable (name or path) that must exist, else the step is skipped
    needs: tuple = ()           # what the environment step must have found (CAPABILITIES), else skipped
    probe: tuple = ()           # rehearsal: arguments that run the command without what it needs (a plan)


@dataclasses.dataclass(frozen=True)
class Workload:
    """How much data the training steps read, and what the training step trains; and the
    size of what the ncu step profiles."""
    train_images: int
    test_images: int
    train_options: tuple = ()
    launch_options: tuple = ("--batch", "8")


#: 200 batches of 128 of the GPU default model; the rehearsal trains a small model on the
#: emulator (about 3 images/s), enough for two batches an epoch and the planned Ctrl-C, and
#: its ncu step counts, at batch 1, the cases that launch each kind of kernel AlexNet uses
#: (sgd_update on 2^16 elements): about 10 s on the emulator.
GPU_WORKLOAD = Workload(25600, 2560)
REHEARSAL_WORKLOAD = Workload(16, 8, ("--model", "cpu-alexnet", "--batch-size", "8"),
                              ("--batch", "1", "--sgd-elements", "65536",
                               "--only", "conv5", "lrn2", "pool5", "relu6", "dropout", "cross", "sgd"))


@dataclasses.dataclass
class Context:
    """Where the check runs and writes, and what it found before the first step."""
    python: str
    device_name: str
    date: str
    out_dir: str
    work_dir: str               # temporary: synthetic data, training checkpoints, the logs before archiving
    data_dir: str               # the Fashion-MNIST files the training steps read
    synthetic: bool             # none at fashion_mnist_dir: data_dir holds synthetic images of its shape
    fashion_mnist_dir: str      # where Fashion-MNIST was looked for
    budget_s: float
    sanitizer: str              # the compute-sanitizer executable, or "" if there is none
    ncu: str = ""               # Nsight Compute's command line (ncu), or "" if there is none
    device_note: str = ""       # where the device name came from, when it is not a GPU found here
    out_from_env: bool = False  # out_dir is $OUT
    rehearsal: bool = False     # the emulated CuPy set and stand-ins (--rehearse)
    pytest_plugins: tuple = ("xdist", "timeout")    # those installed, of pytest-xdist and pytest-timeout
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def slug(self):
        return device_slug(self.device_name)

    @property
    def report_path(self):
        return os.path.join(self.out_dir, f"gpu-{self.slug}-{self.date}.md")

    @property
    def archive_path(self):
        return os.path.splitext(self.report_path)[0] + "-logs.tar.gz"

    @property
    def logs_dir(self):
        """Where the steps write their output; archived whole into archive_path."""
        return os.path.join(self.work_dir, os.path.basename(os.path.splitext(self.report_path)[0]) + "-logs")

    @property
    def train_dir(self):
        return os.path.join(self.work_dir, "train")

    @property
    def workload(self):
        return REHEARSAL_WORKLOAD if self.rehearsal else GPU_WORKLOAD

    def remaining(self):
        return self.budget_s - (time.monotonic() - self.started)


def device_slug(name):
    """'NVIDIA H200' -> 'nvidia-h200': lower case, runs of other characters as one dash."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-gpu"


def pytest_options(ctx):
    """Spread the GPU tests over the cores, and limit each test, with the plugins there are."""
    options = []
    if "xdist" in ctx.pytest_plugins:
        options += ["-n", str(min(PYTEST_WORKERS, os.cpu_count() or 1))]
    if "timeout" in ctx.pytest_plugins:
        options += ["--timeout", str(PYTEST_TEST_TIMEOUT_S)]
    return tuple(options)


def installed_pytest_plugins():
    """Which of pytest-xdist and pytest-timeout this interpreter (every step's) has."""
    import importlib.util
    return tuple(name for name, module in (("xdist", "xdist"), ("timeout", "pytest_timeout"))
                 if importlib.util.find_spec(module) is not None)


def plan_steps(ctx):
    """The steps, in order, for the context's paths and tools."""
    py = ctx.python
    smoke = (py, "benchmarks/gpu_kernels_smoke.py")
    pytest_selection = ("-k", "(cupy or cuda) and not nvcc", "-m", "not cuda_emulated and not network")
    steps = [
        Step("environment", "imports, GPU, driver and library versions",
             "every import the later steps need works here (numba with this numpy, CuPy with a GPU and"
             " NVRTC compiling a tinyalex kernel, PyTorch with CUDA and cuDNN, pytest's plugins), and the"
             " versions the numbers below come from", 30,
             (py, "benchmarks/gpu_check.py", "--part", "environment"), summarize_environment),
        Step("smoke", "every kernel once, unsanitized",
             "every kernel of kernels/*.cu, float32 and float64, forward and backward, computes what the"
             " numpy reference computes, on a real GPU", 30, smoke, summarize_smoke, needs=("cupy",)),
        Step("pytest", "GPU tests (pytest, cupy kernel set)",
             "the cupy kernel set agrees with numpy and torch on the test suite's cases, forward and"
             " backward, float32 and float64, on a real GPU",
             95, (py, "-m", "pytest", "-q", "--maxfail=10", "-p", "no:cacheprovider", *pytest_options(ctx),
                  *pytest_selection, "tests"),
             summarize_pytest, needs=("cupy",)),
    ]
    caps = {"memcheck": 45, "racecheck": 45, "initcheck": 25, "synccheck": 25}
    purposes = {"memcheck": "no out-of-bounds or misaligned access in any kernel",
                "racecheck": "no shared-memory race (the cross-entropy reduction)",
                "initcheck": "no kernel reads global memory that was never written",
                "synccheck": "no barrier or warp-shuffle misuse"}
    for tool in SANITIZER_TOOLS:
        steps.append(Step(tool, f"compute-sanitizer {tool}", purposes[tool] + ", over every kernel of"
                          " gpu_kernels_smoke.py in both dtypes (findings in CuPy's and cuBLAS's own"
                          " kernels are listed, not counted)", caps[tool],
                          (ctx.sanitizer or "compute-sanitizer", "--tool", tool,
                           "--launch-timeout", str(SANITIZER_LAUNCH_TIMEOUT_S), "--report-api-errors", "no",
                           "--print-limit", str(SANITIZER_PRINT_LIMIT), *smoke),
                          summarize_sanitizer, requires=ctx.sanitizer or "compute-sanitizer", needs=("cupy",)))
    bench = (py, "benchmarks/bench_cuda.py", "--repeat", str(BENCH_REPEAT))
    steps += [
        Step("bench-fp32", "bench_cuda.py in strict fp32, every op",
             "every op of the 2012 AlexNet at batch 128, forward and backward, agrees with PyTorch + cuDNN"
             " (TF32 off on both sides), and how fast each runs beside it", 50,
             (*bench, "--modes", "fp32", "--out", os.path.join(ctx.logs_dir, "bench-fp32")),
             functools.partial(summarize_bench, mode="fp32"), needs=("cupy", "torch-cuda"),
             probe=("--dry-run",)),
        Step("bench-tf32", "bench_cuda.py in TF32, the GEMM cases",
             "the conv and fc layers (and conv2's im2col, whose name matches) agree with PyTorch + cuDNN"
             " with TF32 on both sides, and how fast they run beside it", 30,
             (*bench, "--modes", "tf32", "--only", "conv", "fc",
              "--out", os.path.join(ctx.logs_dir, "bench-tf32")),
             functools.partial(summarize_bench, mode="tf32"), needs=("cupy", "torch-cuda"),
             probe=("--dry-run",)),
    ]
    work = ctx.workload
    steps.append(Step("ncu", "Nsight Compute: sectors per request of every kernel",
                      "the memory transactions the emulator counted for the prediction (sectors per request"
                      " of loads and stores, shared-memory bank conflicts) are the GPU's, kernel by kernel, at"
                      " AlexNet's shapes", 30,
                      (ctx.ncu or "ncu", "--csv", "--print-units", "base", "--metrics", ",".join(NCU_METRICS.values()),
                       "--kernel-name", "regex:" + "|".join(tinyalex_kernel_names()),
                       py, "benchmarks/gpu_kernel_launches.py", *work.launch_options),
                      summarize_ncu, requires=ctx.ncu or "ncu", needs=("cupy",)))
    data = ("--data-dir", ctx.data_dir, "--limit-train", str(work.train_images))
    steps += [
        Step("torch-throughput", "PyTorch's images/s for the same model",
             "the baseline for training throughput: PyTorch on the same model, weights, loader and batch",
             35, (py, "benchmarks/gpu_train_throughput.py", *data), summarize_throughput,
             needs=("cupy", "torch-cuda")),
        Step("train", "tinyalex train --device cuda",
             "training runs end to end on the GPU (data, steps, evaluation, checkpoints) with finite"
             " losses, and how fast", 55,
             (py, "-m", "tinyalex.train.cli", "train", "--device", "cuda", *work.train_options, *data,
              "--limit-test", str(work.test_images), "--epochs", "1000", "--out", ctx.train_dir), summarize_train,
             takes_rest=not ctx.rehearsal, interrupt_s=TRAIN_INTERRUPT_S, needs=("cupy",)),
    ]
    return steps


def check_plan(steps, budget_s):
    """Raise ValueError unless every step has a cap and the caps fit in the budget."""
    for step in steps:
        if not step.cap_s > 0:
            raise ValueError(f"step {step.name}: expected a positive cap, got {step.cap_s!r}")
    total = sum(step.cap_s for step in steps) + RESERVE_S
    if total > budget_s:
        raise ValueError(f"--budget-s: the step caps and the {RESERVE_S} s reserve add up to {total} s,"
                         f" expected at most the budget, got {budget_s:g} s")


def plan_lines(steps, ctx):
    """The plan as text: steps, caps, commands, and where the report goes."""
    total = sum(step.cap_s for step in steps)
    lines = [f"GPU check plan: {len(steps)} steps, caps adding up to {total} s of a {ctx.budget_s:g} s budget"
             f" ({RESERVE_S} s kept for the report); the training step also gets what the others leave.", ""]
    for i, step in enumerate(steps, 1):
        cap = f">= {step.cap_s} s" if step.takes_rest else f"{step.cap_s} s"
        lines.append(f"{i:2}. {step.name:<17} cap {cap:>8}  {display_command(step.command, ctx)}")
    destination = (f"$OUT = {ctx.out_dir}" if ctx.out_from_env else
                   f"{ctx.out_dir} (--out: $OUT is not set; on a lent machine set it, only $OUT comes back)")
    lines += ["", f"device: {ctx.device_name}" + (f" ({ctx.device_note})" if ctx.device_note else ""),
              f"destination: {destination}",
              f"report:  {shown_out_path(ctx.report_path, ctx)}",
              f"archive: {shown_out_path(ctx.archive_path, ctx)} (every step's output; 2 files in all)",
              f"data:    {data_line(ctx)}"]
    missing = [name for name in ("xdist", "timeout") if name not in ctx.pytest_plugins]
    if missing:
        lines.append("pytest-" + " and pytest-".join(missing) + " not installed here: the pytest step runs"
                     + (" in one process" if "xdist" in missing else "") + (" without a per-test limit"
                                                                           if "timeout" in missing else ""))
    if not ctx.sanitizer:
        lines.append("compute-sanitizer: not found here; its steps would be skipped")
    return lines


def shown_out_path(path, ctx):
    """A path in the destination, written as $OUT/... when the destination is $OUT."""
    return os.path.join("$OUT", os.path.relpath(path, ctx.out_dir)) if ctx.out_from_env else path


def display_command(command, ctx):
    """A command as a shell line, with the interpreter shown as `python` and paths inside the
    repository relative to its root (where every step runs)."""
    def shown(part):
        if part == ctx.python:
            return "python"
        return os.path.relpath(part, ROOT) if part.startswith(ROOT + os.sep) else part
    return shlex.join(shown(part) for part in command)


def data_line(ctx):
    if ctx.synthetic:
        return (f"synthetic: no Fashion-MNIST at {ctx.fashion_mnist_dir}, so {ctx.workload.train_images} training"
                f" and {ctx.workload.test_images}"
                " test images of its shape (28x28 uint8, 10 classes, each class a brighter band of rows)"
                " are written to a temporary folder; accuracy then says only that the model learns")
    return (f"Fashion-MNIST from {ctx.data_dir} (the first {ctx.workload.train_images} training and"
            f" {ctx.workload.test_images} test images)")


# --- running one step ----------------------------------------------------------------------------

@dataclasses.dataclass
class CommandRun:
    """How a command ended, and everything it printed."""
    returncode: object          # int, or None if it could not start
    wall_s: float
    output: str
    timed_out: bool = False     # killed at its cap
    interrupted: bool = False   # sent the planned Ctrl-C


def run_command(command, cap_s, log_path, env=None, interrupt_s=0, cwd=ROOT):
    """Run `command` with its output in `log_path`, for at most `cap_s` seconds.

    It runs in a process group of its own, so a timeout (or this script being stopped)
    ends it and everything it started. With interrupt_s, SIGINT goes to the group that
    long before the cap, as a planned end; the command may still use the rest of the cap.
    It starts with SIGINT's default action: one started from a background job inherits an
    ignored SIGINT, and a process that starts with SIGINT ignored keeps ignoring it.
    """
    start = time.monotonic()
    with open(log_path, "w") as log:
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=cwd, env=env, start_new_session=True, preexec_fn=_default_sigint)
        except OSError as exc:
            log.write(f"could not start {command[0]}: {exc}\n")
            return CommandRun(None, 0.0, f"could not start {command[0]}: {exc}")
        interrupted = timed_out = False
        try:
            if interrupt_s:
                try:
                    process.wait(timeout=max(cap_s - interrupt_s, 0))
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGINT)
                    interrupted = True
            try:
                process.wait(timeout=max(cap_s - (time.monotonic() - start), 0))
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(process)
        finally:
            if process.poll() is None:          # this script is being stopped: take the step with it
                _kill_group(process)
    with open(log_path, errors="replace") as log:
        output = log.read()
    return CommandRun(process.returncode, time.monotonic() - start, output, timed_out, interrupted)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_group(process, signum):
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _kill_group(process):
    """SIGTERM to the process group, then, KILL_GRACE_S later or once the command has gone,
    SIGKILL to whatever of the group is left (processes it started that outlived it)."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process, signal.SIGKILL)
    process.wait()


@dataclasses.dataclass
class Summary:
    """What a step's output says: pass or fail, one line for the table, and details."""
    status: str
    key: str
    details: list = dataclasses.field(default_factory=list)     # markdown lines
    data: dict = dataclasses.field(default_factory=dict)        # numbers other sections use


@dataclasses.dataclass
class StepResult:
    """A step as the report shows it."""
    step: Step
    status: str
    wall_s: float = 0.0
    cap_s: float = 0.0
    key: str = ""
    details: list = dataclasses.field(default_factory=list)
    tail: list = dataclasses.field(default_factory=list)        # last lines of output, unless it passed
    data: dict = dataclasses.field(default_factory=dict)
    command: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")


def step_result(step, run, ctx, cap_s):
    """Judge a finished command: the step's own reading of its output, and the timeout."""
    command = display_command(step.command, ctx)
    if run.returncode is None:
        return StepResult(step, "fail", run.wall_s, cap_s, run.output.strip(), command=command,
                          tail=run.output.splitlines()[-TAIL_LINES:])
    try:
        summary = step.summarize(run, ctx)
    except Exception as exc:                    # an unreadable output is the step's failure, not the check's
        summary = Summary("fail", f"could not read its output: {type(exc).__name__}: {exc}")
    status, key = summary.status, summary.key
    if run.timed_out:
        status, key = "timeout", f"killed at its {cap_s:.0f} s cap; " + key
    tail = [] if status == "pass" else run.output.splitlines()[-TAIL_LINES:]
    return StepResult(step, status, run.wall_s, cap_s, key, summary.details, tail, summary.data, command)


# --- reading each step's output ----------------------------------------------------------------

def key_value_lines(text):
    """{'GPU': 'NVIDIA H200 ...', ...} from 'key: value' lines."""
    pairs = (line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {k.strip(): v.strip() for k, v in pairs}


CAPABILITIES_PREFIX = "CAPABILITIES "


def summarize_environment(run, ctx):
    """Pass: every capability there (the rehearsal expects no PyTorch on CUDA). Its data
    {'missing': {capability: why}} decides which later steps are skipped."""
    found = key_value_lines(run.output)
    lines = [line for line in run.output.splitlines() if line.startswith(CAPABILITIES_PREFIX)]
    missing = json.loads(lines[-1][len(CAPABILITIES_PREFIX):]) if lines else {}
    details = [f"- {line}" for line in run.output.splitlines()
               if ": " in line and not line.startswith(("MISSING", CAPABILITIES_PREFIX))]
    details += [f"- **missing: {name}**: {why}" for name, why in missing.items()]
    key = "; ".join(found[k] if k == "GPU" else f"{k} {found[k]}"
                    for k in ("GPU", "CUDA", "CuPy", "PyTorch") if k in found)
    if missing:
        key = "missing: " + ", ".join(missing) + (f"; {key}" if key else "")
    if run.returncode != 0 or not lines:        # its whole output is in the report's tail
        return Summary("fail", key if lines else (run.output.strip().splitlines() or ["no output"])[-1],
                       details, {"missing": missing})
    return Summary("pass", key, details, {"missing": missing})


def summarize_smoke(run, ctx):
    """Pass: the driver's last line is SMOKE OK (it checked every kernel against numpy)."""
    smoke = [line for line in run.output.splitlines() if line.startswith("SMOKE ")]
    failed = [f"- `{line.strip()}`" for line in run.output.splitlines() if line.startswith("FAILED ")]
    if not smoke:
        return Summary("fail", "the smoke driver did not finish", failed)
    passed = run.returncode == 0 and smoke[-1].startswith("SMOKE OK")
    return Summary("pass" if passed else "fail", smoke[-1][:300], failed)


PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)")


def parse_pytest_counts(output):
    """{'passed': 105, 'skipped': 2, ...} from pytest's last summary line ({} if there is none)."""
    for line in reversed(output.splitlines()):
        counts = {word if word != "error" else "errors": int(n) for n, word in PYTEST_COUNT.findall(line)}
        if counts or "no tests ran" in line:
            return counts
    return {}


#: A skip reason that means the test wanted a GPU or CuPy and found none (the tests' own words).
NO_GPU_SKIP = re.compile(r"^SKIPPED \[(\d+)\] .*(need a CUDA GPU|'cuda' is not available|CuPy .*not installed)")


def summarize_pytest(run, ctx):
    """Pass: pytest passed, and no test was skipped for want of a GPU (on a machine without
    one, the selection still passes the ~20 tests that need no GPU and skips the rest)."""
    counts = parse_pytest_counts(run.output)
    key = ", ".join(f"{n} {word}" for word, n in counts.items()) or (
        "no tests ran" if "no tests ran" in run.output else "no pytest summary line")
    lines = run.output.splitlines()
    details = [f"- `{line.strip()}`" for line in lines if line.startswith(("FAILED ", "ERROR ", "SKIPPED "))][:20]
    without_gpu = sum(int(m.group(1)) for m in map(NO_GPU_SKIP.match, lines) if m)
    if without_gpu or (run.returncode == 0 and not counts.get("passed")):
        return Summary("fail", f"{without_gpu} tests skipped for want of a GPU ({key}): does CuPy see it?",
                       details, counts)
    return Summary("pass" if run.returncode == 0 else "fail", key, details, counts)


@dataclasses.dataclass
class SanitizerReport:
    """What compute-sanitizer's output says."""
    summaries: int = 0          # summary lines found (0: the tool did not finish)
    errors: int = 0             # as its summary line counts them, in every kernel
    warnings: int = 0           # racecheck's hazards of warning severity
    not_printed: int = 0        # errors past --print-limit: where they were is unknown
    findings: list = dataclasses.field(default_factory=list)    # "what (in which kernel)", one per finding
    in_our_kernels: int = 0     # findings located in one of tinyalex's kernels
    unlocated: int = 0          # findings that name no kernel


SANITIZER_PREFIX = "========="
# Anchored to the whole line: "========= 12 errors were not printed" is not a summary.
ERROR_SUMMARY = re.compile(r"^========= ERROR SUMMARY: (\d+) errors?\s*$")
RACECHECK_SUMMARY = re.compile(
    r"^========= RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)\s*$")
NOT_PRINTED = re.compile(r"^========= (\d+) (?:errors?|hazards?) (?:was|were) not printed")
NOT_FINDINGS = ("COMPUTE-SANITIZER", "ERROR SUMMARY", "RACECHECK SUMMARY", "LEAK SUMMARY",
                "Target application returned", "This tool is deprecated")
# "at void relu_forward<float>(const T1 *, ...)+0x70", or a C kernel's "at cupy_copy__float_float+0x60"
KERNEL_LOCATION = re.compile(r"\bat (?:void )?([A-Za-z_][^(+]*?)(?:\(|\+0x)")


def parse_sanitizer_output(text, kernel_names=()):
    """Count compute-sanitizer's errors and list its findings.

    Every tool ends with the line `========= ERROR SUMMARY: N errors` (racecheck with
    `RACECHECK SUMMARY: H hazards displayed (E errors, W warnings)`); each finding is a line
    after the prefix, followed by indented lines; the kernel is named after `at ` on the
    first line (racecheck) or on an indented one. A finding in one of `kernel_names` counts
    as in tinyalex's kernels; one in another kernel (CuPy's, cuBLAS's) is only listed.
    """
    report, current, located = SanitizerReport(), None, set()
    for raw in text.splitlines():
        if not raw.startswith(SANITIZER_PREFIX):
            continue
        line = raw[len(SANITIZER_PREFIX):]
        if match := ERROR_SUMMARY.match(raw):
            report.summaries += 1
            report.errors += int(match.group(1))
        elif match := RACECHECK_SUMMARY.match(raw):
            report.summaries += 1
            report.errors = max(report.errors, int(match.group(2)))     # ERROR SUMMARY may count them too
            report.warnings += int(match.group(3))
        elif match := NOT_PRINTED.match(raw):
            report.not_printed += int(match.group(1))
            current = None
            continue
        if not line.strip() or line.strip().startswith(NOT_FINDINGS):
            current = None
        elif not line.startswith("  "):             # a finding's first line
            current = len(report.findings)
            report.findings.append(line.strip())
            report.unlocated += 1
            _locate(report, current, line, kernel_names, located)
        elif current is not None and line.strip().startswith("at "):
            _locate(report, current, line, kernel_names, located)
    return report


def _locate(report, index, line, kernel_names, located):
    """Name the kernel of finding `index` from `line`, if it names one and the finding has none yet."""
    match = KERNEL_LOCATION.search(line)
    if not match or index in located:
        return
    located.add(index)
    where = match.group(1)
    report.findings[index] += f" (in {where})"
    report.unlocated -= 1
    if any(re.search(rf"\b{re.escape(name)}\b", where) for name in kernel_names):
        report.in_our_kernels += 1


def tinyalex_kernel_names():
    from tinyalex.kernels.cupy.loader import KERNEL_FILES
    return [name for names in KERNEL_FILES.values() for name in names]


def summarize_sanitizer(run, ctx):
    """Pass: the summary line is there, no finding is in tinyalex's kernels or unlocated, none
    went unprinted, and the smoke driver passed. Findings in other kernels are listed only."""
    report = parse_sanitizer_output(run.output, tinyalex_kernel_names())
    smoke = [line for line in run.output.splitlines() if line.startswith("SMOKE ")]
    smoke_line = smoke[-1] if smoke else "the smoke driver did not finish"
    details = [f"- finding: `{f}`" for f in report.findings[:15]]
    if len(report.findings) > 15:
        details.append(f"- ... and {len(report.findings) - 15} more in the log")
    details.append(f"- smoke driver: {smoke_line}")
    if not report.summaries:
        return Summary("fail", f"no sanitizer summary line (the tool did not finish); {smoke_line}", details)
    ours = report.in_our_kernels + report.unlocated
    others = len(report.findings) - ours
    key = f"{ours} findings in tinyalex's kernels or unlocated"
    if others:
        key += f", {others} in other kernels (not counted)"
    if report.not_printed:
        key += f", {report.not_printed} not printed (their kernels unknown)"
    key += f"; summary line: {report.errors} errors"
    if report.warnings:
        key += f", {report.warnings} race warnings (read them in the log)"
    passed = not ours and not report.not_printed and run.returncode == 0 and smoke_line.startswith("SMOKE OK")
    return Summary("pass" if passed else "fail", f"{key}; driver: {smoke_line[:100]}", details,
                   {"errors": report.errors, "ours": ours})


def markdown_table(output):
    """The lines of the last markdown table in `output`."""
    tables, current = [], []
    for line in output.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables[-1] if tables else []


def table_column(table, header):
    """The values of column `header` in a markdown table, as strings."""
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in table]
    index = cells[0].index(header)
    return [row[index] for row in cells[2:]]


def summarize_bench(run, ctx, mode="fp32"):
    table = markdown_table(run.output)
    if not table:
        progress = [f"    {line.strip()}" for line in run.output.splitlines()
                    if " ms " in line or "MISMATCH" in line]
        return Summary("fail", "no results table: the benchmark did not finish",
                       (["- cases that finished before it stopped:", ""] + progress + [""]) if progress else [])
    ratios = [float(v) for v in table_column(table, "tinyalex / torch")]
    mismatches = sum("MISMATCH" in row for row in table[2:])
    key = (f"{len(ratios)} timings, time ratio tinyalex / torch: median {statistics.median(ratios):.2f}"
           f" (from {min(ratios):.2f} to {max(ratios):.2f}); {mismatches} mismatches against torch")
    own = f"{os.path.basename(ctx.logs_dir)}/bench-{mode}/cuda.md"
    details = [f"Ratio: tinyalex time / torch time, below 1 tinyalex is faster. The benchmark's own report,"
               f" with its method and chart: `{own}` in {os.path.basename(ctx.archive_path)}.", ""] + table + [""]
    data = {"median_ratio": statistics.median(ratios), "mismatches": mismatches}
    if mode == "fp32":                  # the prediction assumes strict fp32 GEMMs
        lines, errors = prediction_comparison(table, load_predictions())
        details += lines
        if errors:
            data["median_measured_over_predicted"] = statistics.median(errors)
            key += f"; measured / predicted: median {statistics.median(errors):.2f}"
    return Summary("pass" if run.returncode == 0 and not mismatches else "fail", key, details, data)


def load_predictions(path=None):
    """benchmarks/cuda_predict.py's committed prediction, PREDICTED_JSON ({} if there is none)."""
    path = path or PREDICTED_JSON
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def prediction_comparison(table, predicted):
    """(markdown lines, [measured / predicted]) setting bench_cuda.py's measured times beside
    the prediction for the same case and direction, and beside torch's (cuDNN's) time."""
    cases = predicted.get("cases", {})
    if not cases:
        return [f"No prediction to compare with: {os.path.relpath(PREDICTED_JSON, ROOT)} is missing.", ""], []
    lines = [f"Measured against predicted: the time benchmarks/cuda_predict.py predicted for an H100 from the"
             f" traffic the emulator counted at batch {predicted.get('batch')} (no L2 hits, no latency; the"
             " ideal kernel moves each input and output once), beside torch's time.", "",
             "| case | direction | tinyalex ms | predicted ms | measured / predicted | ideal ms | torch (cuDNN) ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    errors = []
    rows = zip(table_column(table, "case"), table_column(table, "direction"),
               table_column(table, "tinyalex ms"), table_column(table, "torch ms"))
    for case, direction, ours, torch_ms in rows:
        entry = cases.get(f"{case} {direction}")
        if entry is None:
            lines.append(f"| {case} | {direction} | {ours} | no prediction | | | {torch_ms} |")
            continue
        ratio = float(ours) / (entry["predicted_us"] / 1e3)
        errors.append(ratio)
        lines.append(f"| {case} | {direction} | {ours} | {entry['predicted_us'] / 1e3:.3f} | {ratio:.2f} |"
                     f" {entry['ideal_us'] / 1e3:.3f} | {torch_ms} |")
    return lines + [""], errors


LAUNCH_LINE = re.compile(r"^LAUNCH (.+?) \| (\S+) \| (\w+)$")
NCU_NOT_PERMITTED = "ERR_NVGPUCTRPERM"


def parse_ncu_csv(output, kernel_names):
    """[(kernel, {quantity: value})] per profiled launch, in launch order, from ncu's --csv
    output (one row per launch and metric). A launch's kernel is the first of `kernel_names`
    its name holds; quantities are NCU_METRICS' names, values floats (None if not a number)."""
    import csv
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"') and '"Metric Name"' in line), None)
    if start is None:
        return []
    by_metric = {metric: quantity for quantity, metric in NCU_METRICS.items()}
    launches = {}
    for row in csv.DictReader(lines[start:]):
        if not row.get("ID", "").isdigit() or row.get("Metric Name") not in by_metric:
            continue
        name = row["Kernel Name"]
        kernel = next((k for k in kernel_names if re.search(rf"\b{re.escape(k)}\b", name)), name)
        value = row["Metric Value"].replace(",", "")
        try:
            number = float(value)
        except ValueError:
            number = None
        launches.setdefault(int(row["ID"]), (kernel, {}))[1][by_metric[row["Metric Name"]]] = number
    return [launches[i] for i in sorted(launches)]


def summarize_ncu(run, ctx):
    """Pass: ncu profiled every launch the driver made, in the same order, and the driver
    finished. The table sets ncu's sectors per request beside the emulator's prediction."""
    if NCU_NOT_PERMITTED in run.output:
        return Summary("skipped", f"ncu may not read the GPU's performance counters here ({NCU_NOT_PERMITTED}:"
                                  " profiling needs root or NVreg_RestrictProfilingToAdminUsers=0)")
    launched = [m.groups() for m in map(LAUNCH_LINE.match, run.output.splitlines()) if m]
    profiled = parse_ncu_csv(run.output, tinyalex_kernel_names())
    finished = any(line.startswith("LAUNCHES OK") for line in run.output.splitlines())
    if not profiled:
        return Summary("fail", f"no ncu metrics in the output; the driver {'finished' if finished else 'did not finish'}")
    if [kernel for _, _, kernel in launched] != [kernel for kernel, _ in profiled]:
        return Summary("fail", f"ncu profiled {len(profiled)} launches, the driver made {len(launched)}: they do not"
                               " match one to one, so no launch can be given its case")
    totals = {}
    for (case, direction, kernel), (_, values) in zip(launched, profiled):
        if direction == "setup":
            continue
        entry = totals.setdefault((case, direction, kernel), dict.fromkeys(NCU_METRICS, 0.0))
        for quantity in NCU_METRICS:
            entry[quantity] = None if entry[quantity] is None or values.get(quantity) is None \
                else entry[quantity] + values[quantity]
    predicted = load_predictions().get("cases", {})
    lines = ["Sectors per request (32-byte sectors per warp-level request of global memory) as ncu counts them"
             " on this GPU, beside the emulator's counts behind the prediction (benchmarks/results/cuda-predicted.md);"
             " shared-memory bank conflicts likewise. The driver: benchmarks/gpu_kernel_launches.py "
             + " ".join(ctx.workload.launch_options) + ".", "",
             "| case | direction | kernel | load sectors/req: ncu | emulator | store sectors/req: ncu | emulator |"
             " bank conflicts: ncu | emulator (replays) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]

    def number(value, digits):
        return "" if value is None else f"{value:.{digits}f}"

    def ratio(sectors, requests):
        return sectors / requests if sectors is not None and requests else None
    for (case, direction, kernel), v in totals.items():
        emulator = predicted.get(f"{case} {direction}", {}).get("kernels", {}).get(kernel, {})
        conflicts = None if v["load_bank_conflicts"] is None or v["store_bank_conflicts"] is None \
            else v["load_bank_conflicts"] + v["store_bank_conflicts"]
        lines.append(f"| {case} | {direction} | {kernel} | {number(ratio(v['load_sectors'], v['load_requests']), 2)} |"
                     f" {number(emulator.get('load_sectors_per_request'), 2)} |"
                     f" {number(ratio(v['store_sectors'], v['store_requests']), 2)} |"
                     f" {number(emulator.get('store_sectors_per_request'), 2)} |"
                     f" {number(conflicts, 0)} | {number(emulator.get('replays'), 0)} |")
    key = f"{len(profiled)} launches profiled and attributed to {len(totals)} kernels of {len({c for c, _, _ in totals})} cases"
    passed = run.returncode == 0 and finished
    return Summary("pass" if passed else "fail", key + ("" if finished else "; the driver did not finish"),
                   lines + [""], {"kernels": len(totals)})


def summarize_throughput(run, ctx):
    lines = [line for line in run.output.splitlines() if line.startswith("THROUGHPUT ")]
    if not lines:
        return Summary("fail", "no THROUGHPUT line: the measurement did not finish")
    data = json.loads(lines[-1][len("THROUGHPUT "):])
    key = (f"{data['model']}, batch {data['batch']}: PyTorch {data['torch_end_to_end']:.0f} images/s end to end,"
           f" {data['torch_step']:.0f} step only; tinyalex {data['tinyalex_step']:.0f} step only;"
           f" loader alone {data['loader']:.0f}")
    check = (f"check before timing (eval mode, same weights and batch): loss tinyalex {data['loss_tinyalex']:.6f},"
             f" PyTorch {data['loss_torch']:.6f}, relative difference {data['loss_difference']:.1e}"
             f" ({'ok' if data['check_passed'] else 'MISMATCH'})")
    passed = run.returncode == 0 and data["check_passed"]
    return Summary("pass" if passed else "fail", key, [f"- {check}"], data)


def read_metrics(path):
    """The per-epoch metrics of a training run (metrics.jsonl), [] if there are none."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def steady_images_per_s(history):
    """(images/s, how it was taken): the median of epochs after the first, whose time includes
    the warm-up (cuBLAS handles, loading compiled kernels, growing the memory pool)."""
    rates = [m["images_per_sec"] for m in history]
    if len(rates) >= 2:
        return statistics.median(rates[1:]), f"median of epochs 2-{len(rates)}"
    return rates[0], "epoch 1, warm-up included"


def summarize_train(run, ctx):
    history = read_metrics(os.path.join(ctx.train_dir, "metrics.jsonl"))
    chosen = re.search(r"chose model (\S+):", run.output)
    options = ctx.workload.train_options
    model = chosen.group(1) if chosen else dict(zip(options[::2], options[1::2])).get("--model", "the default model")
    progress = [line for line in run.output.splitlines() if "img/s" in line]
    ended = "stopped by the planned Ctrl-C" if run.interrupted else f"exited with status {run.returncode}"
    if not history:
        last = f"; last progress line: {progress[-1].strip()}" if progress else ""
        return Summary("fail", f"{model}: {ended} before an epoch finished{last}")
    rate, how = steady_images_per_s(history)
    finite = all(math.isfinite(m["train_loss"]) and math.isfinite(m["test_loss"]) for m in history)
    rows = ["| epoch | train loss | train acc | test loss | test acc | images/s | seconds |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {m['epoch']} | {m['train_loss']:.4f} | {m['train_acc']:.4f} | {m['test_loss']:.4f} |"
             f" {m['test_acc']:.4f} | {m['images_per_sec']:.0f} | {m['seconds']:.1f} |" for m in history]
    key = (f"{model}: {len(history)} epochs of {ctx.workload.train_images} images, {rate:.0f} images/s ({how});"
           f" last test accuracy {history[-1]['test_acc']:.3f}; {ended}")
    passed = finite and (run.returncode == 0 or (run.interrupted and run.returncode == 130))
    return Summary("pass" if passed else "fail", key, rows + [""],
                   {"model": model, "images_per_s": rate, "how": how})


# --- the report ----------------------------------------------------------------------------------

class Report:
    """The markdown report, rewritten whole after every change so the file is never stale."""

    def __init__(self, ctx, steps, command, sample=False):
        self.ctx, self.steps, self.command, self.sample = ctx, steps, command, sample
        self.results = {}                   # step name -> StepResult
        self.running, self.running_since = None, None
        self.finished = False
        self.started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.commit = git_commit()

    def start(self, step):
        self.running, self.running_since = step.name, time.monotonic()
        self.results[step.name] = StepResult(step, "running", cap_s=step.cap_s,
                                             command=display_command(step.command, self.ctx))

    def add(self, result):
        self.running = None
        self.results[result.step.name] = result

    def result(self, step):
        return self.results.get(step.name) or StepResult(step, "pending", cap_s=step.cap_s,
                                                         command=display_command(step.command, self.ctx))

    def failed(self):
        return [r for r in self.results.values() if r.status in ("fail", "timeout")]

    def render(self):
        ctx, results = self.ctx, [self.result(s) for s in self.steps]
        lines = [f"# GPU check{' (SAMPLE)' if self.sample else ''}: {ctx.device_name}, {ctx.date}", ""]
        if ctx.rehearsal:
            lines += ["> **REHEARSAL** on a machine without a GPU (bash benchmarks/gpu_check.sh --rehearse):"
                      " CuPy is the CPU emulator's stand-in (tests/cuda_emulator), nvidia-smi and"
                      " compute-sanitizer are the stand-ins in benchmarks/rehearsal/bin, and the training step"
                      " trains a small model on a few images. It tests the check, not a GPU: no number here"
                      " describes one.", ""]
        if self.sample:
            lines += ["> **SAMPLE REPORT.** Canned step results that show the format of the GPU check's"
                      " report (benchmarks/gpu_check.py --dry-run --sample-report). Nothing here was"
                      " measured; no number in it describes any GPU.", ""]
        if not self.finished:
            lines += [self.partial_note(results), ""]
        lines += [self.overall_line(results), ""]
        lines += ["| # | step | status | wall s | cap s | result |", "|---:|---|---|---:|---:|---|"]
        for i, r in enumerate(results, 1):
            wall = f"{r.wall_s:.1f}" if r.status not in ("pending", "running", "skipped") else ""
            lines.append(f"| {i} | {r.step.name} | {bold_if_bad(r.status)} | {wall} | {r.cap_s:.0f} |"
                         f" {cell(r.key)} |")
        lines += ["", f"- started: {self.started_at}; budget {ctx.budget_s:g} s",
                  f"- command: `{self.command}`", f"- commit: {self.commit}",
                  f"- data: {data_line(ctx)}",
                  f"- logs: {os.path.basename(ctx.archive_path)}, beside this report, holds the full output of"
                  f" every step (`tar -xzf` it: `{os.path.basename(ctx.logs_dir)}/STEP.log`)", ""]
        lines += throughput_section(self.results)
        for i, r in enumerate(results, 1):
            lines += step_section(i, r, ctx)
        return "\n".join(lines).rstrip() + "\n"

    def partial_note(self, results):
        done = sum(r.status not in ("pending", "running") for r in results)
        if self.running:
            index = [s.name for s in self.steps].index(self.running) + 1
            return (f"> **Partial report**: written while step {index} ({self.running}) was running,"
                    f" {done} of {len(results)} steps done. If the file stays like this, the check was cut"
                    " off there and the steps after it did not run.")
        return f"> **Partial report**: {done} of {len(results)} steps done."

    def overall_line(self, results):
        counts = {s: sum(r.status == s for r in results) for s in STATUSES}
        failed = counts["fail"] or counts["timeout"]
        verdict = "FAIL" if failed else "PASS" if self.finished else "no failure so far"
        parts = [f"{counts[s]} {word}" for s, word in (("pass", "passed"), ("fail", "failed"),
                                                       ("timeout", "timed out"), ("skipped", "skipped"))]
        spent = sum(r.wall_s for r in results)
        return (f"**Overall: {verdict}**: {', '.join(parts)}, of {len(results)} steps;"
                f" {spent:.0f} s of the {self.ctx.budget_s:g} s budget.")

    def write(self, path=None):
        """Write the report atomically (a temporary file renamed over the old one)."""
        path = path or self.ctx.report_path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.render())
        os.replace(tmp, path)
        return path


def bold_if_bad(status):
    return f"**{status}**" if status in ("fail", "timeout") else status


def cell(text):
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def step_section(index, r, ctx):
    """One step's section: what it shows, how it went, its details, and its last output lines."""
    lines = [f"## {index}. {r.step.name}: {r.step.title}", "", f"*What a pass shows:* {r.step.purpose}.", ""]
    if r.status in ("pending", "running"):
        return lines + [f"- status: {r.status}", f"- command: `{r.command}`", ""]
    log = f"`{os.path.basename(ctx.logs_dir)}/{r.step.name}.log` in {os.path.basename(ctx.archive_path)}"
    timing = "" if r.status == "skipped" else f" in {r.wall_s:.1f} s"
    lines += [f"- status: {bold_if_bad(r.status)}{timing} (cap {r.cap_s:.0f} s)", f"- result: {r.key}",
              f"- command: `{r.command}`"]
    if r.status != "skipped":
        lines.append(f"- output: {log}")
    lines += [""] + r.details + ([""] if r.details else [])
    if r.tail:
        lines += ["Last lines of output:", "", "```text", *r.tail, "```", ""]
    return lines


def throughput_section(results):
    """tinyalex's images/s beside PyTorch's, for whichever of the two steps has run."""
    torch_data = results.get("torch-throughput") and results["torch-throughput"].data
    train_data = results.get("train") and results["train"].data
    if not torch_data and not train_data:
        return []
    torch_data, train_data = torch_data or {}, train_data or {}
    model = torch_data.get("model") or train_data.get("model", "")
    batch = torch_data.get("batch", "")

    def row(label, ours, theirs):
        ratio = f"{theirs / ours:.2f}" if ours and theirs else ""
        return f"| {label} | {f'{ours:.0f}' if ours else ''} | {f'{theirs:.0f}' if theirs else ''} | {ratio} |"
    end_to_end = train_data.get("images_per_s")
    lines = [f"## Training throughput: tinyalex vs PyTorch ({model}, batch {batch}, strict fp32)", "",
             "| measured | tinyalex images/s | PyTorch images/s | time ratio tinyalex / PyTorch |",
             "|---|---:|---:|---:|",
             row("end to end: `tinyalex train` epochs, and the same loop in PyTorch (same loader and"
                 f" transforms, {torch_data.get('images', '')} images)", end_to_end,
                 torch_data.get("torch_end_to_end")),
             row("one training step on a fixed batch already on the GPU", torch_data.get("tinyalex_step"),
                 torch_data.get("torch_step"))]
    if torch_data.get("loader"):
        lines.append(f"| the data loader alone, no model: the ceiling of both end-to-end rates |"
                     f" {torch_data['loader']:.0f} | {torch_data['loader']:.0f} | |")
    lines += ["", "Time ratio = PyTorch images/s / tinyalex images/s: below 1, tinyalex is faster."
              " Both sides run strict fp32 (TF32 off), cuDNN autotuning off, dropout on, and read the loss"
              " back every step as `tinyalex train` does." + (f" tinyalex's end-to-end rate: {train_data['how']}."
                                                               if train_data.get("how") else ""), ""]
    return lines


def git_commit():
    """'abc1234' (plus ', with uncommitted changes') from git; without a git checkout (a lent
    machine gets a copy of the tree without .git), $TINYALEX_COMMIT; else 'unknown'."""
    given = os.environ.get("TINYALEX_COMMIT", "").strip()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        head = None
    if head is None or head.returncode != 0:
        if given:
            return f"{given} (from TINYALEX_COMMIT: no git checkout here)"
        return "unknown (not a git checkout, and TINYALEX_COMMIT is not set)"
    return head.stdout.strip() + (", with uncommitted changes" if dirty.stdout.strip() else "")


# --- the parts that run in child processes -------------------------------------------------------

#: What the rehearsal cannot have: no CUDA for PyTorch on a machine without a GPU.
MISSING_IN_REHEARSAL = ("torch-cuda",)


def environment_part():
    """Print 'key: value' lines about the machine, then one probe per capability the later
    steps need; print CAPABILITIES {name: why it is missing, for those missing} last.
    Exit 1 if anything is missing (in the rehearsal: anything but PyTorch on CUDA)."""
    import platform
    print(f"date (UTC): {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    print(f"host: {platform.node()}, {os.cpu_count()} CPU cores; Python {platform.python_version()}")
    print(network_line())
    for label, command in (("nvidia-smi", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                           "--format=csv,noheader"]),
                           ("compute-sanitizer", ["compute-sanitizer", "--version"]),
                           ("nvcc", ["nvcc", "--version"])):
        print(f"{label}: {first_output_line(command, last=label != 'nvidia-smi')}", flush=True)
    missing = {}
    for name, probe in CAPABILITY_PROBES:
        try:
            for line in probe():
                print(line, flush=True)
        except Exception as exc:            # ImportError, a numba/numpy mismatch, no GPU, NVRTC failing ...
            missing[name] = f"{type(exc).__name__}: {exc}".strip()
            print(f"MISSING {name}: {missing[name]}", flush=True)
    print(CAPABILITIES_PREFIX + json.dumps(missing))
    expected = MISSING_IN_REHEARSAL if os.environ.get(REHEARSAL_VARIABLE) == "1" else ()
    return 1 if set(missing) - set(expected) else 0


def probe_numpy_numba():
    import numba
    import numpy
    total = numba.njit(lambda a: a.sum())(numpy.arange(4.0))    # compiles: numba works with this numpy
    if total != 6.0:
        raise RuntimeError(f"a numba-compiled sum of 0..3 gave {total}, expected 6")
    return [f"NumPy: {numpy.__version__}", f"numba: {numba.__version__} (compiled and ran a function)"]


def probe_cupy():
    """CuPy with a GPU, and NVRTC compiling one of tinyalex's kernel files through the loader."""
    import numpy

    from tinyalex.kernels.cupy import loader
    from tinyalex.device import cupy_module
    cupy = cupy_module()                    # RuntimeError saying why, without a usable GPU
    lines = []
    if getattr(cupy, "EMULATED", False):
        lines += ["GPU: none: CuPy is the CPU emulator's stand-in (rehearsal)", "CuPy: emulated (tests/cuda_emulator)"]
    else:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]

        def version(v):
            return f"{v // 1000}.{v % 1000 // 10}"
        lines += [f"GPU: {name} (compute capability {props['major']}.{props['minor']},"
                  f" {props['totalGlobalMem'] / 2**30:.0f} GiB, {cupy.cuda.runtime.getDeviceCount()} visible)",
                  f"CUDA: runtime {version(cupy.cuda.runtime.runtimeGetVersion())},"
                  f" driver {version(cupy.cuda.runtime.driverGetVersion())}",
                  f"CuPy: {cupy.__version__}"]
    start = time.monotonic()
    loader.get_kernel("relu.cu", "relu_forward", numpy.float32)
    lines.append(f"kernel compile: relu.cu through the loader in {time.monotonic() - start:.1f} s")
    return lines


def probe_torch_cuda():
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError(f"PyTorch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False);"
                           " bench_cuda.py and gpu_train_throughput.py compare with PyTorch on the GPU")
    if not torch.backends.cudnn.is_available():
        raise RuntimeError(f"PyTorch {torch.__version__} has no cuDNN; bench_cuda.py compares with cuDNN")
    return [f"PyTorch: {torch_versions()}, {torch.cuda.get_device_name(0)}"]


def probe_test_tools():
    import hypothesis
    import pytest
    lines = [f"pytest: {pytest.__version__}, hypothesis {hypothesis.__version__}"]
    plugins = installed_pytest_plugins()
    lines.append("pytest plugins: " + (", ".join(f"pytest-{p}" for p in plugins) or "none")
                 + " (without pytest-xdist the tests run in one process, without pytest-timeout no test has a limit)")
    return lines


def probe_training_tools():
    import matplotlib
    import PIL
    import tqdm
    return [f"training and report tools: tqdm {tqdm.__version__}, Pillow {PIL.__version__},"
            f" matplotlib {matplotlib.__version__}"]


#: capability -> a probe that prints what it found, or raises saying what is missing.
CAPABILITY_PROBES = (("numba", probe_numpy_numba), ("cupy", probe_cupy), ("torch-cuda", probe_torch_cuda),
                     ("pytest", probe_test_tools), ("training-tools", probe_training_tools))


def torch_versions():
    import torch
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none"
    return f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN {cudnn})"


def first_output_line(command, last=False):
    """The first (or last) line a command prints, or why there is none."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({type(exc).__name__})"
    lines = [line.strip() for line in (done.stdout or done.stderr).splitlines() if line.strip()]
    return (lines[-1] if last else lines[0]) if lines else f"no output (status {done.returncode})"


# --- data ----------------------------------------------------------------------------------------

def has_fashion_mnist(directory):
    """True if all four Fashion-MNIST files are there (each raw or .gz)."""
    def present(name):
        return any(os.path.isfile(os.path.join(directory, name + suffix)) for suffix in ("", ".gz"))
    return all(present(name) for name in FASHION_MNIST_FILES)


def write_synthetic_fashion_mnist(directory, n_train, n_test, seed=0):
    """Fashion-MNIST's four IDX files, of its shapes and types, with learnable content: noise,
    plus a brighter band of two rows whose position is the label."""
    import numpy as np

    from tinyalex.train.data.idx import write_idx
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = ((FASHION_MNIST_FILES[:2], n_train), (FASHION_MNIST_FILES[2:], n_test))
    for (images_name, labels_name), n in splits:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 96, (n, 28, 28)).astype(np.uint8)
        for label in range(10):
            images[labels == label, 4 + 2 * label:6 + 2 * label, :] += 150
        write_idx(os.path.join(directory, images_name), images)
        write_idx(os.path.join(directory, labels_name), labels)


# --- detecting the GPU ---------------------------------------------------------------------------

def detect_gpu_name(python, probe_cupy=True):
    """The GPU's name from nvidia-smi, else from CuPy in a child process; None if neither works."""
    name = _first_line(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], timeout=15)
    if name or not probe_cupy:
        return name
    probe = ("import cupy; p = cupy.cuda.runtime.getDeviceProperties(0); n = p['name'];"
             " print(n.decode() if isinstance(n, bytes) else n)")
    return _first_line([python, "-c", probe], timeout=60)


def _first_line(command, timeout):
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


# --- main ---------------------------------------------------------------------------------------

def make_context(args, dry_run):
    """The context of this run: device name, date, paths, data and tools."""
    detected = args.device_name or detect_gpu_name(sys.executable, probe_cupy=not dry_run)
    name = detected or (PLAN_DEVICE_NAME if dry_run else "unknown GPU")
    note = "from --device-name" if args.device_name else "" if detected else (
        "no GPU visible here: the name the plan assumes; a run names the report after the GPU it finds"
        if dry_run else "neither nvidia-smi nor CuPy named a GPU")
    data_dir = os.path.abspath(args.data_dir)
    work_dir = os.path.join(tempfile.gettempdir(), "tinyalex-gpu-check") if dry_run else \
        tempfile.mkdtemp(prefix="tinyalex-gpu-check-")
    synthetic = not has_fashion_mnist(data_dir)
    out = os.environ.get("OUT", "")
    return Context(python=sys.executable, device_name=name,
                   date=datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
                   out_dir=os.path.abspath(out or args.out), work_dir=work_dir,
                   data_dir=os.path.join(work_dir, "fashion-mnist-synthetic") if synthetic else data_dir,
                   synthetic=synthetic, fashion_mnist_dir=data_dir, budget_s=args.budget_s,
                   sanitizer=find_sanitizer(), ncu=find_cuda_tool("ncu", ("bin", "nsight-compute")),
                   device_note=note, out_from_env=bool(out),
                   rehearsal=os.environ.get(REHEARSAL_VARIABLE) == "1",
                   pytest_plugins=installed_pytest_plugins())


def find_sanitizer():
    """compute-sanitizer's path: on PATH, else in the CUDA toolkit's usual folders; "" if none."""
    return find_cuda_tool("compute-sanitizer", ("bin", "compute-sanitizer"))


def find_cuda_tool(name, folders):
    """The path of CUDA tool `name`: on PATH, else in `folders` of the CUDA toolkit; "" if none."""
    cuda = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    candidates = [shutil.which(name)] + [os.path.join(root, sub, name) for root in cuda if root
                                         for sub in folders]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), "")


def child_environment():
    """The environment of every step: the repository importable, output unbuffered (so a
    killed step's log is complete up to the kill), strict fp32 unless a step says otherwise."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TINYALEX_TF32="0")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Stopped(Exception):
    """This script got SIGTERM: stop the running step and write what there is."""


def _raise_stopped(signum, frame):
    raise Stopped(f"signal {signum}")


def run_check(ctx, steps, command_line):
    """Run every step within the budget, rewriting the report as it goes; returns the exit status."""
    report = Report(ctx, steps, command_line)
    os.makedirs(ctx.logs_dir, exist_ok=True)
    if ctx.synthetic:
        write_synthetic_fashion_mnist(ctx.data_dir, ctx.workload.train_images, ctx.workload.test_images)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        for step in steps:
            result = run_step(step, ctx, report)
            report.add(result)
            report.write()
            write_archive(ctx)
            print(f"{step.name:>17}: {result.status:<7} {result.wall_s:6.1f} s  {result.key[:120]}", flush=True)
    except (Stopped, KeyboardInterrupt) as exc:
        step = next(s for s in steps if s.name == report.running) if report.running else None
        if step:
            report.add(StepResult(step, "timeout", time.monotonic() - report.running_since,
                                  report.results[step.name].cap_s, command=display_command(step.command, ctx),
                                  key=f"the check itself was stopped ({exc or 'Ctrl-C'}) during this step"))
        report.write()
        write_archive(ctx)
        print(f"stopped; partial report: {ctx.report_path}", flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
    report.finished = True
    report.write()
    print(f"report: {ctx.report_path}")
    return 1 if report.failed() else 0


def run_step(step, ctx, report):
    """Run one step (or skip it) and judge it."""
    left = ctx.remaining() - RESERVE_S
    cap = left if step.takes_rest else min(step.cap_s, left)
    command = display_command(step.command, ctx)
    if step.requires and not shutil.which(step.requires):
        return StepResult(step, "skipped", cap_s=step.cap_s, command=command,
                          key=f"{os.path.basename(step.requires)} is not installed on this machine"
                              " (looked on PATH and in CUDA's folders)")
    if cap < MIN_STEP_S:
        return StepResult(step, "skipped", cap_s=step.cap_s, command=command,
                          key=f"only {max(left, 0):.0f} s of the budget left")
    environment = report.results.get("environment")
    missing = {need: environment.data["missing"][need] for need in step.needs
               if environment and need in environment.data.get("missing", {})}
    if missing:
        return skipped_for_want_of(step, missing, ctx, min(cap, step.cap_s))
    report.start(step)
    report.results[step.name].cap_s = cap
    report.write()
    run = run_command(list(step.command), cap, os.path.join(ctx.logs_dir, f"{step.name}.log"),
                      env=child_environment(), interrupt_s=step.interrupt_s if cap > 2 * step.interrupt_s else 0)
    return step_result(step, run, ctx, cap)


def skipped_for_want_of(step, missing, ctx, cap):
    """A step whose needs the environment step did not find: skipped, naming them. In the
    rehearsal its command still runs with its probe arguments (a plan without a GPU), so a
    broken command line shows there rather than on a lent machine."""
    command = display_command(step.command, ctx)
    key = "needs " + "; ".join(f"{need}, which the environment step did not find ({why[:160]})"
                               for need, why in missing.items())
    if not (ctx.rehearsal and step.probe):
        return StepResult(step, "skipped", cap_s=step.cap_s, command=command, key=key)
    probe = list(step.command) + list(step.probe)
    run = run_command(probe, cap, os.path.join(ctx.logs_dir, f"{step.name}.log"), env=child_environment())
    shown = display_command(probe, ctx)
    if run.returncode != 0 or run.timed_out:
        return StepResult(step, "fail", run.wall_s, cap, f"rehearsal: `{shown}` exited with status {run.returncode}",
                          tail=run.output.splitlines()[-TAIL_LINES:], command=command)
    return StepResult(step, "skipped", run.wall_s, step.cap_s, command=command,
                      key=f"{key}; rehearsal: its command with {shlex.join(step.probe)} ran (exit 0)")


def write_archive(ctx):
    """Pack every step's output (ctx.logs_dir) into ctx.archive_path, replacing it atomically.
    A log longer than twice LOG_ARCHIVE_KEEP_BYTES goes in as its head and tail, so that the
    archive stays far under what comes back from a lent machine."""
    tmp = ctx.archive_path + ".tmp"
    os.makedirs(ctx.out_dir, exist_ok=True)
    with tarfile.open(tmp, "w:gz") as tar:
        for folder, _, files in sorted(os.walk(ctx.logs_dir)):
            for name in sorted(files):
                path = os.path.join(folder, name)
                arcname = os.path.relpath(path, os.path.dirname(ctx.logs_dir))
                if os.path.getsize(path) <= 2 * LOG_ARCHIVE_KEEP_BYTES:
                    tar.add(path, arcname)
                    continue
                with open(path, "rb") as f:
                    head = f.read(LOG_ARCHIVE_KEEP_BYTES)
                    f.seek(-LOG_ARCHIVE_KEEP_BYTES, os.SEEK_END)
                    tail = f.read()
                data = head + f"\n[... cut by gpu_check.py: {os.path.getsize(path)} bytes in all ...]\n".encode() + tail
                info = tarfile.TarInfo(arcname)
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, ctx.archive_path)
    return ctx.archive_path


def sample_results(steps, ctx):
    """Canned results of every kind (pass, fail, timeout, skipped, a planned Ctrl-C) for the
    sample report. They show the format only and are labelled as a sample wherever shown."""
    by_name = {s.name: s for s in steps}
    caps = {"train": 180}
    throughput = dict(model="fashion-alexnet", batch=128, torch_end_to_end=2000.0, torch_step=4000.0,
                      tinyalex_step=1000.0, loader=3000.0, images=6400, loss_tinyalex=2.302585, loss_torch=2.302586,
                      loss_difference=4e-7, check_passed=True)
    canned = [
        ("environment", "pass", 2.0, "SAMPLE GPU (compute capability 0.0); CUDA runtime 0.0; CuPy 0.0", [], {}),
        ("smoke", "pass", 5.0, "SMOKE OK: 21 functions of the cupy set, float32 and float64", [], {}),
        ("pytest", "pass", 30.0, "100 passed, 2 skipped, 500 deselected", [], {}),
        ("memcheck", "fail", 20.0, "3 findings in tinyalex's kernels or unlocated; summary line: 3 errors;"
         " driver: SMOKE OK",
         ["- finding: `Invalid __global__ read of size 4 bytes (in relu_forward<float>)`"], {}),
        ("racecheck", "timeout", 55.0, "killed at its 55 s cap; no sanitizer summary line", [], {}),
        ("initcheck", "skipped", 0.0, "compute-sanitizer is not installed on this machine", [], {}),
        ("torch-throughput", "pass", 20.0, "fashion-alexnet, batch 128: sample numbers", [], throughput),
        ("train", "pass", 150.0, "fashion-alexnet: 2 epochs; stopped by the planned Ctrl-C", [],
         dict(model="fashion-alexnet", images_per_s=1500.0, how="median of epochs 2-2")),
    ]
    results = []
    for name, status, wall, key, details, data in canned:
        tail = ["(sample output line 1)", "(sample output line 2)"] if status in ("fail", "timeout") else []
        results.append(StepResult(by_name[name], status, wall, caps.get(name, by_name[name].cap_s), key, details,
                                  tail, data,
                                  display_command(by_name[name].command, ctx)))
    return results


def write_sample_report(path, ctx, steps, command_line):
    """The report rendered from sample_results(), with the steps they leave out still pending."""
    ctx = dataclasses.replace(ctx, device_name="SAMPLE GPU", device_note="")
    report = Report(ctx, steps, command_line, sample=True)
    for result in sample_results(steps, ctx):
        report.add(result)
    return report.write(path)


# --- the rehearsal ------------------------------------------------------------------------------

STEP_ROW = re.compile(r"^\| (\d+) \| ([\w-]+) \| \**(\w+)\** \|")
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
NETWORK_CUT = "network: cut (no interface but lo)"


def network_line():
    """The interfaces of this process's network namespace (/proc/self/net/dev is per namespace)."""
    with open("/proc/self/net/dev") as f:
        names = sorted(line.split(":")[0].strip() for line in f if ":" in line)
    return NETWORK_CUT if set(names) <= {"lo"} else f"network: interfaces {', '.join(names)}"


def rehearse(argv, budget_s):
    """--rehearse: run the check here, network cut, $OUT set, on the emulated CuPy set and the
    stand-ins of benchmarks/rehearsal; then check what would come back. Returns the exit status."""
    if os.environ.get(REHEARSAL_VARIABLE) == "1":
        print("gpu_check: --rehearse: expected to start outside a rehearsal, got one already running",
              file=sys.stderr)
        return 2
    cut = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if cut.returncode != 0:
        print("gpu_check: --rehearse: expected `unshare -n` to cut the network (it needs root), got status"
              f" {cut.returncode}: {cut.stderr.strip()}", file=sys.stderr)
        return 2
    out = os.environ.get("OUT") or tempfile.mkdtemp(prefix="tinyalex-rehearsal-out-")
    env = dict(os.environ, OUT=out, **{REHEARSAL_VARIABLE: "1"})
    env["PATH"] = os.path.join(REHEARSAL_DIR, "bin") + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join([REHEARSAL_DIR, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    command = ["unshare", "-n", sys.executable, os.path.join(HERE, "gpu_check.py"), *argv]
    print(f"rehearsal: OUT={out}\n  {shlex.join(command)}", flush=True)
    start = time.monotonic()
    try:
        subprocess.run(command, env=env, cwd=ROOT, timeout=budget_s + 60, preexec_fn=_default_sigint)
    except subprocess.TimeoutExpired:
        print(f"rehearsal: the check was still running {budget_s + 60:g} s after its start; stopped", flush=True)
    wall_s = time.monotonic() - start
    problems = check_out(out, budget_s, wall_s)
    for problem in problems:
        print(f"rehearsal FAILED: {problem}")
    print(f"rehearsal {'FAILED' if problems else 'OK'}: {wall_s:.0f} s of a {budget_s:g} s budget;"
          f" {len(out_files(out))} files in $OUT ({out})")
    return 1 if problems else 0


def out_files(out):
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(out) for name in names)


def check_out(out, budget_s, wall_s):
    """What would come back from a lent machine, checked; returns the problems found."""
    problems = []
    files = out_files(out)
    if len(files) > OUT_MAX_FILES:
        problems.append(f"expected at most {OUT_MAX_FILES} files in $OUT, got {len(files)}")
    for path in files:
        relative = os.path.relpath(path, out)
        if os.path.getsize(path) >= OUT_MAX_FILE_BYTES:
            problems.append(f"{relative}: expected under {OUT_MAX_FILE_BYTES} bytes, got {os.path.getsize(path)}")
        if relative.count(os.sep) > 2 or not all(OUT_NAME.match(part) for part in relative.split(os.sep)):
            problems.append(f"{relative}: expected at most 2 folders deep, with names of letters, digits, '.', '_'"
                            " and '-' only")
    if wall_s >= budget_s:
        problems.append(f"expected the check to finish within its {budget_s:g} s budget, it took {wall_s:.0f} s")
    reports = [p for p in files if p.endswith(".md")]
    if len(reports) != 1:
        return problems + [f"expected one report (.md) in $OUT, got {len(reports)}: {reports}"]
    text = open(reports[0]).read()
    rows = [STEP_ROW.match(line).groups() for line in text.splitlines() if STEP_ROW.match(line)]
    planned = re.search(r"of (\d+) steps", text)
    if not planned or len(rows) != int(planned.group(1)):
        problems.append(f"expected a table row for each of the planned steps, got {len(rows)} rows")
    for index, name, status in rows:
        if status not in ("pass", "skipped"):
            problems.append(f"step {index} ({name}): expected pass or skipped, got {status}")
    for marker, what in (("**REHEARSAL**", "the rehearsal's banner"), (NETWORK_CUT, "the network cut"),
                         ("**Overall: PASS**", "an overall pass")):
        if marker not in text:
            problems.append(f"the report does not show {what} ({marker!r})")
    archives = [p for p in files if p.endswith("-logs.tar.gz")]
    if len(archives) != 1:
        return problems + [f"expected one log archive (-logs.tar.gz) in $OUT, got {len(archives)}"]
    with tarfile.open(archives[0]) as tar:
        logged = {os.path.basename(n)[:-len(".log")] for n in tar.getnames() if n.endswith(".log")}
    ran = {name for _, name, status in rows if status == "pass"}
    if ran - logged:
        problems.append(f"expected a log in the archive for every step that ran, missing: {sorted(ran - logged)}")
    return problems


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for all steps together (default {DEFAULT_BUDGET_S})")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"),
                        help="folder for the report and its logs (default benchmarks/results)")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                        help="Fashion-MNIST's folder; without the files there, synthetic data of its shape")
    parser.add_argument("--device-name", help="name the report after this GPU instead of the one found")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    parser.add_argument("--rehearse", action="store_true",
                        help="run the whole plan here, network cut, on the emulated CuPy set, and check what $OUT"
                             " would bring back (no GPU needed; root, for unshare -n)")
    parser.add_argument("--sample-report", metavar="PATH",
                        help="with --dry-run: also write a sample report from canned results to PATH")
    parser.add_argument("--part", choices=["environment"], help=argparse.SUPPRESS)   # a step's child process
    args = parser.parse_args(argv)
    if args.sample_report and not args.dry_run:
        parser.error("--sample-report: expected together with --dry-run")
    if args.rehearse and args.dry_run:
        parser.error("--rehearse: expected without --dry-run (it runs the plan), got both")
    if args.budget_s <= 0:
        parser.error(f"--budget-s: expected a positive number of seconds, got {args.budget_s:g}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.part == "environment":
        return environment_part()
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.rehearse:
        return rehearse([a for a in argv if a != "--rehearse"], args.budget_s)
    ctx = make_context(args, dry_run=args.dry_run)
    steps = plan_steps(ctx)
    command_line = "bash benchmarks/gpu_check.sh " + shlex.join(argv)
    try:
        check_plan(steps, ctx.budget_s)
    except ValueError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(plan_lines(steps, ctx)))
        if args.sample_report:
            path = write_sample_report(args.sample_report, ctx, steps, command_line)
            print(f"sample report (canned results, not measurements): {path}")
        return 0
    return run_check(ctx, steps, command_line)


if __name__ == "__main__":
    sys.exit(main())
