"""Every mistake a user can make on the command line ends in one clear line.

Each case runs the real entry point (``python -m tinyalex ...``) in a subprocess and asserts
exit code 2, exactly one line on stderr of the form ``tinyalex COMMAND: error: ...`` with
the words that say what was wrong, and no traceback. The cases fail before any training
(most before any data is read), so the whole battery takes seconds per class. Classes:
bad number, bad name, device, missing file, run directory, resume, I/O, bad data.
"""
import collections
import fcntl
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from test_train import write_split

from tinyalex import use_kernels
from tinyalex import device as _device
from tinyalex.train.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: A sitecustomize for the I/O cases: os.fsync of the temporary file of $ENOSPC_FILE fails
#: with ENOSPC, as a full disk does when the data reaches it.
ENOSPC_HOOK = '''
import errno, os
_fsync = os.fsync
def fsync(fd):
    name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    if name.startswith(".tmp-" + os.environ["ENOSPC_FILE"] + "-"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)
os.fsync = fsync
'''


class Case:
    """One mistake: its class, the arguments (a function of the fixtures' paths), the words
    the error line must hold, and an optional setup that needs the case's own directory."""

    def __init__(self, kind, args, *words, setup=None, env=None):
        self.kind, self.args, self.words, self.setup, self.env = kind, args, words, setup, env


def train_args(w, *extra, out=None, **settings):
    """`tinyalex train` on the tiny data set, into a new directory unless `out` is given;
    `settings` override the options (batch_size="16")."""
    options = dict(model="cpu-alexnet", data_dir=w.data, batch_size="8", epochs="2", limit_train="16",
                   limit_test="16", device="cpu", out=out or w.new_out)
    options.update(settings)
    return ["train", *[a for k, v in options.items() for a in ("--" + k.replace("_", "-"), v)], *extra]


def resume_args(w, *extra, **settings):
    """--resume of the finished run (a copy), with a changed setting."""
    return train_args(w, "--resume", *extra, out=w.run_copy, **settings)


def lock(w):
    os.makedirs(w.new_out)
    handle = open(os.path.join(w.new_out, ".lock"), "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write("4242\n")
    handle.flush()
    return handle


PROGRESS = re.compile(r"epoch \d+/\d+: +\d+% \d+/\d+ \[.*, loss \d+\.\d+ acc \d\.\d+ \d+ img/s\]$")

NO_GPU = not _device.cuda_is_available()
gpu_case = pytest.mark.skipif(not NO_GPU, reason="this machine has a usable CUDA GPU")

CASES = {
    # --- bad number: every numeric option's range, in train, eval and graph
    "batch-size-0": Case("bad number", lambda w: ["train", "--batch-size", "0"], "--batch-size", "expected an integer >= 1", "'0'"),
    "batch-size-negative": Case("bad number", lambda w: ["train", "--batch-size", "-3"], "--batch-size", "'-3'"),
    "batch-size-text": Case("bad number", lambda w: ["train", "--batch-size", "abc"], "--batch-size", "expected an integer", "'abc'"),
    "micro-batch-0": Case("bad number", lambda w: ["train", "--micro-batch", "0"], "--micro-batch", "expected an integer >= 1", "'0'"),
    "micro-batch-over-batch": Case("bad number", lambda w: ["train", "--batch-size", "16", "--micro-batch", "32"],
                                   "--micro-batch", "expected at most --batch-size 16", "got 32"),
    "lr-negative": Case("bad number", lambda w: ["train", "--lr", "-1"], "--lr", "expected a finite number > 0", "'-1'"),
    "lr-zero": Case("bad number", lambda w: ["train", "--lr", "0"], "--lr", "> 0", "'0'"),
    "lr-nan": Case("bad number", lambda w: ["train", "--lr", "nan"], "--lr", "finite", "'nan'"),
    "lr-inf": Case("bad number", lambda w: ["train", "--lr", "inf"], "--lr", "finite", "'inf'"),
    "seed-negative": Case("bad number", lambda w: ["train", "--seed", "-1"], "--seed", "expected an integer >= 0", "'-1'"),
    "seed-fraction": Case("bad number", lambda w: ["train", "--seed", "1.5"], "--seed", "'1.5'"),
    "limit-train-0": Case("bad number", lambda w: ["train", "--limit-train", "0"], "--limit-train", ">= 1", "'0'"),
    "limit-test-0": Case("bad number", lambda w: ["train", "--limit-test", "0"], "--limit-test", ">= 1", "'0'"),
    "lr-step-0": Case("bad number", lambda w: ["train", "--lr-step", "0"], "--lr-step", ">= 1", "'0'"),
    "epochs-negative": Case("bad number", lambda w: ["train", "--epochs", "-1"], "--epochs", ">= 1", "'-1'"),
    "epochs-0": Case("bad number", lambda w: ["train", "--epochs", "0"], "--epochs", ">= 1", "'0'"),
    "momentum-1": Case("bad number", lambda w: ["train", "--momentum", "1"], "--momentum", "[0, 1)", "'1'"),
    "momentum-negative": Case("bad number", lambda w: ["train", "--momentum", "-0.1"], "--momentum", "[0, 1)"),
    "weight-decay-negative": Case("bad number", lambda w: ["train", "--weight-decay", "-1"], "--weight-decay", ">= 0", "'-1'"),
    "eval-limit-test-0": Case("bad number", lambda w: ["eval", "--limit-test", "0"], "--limit-test", ">= 1", "'0'"),
    "graph-batch-size-0": Case("bad number", lambda w: ["graph", "--batch-size", "0"], "--batch-size", ">= 1", "'0'"),

    # --- bad name: models, ops, schedules, data sets, devices, kernel sets, commands, options
    "train-model": Case("bad name", lambda w: ["train", "--model", "resnet50"], "--model", "alexnet2012", "'resnet50'"),
    "graph-model": Case("bad name", lambda w: ["graph", "--model", "resnet50"], "--model", "cpu-alexnet", "'resnet50'"),
    "gradcheck-op": Case("bad name", lambda w: ["gradcheck", "--op", "softmax2"], "--op", "conv2d", "'softmax2'"),
    "lr-schedule": Case("bad name", lambda w: ["train", "--lr-schedule", "cosine"], "--lr-schedule", "plateau, step, none", "'cosine'"),
    "dataset": Case("bad name", lambda w: ["train", "--dataset", "mnist"], "--dataset", "imagefolder:PATH", "'mnist'"),
    "device-name": Case("bad name", lambda w: ["train", "--device", "gpu"], "--device", "cpu, cuda", "'gpu'"),
    "kernels": Case("bad name", lambda w: ["gradcheck", "--all", "--kernels", "torch"], "--kernels", "numba", "'torch'"),
    "dtype": Case("bad name", lambda w: ["gradcheck", "--all", "--dtype", "float16"], "--dtype", "float32", "'float16'"),
    "predict-weights-without-model": Case("bad name", lambda w: ["predict", w.image, "--weights", w.best],
                                          "--model and --weights together", "got only --weights"),
    "predict-weights-and-checkpoint": Case("bad name", lambda w: ["predict", w.image, "--weights", w.best, "--model",
                                                                  "cpu-alexnet", "--checkpoint", w.best], "either --weights or --checkpoint"),
    "predict-model": Case("bad name", lambda w: ["predict", w.image, "--weights", w.best, "--model", "vgg16"], "--model", "torchvision-alexnet", "'vgg16'"),
    "command": Case("bad name", lambda w: ["trian"], "expected one of train, eval", "'trian'"),
    "option": Case("bad name", lambda w: ["train", "--learning-rate", "0.1"], "unrecognized", "--learning-rate", "tinyalex train --help"),

    # --- device: cuda asked for on a machine without a usable GPU
    "train-cuda": Case("device", lambda w: ["train", "--device", "cuda", "--out", w.new_out], "--device cuda", "expected a usable CUDA GPU, got none"),
    "eval-cuda": Case("device", lambda w: ["eval", "--device", "cuda", "--checkpoint", w.best], "--device cuda", "CUDA GPU"),
    "predict-cuda": Case("device", lambda w: ["predict", w.image, "--device", "cuda", "--checkpoint", w.best], "--device cuda", "CUDA GPU"),
    "gradcheck-cupy": Case("device", lambda w: ["gradcheck", "--all", "--kernels", "cupy"], "--kernels cupy", "CUDA GPU"),

    # --- missing file or directory: checkpoints, images, data
    "eval-missing-checkpoint": Case("missing file", lambda w: ["eval", "--checkpoint", w.missing], "does not exist", "expected a .npz file"),
    "eval-checkpoint-is-dir": Case("missing file", lambda w: ["eval", "--checkpoint", w.tmp], "is a directory", "expected a .npz file"),
    "eval-corrupt-checkpoint": Case("missing file", lambda w: ["eval", "--checkpoint", w.corrupt], "truncated or corrupt"),
    "predict-missing-image": Case("missing file", lambda w: ["predict", w.missing, "--checkpoint", w.best], "cannot read the image", "No such file"),
    "predict-missing-weights": Case("missing file", lambda w: ["predict", w.image, "--weights", w.missing + ".pth", "--model", "cpu-alexnet"],
                                    "--weights", "No such file", "expected a state dict of cpu-alexnet"),
    "predict-corrupt-weights": Case("missing file", lambda w: ["predict", w.image, "--weights", w.corrupt, "--model", "cpu-alexnet"],
                                    "--weights", "corrupt.npz", "cannot load it"),
    "predict-missing-labels": Case("missing file", lambda w: ["predict", w.image, "--checkpoint", w.best, "--labels", w.missing],
                                   "--labels", "No such file"),
    "predict-missing-checkpoint": Case("missing file", lambda w: ["predict", w.image, "--checkpoint", w.missing], "does not exist"),
    "data-dir-missing": Case("missing file", lambda w: ["train", "--data-dir", w.missing], "--data-dir", "not a directory"),
    "data-dir-empty": Case("missing file", lambda w: train_args(w, data_dir=w.tmp_empty), "Fashion-MNIST not found", "--data-dir"),
    "imagefolder-missing": Case("missing file", lambda w: ["train", "--dataset", f"imagefolder:{w.missing}"], "--dataset", "expected class folders"),
    "eval-dataset-missing": Case("missing file", lambda w: ["eval", "--checkpoint", w.best, "--dataset", f"imagefolder:{w.missing}"], "expected class folders"),

    # --- run directory: an existing run, an unwritable or busy --out, contradictory flags
    "existing-run": Case("run directory", lambda w: train_args(w, out=w.run_copy), "expected a directory without a run", "2 of 2 epochs done", "--resume", "--overwrite"),
    "out-under-a-file": Case("run directory", lambda w: train_args(w, out=os.path.join(w.afile, "out")), "--out", "cannot write there"),
    "out-locked": Case("run directory", lambda w: train_args(w), "expected no other run", "4242", setup=lock),
    "resume-and-overwrite": Case("run directory", lambda w: train_args(w, "--resume", "--overwrite"), "--overwrite", "not allowed with --resume"),
    "resume-without-checkpoint": Case("run directory", lambda w: train_args(w, "--resume", out=w.tmp_empty), "--resume", "expected a checkpoint", "without --resume"),
    "resume-missing-out": Case("run directory", lambda w: train_args(w, "--resume", out=w.missing), "--resume", "check --out"),

    # --- resume: settings that cannot change under --resume (ON_RESUME), and --epochs below done
    "resume-batch-size": Case("resume", lambda w: resume_args(w, batch_size="16"), "--batch-size cannot change", "expected the checkpoint's 8, got 16"),
    "resume-model": Case("resume", lambda w: resume_args(w, model="alexnet2012"), "--model cannot change", "'cpu-alexnet'"),
    "resume-seed": Case("resume", lambda w: resume_args(w, "--seed", "1"), "--seed cannot change", "got 1"),
    "resume-limit-train": Case("resume", lambda w: resume_args(w, limit_train="8"), "--limit-train cannot change", "got 8"),
    "resume-lr-schedule": Case("resume", lambda w: resume_args(w, "--lr-schedule", "none"), "--lr-schedule cannot change", "'step'", "'none'"),
    "resume-dataset": Case("resume", lambda w: resume_args(w, "--dataset", f"imagefolder:{w.folder}"), "--dataset cannot change", "'fashion-mnist'"),
    "resume-another-model": Case("resume", lambda w: resume_args(w, "--seed", "1", model="alexnet2012", batch_size="16"),
                                 "holds a run of model 'cpu-alexnet' and the command asks for 'alexnet2012'",
                                 "3 settings cannot change", "--model cannot change", "--batch-size cannot change",
                                 "--seed cannot change"),
    "resume-fewer-epochs": Case("resume", lambda w: resume_args(w, epochs="1"), "--epochs", "expected at least 2", "got 1"),

    # --- I/O: a full disk (ENOSPC injected at the write), an unwritable output file
    "disk-full-at-start": Case("I/O", lambda w: train_args(w), "cannot write metrics.jsonl", "No space left on device",
                               "no checkpoint had been written yet", env={"ENOSPC_FILE": "metrics.jsonl"}),
    "disk-full-mid-run": Case("I/O", lambda w: resume_args(w, epochs="3"), "cannot write checkpoint.npz",
                              "No space left on device", "(after epoch 2), is intact", "--resume",
                              env={"ENOSPC_FILE": "checkpoint.npz"}),
    "graph-out-unwritable": Case("I/O", lambda w: ["graph", "--out", os.path.join(w.afile, "g.dot")], "--out", "cannot write the DOT file", "Not a directory"),

    # --- bad data: undecodable images (named, with the way out), a truncated IDX file
    "imagefolder-bad-train-image": Case("bad data", lambda w: ["train", "--dataset", f"imagefolder:{w.folder}", "--out", w.new_out,
                                                                "--device", "cpu"], "expected only decodable images", "cut.jpg", "--skip-bad-images"),
    "imagefolder-bad-val-image": Case("bad data", lambda w: ["train", "--dataset", f"imagefolder:{w.folder_val}", "--out", w.new_out,
                                                              "--device", "cpu"], "notes.jpg", "1 that is not"),
    "truncated-idx": Case("bad data", lambda w: train_args(w, data_dir=w.truncated_idx), "train-images-idx3-ubyte.gz", "truncated"),
    "predict-weights-not-a-state-dict": Case("bad data", lambda w: ["predict", w.image, "--weights", w.best, "--model", "cpu-alexnet"],
                                             "--weights", "expected a state dict of cpu-alexnet"),
    "predict-labels-count": Case("bad data", lambda w: ["predict", w.image, "--checkpoint", w.best, "--labels", w.afile],
                                 "--labels", "10 lines, got 1"),
    "predict-labels-empty": Case("bad data", lambda w: ["predict", w.image, "--checkpoint", w.best, "--labels", w.empty_labels],
                                 "--labels", "10 lines, got 0"),
    "predict-not-an-image": Case("bad data", lambda w: ["predict", w.text_png, "--checkpoint", w.best], "text.png", "cannot read the image"),
}


class Where:
    """The paths the cases refer to (made once per module, copied where a case writes)."""


@pytest.fixture(scope="module")
def where(tmp_path_factory, monkeypatch_module):
    base = tmp_path_factory.mktemp("cli-errors")
    w = Where()
    w.tmp = str(base)
    w.missing = str(base / "no-such-thing")
    (base / "empty").mkdir()
    w.tmp_empty = str(base / "empty")
    w.afile = str(base / "a-file")
    (base / "labels.txt").write_text("\n\n")
    w.empty_labels = str(base / "labels.txt")
    (base / "a-file").write_text("a regular file, so nothing can be created under it")
    data = base / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    write_split(data, "train", 32, rng)
    write_split(data, "t10k", 16, rng)
    w.data = str(data)

    run = base / "finished-run"
    with use_kernels("numpy"):  # the reference kernels: no JIT, a second or so
        assert main(["train", "--model", "cpu-alexnet", "--data-dir", w.data, "--batch-size", "8",
                     "--epochs", "2", "--limit-train", "16", "--limit-test", "16", "--device", "cpu",
                     "--out", str(run)]) == 0
    w.run = str(run)
    w.best = str(run / "best.npz")
    w.corrupt = str(base / "corrupt.npz")
    (base / "corrupt.npz").write_bytes((run / "best.npz").read_bytes()[:1000])

    image = Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L")
    image.save(base / "shirt.png")
    w.image = str(base / "shirt.png")
    (base / "text.png").write_text("not an image\n")
    w.text_png = str(base / "text.png")
    w.folder = str(image_folder(base / "folder", bad_split="train"))
    w.folder_val = str(image_folder(base / "folder-val", bad_split="val"))

    broken = base / "broken-data"
    broken.mkdir()
    for name in os.listdir(data):
        raw = (data / name).read_bytes()
        (broken / name).write_bytes(raw[:len(raw) // 2] if name.startswith("train-images") else raw)
    w.truncated_idx = str(broken)
    monkeypatch_module.setenv("NUMBA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "numba-cache"))
    return w


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def image_folder(root, bad_split):
    """An ImageFolder tree with two classes of two JPEGs; one file of `bad_split` is bad: a
    JPEG cut in half in train/, a text file named .jpg in val/."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg")
    if bad_split == "train":
        good = (root / "train" / "cat" / "0.jpg").read_bytes()
        (root / "train" / "cat" / "cut.jpg").write_bytes(good[:len(good) // 2])
    else:
        (root / "val" / "dog" / "notes.jpg").write_text("notes, saved with the wrong name\n")
    return root


@pytest.fixture
def paths(where, tmp_path):
    """The module's paths, plus a fresh --out and a fresh copy of the finished run."""
    import copy
    import shutil
    w = copy.copy(where)
    w.new_out = str(tmp_path / "out")
    w.run_copy = str(shutil.copytree(where.run, tmp_path / "run-copy"))
    return w


def run_cli(args, env_extra, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TINYALEX_CPU="numpy", **(env_extra or {}))
    if env_extra and "ENOSPC_FILE" in env_extra:
        (tmp_path / "hook").mkdir()
        (tmp_path / "hook" / "sitecustomize.py").write_text(ENOSPC_HOOK)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "hook"), ROOT])
    return subprocess.run([sys.executable, "-m", "tinyalex", *args], capture_output=True, text=True,
                          env=env, timeout=300, stdin=subprocess.DEVNULL)


def marks(name):
    return [gpu_case] if CASES[name].kind == "device" else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=marks(n)) for n in CASES])
def test_a_mistake_gives_one_clear_line_and_exit_code_2(paths, tmp_path, name):
    case = CASES[name]
    held = case.setup(paths) if case.setup else None
    args = case.args(paths)
    result = run_cli(args, case.env, tmp_path)
    if held is not None:
        held.close()
    # the only other lines allowed: training's progress, on stderr by design, before an
    # error that comes mid-run (the full disk)
    lines = [line for line in result.stderr.splitlines() if not PROGRESS.match(line)]
    command = args[0] if args[0] in ("train", "eval", "predict", "gradcheck", "graph", "bench") else None
    prefix = f"tinyalex {command}: error: " if command else "tinyalex: error: "
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    for word in case.words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def test_the_battery_covers_every_class_with_40_cases_or_more():
    counts = collections.Counter(case.kind for case in CASES.values())
    assert len(CASES) >= 40
    assert set(counts) == {"bad number", "bad name", "device", "missing file", "run directory",
                           "resume", "I/O", "bad data"}
    assert min(counts.values()) >= 3, counts


def test_a_refused_run_leaves_the_finished_run_untouched(paths, tmp_path):
    """Refusals come before any write: the run's files keep their bytes."""
    before = {name: open(os.path.join(paths.run_copy, name), "rb").read() for name in os.listdir(paths.run_copy)}
    for args in (train_args(paths, out=paths.run_copy), resume_args(paths, "--seed", "3")):
        assert run_cli(args, None, tmp_path).returncode == 2
    after = {name: open(os.path.join(paths.run_copy, name), "rb").read() for name in os.listdir(paths.run_copy)}
    assert after == before


def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_leaves_no_temporary(paths, tmp_path):
    args = CASES["disk-full-mid-run"].args(paths)
    checkpoint = os.path.join(paths.run_copy, "checkpoint.npz")
    before = open(checkpoint, "rb").read()
    assert run_cli(args, {"ENOSPC_FILE": "checkpoint.npz"}, tmp_path).returncode == 2
    assert open(checkpoint, "rb").read() == before
    assert not [n for n in os.listdir(paths.run_copy) if n.startswith(".")]


def test_version_and_help():
    version = subprocess.run([sys.executable, "-m", "tinyalex", "--version"], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=ROOT))
    project = re.search(r'^version = "(.*)"', open(os.path.join(ROOT, "pyproject.toml")).read(), re.M).group(1)
    assert version.returncode == 0 and version.stdout.strip() == f"tinyalex {project}"
    help_text = subprocess.run([sys.executable, "-m", "tinyalex", "train", "--help"], capture_output=True,
                               text=True, env=dict(os.environ, PYTHONPATH=ROOT, COLUMNS="200")).stdout
    from tinyalex.train.config import ON_RESUME
    from tinyalex.train.models import PRESETS
    options = re.findall(r"^  (--[a-z-]+)", help_text, re.M)
    assert len(options) >= 20
    for line in re.split(r"\n(?=  -)", help_text.split("options:", 1)[1].split("\n\n")[0])[1:]:
        assert "default" in line or line.strip().startswith("-h"), f"no default given: {line!r}"
    for model, preset in PRESETS.items():
        assert f"{model} {preset['epochs']}" in help_text and f"{model} {preset['lr']}" in help_text
    for name in ON_RESUME:
        assert "--" + name.replace("_", "-") in help_text.split("--resume continues", 1)[1]
