"""A learner's file of kernels, graded and trained with: `tinyalex gradcheck --kernels FILE`
and `TINYALEX_CPU=FILE tinyalex train`."""
import json
import os
import subprocess
import sys

from test_train import data_dir, train_argv  # noqa: F401  (data_dir is a fixture)
from tinyalex.train.cli import main

RELU = """import os


def relu_forward(x):
    open(os.environ["KERNEL_MARK"], "a").write("forward\\n") if "KERNEL_MARK" in os.environ else None
    keep = x > 0
    return x * keep, keep


def relu_backward(gy, cache):
    return {gx}
"""


def write(tmp_path, gx):
    path = tmp_path / "mine.py"
    path.write_text(RELU.format(gx=gx))
    return str(path)


def test_gradcheck_grades_a_file_of_kernels(tmp_path, capsys):
    assert main(["gradcheck", "--op", "relu", "--kernels", write(tmp_path, "gy * cache")]) == 0
    assert "relu  finite differences" in capsys.readouterr().out
    assert main(["gradcheck", "--op", "relu", "--kernels", write(tmp_path, "gy")]) == 1  # forgot the mask
    assert "FAIL" in capsys.readouterr().out


def test_a_file_that_breaks_the_contract_is_one_line(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text("def relu_forward(x):\n    return x, None\n")
    try:
        main(["gradcheck", "--op", "relu", "--kernels", str(path)])
    except SystemExit as exit_:
        assert exit_.code == 2
    err = capsys.readouterr().err
    assert "relu_forward without relu_backward" in err and "Traceback" not in err


def test_training_runs_on_a_file_of_kernels(data_dir, tmp_path):  # noqa: F811
    mark = tmp_path / "calls"
    env = dict(os.environ, TINYALEX_CPU=write(tmp_path, "gy * cache"), KERNEL_MARK=str(mark))
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "tinyalex", *train_argv(data_dir, out, epochs=1)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert mark.read_text().count("forward") > 0                 # the learner's ReLU ran
    (epoch,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epoch["train_loss"] > 0 and 0 <= epoch["test_acc"] <= 1
