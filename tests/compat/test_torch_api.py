"""The torch namespace of tinyalex against torch itself: one lambda, two libraries.

Each case runs the same code with `lib` bound to torch and to tinyalex and compares the
values, dtypes and shapes, or the exception classes where torch raises.
"""
import collections
import io
import zipfile

import numpy as np
import pytest
import torch

import tinyalex as ta
import tinyalex.nn as nn
import tinyalex.nn.functional as F
from tinyalex.utils import data as ta_data

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5)).astype(np.float32)
TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, -1.0, 2.0], [5.0, 4.0, 5.0, 5.0]], np.float32)


def lift(lib, value):
    """A NumPy array as lib's tensor (float arrays require grad)."""
    return lib.tensor(value, requires_grad=value.dtype.kind == "f")


def plain(result):
    """Tensors (and tuples of them) as NumPy arrays, for comparison."""
    if isinstance(result, tuple):
        return tuple(plain(r) for r in result)
    if isinstance(result, (torch.Tensor, ta.Tensor)):
        return result.detach().cpu().numpy()
    return result


def same(fn, *arrays, grad=True):
    """fn(torch, *tensors) == fn(tinyalex, *tensors): values, dtypes and, with grad, the
    gradients of sum(out * g) for a random g."""
    ours, theirs = [lift(ta, a) for a in arrays], [lift(torch, a) for a in arrays]
    a, b = fn(ta, *ours), fn(torch, *theirs)
    pa, pb = plain(a), plain(b)
    for x, y in zip(pa if isinstance(pa, tuple) else (pa,), pb if isinstance(pb, tuple) else (pb,)):
        assert np.shape(x) == np.shape(y), (np.shape(x), np.shape(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype, (np.asarray(x).dtype, np.asarray(y).dtype)
        np.testing.assert_allclose(x, y, rtol=1e-6)
    out_a, out_b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    if grad and out_b.requires_grad:
        g = np.random.default_rng(1).standard_normal(out_b.shape).astype(np.float32)
        out_a.backward(ta.tensor(g))
        out_b.backward(torch.tensor(g))
        for t_a, t_b in zip(ours, theirs):
            if t_b.requires_grad:
                np.testing.assert_allclose(t_a.grad.numpy(), t_b.grad.numpy(), rtol=1e-6, atol=1e-7)


def same_error(fn):
    """fn(torch) and fn(tinyalex) raise the same class of exception (ours may be a subclass)."""
    with pytest.raises(Exception) as theirs:
        fn(torch)
    with pytest.raises(type(theirs.value)):
        fn(ta)


# --- creation ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda lib: lib.zeros(2, 3), lambda lib: lib.zeros((2, 3)), lambda lib: lib.ones([4]),
    lambda lib: lib.zeros(size=(1, 2)), lambda lib: lib.ones(2, dtype=lib.long),
    lambda lib: lib.zeros(3, dtype=lib.float64), lambda lib: lib.full((2, 2), 7),
    lambda lib: lib.full((2,), 1.5), lambda lib: lib.full((2,), True), lambda lib: lib.arange(5),
    lambda lib: lib.arange(1, 7, 2), lambda lib: lib.arange(0, 1, 0.25), lambda lib: lib.arange(4.0),
    lambda lib: lib.zeros_like(lib.ones(2, 3, dtype=lib.float64)),
    lambda lib: lib.ones_like(lib.arange(3)), lambda lib: lib.full_like(lib.zeros(2), 3.0),
    lambda lib: lib.zeros_like(lib.ones(2), dtype=lib.int64),
    lambda lib: lib.as_tensor([1, 2, 3]), lambda lib: lib.as_tensor([1.0, 2.0]),
    lambda lib: lib.as_tensor(np.arange(3.0)), lambda lib: lib.tensor([[True, False]]),
    lambda lib: lib.empty(2, 3).shape, lambda lib: lib.randn(2, 3).shape,
    lambda lib: lib.rand(4).dtype == lib.float32, lambda lib: lib.randn(2, dtype=lib.float64).dtype,
    lambda lib: lib.randint(0, 10, (3, 2)).shape, lambda lib: lib.randint(5, (4,)).dtype,
    lambda lib: lib.randn_like(lib.zeros(2, 2, dtype=lib.float64)).dtype,
    lambda lib: lib.rand_like(lib.zeros(3)).shape, lambda lib: lib.is_tensor(lib.zeros(1)),
    lambda lib: lib.is_tensor([1]), lambda lib: lib.numel(lib.zeros(2, 5)),
])
def test_creation_matches_torch(make):
    ours, theirs = make(ta), make(torch)
    if isinstance(theirs, torch.Tensor):
        assert ours.shape == tuple(theirs.shape)
        assert ours.dtype == np.dtype(str(theirs.dtype).replace("torch.", ""))
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    elif isinstance(theirs, torch.dtype):
        assert ours == np.dtype(str(theirs).replace("torch.", ""))
    else:
        assert ours == (tuple(theirs) if isinstance(theirs, torch.Size) else theirs)


def test_random_creation_follows_manual_seed_and_its_distribution():
    ta.manual_seed(3)
    a, u, k = ta.randn(20000), ta.rand(20000), ta.randint(2, 5, (20000,))
    ta.manual_seed(3)
    np.testing.assert_array_equal(a.numpy(), ta.randn(20000).numpy())
    assert abs(a.numpy().mean()) < 0.03 and abs(a.numpy().std() - 1) < 0.03
    assert 0 <= u.numpy().min() and u.numpy().max() < 1 and abs(u.numpy().mean() - 0.5) < 0.01
    assert set(np.unique(k.numpy())) == {2, 3, 4}
    assert ta.randn(2, 3, requires_grad=True).requires_grad


def test_from_numpy_shares_memory_and_as_tensor_copies_only_when_needed():
    array = np.zeros(3, np.float32)
    ta.from_numpy(array)[1] = 5.0
    assert array[1] == 5.0
    assert np.shares_memory(ta.as_tensor(array).numpy(), array)
    assert not np.shares_memory(ta.as_tensor(array, dtype=ta.float64).numpy(), array)
    same_error(lambda lib: lib.from_numpy([1, 2]))
    with pytest.raises(TypeError, match="from_numpy"):
        ta.from_numpy(np.zeros(2, np.float16))


def test_creation_errors_name_the_argument():
    with pytest.raises(TypeError, match="size"):
        ta.zeros(2, -1)
    with pytest.raises(TypeError, match="dtype"):
        ta.randn(2, dtype=ta.int64)
    same_error(lambda lib: lib.randn(2, bogus=1))


# --- reductions --------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda lib, x: lib.max(x), lambda lib, x: lib.min(x), lambda lib, x: x.max(),
    lambda lib, x: lib.max(x, 1), lambda lib, x: lib.max(x, dim=0, keepdim=True),
    lambda lib, x: x.max(-1), lambda lib, x: x.min(1), lambda lib, x: lib.min(x, 0, True),
    lambda lib, x: lib.argmax(x), lambda lib, x: lib.argmax(x, 1), lambda lib, x: x.argmax(axis=1),
    lambda lib, x: x.argmin(0, keepdim=True), lambda lib, x: lib.argmin(x),
    lambda lib, x: lib.sum(x), lambda lib, x: x.sum(1, keepdim=True), lambda lib, x: x.sum((0, 1)),
    lambda lib, x: lib.sum(x, axis=0), lambda lib, x: lib.mean(x, -1), lambda lib, x: x.mean((0, 1)),
    lambda lib, x: lib.max(x, 1).values, lambda lib, x: lib.max(x, 1)[1],
    lambda lib, x: lib.max(x[0, 0], 0),
])
def test_reductions_match_torch_values_indices_and_gradients(fn):
    same(fn, TIES)            # ties: the first maximum's index, torch's gradient rule
    same(fn, X[0])


def test_max_with_dim_is_a_named_tuple_like_torch():
    values, indices = ta.max(ta.tensor(TIES), 1)
    result = ta.tensor(TIES).max(1)
    assert result.values is not None and result.indices.dtype == ta.int64
    np.testing.assert_array_equal(values.numpy(), result[0].numpy())
    np.testing.assert_array_equal(indices.numpy(), [1, 0, 0])


@pytest.mark.parametrize("fn", [
    lambda lib: lib.max(lib.zeros(0)), lambda lib: lib.zeros(2, 3).sum(3),
    lambda lib: lib.argmax(lib.zeros(2, 3), -3), lambda lib: lib.zeros(2).max(1),
])
def test_reduction_errors_match_torch(fn):
    same_error(fn)


# --- comparisons -------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda lib, a, b: a == b, lambda lib, a, b: a != b, lambda lib, a, b: a < b,
    lambda lib, a, b: a <= b, lambda lib, a, b: a > b, lambda lib, a, b: a >= b,
    lambda lib, a, b: lib.eq(a, b), lambda lib, a, b: lib.ne(a, 1.0), lambda lib, a, b: lib.lt(a, b),
    lambda lib, a, b: lib.le(a, b), lambda lib, a, b: lib.gt(a, 2.0), lambda lib, a, b: lib.ge(a, b),
    lambda lib, a, b: a.eq(b), lambda lib, a, b: a.gt(b), lambda lib, a, b: a == 3.0,
    lambda lib, a, b: lib.equal(a, b), lambda lib, a, b: lib.equal(a, a),
    lambda lib, a, b: (a == b).sum(), lambda lib, a, b: (a > b).squeeze(),
])
def test_comparisons_match_torch(fn):
    same(fn, TIES, np.full(4, 2.0, np.float32), grad=False)


# --- shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda lib, x: lib.flatten(x), lambda lib, x: lib.flatten(x, 1), lambda lib, x: x.flatten(0, 1),
    lambda lib, x: x.view(-1), lambda lib, x: x.view(1, -1), lambda lib, x: x.view(4, 15),
    lambda lib, x: x.reshape((5, -1)), lambda lib, x: lib.reshape(x, (12, 5)),
    lambda lib, x: x.unsqueeze(0), lambda lib, x: lib.unsqueeze(x, -1), lambda lib, x: x.unsqueeze(2),
    lambda lib, x: x.unsqueeze(1).squeeze(), lambda lib, x: x.unsqueeze(1).squeeze(1),
    lambda lib, x: x.unsqueeze(1).squeeze(0), lambda lib, x: lib.squeeze(x[:1], 0),
    lambda lib, x: x[:1, :, :1].squeeze((0, 2)), lambda lib, x: x.permute(2, 0, 1),
    lambda lib, x: lib.permute(x, (1, 2, 0)), lambda lib, x: x.permute([2, 1, 0]),
    lambda lib, x: x.transpose(0, 2), lambda lib, x: lib.transpose(x, -1, 1),
    lambda lib, x: x.view_as(lib.zeros(60)), lambda lib, x: x[1], lambda lib, x: x.clone() * 2,
    lambda lib, x: lib.add(x, x), lambda lib, x: lib.sub(x, 1.0), lambda lib, x: lib.mul(x, 2.0),
    lambda lib, x: lib.div(x, x[0]), lambda lib, x: lib.pow(x, 2), lambda lib, x: lib.exp(x),
    lambda lib, x: lib.abs(x), lambda lib, x: lib.log(lib.abs(x)),
])
def test_shape_ops_match_torch_forward_and_backward(fn):
    same(fn, X)


@pytest.mark.parametrize("fn", [
    lambda lib: lib.zeros(2, 3).view(4, 2), lambda lib: lib.zeros(2, 3).unsqueeze(3),
    lambda lib: lib.zeros(2, 3).permute(0, 0), lambda lib: lib.zeros(2, 3).permute(0),
    lambda lib: lib.zeros(2, 3).flatten(1, 0), lambda lib: lib.zeros(2, 3).transpose(0, 2),
])
def test_shape_errors_match_torch(fn):
    same_error(fn)


# --- dtype and device conversion ---------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda lib, x: x.type(lib.int64), lambda lib, x: x.type(lib.float64), lambda lib, x: x.double(),
    lambda lib, x: (x > 0).type(lib.int64), lambda lib, x: (x > 0).long().sum(),
    lambda lib, x: x.to(lib.float64), lambda lib, x: x.to("cpu"), lambda lib, x: x.to("cpu", lib.float64),
    lambda lib, x: x.to(device="cpu", dtype=lib.float64), lambda lib, x: x.to(lib.zeros(1, dtype=lib.float64)),
    lambda lib, x: x.to(lib.device("cpu")), lambda lib, x: x.float(), lambda lib, x: x.bool(),
    lambda lib, x: x.to(lib.float32, copy=True),
])
def test_type_and_to_match_torch(fn):
    same(fn, X[0])


def test_type_names_and_to_identity():
    x = ta.zeros(2)
    assert [t.type() for t in (x, x.double(), x.long(), x.bool())] == [
        "tinyalex.FloatTensor", "tinyalex.DoubleTensor", "tinyalex.LongTensor", "tinyalex.BoolTensor"]
    assert x.type("torch.DoubleTensor").dtype == ta.float64
    assert x.to("cpu") is x and x.to(ta.float32, copy=True) is not x
    with pytest.raises(TypeError, match="dtype"):
        x.to(np.float16)
    with pytest.raises(TypeError, match="type"):
        x.type("torch.HalfTensor")


# --- Python protocols --------------------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda lib: bool(lib.tensor(2.0)), lambda lib: bool(lib.tensor([0])), lambda lib: bool(lib.tensor(1) == 1),
    lambda lib: float(lib.tensor([[2.5]])), lambda lib: int(lib.tensor(3.9)), lambda lib: int(lib.tensor(-3.9)),
    lambda lib: ["a", "b", "c"][lib.tensor(2)], lambda lib: ["a", "b"][lib.tensor([1])],
    lambda lib: ["a", "b"][lib.tensor(True)], lambda lib: list(range(5))[lib.tensor(1):lib.tensor(3)],
    lambda lib: len(lib.zeros(4, 2)), lambda lib: [t.tolist() for t in lib.tensor([[1, 2], [3, 4]])],
    lambda lib: np.asarray(lib.tensor([1.5, 2.0])).tolist(),
    lambda lib: np.asarray(lib.tensor([1, 2]), dtype=np.float64).dtype,
    lambda lib: f"{lib.tensor(1.23456):.2f}",
    lambda lib: lib.tensor(3) in [1, 3], lambda lib: lib.tensor(1.0).item(), lambda lib: lib.tensor([7]).item(),
])
def test_python_protocols_match_torch(fn):
    assert fn(ta) == fn(torch)


@pytest.mark.parametrize("fn", [
    lambda lib: bool(lib.zeros(2)), lambda lib: bool(lib.zeros(0)), lambda lib: float(lib.zeros(2)),
    lambda lib: int(lib.zeros(2)), lambda lib: ["a", "b"][lib.tensor(1.0)],
    lambda lib: ["a"][lib.tensor([0, 0])], lambda lib: len(lib.tensor(1.0)), lambda lib: iter(lib.tensor(1.0)),
    lambda lib: lib.zeros(2).item(), lambda lib: np.asarray(lib.zeros(2, requires_grad=True)),
    lambda lib: 1.0 if lib.zeros(3) == 0 else 0.0, lambda lib: f"{lib.tensor([2.5]):.1f}",
])
def test_python_protocol_errors_match_torch(fn):
    same_error(fn)


def test_ambiguous_truth_is_both_runtime_and_value_error():
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(ta.zeros(2))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(ta.zeros(2))


# --- in-place ops, .data -----------------------------------------------------------------
@pytest.mark.parametrize("fn", [
    lambda lib, x: x.data.sub_(x.data * 0.5), lambda lib, x: x.data.add_(lib.ones(5), alpha=2),
    lambda lib, x: x.data.mul_(3), lambda lib, x: x.data.div_(lib.full((4, 1), 2.0)),
    lambda lib, x: x.data.zero_(), lambda lib, x: x.data.fill_(1.5),
    lambda lib, x: x.data.copy_(lib.arange(5)), lambda lib, x: x.data.sub_(1).add_(1).mul_(2),
])
def test_in_place_ops_match_torch_and_write_through_data(fn):
    ours, theirs = lift(ta, X[0].copy()), lift(torch, X[0].copy())
    returned = fn(ta, ours)
    fn(torch, theirs)
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-6)
    assert np.shares_memory(returned.numpy(), ours.detach().numpy())  # returns the tensor itself
    assert ours.requires_grad and ours.grad_fn is None


@pytest.mark.parametrize("fn", [
    lambda lib, x: x.sub_(1), lambda lib, x: x.zero_(), lambda lib, x: x.data.add_(lib.ones(3)),
    lambda lib, x: x.data.copy_(lib.ones(2, 3)),
])
def test_in_place_errors_match_torch(fn):
    same_error(lambda lib: fn(lib, lift(lib, X[0].copy())))


def test_in_place_is_allowed_under_no_grad_like_an_optimiser_step():
    w = ta.ones(3, requires_grad=True)
    with ta.no_grad():
        w.sub_(ta.tensor([1.0, 2.0, 3.0]) * 0.5)
    np.testing.assert_array_equal(w.detach().numpy(), [0.5, 0.0, -0.5])


# --- autograd introspection --------------------------------------------------------------
def test_next_functions_walk_the_graph_like_torch():
    def graph(lib):
        a = lib.tensor([1.0, 2.0], requires_grad=True)
        b = lib.tensor([3.0, 4.0], requires_grad=True)
        c = lib.tensor([5.0, 6.0])
        loss = ((a * b) * c).sum()
        return loss, a, b

    ours, a, b = graph(ta)
    theirs, _, _ = graph(torch)

    def shape(node):  # the structure: children per node, AccumulateGrad and None leaves
        if node is None:
            return None
        if type(node).__name__ == "AccumulateGrad":
            return "leaf"
        return [shape(child) for child, _ in node.next_functions]

    assert shape(ours.grad_fn) == shape(theirs.grad_fn) == [[["leaf", "leaf"], None]]
    mul = ours.grad_fn.next_functions[0][0].next_functions[0][0]
    assert mul.next_functions[0][0].variable is a and mul.next_functions[1][0].variable is b
    assert ta.mul(a, a).grad_fn.next_functions[0][0] is mul.next_functions[0][0]  # one per leaf
    ours.backward()
    assert shape(ours.grad_fn) == shape(theirs.grad_fn)  # still there after backward
    assert a.data.requires_grad is False and a.data.grad_fn is None


# --- devices -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [("cpu",), ("cuda",), ("cuda:0",), ("cuda", 0)])
def test_device_objects_match_torch(spec):
    ours, theirs = ta.device(*spec), torch.device(*spec)
    assert (str(ours), repr(ours), ours.type, ours.index) == (
        str(theirs), repr(theirs), theirs.type, theirs.index)
    assert isinstance(ours, ta.device) and not isinstance("cpu", ta.device)


def test_device_queries_and_tensor_device():
    assert ta.cuda.is_available() is ta.cuda_is_available()
    assert ta.cuda.device_count() == (1 if ta.cuda.is_available() else 0)
    x = ta.zeros(2)
    assert x.device == "cpu" and x.device == ta.device("cpu") and repr(x.device) == "device(type='cpu')"
    assert not x.is_cuda and f"{x.device}" == "cpu"
    with pytest.raises(ValueError, match="cuda:1"):
        ta.device("cuda:1")
    with pytest.raises(TypeError, match="device"):
        ta.device(3)


def test_module_to_takes_torch_forms():
    model = nn.Sequential(nn.Linear(2, 3))
    assert model.to(ta.float64) is model and model[0].weight.dtype == ta.float64
    model.to("cpu", ta.float32)
    assert model[0].weight.dtype == ta.float32
    model.to(ta.device("cpu"))
    model.to(ta.zeros(1, dtype=ta.float64))
    assert model[0].bias.dtype == ta.float64


# --- save / load -------------------------------------------------------------------------
def test_save_load_round_trips_nested_objects(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    optimizer = ta.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(ta.randn(4, 3)).sum().backward()
    optimizer.step()
    obj = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
           "loss": 0.25, "best": float("inf"), "name": "run", "flags": (True, None),
           "tensor": ta.tensor([1, 2]), "grad": ta.ones(2, requires_grad=True),
           "array": np.arange(4.0)}
    path = tmp_path / "checkpoint.pth"
    ta.save(obj, path)
    assert path.exists() and not (tmp_path / "checkpoint.pth.npz").exists()
    loaded = ta.load(path)
    assert isinstance(loaded["model"], collections.OrderedDict)
    assert list(loaded["model"]) == list(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded["model"][key].numpy(), value.numpy())
        assert loaded["model"][key].dtype == value.dtype
    assert loaded["optimizer"]["state"].keys() == optimizer.state_dict()["state"].keys()
    assert loaded["optimizer"]["param_groups"] == optimizer.state_dict()["param_groups"]
    assert (loaded["epoch"], loaded["loss"], loaded["best"], loaded["name"], loaded["flags"]) == (
        3, 0.25, float("inf"), "run", (True, None))
    assert loaded["tensor"].dtype == ta.int64 and loaded["grad"].requires_grad
    assert isinstance(loaded["array"], ta.Tensor)              # torch's format has no arrays
    np.testing.assert_array_equal(loaded["array"].numpy(), np.arange(4.0))
    restored = ta.optim.SGD(model.parameters(), lr=0.1)
    restored.load_state_dict(loaded["optimizer"])               # its momentum: Tensors now
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(restored.state_dict()["state"][i][key], value)
    model.load_state_dict(loaded["model"])


def test_save_writes_torch_format_and_load_reads_torch_files(tmp_path):
    """The details (every dtype and shape, torch blocked, refusals): test_torch_format.py."""
    buffer = io.BytesIO()
    ta.save({"w": ta.zeros(2, 3)}, buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as archive:
        assert "archive/data.pkl" in archive.namelist()
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["w"].shape == (2, 3)
    buffer.seek(0)
    assert ta.load(buffer, map_location="cpu")["w"].shape == (2, 3)
    torch.save({"w": torch.arange(3.0)}, tmp_path / "torch.pth")
    assert ta.load(tmp_path / "torch.pth")["w"].tolist() == [0.0, 1.0, 2.0]
    (tmp_path / "junk").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="expected a file written by torch.save or tinyalex.save"):
        ta.load(tmp_path / "junk")
    with pytest.raises(TypeError, match=r"obj\['model'\]: cannot save a Linear"):
        ta.save({"model": nn.Linear(2, 2)}, tmp_path / "x")
    with pytest.raises(TypeError, match="objects"):
        ta.save(np.array([object()]), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_load_refuses_object_arrays_inside_the_archive(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", '{"format": "tinyalex.save", "version": 1, "root": {"ndarray": 0}}')
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        archive.writestr("arrays/0.npy", buffer.getvalue())
    with pytest.raises(ValueError, match="allow_pickle"):
        ta.load(path)


# --- utils.data --------------------------------------------------------------------------
def dataset(lib):
    x = lib.tensor(np.arange(30, dtype=np.float32).reshape(10, 3))
    return lib.utils.data.TensorDataset(x, lib.arange(10))


@pytest.mark.parametrize("kwargs", [dict(batch_size=4), dict(batch_size=4, drop_last=True),
                                    dict(batch_size=3, num_workers=2), dict()])
def test_dataloader_batches_match_torch_without_shuffle(kwargs):
    import torch.utils.data  # noqa: F401
    ours = list(ta.utils.data.DataLoader(dataset(ta), **kwargs))
    theirs = list(torch.utils.data.DataLoader(dataset(torch), **kwargs))
    assert len(ours) == len(theirs) == len(ta.utils.data.DataLoader(dataset(ta), **kwargs))
    for a, b in zip(ours, theirs):
        assert isinstance(a, list) and len(a) == 2
        for ta_t, torch_t in zip(a, b):
            np.testing.assert_array_equal(ta_t.numpy(), torch_t.numpy())
            assert ta_t.dtype == np.dtype(str(torch_t.dtype).replace("torch.", ""))


def test_dataloader_shuffles_every_pass_and_follows_manual_seed():
    loader = ta.utils.data.DataLoader(dataset(ta), batch_size=4, shuffle=True)
    ta.manual_seed(5)
    first, second = [np.concatenate([y.numpy() for _, y in loader]) for _ in range(2)]
    assert sorted(first) == sorted(second) == list(range(10))
    assert list(first) != list(second)
    ta.manual_seed(5)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in loader]), first)
    assert dataset(ta)[3][1].item() == 3 and len(dataset(ta)) == 10


class Pairs(ta_data.Dataset):
    """A map-style dataset with mixed sample fields."""

    def __init__(self, lib):
        self.lib = lib

    def __getitem__(self, i):
        return {"x": self.lib.tensor([float(i), 2.0 * i]), "n": i, "w": 0.5 * i,
                "name": f"s{i}", "a": np.array([i, i])}

    def __len__(self):
        return 5


def test_default_collate_matches_torch_on_a_custom_dataset():
    import torch.utils.data as tud
    theirs_set = type("TorchPairs", (tud.Dataset,), {"__getitem__": Pairs.__getitem__,
                                                     "__len__": Pairs.__len__})()
    theirs_set.lib = torch
    ours = list(ta.utils.data.DataLoader(Pairs(ta), batch_size=2))
    theirs = list(tud.DataLoader(theirs_set, batch_size=2))
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys() and a["name"] == b["name"]
        for key in ("x", "n", "w", "a"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
            assert a[key].dtype == np.dtype(str(b[key].dtype).replace("torch.", "")), key


def test_dataloader_and_dataset_errors():
    with pytest.raises(ValueError, match="batch_size"):
        ta.utils.data.DataLoader(dataset(ta), batch_size=0)
    with pytest.raises(ValueError, match="sampler"):
        ta.utils.data.DataLoader(dataset(ta), sampler=[0, 1])
    with pytest.raises(ValueError, match=r"\[3, 2\]"):
        ta.utils.data.TensorDataset(ta.zeros(3), ta.zeros(2))
    with pytest.raises(NotImplementedError):
        ta_data.Dataset()[0]


# --- nn ----------------------------------------------------------------------------------
def test_nn_functional_is_tinyalex_functional():
    import tinyalex.functional
    assert F is tinyalex.functional and nn.functional is F and ta.nn.functional.mse_loss is F.mse_loss


def test_conv2d_padding_strings_are_checked_like_torch():
    for lib in (ta.nn, torch.nn):
        with pytest.raises(ValueError, match="strided convolutions"):
            lib.Conv2d(1, 2, 3, stride=2, padding="same")
        with pytest.raises(ValueError, match="Invalid padding string 'full'"):
            lib.Conv2d(1, 2, 3, padding="full")
    conv = nn.Conv2d(1, 2, 3, padding="same")
    assert conv.padding == "same" and "padding=same" in repr(conv)
    assert nn.Conv2d(1, 2, 3, padding="valid").padding == "valid"


def test_conv2d_padding_same_forward_matches_torch():
    x = RNG.standard_normal((2, 1, 6, 5)).astype(np.float32)
    ours, theirs = nn.Conv2d(1, 2, (3, 4), padding="same"), torch.nn.Conv2d(1, 2, (3, 4), padding="same")
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    np.testing.assert_allclose(ours(ta.tensor(x)).detach().numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
