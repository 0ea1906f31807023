"""tinyalex.save writes the file torch.save writes and tinyalex.load reads torch's, without
torch: torch.load(weights_only=True) gets equal tensors from tinyalex's files, tinyalex gets
equal tensors from torch's with torch blocked from import, a pickle that would run a command
is refused before anything runs, and files of the earlier ZIP+JSON format still load."""
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import tinyalex as ta
from tinyalex import nn
from tinyalex.errors import UnpicklingValueError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def run_without_torch(code, *args):
    """Run `code` in a fresh interpreter in which `import torch` fails."""
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH + code, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    return done.stdout


def torch_zip(path, pickled, records=()):
    """A ZIP laid out as torch.save lays it out, holding the given data.pkl."""
    top = os.path.splitext(os.path.basename(path))[0]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/data.pkl", pickled)
        archive.writestr(f"{top}/byteorder", "little")
        for name, data in records:
            archive.writestr(f"{top}/{name}", data)
        archive.writestr(f"{top}/version", "3\n")


# --- tinyalex.save -> torch.load(weights_only=True) -------------------------------------
def saved_by_tinyalex():
    """Everything the format covers: a module's state dict, an optimizer's, tensors of each
    dtype and shape (0-d, empty, non-contiguous), requires_grad, numbers and strings."""
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    optimizer = ta.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(ta.randn(4, 3)).sum().backward()
    optimizer.step()
    matrix = ta.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scalar": ta.tensor(2.5), "empty": ta.zeros(0, 3), "long": ta.tensor([[1, -2], [3, 2 ** 40]]),
            "double": ta.tensor(np.linspace(0, 1, 5)), "mask": ta.tensor([True, False, True]),
            "transposed": matrix.t(), "column": matrix[:, 1], "grad": ta.ones(2, requires_grad=True),
            "array": np.arange(4.0), "same": [matrix, matrix],
            "epoch": 3, "big": 2 ** 70, "loss": 0.25, "best": float("inf"), "name": "run ü",
            "flags": (True, None, False, 1, 2), "by_index": {0: "a", -1: "b"}}


def test_torch_load_weights_only_reads_what_tinyalex_saves(tmp_path):
    obj = saved_by_tinyalex()
    ta.save(obj, tmp_path / "checkpoint.pth")
    loaded = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert isinstance(loaded["model"], collections.OrderedDict) and list(loaded["model"]) == list(obj["model"])

    def same(ours, theirs, where):
        if isinstance(ours, ta.Tensor) or isinstance(ours, np.ndarray):
            array = ours.detach().numpy() if isinstance(ours, ta.Tensor) else ours
            assert isinstance(theirs, torch.Tensor), where
            assert theirs.shape == array.shape and str(theirs.dtype) == f"torch.{array.dtype}", where
            np.testing.assert_array_equal(theirs.detach().numpy(), array, err_msg=where)
            assert theirs.requires_grad == (isinstance(ours, ta.Tensor) and ours.requires_grad), where
        elif isinstance(ours, dict):
            assert type(theirs) is type(ours) and list(theirs) == list(ours), where
            for key in ours:
                same(ours[key], theirs[key], f"{where}[{key!r}]")
        elif isinstance(ours, (list, tuple)):
            assert type(theirs) is type(ours) and len(theirs) == len(ours), where
            for i, (a, b) in enumerate(zip(ours, theirs)):
                same(a, b, f"{where}[{i}]")
        else:
            assert type(theirs) is type(ours) and theirs == ours, where
    same(obj, loaded, "obj")
    assert loaded["scalar"].shape == () and loaded["empty"].shape == (0, 3)
    assert loaded["same"][0].data_ptr() == loaded["same"][1].data_ptr()   # one storage for both


def records(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: info for info in archive.infolist()}


def test_the_archive_holds_the_records_torch_writes_aligned_as_torch_aligns_them(tmp_path):
    torch.save({"w": torch.zeros(2, 3), "b": torch.zeros(2)}, tmp_path / "model.pth")
    ta.save({"w": ta.zeros(2, 3), "b": ta.zeros(2)}, tmp_path / "model.pt")
    theirs, ours = records(tmp_path / "model.pth"), records(tmp_path / "model.pt")
    assert list(ours) == list(theirs)                # model/data.pkl ... model/.data/serialization_id
    raw = (tmp_path / "model.pt").read_bytes()
    for info in ours.values():
        assert info.compress_type == zipfile.ZIP_STORED
        name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
        assert (info.header_offset + 30 + name_length + extra_length) % 64 == 0, info.filename
    with zipfile.ZipFile(tmp_path / "model.pt") as archive:
        assert archive.read("model/byteorder") == b"little" and archive.read("model/version") == b"3\n"
        assert archive.read("model/data/0") == np.zeros((2, 3), np.float32).tobytes()
    buffer = io.BytesIO()                            # a file object: torch's folder name, "archive"
    ta.save([ta.ones(1)], buffer)
    buffer.seek(0)
    assert zipfile.ZipFile(buffer).namelist()[0] == "archive/data.pkl"
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)[0].tolist() == [1.0]


def test_save_refuses_what_the_format_does_not_hold_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"obj\['model'\]: cannot save a Linear"):
        ta.save({"model": nn.Linear(2, 2)}, tmp_path / "x")
    with pytest.raises(TypeError, match=r"obj\[0\]: cannot save an array of Python objects"):
        ta.save([np.array([object()])], tmp_path / "x")
    with pytest.raises(TypeError, match=r"obj\['x'\]: cannot save dtype int32; expected float32"):
        ta.save({"x": np.arange(3, dtype=np.int32)}, tmp_path / "x")
    with pytest.raises(TypeError, match=r"obj\[1\]: cannot save a function"):
        ta.save([1, lambda: 0], tmp_path / "x")
    assert not os.listdir(tmp_path)


# --- torch.save -> tinyalex.load, torch blocked ------------------------------------------
READ_WITHOUT_TORCH = """
import json, sys, numpy as np, tinyalex, collections
obj = tinyalex.load(sys.argv[1])
arrays, kinds = {}, {}
def walk(value, path):
    kinds[path] = type(value).__name__
    if isinstance(value, tinyalex.Tensor):
        arrays[path] = value.detach().numpy()
        kinds[path] += " requires_grad" if value.requires_grad else ""
    elif isinstance(value, dict):
        for k, v in value.items():
            walk(v, f"{path}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            walk(v, f"{path}/{i}")
    else:
        kinds[path] += f" {value!r}"
walk(obj, "obj")
np.savez(sys.argv[2], **arrays)
print(json.dumps([kinds, "torch" in sys.modules and sys.modules["torch"] is not None,
                  getattr(obj["model"], "_metadata", None)]))
"""


def test_tinyalex_reads_what_torch_saves_with_torch_blocked(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    matrix = torch.arange(12.0).reshape(3, 4)
    obj = {"model": module.state_dict(), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
           "long": torch.tensor([1, -2, 2 ** 40]), "double": torch.linspace(0, 1, 5, dtype=torch.float64),
           "mask": torch.tensor([True, False]), "transposed": matrix.t(), "column": matrix[:, 1],
           "offset": matrix.view(-1)[5:9], "expanded": torch.tensor([1.0, 2.0]).expand(3, 2),
           "parameter": torch.nn.Parameter(torch.ones(2)), "grad": torch.ones(2, requires_grad=True),
           "nested": [(1, 2.5, "x", None, True), {"k": [matrix]}]}
    torch.save(obj, tmp_path / "torch.pth")
    kinds, torch_loaded, metadata = json.loads(run_without_torch(READ_WITHOUT_TORCH, tmp_path / "torch.pth",
                                                                 tmp_path / "out.npz"))
    assert not torch_loaded
    assert metadata == {k: dict(v) for k, v in module.state_dict()._metadata.items()}
    expected = {}

    def walk(value, path):
        if isinstance(value, torch.Tensor):
            expected[path] = value.detach()
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{path}/{i}")
    walk(obj, "obj")
    with np.load(tmp_path / "out.npz") as arrays:
        assert sorted(arrays.files) == sorted(expected)
        for path, tensor in expected.items():
            assert arrays[path].shape == tuple(tensor.shape) and str(tensor.dtype) == f"torch.{arrays[path].dtype}", path
            np.testing.assert_array_equal(arrays[path], tensor.numpy(), err_msg=path)
    assert kinds["obj"] == "dict" and kinds["obj/model"] == "OrderedDict"
    assert kinds["obj/grad"] == kinds["obj/parameter"] == "Tensor requires_grad"
    assert kinds["obj/scalar"] == "Tensor" and kinds["obj/nested/0"] == "tuple"
    assert [kinds[f"obj/nested/0/{i}"] for i in range(5)] == ["int 1", "float 2.5", "str 'x'", "NoneType None", "bool True"]


def test_map_location_and_the_locations_torch_records(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    assert ta.load(tmp_path / "w.pth", map_location="cpu")["w"].device == "cpu"
    with zipfile.ZipFile(tmp_path / "w.pth") as archive:       # as if saved from a GPU
        members = {n: archive.read(n) for n in archive.namelist()}
    members["w/data.pkl"] = members["w/data.pkl"].replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    with zipfile.ZipFile(tmp_path / "cuda.pth", "w") as archive:
        for name, data in members.items():
            archive.writestr(name.replace("w/", "cuda/", 1), data)
    assert ta.load(tmp_path / "cuda.pth", map_location="cpu")["w"].tolist() == [1.0, 1.0]
    if not ta.cuda.is_available():
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            ta.load(tmp_path / "cuda.pth")


# --- what is refused, and that nothing runs -----------------------------------------------
def reduce_call(module, name, argument):
    """A protocol-2 pickle of `module.name(argument)`: what a malicious file holds."""
    data = argument.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(data)) + data
            + b"\x85R.")


@pytest.mark.parametrize("module, name", [("os", "system"), ("posix", "system"), ("builtins", "exec")])
def test_a_pickle_that_would_run_a_command_is_refused_and_runs_nothing(tmp_path, module, name):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w').close()"
    pickled = reduce_call(module, name, command)
    # the file is live: plain pickle would run the command (shown here with a harmless twin)
    assert pickle.loads(reduce_call("os.path", "basename", "/a/b")) == "b"
    torch_zip(tmp_path / "evil.pth", pickled)
    with pytest.raises(pickle.UnpicklingError) as caught:
        ta.load(tmp_path / "evil.pth")
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert str(tmp_path / "evil.pth") in message and f"refused global '{module}.{name}'" in message, message
    assert "nothing in the file was run" in message
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match=f"GLOBAL .*{name}"):   # torch refuses it too
        torch.load(tmp_path / "evil.pth", weights_only=True)
    assert not marker.exists()


def storage_pickle(size, stride, offset=0, numel=4, storage="FloatStorage", after=b""):
    """data.pkl of one tensor, _rebuild_tensor_v2 over storage '0', as torch writes it."""
    def ints(values):
        return b"(" + b"".join(b"K" + bytes([v]) for v in values) + b"t"
    return (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n"
            + storage.encode() + b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK" + bytes([numel]) + b"tQK"
            + bytes([offset]) + ints(size) + ints(stride) + b"\x89ccollections\nOrderedDict\n)Rt" + b"R" + after + b".")


def test_the_hand_written_tensor_pickle_loads_so_the_refusals_below_are_for_their_reason(tmp_path):
    torch_zip(tmp_path / "ok.pth", storage_pickle((2, 2), (1, 2)), [("data/0", np.arange(4, dtype=np.float32).tobytes())])
    assert ta.load(tmp_path / "ok.pth").tolist() == [[0, 2], [1, 3]]
    assert torch.load(tmp_path / "ok.pth", weights_only=True).tolist() == [[0, 2], [1, 3]]


@pytest.mark.parametrize("case, pickled, data, words", [
    ("past-the-storage", storage_pickle((2, 3), (3, 1)), np.zeros(4, np.float32), "reaches past its storage"),
    ("offset-past-the-storage", storage_pickle((2,), (1,), offset=3), np.zeros(4, np.float32), "reaches past"),
    ("short-record", storage_pickle((4,), (1,)), np.zeros(3, np.float32), "expected 4 elements of float32"),
    ("half", storage_pickle((4,), (1,), storage="HalfStorage"), np.zeros(4, np.float16),
     "refused global 'torch.HalfStorage': tensors of dtype float16"),
    ("build-on-a-tensor", storage_pickle((4,), (1,), after=b"}b"), np.zeros(4, np.float32), "refused BUILD"),
    ("bare-storage", b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ.",
     np.zeros(4, np.float32), "refused <storage of 4 float32>"),
    ("bad-persistent-id", b"\x80\x02X\x03\x00\x00\x00abcQ.", np.zeros(0), "refused persistent id 'abc'"),
    ("missing-record", storage_pickle((4,), (1,)), None, "no record"),
    ("attribute-on-an-ordereddict", b"\x80\x02ccollections\nOrderedDict\n)R}X\x05\x00\x00\x00itemsK\x01sb.",
     np.zeros(0), "refused attributes ['items']"),
])
def test_malformed_files_are_refused_naming_the_file_and_the_reason(tmp_path, case, pickled, data, words):
    path = tmp_path / f"{case}.pth"
    torch_zip(path, pickled, [] if data is None else [("data/0", data.tobytes())])
    with pytest.raises(UnpicklingValueError) as caught:
        ta.load(path)
    assert str(path) in str(caught.value) and words in str(caught.value), str(caught.value)


def test_legacy_junk_and_truncated_files_get_clear_errors(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(UnpicklingValueError, match=r"legacy.pth: a file of torch's legacy format"):
        ta.load(tmp_path / "legacy.pth")
    (tmp_path / "junk").write_bytes(b"not a zip")
    with pytest.raises(pickle.UnpicklingError, match=r"junk: expected a file written by torch.save"):
        ta.load(tmp_path / "junk")
    ta.save({"w": ta.zeros(1000)}, tmp_path / "whole.pth")
    whole = (tmp_path / "whole.pth").read_bytes()
    for cut in (len(whole) // 2, len(whole) - 10):
        (tmp_path / "cut.pth").write_bytes(whole[:cut])
        with pytest.raises(RuntimeError, match=r"cut.pth: a truncated or damaged ZIP archive") as caught:
            ta.load(tmp_path / "cut.pth")
        assert isinstance(caught.value, ValueError)
    damaged = bytearray(whole)
    with zipfile.ZipFile(io.BytesIO(whole)) as archive:
        info = archive.getinfo("whole/data/0")
    damaged[info.header_offset + 200] ^= 0xFF                       # inside data/0: a bad CRC
    (tmp_path / "damaged.pth").write_bytes(bytes(damaged))
    with pytest.raises(RuntimeError, match=r"damaged.pth: a damaged ZIP archive"):
        ta.load(tmp_path / "damaged.pth")


# --- the earlier ZIP+JSON format ----------------------------------------------------------
def test_files_of_the_earlier_zip_json_format_still_load(tmp_path):
    """As tinyalex.save wrote them before: manifest.json and arrays/<i>.npy (a 0-d tensor was
    written with shape (1,), and comes back so)."""
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(1, np.float32), np.arange(4.0)]
    root = {"dict": [[{"str": "w"}, {"tensor": {"array": 0, "device": "cpu", "requires_grad": True}}],
                     [{"str": "scalar"}, {"tensor": {"array": 1, "device": "cpu", "requires_grad": False}}],
                     [{"str": "array"}, {"ndarray": 2}],
                     [{"int": 3}, {"tuple": [{"float": 0.5}, {"none": None}, {"list": [{"bool": True}]}]}]],
            "ordered": True}
    with zipfile.ZipFile(tmp_path / "old.pth", "w") as archive:
        archive.writestr("manifest.json", json.dumps({"format": "tinyalex.save", "version": 1, "root": root}))
        for i, array in enumerate(arrays):
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"arrays/{i}.npy", buffer.getvalue())
    loaded = ta.load(tmp_path / "old.pth")
    assert isinstance(loaded, collections.OrderedDict) and list(loaded) == ["w", "scalar", "array", 3]
    assert loaded["w"].requires_grad and loaded["w"].tolist() == arrays[0].tolist()
    assert loaded["scalar"].shape == (1,)
    np.testing.assert_array_equal(loaded["array"], np.arange(4.0))
    assert loaded[3] == (0.5, None, [True])


def test_the_new_format_keeps_every_shape(tmp_path):
    obj = [ta.tensor(1.5), ta.zeros(0), ta.zeros(2, 0, 3), ta.ones(1, 1, 1)]
    ta.save(obj, tmp_path / "shapes.pth")
    assert [t.shape for t in ta.load(tmp_path / "shapes.pth")] == [(), (0,), (2, 0, 3), (1, 1, 1)]
