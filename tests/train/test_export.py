"""``tinyalex export CHECKPOINT --onnx FILE``: the checkpoint's model as ONNX, batch axis
dynamic, equal to the checkpoint's eval-mode outputs in onnxruntime (within 1e-5 of the
largest output, as tests/compat/test_onnx.py); and its one-line refusals."""
import sys
import types

import numpy as np
import pytest

import tinyalex
from tinyalex.optim import SGD
from tinyalex.train.checkpoint import save_checkpoint
from tinyalex.train.cli import main
from tinyalex.train.models import cpu_alexnet

CLASSES = [f"class {i}" for i in range(10)]


@pytest.fixture
def checkpoint(tmp_path):
    """A cpu-alexnet checkpoint as tinyalex train writes one (random weights), and its model."""
    tinyalex.manual_seed(3)
    model = cpu_alexnet(num_classes=10)
    path = tmp_path / "best.npz"
    save_checkpoint(path, model, SGD(model.parameters(), lr=0.1, momentum=0.9), None,
                    dict(config=dict(model="cpu-alexnet"), classes=CLASSES, epoch=1))
    return str(path), model


def test_export_writes_an_onnx_model_equal_to_the_checkpoints(checkpoint, tmp_path, capsys):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[onnx]')")
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')")
    path, model = checkpoint
    out = tmp_path / "model.onnx"
    assert main(["export", path, "--onnx", str(out), "--batch", "2"]) == 0
    assert capsys.readouterr().out == (f"wrote {out}: cpu-alexnet, input 'input' (batch, 1, 28, 28) "
                                       "float32, output 'logits' (batch, 10), ONNX opset 18\n")
    onnx.checker.check_model(onnx.load(out), full_check=True)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).standard_normal((4, 1, 28, 28)).astype(np.float32)
    (got,) = session.run(["logits"], {"input": x})
    model.eval()
    with tinyalex.no_grad():
        want = model(tinyalex.tensor(x)).array
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_export_without_onnx_says_what_to_install(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)                 # `import onnx` raises ImportError
    out = tmp_path / "model.onnx"
    assert main(["export", checkpoint[0], "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinyalex export: error: --onnx needs the onnx package, expected it installed "
                          "(pip install 'tinyalex[onnx]'), got ")
    assert len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("args, words", [
    (lambda w: ["export", w.missing, "--onnx", w.out], "checkpoint: {missing} does not exist"),
    (lambda w: ["export", w.checkpoint, "--onnx", w.unwritable],
     "--onnx {unwritable}: cannot write the ONNX file, expected a writable path, got [Errno 2]"),
    (lambda w: ["export", w.checkpoint, "--onnx", w.out, "--batch", "0"],
     "--batch: expected an integer >= 1, got '0'"),
    (lambda w: ["export", w.checkpoint], "the following arguments are required: --onnx"),
], ids=["missing-checkpoint", "unwritable-onnx", "batch-0", "no-onnx-option"])
def test_export_refusals_are_one_line_with_exit_code_2(checkpoint, tmp_path, capsys, args, words):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[onnx]')")

    W = types.SimpleNamespace(checkpoint=checkpoint[0], missing=str(tmp_path / "missing.npz"),
                              out=str(tmp_path / "model.onnx"),
                              unwritable=str(tmp_path / "no" / "such" / "dir" / "model.onnx"))

    assert exit_code(args(W)) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinyalex export: error: ") and len(err.splitlines()) == 1, err
    assert words.format(missing=W.missing, unwritable=W.unwritable) in err, err


def exit_code(argv):
    """main's exit status, or the one argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code
