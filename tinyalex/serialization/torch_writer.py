"""Write the file torch.save writes (torch 2.x's ZIP format), without torch.

``data.pkl`` is a protocol-2 pickle that this module emits opcode by opcode, so the only
globals in it are the ones named here (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` of each dtype) and nothing
is imported to name them. Each tensor's values go to their own record ``data/<key>``,
contiguous and little-endian, 64-byte aligned in the archive as torch aligns them.
"""
import collections
import hashlib
import io
import numbers
import struct
import zipfile

import numpy as np

from tinyalex import device as _device
from tinyalex.tensor import Tensor

#: tinyalex's dtypes and the torch storage class that holds each (and its reader's table)
STORAGE_OF = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
              np.dtype(np.int64): "LongStorage", np.dtype(np.bool_): "BoolStorage"}
ALIGNMENT = 64
#: what torch 2.13 writes beside data.pkl and the storages: (record, contents), in its order
HEADER_RECORDS = ((".format_version", b"1"), (".storage_alignment", b"64"), ("byteorder", b"little"))
VERSION = b"3\n"


class _Pickle:
    """The opcodes of pickle protocol 2 that a weights-only file uses."""

    def __init__(self):
        self.out = io.BytesIO()
        self.memo = {}        # (module, name) of a global -> its memo slot
        self.storages = []    # contiguous little-endian arrays, storage key = index
        self.keys = {}        # id(array) -> storage key: one storage for a tensor saved twice
        self.keep = []        # the arrays behind self.keys, so their ids stay theirs

    def emit(self, *chunks):
        for chunk in chunks:
            self.out.write(chunk)

    def global_(self, module, name):
        slot = self.memo.get((module, name))
        if slot is not None:
            self.emit(b"h" + bytes([slot]) if slot < 256 else b"j" + struct.pack("<I", slot))
            return
        slot = self.memo[(module, name)] = len(self.memo)
        self.emit(f"c{module}\n{name}\n".encode("ascii"),
                  b"q" + bytes([slot]) if slot < 256 else b"r" + struct.pack("<I", slot))

    def int_(self, value):
        if 0 <= value < 256:
            self.emit(b"K" + bytes([value]))
        elif 0 <= value < 65536:
            self.emit(b"M" + struct.pack("<H", value))
        elif -2 ** 31 <= value < 2 ** 31:
            self.emit(b"J" + struct.pack("<i", value))
        else:
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.emit(b"\x8a" + bytes([len(data)]) if len(data) < 256
                      else b"\x8b" + struct.pack("<I", len(data)), data)

    def str_(self, value):
        data = value.encode("utf-8", "surrogatepass")
        self.emit(b"X" + struct.pack("<I", len(data)), data)

    def tuple_(self, items, write):
        if not items:
            self.emit(b")")
            return
        if len(items) > 3:
            self.emit(b"(")
        for item in items:
            write(item)
        self.emit(b"t" if len(items) > 3 else b"\x85\x86\x87"[len(items) - 1:len(items)])

    def tensor(self, array, requires_grad):
        """torch._utils._rebuild_tensor_v2(storage, 0, size, stride, requires_grad, OrderedDict())
        with the storage as the persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel)."""
        key = self.keys.get(id(array))
        if key is None:
            key = self.keys[id(array)] = len(self.storages)
            self.keep.append(array)
            self.storages.append(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")))
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.emit(b"(", b"(")
        self.str_("storage")
        self.global_("torch", STORAGE_OF[array.dtype])
        self.str_(str(key))
        self.str_("cpu")
        self.int_(array.size)
        self.emit(b"t", b"Q")                                       # TUPLE, BINPERSID
        self.int_(0)
        self.tuple_(array.shape, self.int_)
        self.tuple_(contiguous_strides(array.shape), self.int_)
        self.emit(b"\x88" if requires_grad else b"\x89")
        self.global_("collections", "OrderedDict")
        self.emit(b")R", b"t", b"R")                                # OrderedDict(), args, REDUCE


def contiguous_strides(shape):
    """Strides (in elements) of a contiguous tensor, as torch computes them: a 0-size
    dimension counts as 1, so shape (0, 3) has strides (3, 1)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


class _Writer:
    def __init__(self):
        self.pickle = _Pickle()

    def value(self, obj, path):
        p = self.pickle
        if isinstance(obj, Tensor):
            p.tensor(self._array(obj.array, path), bool(obj.requires_grad))
        elif _device.device_of(obj) == "cuda" or isinstance(obj, np.ndarray):
            p.tensor(self._array(obj, path), False)
        elif isinstance(obj, dict):
            if isinstance(obj, collections.OrderedDict):
                p.global_("collections", "OrderedDict")
                p.emit(b")R")
            else:
                p.emit(b"}")
            if obj:
                p.emit(b"(")
                for k, v in obj.items():
                    self.value(k, f"{path} key {k!r}")
                    self.value(v, f"{path}[{k!r}]")
                p.emit(b"u")                                        # SETITEMS
        elif isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
            items = [lambda v=v, i=i: self.value(v, f"{path}[{i}]") for i, v in enumerate(obj)]
            if type(obj) is tuple:
                p.tuple_(items, lambda write: write())
            else:
                p.emit(b"]")
                if items:
                    p.emit(b"(")
                    for write in items:
                        write()
                    p.emit(b"e")                                    # APPENDS
        elif obj is None:
            p.emit(b"N")
        elif isinstance(obj, (bool, np.bool_)):
            p.emit(b"\x88" if obj else b"\x89")
        elif isinstance(obj, numbers.Integral):
            p.int_(int(obj))
        elif isinstance(obj, numbers.Real):
            p.emit(b"G" + struct.pack(">d", float(obj)))
        elif isinstance(obj, str):
            p.str_(obj)
        else:
            raise TypeError(f"save: {path}: cannot save a {type(obj).__name__}; expected Tensors, "
                            "arrays, dicts, lists, tuples, str, int, float, bool or None "
                            "(save model.state_dict(), not the model)")

    def _array(self, array, path):
        array = _device.to_device(array, "cpu")
        if array.dtype.hasobject:
            raise TypeError(f"save: {path}: cannot save an array of Python objects")
        if array.dtype.newbyteorder("=") not in STORAGE_OF:
            raise TypeError(f"save: {path}: cannot save dtype {array.dtype}; expected float32, "
                            "float64, int64 or bool, the dtypes tinyalex has")
        return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def pickled(obj):
    """data.pkl for obj, and the storages it refers to by key (their index)."""
    writer = _Writer()
    writer.pickle.emit(b"\x80\x02")                                 # PROTO 2
    writer.value(obj, "obj")
    writer.pickle.emit(b".")                                        # STOP
    return writer.pickle.out.getvalue(), writer.pickle.storages


def write(handle, pickle, archive_name):
    """Write `pickle` (what :func:`pickled` gives) to the binary file `handle` as torch.save
    would, under the top folder `archive_name` (torch uses the file's name without its
    extension)."""
    data, storages = pickle
    start = handle.tell() if handle.seekable() else 0
    serialization_id = int(hashlib.sha1(data).hexdigest(), 16) % 10 ** 40
    records = [("data.pkl", data), *HEADER_RECORDS]
    records += [(f"data/{key}", array) for key, array in enumerate(storages)]
    records += [("version", VERSION), (".data/serialization_id", f"{serialization_id:040d}".encode())]
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for name, contents in records:
            info = zipfile.ZipInfo(f"{archive_name}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            size = contents.nbytes if isinstance(contents, np.ndarray) else len(contents)
            info.file_size = size
            zip64 = size * 1.05 > zipfile.ZIP64_LIMIT                 # zipfile's own rule
            header = 30 + len(info.filename.encode("utf-8")) + (20 if zip64 else 0)
            offset = handle.tell() - start if handle.seekable() else None
            if offset is not None:                                  # torch's "FB" padding field
                pad = -(offset + header + 4) % ALIGNMENT
                info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            with archive.open(info, "w", force_zip64=zip64) as member:
                member.write(contents.reshape(-1).view(np.uint8).data if isinstance(contents, np.ndarray)
                             else contents)
