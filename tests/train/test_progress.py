"""Progress bars: tqdm's live bar on a terminal, plain meter lines otherwise. The training
bar's rate and ETA count from the end of the first batch; a first run says that it
compiles its kernels, in `train`, `eval` and `predict` alike."""
import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from tinyalex.kernels.numba import precompile
from tinyalex.train import progress
from tinyalex.train.cli import main
from tinyalex.train.progress import PLAIN_LINES_PER_EPOCH, CompileProgress, Progress

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    """The progress module's clock: the first batch takes `first` seconds (a compilation,
    say), every later one `step`."""

    def __init__(self, first, step):
        self.now, self.first, self.step = 0.0, first, step

    def __call__(self):
        return self.now

    def batch_done(self, batch):
        self.now += self.first if batch == 1 else self.step


def run_epoch(stream, monkeypatch, batches=50, first=30.0, step=0.1):
    clock = Clock(first, step)
    monkeypatch.setattr(progress, "clock", clock)
    bar = Progress(1, 3, batches, stream)
    for batch in range(1, batches + 1):
        clock.batch_done(batch)
        bar.update(batch, 2.3, 0.25, 120.0)
    return stream.getvalue()


def test_a_log_file_gets_a_few_plain_lines_with_rate_and_eta(monkeypatch):
    lines = run_epoch(io.StringIO(), monkeypatch).splitlines()
    assert "\r" not in "".join(lines)
    assert len(lines) <= PLAIN_LINES_PER_EPOCH + 1
    for line in lines:
        assert re.fullmatch(r"epoch 2/3: +\d+% \d+/50 \[\d\d:\d\d<(\d\d:\d\d|\?), +([\d.]+|\?)batch/s,"
                            r" loss 2\.3000 acc 0\.2500 120 img/s\]", line), line
    assert lines[-1].startswith("epoch 2/3: 100% 50/50")


def test_rate_and_eta_start_after_the_first_batch(monkeypatch):
    """A first batch of 30 s (kernels compiling) then 0.1 s a batch: no ETA at batch 1, and
    10 batches/s after it, not the ~1.6 batch/s a rate counted from the start would give."""
    first, *rest = run_epoch(io.StringIO(), monkeypatch).splitlines()
    assert first.startswith("epoch 2/3:   2% 1/50 [00:00<?, ?batch/s,")
    assert rest[0].startswith("epoch 2/3:  20% 10/50 [00:00<00:04, 10.00batch/s,"), rest[0]
    assert rest[-1].startswith("epoch 2/3: 100% 50/50 [00:04<00:00, 10.00batch/s,"), rest[-1]


def test_a_terminal_gets_a_live_bar_that_ends_the_epoch_on_its_own_line(monkeypatch):
    text = run_epoch(Terminal(), monkeypatch)
    assert text.startswith("\repoch 2/3:") and text.endswith("\n")
    assert "50/50" in text and "img/s" in text
    first_frame = text.split("\r")[1]
    assert "1/50 [00:00<?, ?batch/s" in first_frame, first_frame


def test_compile_progress_in_a_log_says_what_and_how_far():
    stream = io.StringIO()
    report = CompileProgress(stream)
    for done in range(27):
        report(done, 26)
    assert stream.getvalue().splitlines() == [f"compiling CPU kernels (first run only): {n}/26"
                                              for n in (0, 7, 13, 20, 26)]


def test_compile_progress_on_a_terminal_is_one_bar():
    stream = Terminal()
    report = CompileProgress(stream)
    for done in range(13):
        report(done, 12)
    frames = [f for f in stream.getvalue().split("\r") if f.strip()]
    assert frames[0].startswith("compiling CPU kernels (first run only): 0/12")
    assert frames[-1].startswith("compiling CPU kernels (first run only): 12/12") and frames[-1].endswith("\n")


def as_if_the_cache_were_empty(monkeypatch):
    """precompile.load_cached says "not cached" the first time it is asked about each unit, as
    with an empty cache: the command compiles them (from Numba's cache here, so quickly) and
    shows its progress; asked again, it tells the truth."""
    real, asked = precompile.load_cached, set()

    def first_time_false(unit):
        if unit in asked:
            return real(unit)
        asked.add(unit)
        return False
    monkeypatch.setattr(precompile, "load_cached", first_time_false)


def compile_lines(text):
    found = re.findall(r"compiling CPU kernels \(first run only\): (\d+)/(\d+)\n", text)
    assert found, text
    return [(int(done), int(total)) for done, total in found]


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="Fashion-MNIST is not installed")
def test_train_eval_and_predict_say_that_a_first_run_compiles(tmp_path, monkeypatch, capsys):
    as_if_the_cache_were_empty(monkeypatch)
    out = tmp_path / "run"
    assert main(["train", "--limit-train", "64", "--limit-test", "32", "--epochs", "1", "--batch-size", "32",
                 "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    lines = compile_lines(err)
    total = lines[0][1]
    assert lines[0] == (0, total) and lines[-1] == (total, total) and total >= 20
    assert err.index("compiling CPU kernels") < err.index("epoch 1/1:")
    assert re.search(r"epoch 1/1: +50% 1/2 \[00:00<\?, \?batch/s", err), err

    as_if_the_cache_were_empty(monkeypatch)
    assert main(["eval", "--checkpoint", str(out / "best.npz"), "--limit-test", "32", "--device", "cpu"]) == 0
    done = capsys.readouterr()
    assert compile_lines(done.err)[-1][0] > 0 and "top-1 accuracy" in done.out

    image = tmp_path / "shirt.png"
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
    as_if_the_cache_were_empty(monkeypatch)
    assert main(["predict", str(image), "--checkpoint", str(out / "best.npz"), "--device", "cpu"]) == 0
    done = capsys.readouterr()
    assert compile_lines(done.err)[-1][0] > 0 and "shirt.png:" in done.out


def test_bench_compiles_the_cpu_kernels_with_its_progress_before_the_benchmark_runs(monkeypatch, capsys):
    import runpy

    from tinyalex.train import compile_kernels
    order = []
    as_if_the_cache_were_empty(monkeypatch)
    real = compile_kernels.prepare_ops
    monkeypatch.setattr(compile_kernels, "BENCH_CPU_OPS", ["relu", "max_pool2d"])   # a quick stand-in
    monkeypatch.setattr(compile_kernels, "prepare_ops", lambda ops: (order.append("compile"), real(ops)))
    monkeypatch.setattr(runpy, "run_path", lambda path, run_name: order.append(os.path.basename(path)))
    assert main(["bench", "--device", "cpu", "--", "--quick"]) == 0
    assert order == ["compile", "bench_cpu.py"]
    assert compile_lines(capsys.readouterr().err)[-1] == (4, 4)   # relu's two kernels and max pooling's two
