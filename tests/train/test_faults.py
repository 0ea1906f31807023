"""SIGKILL at every point of a run, each write included, and proof that nothing is lost.

A small run (2 epochs of 2 batches, numpy kernels so that a process starts in about a
second) is first recorded: a ``sitecustomize`` module, put on the child's PYTHONPATH, logs
every event at which a kill can change what is on disk:

- ``step``: before each SGD step (a kill there loses only memory, as a kill mid-step does);
- ``write NAME``: inside an atomic write of NAME, after its temporary file was filled and
  before it is flushed and renamed; the hook cuts the temporary file to half its length
  first, so the kill leaves a half-written temporary, as a kill mid-write does;
- ``wrote NAME``: just after NAME was renamed into place (before the next write begins).

Then, for every event, the same command runs in a fresh directory and is killed with
SIGKILL exactly there (the child announces the event and waits; the test kills it). The
run is then recovered the way a user would: ``--resume`` if a checkpoint exists, else the
same command again (the run was stopped before its first checkpoint). The recovered run
must equal the uninterrupted one: every epoch once in metrics.jsonl with the same values,
every step once in steps.jsonl and in the TensorBoard event files (read back by
TensorBoard's loader), checkpoint.npz bitwise the same state, best.npz holding the best
epoch's weights, and no temporary file left.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from test_step_log import expected_events, read_events
from test_train import assert_same_checkpoint_state, read_jsonl, without_time, without_timing, write_split

from tinyalex import use_kernels
from tinyalex.train.cli import main
from tinyalex.train.checkpoint import load_checkpoint

HAVE_TENSORBOARD = all(importlib.util.find_spec(name) for name in ("tensorboardX", "tensorboard"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOOKS = textwrap.dedent('''
    """Kill points for tests/train/test_faults.py (loaded as sitecustomize in the child only)."""
    import os, sys, time

    _events, _kill_at, _count = os.environ["FAULT_EVENTS"], int(os.environ["FAULT_KILL_AT"]), 0

    def _event(name, fd=None):
        """Log one event; at the chosen one, half-empty the temporary file, say so, wait."""
        global _count
        _count += 1
        paused = _count == _kill_at
        if paused and fd is not None:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
        with open(_events, "a") as log:
            log.write(("PAUSED " if paused else "") + name + "\\n")
        while paused:
            time.sleep(1)

    _fsync, _replace = os.fsync, os.replace

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".tmp-"):
            _event("write " + name[len(".tmp-"):].rsplit("-", 1)[0], fd)
        return _fsync(fd)

    def replace(src, dst, **kwargs):
        _replace(src, dst, **kwargs)
        if os.path.basename(src).startswith(".tmp-"):
            _event("wrote " + os.path.basename(dst))

    os.fsync, os.replace = fsync, replace

    from tinyalex.train import cli
    from tinyalex.train.loop import Parts, one_step

    def step(*args):
        _event("step")
        return one_step(*args)

    _main = cli.main
    cli.main = lambda argv=None, parts=None: _main(argv, Parts(step=step))  # before __main__ imports it
''')


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-fashion-mnist")
    rng = np.random.default_rng(0)
    write_split(directory, "train", 32, rng)
    write_split(directory, "t10k", 16, rng)
    return directory


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fault-hooks")
    (directory / "sitecustomize.py").write_text(HOOKS)
    return directory


def argv(data, out, *extra):
    """2 epochs of 2 batches of 8; seed 0 makes both epochs a new best (best.npz written twice).
    TensorBoard events go to tb/ beside --out, when the tensorboard extra is installed."""
    board = ["--tensorboard", os.path.join(os.path.dirname(out), "tb")] if HAVE_TENSORBOARD else []
    return ["train", "--model", "cpu-alexnet", "--data-dir", str(data), "--epochs", "2",
            "--batch-size", "8", "--limit-train", "16", "--limit-test", "16", "--lr", "0.02",
            "--lr-schedule", "plateau", "--device", "cpu", "--seed", "0", "--out", str(out), *board, *extra]


def run_child(hooks, data, out, events, kill_at):
    """`python -m tinyalex train` with the hooks; killed with SIGKILL at event `kill_at`
    (0: never). Returns the events it logged."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks), ROOT]), TINYALEX_CPU="numpy",
               FAULT_EVENTS=str(events), FAULT_KILL_AT=str(kill_at))
    child = subprocess.Popen([sys.executable, "-m", "tinyalex", *argv(data, out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while kill_at and child.poll() is None:
        if events.exists() and "PAUSED" in events.read_text():
            child.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "the child never reached its kill point"
        time.sleep(0.02)
    _, err = child.communicate(timeout=120)
    lines = events.read_text().splitlines()
    if kill_at:
        assert child.returncode == -signal.SIGKILL, err
    else:
        assert child.returncode == 0, err
    return lines


@pytest.fixture(scope="module")
def reference(hooks, tiny_data, tmp_path_factory):
    """The uninterrupted run and the list of its kill points."""
    out = tmp_path_factory.mktemp("reference")
    events = tmp_path_factory.mktemp("reference-events") / "events"
    return out, run_child(hooks, tiny_data, out / "run", events, kill_at=0)


def test_the_recorded_run_has_every_kind_of_kill_point(reference):
    _, events = reference
    assert events.count("step") == 4
    # the after-training checkpoint and the end-of-epoch one, each epoch; best after both
    for name, times in (("checkpoint.npz", 4), ("best.npz", 2), ("metrics.jsonl", 3), ("steps.jsonl", 1),
                        ("curves.png", 1)):
        assert events.count(f"write {name}") == times, name
        assert events.count(f"wrote {name}") == times, name


def recover(data, out, capsys):
    """What a user does after a kill: --resume, or the same command again if the run had
    no checkpoint yet (which must not be refused as an existing run)."""
    resume = ["--resume"] if (out / "checkpoint.npz").exists() else []
    with use_kernels("numpy"):
        code = main(argv(data, out, *resume))
    assert code == 0, capsys.readouterr().err
    return resume


@pytest.mark.parametrize("kill_at", range(1, 27))
def test_a_sigkill_at_any_point_resumes_with_nothing_lost(reference, hooks, tiny_data, tmp_path,
                                                         capsys, kill_at):
    ref_out, ref_events = reference
    if kill_at > len(ref_events):
        pytest.skip(f"the run has only {len(ref_events)} kill points")
    out = tmp_path / "run"
    events = run_child(hooks, tiny_data, out, tmp_path / "events", kill_at)
    assert events[-1] == "PAUSED " + ref_events[kill_at - 1], "the run took another path"

    recover(tiny_data, out, capsys)
    ref = ref_out / "run"
    assert without_timing(read_jsonl(out / "metrics.jsonl")) == without_timing(read_jsonl(ref / "metrics.jsonl"))
    assert_same_checkpoint_state(out / "checkpoint.npz", ref / "checkpoint.npz")
    best, _, best_meta = load_checkpoint(out / "best.npz")
    ref_best, _, ref_best_meta = load_checkpoint(ref / "best.npz")
    assert best_meta["epoch"] == ref_best_meta["epoch"]
    for key in ref_best:
        np.testing.assert_array_equal(best[key], ref_best[key], err_msg=key)
    # each step once in steps.jsonl, and in the TensorBoard events that TensorBoard reads back
    assert without_time(read_jsonl(out / "steps.jsonl")) == without_time(read_jsonl(ref / "steps.jsonl"))
    if HAVE_TENSORBOARD:
        assert read_events(tmp_path / "tb") == expected_events(out, per_epoch=2)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(out)) == ["best.npz", "checkpoint.npz", "curves.png", "metrics.jsonl", "steps.jsonl"]


def test_a_kill_between_checkpoint_and_best_is_repaired_on_resume(reference, hooks, tiny_data,
                                                                  tmp_path, capsys):
    """The case the write order exists for: the checkpoint of a new best epoch is on disk,
    best.npz is not yet; --resume copies it before anything else."""
    _, ref_events = reference
    kill_at = ref_events.index("write best.npz", ref_events.index("wrote best.npz")) + 1  # epoch 2's
    out = tmp_path / "run"
    run_child(hooks, tiny_data, out, tmp_path / "events", kill_at)
    assert load_checkpoint(out / "best.npz")[2]["epoch"] == 1
    assert load_checkpoint(out / "checkpoint.npz")[2]["epoch"] == 2
    assert [name for name in os.listdir(out) if name.startswith(".tmp-best.npz-")], "no half-written temporary"
    recover(tiny_data, out, capsys)
    out_text = capsys.readouterr().out
    assert "repaired" in out_text and "removed 1 temporary file" in out_text
    assert load_checkpoint(out / "best.npz")[2]["epoch"] == 2


def test_metrics_jsonl_lists_each_epoch_once_after_a_kill_before_its_rewrite(reference, hooks,
                                                                            tiny_data, tmp_path, capsys):
    _, ref_events = reference
    kill_at = ref_events.index("write metrics.jsonl", ref_events.index("wrote checkpoint.npz")) + 1
    out = tmp_path / "run"
    run_child(hooks, tiny_data, out, tmp_path / "events", kill_at)
    assert read_jsonl(out / "metrics.jsonl") == []  # epoch 1's line was being written
    assert json.loads(str(np.load(out / "checkpoint.npz")["meta"]))["history"], "epoch 1 is in the checkpoint"
    recover(tiny_data, out, capsys)
    assert [row["epoch"] for row in read_jsonl(out / "metrics.jsonl")] == [1, 2]
