"""ONNX export (tinyalex.onnx.export), checked by the onnx package's checker and by running
the exported file in onnxruntime against tinyalex's own eval-mode forward.

Tolerance rule: max |onnxruntime - tinyalex| <= 1e-5 * max |tinyalex|, float32 inputs, on
one exported file run at two batch sizes (the batch axis is dynamic). The tests skip when
the `onnx` extra (part of `test`) is not installed, as tests/mpi does without `dist`.
"""
import io
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import tinyalex
from tinyalex import functional as F
from tinyalex import nn
from tinyalex.onnx import OPSET, UnsupportedOperatorError, export
from tinyalex.train.models import MODELS, create_model

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[onnx]')")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')")

RTOL = 1e-5
BATCH = {"input": {0: "batch"}, "output": {0: "batch"}}


def run_onnx(data, **feeds):
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def eval_output(model, x):
    model.eval()
    with tinyalex.no_grad():
        return model(tinyalex.tensor(x)).array


def relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def images(n, shape, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_exports_checks_and_matches_onnxruntime_at_two_batch_sizes(name):
    shape = MODELS[name][1]
    tinyalex.manual_seed(0)
    model = create_model(name, 10)
    model.train()                                   # export traces in eval mode regardless
    f = io.BytesIO()
    export(model, tinyalex.tensor(images(1, shape)), f, input_names=["input"],
           output_names=["output"], dynamic_axes=BATCH)
    assert model.training and all(m.training for m in model.modules()), "training flags restored"
    proto = onnx.load_from_string(f.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain == ""] == [OPSET] == [18]
    state = model.state_dict()
    assert {i.name for i in proto.graph.initializer} >= set(state), "weights under their state_dict names"
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    for n in (1, 3):
        x = images(n, shape, seed=n)
        (got,) = run_onnx(f.getvalue(), input=x)
        want = eval_output(model, x)
        assert got.shape == want.shape == (n, 10)
        assert relative_error(got, want) <= RTOL, (name, n, relative_error(got, want))


class EveryMappedOp(nn.Module):
    """Every op the exporter maps, in shapes that exercise its attributes."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.same = nn.Conv2d(8, 8, 4, padding="same")            # even kernel: a ZeroPad2d in front
        self.lrn = nn.LocalResponseNorm(3, alpha=1e-2, beta=0.7, k=1.5)
        self.fc = nn.Linear(8 * 2 * 2, 6, bias=False)
        self.scale = nn.Parameter(np.linspace(0.5, 1.5, 6).astype(np.float32))

    def forward(self, x):
        y = self.lrn(F.relu(self.same(self.grouped(x))))
        y = F.max_pool2d(y, 3, 2, padding=1, ceil_mode=True)      # torch's ceil rule
        a = F.avg_pool2d(y, 2, 1, padding=1, ceil_mode=True, count_include_pad=True)
        b = F.avg_pool2d(y, 2, 1, padding=1, ceil_mode=True, count_include_pad=False)
        y = F.adaptive_avg_pool2d(a + b, 2)                       # an AveragePool of 2x2 blocks
        g = F.adaptive_avg_pool2d(y, 1).flatten(1)                # GlobalAveragePool
        z = self.fc(y.flatten(1)) * self.scale - g.sum(1, keepdim=True) / 2.0
        z = tinyalex.matmul(z, tinyalex.ones(6, 6) * 0.1) + (-z).abs() ** 2
        z = z.exp().log() + z.permute(1, 0).permute(1, 0).mean(dim=1, keepdim=True)
        return z.clone().double()


def test_every_mapped_op_matches_onnxruntime():
    tinyalex.manual_seed(1)
    model = EveryMappedOp()
    f = io.BytesIO()
    proto = export(model, tinyalex.tensor(images(2, (4, 23, 23))), f, dynamic_axes=BATCH)
    onnx.checker.check_model(proto, full_check=True)
    kinds = {node.op_type for node in proto.graph.node}
    assert kinds >= {"Conv", "Pad", "Relu", "LRN", "MaxPool", "AveragePool", "GlobalAveragePool",
                     "Reshape", "MatMul", "Gemm", "Mul", "Sub", "Div", "Add", "Neg", "Abs", "Pow",
                     "Exp", "Log", "Transpose", "ReduceSum", "ReduceMean", "Cast"}, kinds
    for n in (2, 5):
        x = images(n, (4, 23, 23), seed=n)
        (got,) = run_onnx(f.getvalue(), input=x)
        want = eval_output(model, x)
        assert got.dtype == want.dtype == np.float64 and got.shape == want.shape == (n, 6)
        assert relative_error(got, want) <= RTOL


@pytest.mark.parametrize("pool", ["max", "avg-pad", "avg-nopad"])
def test_pooling_in_ceil_mode_matches_torchs_rule_at_every_size(pool):
    """ceil_mode exports as floor mode plus end padding; onnxruntime agrees with tinyalex
    (which matches torch) at every geometry where the last window starts in a new place."""
    checked = 0
    for size in range(3, 11):
        for kernel, stride, padding in [(2, 2, 0), (2, 2, 1), (3, 2, 0), (3, 2, 1), (3, 3, 1), (2, 3, 1)]:
            def model(x):
                if pool == "max":
                    return F.max_pool2d(x, kernel, stride, padding, ceil_mode=True)
                return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=True,
                                    count_include_pad=pool == "avg-pad")
            x = images(1, (2, size, size + 1), seed=size)
            try:
                want = model(tinyalex.tensor(x)).array
            except ValueError:                                     # a kernel larger than the input
                continue
            f = io.BytesIO()
            export(model, tinyalex.tensor(x), f)
            (got,) = run_onnx(f.getvalue(), input=x)
            assert got.shape == want.shape, (size, kernel, stride, padding)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            checked += 1
    assert checked >= 40


def test_an_op_without_a_mapping_is_refused_by_name():
    def with_loss(x):
        return F.mse_loss(x, tinyalex.zeros(*x.shape))

    assert issubclass(UnsupportedOperatorError, RuntimeError)       # as torch.onnx's is
    with pytest.raises(UnsupportedOperatorError, match=r"op 'MSELoss' has no ONNX mapping "
                                                       r"\(supported: .*Conv2d.*\)"):
        export(with_loss, tinyalex.randn(2, 3), io.BytesIO())
    with pytest.raises(UnsupportedOperatorError, match=r"op 'Dropout' has no ONNX mapping \(training-mode"):
        export(lambda x: F.dropout(x, 0.5, training=True), tinyalex.randn(2, 3), io.BytesIO())
    with pytest.raises(UnsupportedOperatorError, match=r"op 'LocalResponseNorm': size 4: .* expected an odd size"):
        export(nn.LocalResponseNorm(4), tinyalex.randn(1, 6, 2, 2), io.BytesIO())


def test_only_the_ops_the_outputs_need_are_exported():
    def side_loss(x):
        F.mse_loss(x, tinyalex.zeros(*x.shape))                   # unused: not exported, not refused
        return F.relu(x)
    proto = export(side_loss, tinyalex.randn(2, 3), io.BytesIO())
    assert [node.op_type for node in proto.graph.node] == ["Relu", "Identity"]


def test_nn_dropout_exports_as_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.ReLU())
    proto = export(model, tinyalex.randn(2, 3), io.BytesIO())
    assert [node.op_type for node in proto.graph.node] == ["Gemm", "Relu", "Identity"]


def test_a_reshape_that_merges_the_dynamic_batch_is_refused():
    with pytest.raises(UnsupportedOperatorError, match=r"op 'Reshape': reshape of shape \(2, 3\) to \(6,\)"
                                                       r" changes the dynamic axes \{0: 'batch'\}"):
        export(lambda x: x.reshape(6), tinyalex.randn(2, 3), io.BytesIO(),
               dynamic_axes={"input": {0: "batch"}})
    # without a dynamic axis the same reshape exports, at its fixed shape
    proto = export(lambda x: x.reshape(6), tinyalex.randn(2, 3), io.BytesIO())
    assert [node.op_type for node in proto.graph.node] == ["Reshape", "Identity"]


def test_the_file_a_path_or_a_file_object_holds_the_same_model(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    x = tinyalex.randn(2, 3)
    f = io.BytesIO()
    export(model, x, f, input_names=["x"], output_names=["y"], dynamic_axes={"x": [0], "y": [0]})
    export(model, x, tmp_path / "m.onnx", input_names=["x"], output_names=["y"], dynamic_axes={"x": [0], "y": [0]})
    export(model, x, str(tmp_path / "s.onnx"), input_names=["x"], output_names=["y"], dynamic_axes={"x": [0], "y": [0]})
    assert (tmp_path / "m.onnx").read_bytes() == (tmp_path / "s.onnx").read_bytes() == f.getvalue()
    proto = onnx.load(tmp_path / "m.onnx")
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["y"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "x_dynamic_axes_1"
    (got,) = run_onnx(f.getvalue(), x=images(7, (3,)))
    assert got.shape == (7, 4)


def test_several_inputs_and_outputs_get_default_names():
    def two(a, b):
        return a + b, F.relu(a)
    proto = export(two, (tinyalex.randn(2, 3), tinyalex.randn(3)), io.BytesIO())
    assert [i.name for i in proto.graph.input] == ["input_0", "input_1"]
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]
    a, b = images(2, (3,)), images(1, (3,))[0]
    got = run_onnx(proto.SerializeToString(), input_0=a, input_1=b)
    np.testing.assert_allclose(got[0], a + b, rtol=1e-6)
    np.testing.assert_allclose(got[1], np.maximum(a, 0))


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(args=np.zeros((1, 3), np.float32)), TypeError, "args: expected a Tensor or a non-empty tuple of Tensors (the example inputs), got ndarray"),
    (dict(args=()), TypeError, "args: expected a Tensor or a non-empty tuple"),
    (dict(f=3), TypeError, "f: expected a path or a binary file object, got int"),
    (dict(opset_version=11), ValueError, "opset_version: expected None or 18, got 11"),
    (dict(input_names=["a", "b"]), ValueError, "input_names: expected at most 1 names (the model has 1), got 2"),
    (dict(input_names="x"), TypeError, "input_names: expected a list of non-empty strings, got 'x'"),
    (dict(output_names=["input"]), ValueError, "output_names: expected names other than the input names"),
    (dict(dynamic_axes={"x": [0]}), ValueError, "dynamic_axes: expected input or output names ['input', 'output'], got 'x'"),
    (dict(dynamic_axes={"input": {2: "b"}}), ValueError, "dynamic_axes['input']: expected axes in [-2, 1] (input has shape (2, 3)), got 2"),
    (dict(dynamic_axes={"input": {0: 5}}), TypeError, "dynamic_axes['input'][0]: expected a dim name (a non-empty string), got 5"),
    (dict(model="relu"), TypeError, "model: expected a tinyalex.nn.Module or a function, got str"),
])
def test_bad_arguments_are_refused_naming_the_argument(kwargs, error, words):
    call = dict(model=nn.ReLU(), args=tinyalex.randn(2, 3), f=io.BytesIO())
    call.update(kwargs)
    with pytest.raises(error) as caught:
        export(**call)
    assert words in str(caught.value)


def test_without_the_onnx_package_export_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)                 # `import onnx` raises ImportError
    with pytest.raises(ImportError, match=r"needs the onnx package, expected it installed "
                                          r"\(pip install 'tinyalex\[onnx\]'\)"):
        export(nn.ReLU(), tinyalex.randn(2, 3), io.BytesIO())


def test_import_tinyalex_does_not_load_onnx_and_tinyalex_onnx_is_there():
    code = ("import sys, tinyalex; print(tinyalex.onnx.export.__module__, "
            "[m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
    assert done.stdout.split() == ["tinyalex.onnx", "[]"], done.stdout
