"""``tinyalex.save`` and ``tinyalex.load``: torch.save/torch.load for state dicts, tensors
and the plain containers around them, in the file format torch.save writes (torch 2.x's
ZIP archive of ``data.pkl`` and ``data/<key>`` storages), written and read without torch.
Loading never runs code from the file: data.pkl is read by an unpickler that resolves
only the globals of a weights-only file (torch_reader.py), as torch.load(weights_only=True)
does. Files of tinyalex's earlier ZIP+JSON format (manifest.py) still load.
``save_safetensors`` / ``load_safetensors`` write and read the safetensors format through
the ``safetensors`` package (tinyalex[safetensors]). The formats: docs/save_format.md.
"""
import os
import re
import zipfile

import numpy as np

from tinyalex import device as _device
from tinyalex.errors import UnpicklingValueError, ValueRuntimeError
from tinyalex.serialization import manifest, torch_reader, torch_writer
from tinyalex.tensor import Tensor

#: the start of a file of torch's legacy format (torch < 1.6, or
#: _use_new_zipfile_serialization=False): PROTO 2, then the magic number 0x1950a86a20f9469cfc6c
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def save(obj, f):
    """Write obj (a state_dict, a Tensor, or dicts/lists/tuples of them and of plain
    numbers and strings) to f, a path or a binary file object, as torch.save writes it:
    ``torch.load(f, weights_only=True)`` reads it. The path is used as given (no extension
    is added), so ``tinyalex.save(net.state_dict(), './cifar_net.pth')`` works. CUDA
    tensors are copied to the host and recorded as CPU tensors; a NumPy array is written
    as a tensor (and loads as one)."""
    if not isinstance(f, (str, os.PathLike)) and not hasattr(f, "write"):   # torch: AttributeError
        raise AttributeError(f"save: f: expected a path or a file object with a 'write' method,"
                             f" got {type(f).__name__}")
    if not isinstance(f, (str, os.PathLike)):
        torch_writer.write(f, torch_writer.pickled(obj), "archive")
        return
    parent = os.path.dirname(os.path.abspath(f))
    if not os.path.isdir(parent):                                  # torch: RuntimeError
        raise ValueRuntimeError(f"save: f: expected a path in an existing folder, got {os.fspath(f)!r}"
                                f" (the parent directory {parent} does not exist)")
    if os.path.isdir(f):
        raise ValueRuntimeError(f"save: f: expected a file path, got the directory {os.fspath(f)!r}")
    pickle = torch_writer.pickled(obj)   # refuses what cannot be saved before any file is touched
    stem = os.path.splitext(os.path.basename(os.fspath(f)))[0]
    tmp = f"{os.fspath(f)}.tmp"
    try:
        with open(tmp, "wb") as handle:
            torch_writer.write(handle, pickle, stem if re.fullmatch(r"[\w.-]+", stem) else "archive")
        os.replace(tmp, f)  # a crash mid-write leaves any previous file intact
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(f, map_location=None, weights_only=True, **kwargs):
    """Read a file written by torch.save (torch 2.x) or by :func:`save` into tinyalex
    tensors. Tensors go to ``map_location`` ('cpu', 'cuda', a tinyalex.device) when given,
    else to the device the file names ('cpu' for every file tinyalex writes).
    ``weights_only`` is accepted for torch compatibility and always holds: a global other
    than a tensor's is refused with an error naming it (a pickle.UnpicklingError and a
    ValueError), before anything in the file is called."""
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
    if isinstance(f, (str, os.PathLike)):
        with open(f, "rb") as handle:
            return _load(handle, name, location)
    return _load(f, name, location)


def _load(handle, name, location):
    start = handle.tell()
    head = handle.read(len(LEGACY_MAGIC))
    handle.seek(start)
    if head == LEGACY_MAGIC:
        raise UnpicklingValueError(f"load: {name}: a file of torch's legacy format (torch < 1.6, or "
                                   "_use_new_zipfile_serialization=False), which tinyalex does not "
                                   "read; save it again with torch.save in torch >= 1.6")
    try:
        archive = zipfile.ZipFile(handle)
    except zipfile.BadZipFile:
        if head.startswith(b"PK"):
            raise ValueRuntimeError(f"load: {name}: a truncated or damaged ZIP archive (no central "
                                    "directory at its end); expected a whole torch.save file") from None
        raise UnpicklingValueError(f"load: {name}: expected a file written by torch.save or "
                                   f"tinyalex.save (a ZIP archive), got a file starting {head[:8]!r}") from None
    with archive:
        names = archive.namelist()
        try:
            if manifest.MANIFEST in names:
                return manifest.read(archive, name, location)
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1 or f"{next(iter(tops))}/data.pkl" not in names:
                raise UnpicklingValueError(
                    f"load: {name}: expected a torch.save archive (one top folder holding data.pkl)"
                    f" or a tinyalex {manifest.MANIFEST}, got the records {sorted(names)[:5]}")
            return torch_reader.read(archive, next(iter(tops)), name, location)
        except (zipfile.BadZipFile, EOFError) as exc:   # a bad CRC, a record cut short
            raise ValueRuntimeError(f"load: {name}: a damaged ZIP archive ({exc}); expected a "
                                    "whole torch.save file") from None


def save_safetensors(state_dict, path):
    """Write a state dict (names -> Tensors or arrays) as safetensors, the format for
    sharing weights without pickle, with the safetensors package's NumPy API
    (pip install tinyalex[safetensors]). ``safetensors.torch.load_file`` reads it."""
    numpy_api = _safetensors("save_safetensors")
    if not isinstance(state_dict, dict):
        raise TypeError(f"save_safetensors: state_dict: expected a dict of names to tensors, got "
                        f"{type(state_dict).__name__}")
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save_safetensors: state_dict: expected str keys, got {key!r}")
        array = value.array if isinstance(value, Tensor) else value
        if not (isinstance(array, np.ndarray) or _device.device_of(array) == "cuda"):
            raise TypeError(f"save_safetensors: state_dict[{key!r}]: expected a Tensor or an array, "
                            f"got {type(value).__name__}")
        arrays[key] = np.asarray(_device.to_device(array, "cpu"), order="C")   # 0-d stays 0-d
    numpy_api.save_file(arrays, os.fspath(path))


def load_safetensors(path, device=None):
    """A safetensors file as a dict of names to Tensors (on `device`, default CPU), read
    with the safetensors package's NumPy API. Only tinyalex's dtypes (float32, float64,
    int64, bool) are accepted."""
    numpy_api = _safetensors("load_safetensors")
    where = "cpu" if device is None else _device.parse_device(device)
    arrays = numpy_api.load_file(os.fspath(path))
    state = {}
    for key, array in arrays.items():
        if array.dtype not in torch_writer.STORAGE_OF:
            raise TypeError(f"load_safetensors: {os.fspath(path)}: {key!r} has dtype {array.dtype}; "
                            "tinyalex has float32, float64, int64 and bool")
        state[key] = Tensor(_device.to_device(array, where))
    return state


def _safetensors(caller):
    try:
        from safetensors import numpy as numpy_api
    except ImportError as exc:
        raise ImportError(f"{caller}: needs the safetensors package; install it with "
                          "pip install 'tinyalex[safetensors]'") from exc
    return numpy_api
