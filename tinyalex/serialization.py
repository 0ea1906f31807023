"""``tinyalex.save`` and ``tinyalex.load``: torch.save/torch.load for state dicts, tensors
and the plain containers around them, in a file format of tinyalex's own that loading can
never turn into code execution (no pickle, ever). The format is in docs/save_format.md:

    a ZIP archive (stored, not compressed) holding
      manifest.json    {"format": "tinyalex.save", "version": 1, "root": NODE}
      arrays/0.npy     one NumPy .npy file per tensor or array, written and read with
      arrays/1.npy     allow_pickle=False (so never an object array)
      ...

NODE is a JSON object with exactly one key naming its type:

    {"tensor": {"array": i, "device": "cpu"|"cuda", "requires_grad": bool}}
    {"ndarray": i}
    {"dict": [[KEY_NODE, NODE], ...], "ordered": bool}   (OrderedDict when ordered)
    {"list": [NODE, ...]}     {"tuple": [NODE, ...]}
    {"str": s}  {"int": n}  {"float": x}  {"bool": b}  {"none": null}

Anything else (a Module, a function, a NumPy object array) is refused when saving, with
the path of the value in the error, rather than written in a form that needs pickle.
"""
import collections
import io
import json
import numbers
import os
import zipfile

import numpy as np

from tinyalex import device as _device
from tinyalex.errors import ValueRuntimeError
from tinyalex.tensor import Tensor

FORMAT, VERSION = "tinyalex.save", 1
_MANIFEST = "manifest.json"


class _Writer:
    def __init__(self):
        self.arrays = []

    def node(self, obj, path):
        if isinstance(obj, Tensor):
            return {"tensor": {"array": self._array(obj.array, path), "device": str(obj.device.type),
                               "requires_grad": bool(obj.requires_grad)}}
        if _device.device_of(obj) == "cuda" or isinstance(obj, np.ndarray):
            return {"ndarray": self._array(obj, path)}
        if isinstance(obj, dict):
            return {"dict": [[self.node(k, f"{path} key {k!r}"), self.node(v, f"{path}[{k!r}]")]
                             for k, v in obj.items()],
                    "ordered": isinstance(obj, collections.OrderedDict)}
        if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
            return {type(obj).__name__: [self.node(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
        if obj is None:
            return {"none": None}
        if isinstance(obj, (bool, np.bool_)):
            return {"bool": bool(obj)}
        if isinstance(obj, numbers.Integral):
            return {"int": int(obj)}
        if isinstance(obj, numbers.Real):
            return {"float": float(obj)}
        if isinstance(obj, str):
            return {"str": obj}
        raise TypeError(f"save: {path}: cannot save a {type(obj).__name__}; expected Tensors, "
                        "arrays, dicts, lists, tuples, str, int, float, bool or None "
                        "(save model.state_dict(), not the model)")

    def _array(self, array, path):
        array = np.ascontiguousarray(_device.to_device(array, "cpu"))
        if array.dtype.hasobject:
            raise TypeError(f"save: {path}: cannot save an array of Python objects")
        self.arrays.append(array)
        return len(self.arrays) - 1


def save(obj, f):
    """Write obj (a state_dict, a Tensor, or dicts/lists/tuples of them and of plain
    numbers and strings) to f, a path or a binary file object. The path is used as given
    (no extension is added), so ``tinyalex.save(net.state_dict(), './cifar_net.pth')`` works.
    CUDA tensors are copied to the host; their device is recorded for :func:`load`."""
    if not isinstance(f, (str, os.PathLike)) and not hasattr(f, "write"):   # torch: AttributeError
        raise AttributeError(f"save: f: expected a path or a file object with a 'write' method,"
                             f" got {type(f).__name__}")
    writer = _Writer()
    root = writer.node(obj, "obj")
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "root": root})
    if isinstance(f, (str, os.PathLike)):
        parent = os.path.dirname(os.path.abspath(f))
        if not os.path.isdir(parent):                              # torch: RuntimeError
            raise ValueRuntimeError(f"save: f: expected a path in an existing folder, got {os.fspath(f)!r}"
                                    f" (the parent directory {parent} does not exist)")
        if os.path.isdir(f):
            raise ValueRuntimeError(f"save: f: expected a file path, got the directory {os.fspath(f)!r}")
        tmp = f"{os.fspath(f)}.tmp"
        try:
            with open(tmp, "wb") as handle:
                _write(handle, manifest, writer.arrays)
            os.replace(tmp, f)  # a crash mid-write leaves any previous file intact
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        _write(f, manifest, writer.arrays)


def _write(handle, manifest, arrays):
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(_MANIFEST, manifest)
        for i, array in enumerate(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            archive.writestr(f"arrays/{i}.npy", buffer.getvalue())


def load(f, map_location=None, weights_only=True, **kwargs):
    """Read what :func:`save` wrote. Tensors return to the device they were saved from, or
    to ``map_location`` ('cpu', 'cuda', a tinyalex.device) when given. ``weights_only`` is
    accepted for torch compatibility and always holds: nothing but tensors, arrays and
    plain containers can come out of the file. A file written by torch.save (a pickle)
    is refused with ValueError: export its state_dict to .npz, or load it in torch and
    pass the tensors to ``load_state_dict``."""
    if kwargs:
        raise TypeError(f"load: unexpected keyword argument {sorted(kwargs)[0]!r}")
    if map_location is not None and not isinstance(map_location, str):
        raise TypeError(f"load: map_location: expected a device such as 'cpu' or 'cuda', got "
                        f"{type(map_location).__name__}")
    try:
        location = None if map_location is None else _device.parse_device(map_location)
    except ValueRuntimeError as exc:
        raise ValueRuntimeError(f"load: map_location: {exc}") from None
    if not isinstance(f, (str, os.PathLike)) and not (hasattr(f, "read") and hasattr(f, "seek")):
        raise AttributeError(f"load: f: expected a path or a seekable file object with 'read' and"
                             f" 'seek' methods, got {type(f).__name__}")   # torch: AttributeError
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "<file>")
    try:
        archive = zipfile.ZipFile(f)
    except zipfile.BadZipFile:
        raise ValueError(f"load: {name}: not a tinyalex.save file (not a ZIP archive; a torch "
                         "file of the legacy format, or not a checkpoint)") from None
    with archive:
        names = set(archive.namelist())
        if _MANIFEST not in names:
            torch_file = any(n.endswith("data.pkl") for n in names)
            raise ValueError(f"load: {name}: not a tinyalex.save file ("
                             + ("it was written by torch.save, which is a pickle that tinyalex "
                                "never loads; save the state_dict's tensors with tinyalex or "
                                "as .npz" if torch_file else f"no {_MANIFEST}") + ")")
        manifest = json.loads(archive.read(_MANIFEST))
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(f"load: {name}: expected format {FORMAT!r} version {VERSION}, got "
                             f"{manifest.get('format')!r} version {manifest.get('version')!r}")

        def array(i):
            with archive.open(f"arrays/{int(i)}.npy") as member:
                return np.lib.format.read_array(member, allow_pickle=False)

        return _Reader(array, location, name).node(manifest["root"])


class _Reader:
    def __init__(self, array, location, name):
        self.array, self.location, self.name = array, location, name

    def node(self, node):
        if not isinstance(node, dict) or len(node) not in (1, 2):
            raise ValueError(f"load: {self.name}: malformed manifest node {node!r}")
        kind = next(iter(node))
        value = node[kind]
        if kind == "tensor":
            device = self.location or value["device"]
            if device == "cuda" and not _device.cuda_is_available():
                raise RuntimeError(f"load: {self.name} holds CUDA tensors and CUDA is not "
                                   "available here; pass map_location='cpu'")
            array = _device.to_device(self.array(value["array"]), device)
            return Tensor(array, requires_grad=bool(value["requires_grad"]))
        if kind == "ndarray":
            return self.array(value)
        if kind == "dict":
            items = [(self.node(k), self.node(v)) for k, v in value]
            return collections.OrderedDict(items) if node.get("ordered") else dict(items)
        if kind in ("list", "tuple"):
            items = [self.node(v) for v in value]
            return items if kind == "list" else tuple(items)
        if kind in ("str", "int", "float", "bool", "none"):
            return value
        raise ValueError(f"load: {self.name}: unknown manifest node type {kind!r}")
