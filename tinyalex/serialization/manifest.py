"""Read the ZIP+JSON format that ``tinyalex.save`` wrote before it wrote torch's format:

    a ZIP archive (stored, not compressed) holding
      manifest.json    {"format": "tinyalex.save", "version": 1, "root": NODE}
      arrays/0.npy     one NumPy .npy file per tensor or array, read with
      arrays/1.npy     allow_pickle=False (so never an object array)
      ...

NODE is a JSON object with exactly one key naming its type:

    {"tensor": {"array": i, "device": "cpu"|"cuda", "requires_grad": bool}}
    {"ndarray": i}
    {"dict": [[KEY_NODE, NODE], ...], "ordered": bool}   (OrderedDict when ordered)
    {"list": [NODE, ...]}     {"tuple": [NODE, ...]}
    {"str": s}  {"int": n}  {"float": x}  {"bool": b}  {"none": null}

That writer stored a 0-d tensor as shape (1,); it comes back so.
"""
import collections
import json

import numpy as np

from tinyalex import device as _device
from tinyalex.tensor import Tensor

FORMAT, VERSION = "tinyalex.save", 1
MANIFEST = "manifest.json"


def read(archive, name, location):
    manifest = json.loads(archive.read(MANIFEST))
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
