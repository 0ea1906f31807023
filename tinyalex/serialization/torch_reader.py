"""Read what torch.save writes (torch 2.x's ZIP format) into tinyalex tensors, without torch.

``data.pkl`` goes through :class:`WeightsOnlyUnpickler`, which resolves only the globals a
weights-only file needs, as ``torch.load(weights_only=True)`` does: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and the ``torch.*Storage`` of
tinyalex's dtypes. Any other global is refused before anything is called, so a file can
only produce tensors and plain containers, numbers and strings. The callables it hands to
the pickle are objects of this module that record their arguments; the tensors are made
after unpickling, from checked records.
"""
import collections
import pickle

import numpy as np

from tinyalex import device as _device
from tinyalex.errors import UnpicklingValueError, ValueRuntimeError
from tinyalex.serialization.torch_writer import STORAGE_OF
from tinyalex.tensor import Tensor

DTYPE_OF = {f"torch.{name}": dtype for dtype, name in STORAGE_OF.items()}
#: storage classes of torch's other dtypes: named in the refusal so the fix is plain
OTHER_STORAGES = {"HalfStorage": "float16", "BFloat16Storage": "bfloat16", "IntStorage": "int32",
                  "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
                  "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128"}
PLAIN = (str, bytes, int, float, bool, type(None))
HOLDS = "a weights-only file holds tensors, dicts, lists, tuples, numbers and strings"


class _Inert:
    """An object the pickle may hold but never change: BUILD on it is refused."""
    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"refused BUILD (setting state) on {self!r}")

    def __reduce__(self):
        raise TypeError(f"{self!r} is a tinyalex.load placeholder, not a value")


class _StorageType(_Inert):
    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"<{self.name}>"


class _Storage(_Inert):
    __slots__ = ("array", "location")

    def __init__(self, array, location):
        self.array, self.location = array, location

    def __repr__(self):
        return f"<storage of {self.array.size} {self.array.dtype}>"


class _TensorRecord(_Inert):
    __slots__ = ("storage", "offset", "size", "stride", "requires_grad")

    def __init__(self, storage, offset, size, stride, requires_grad):
        self.storage, self.offset, self.size = storage, offset, size
        self.stride, self.requires_grad = stride, requires_grad

    def __repr__(self):
        return f"<tensor {self.size}>"


class _Rebuild(_Inert):
    """torch._utils._rebuild_tensor_v2 / _rebuild_parameter, as records."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<torch._utils.{self.name}>"

    def __call__(self, *args):
        if self.name == "_rebuild_parameter":               # (data, requires_grad, backward_hooks)
            if len(args) != 3 or not isinstance(args[0], _TensorRecord) or not isinstance(args[1], bool):
                raise pickle.UnpicklingError(f"{self!r}: expected (tensor, requires_grad, hooks), got {args!r}")
            data, requires_grad = args[:2]
            return _TensorRecord(data.storage, data.offset, data.size, data.stride, requires_grad)
        # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if len(args) not in (6, 7):
            raise pickle.UnpicklingError(f"{self!r}: expected 6 or 7 arguments, got {len(args)}")
        storage, offset, size, stride, requires_grad = args[:5]
        ints = lambda t: isinstance(t, tuple) and all(type(n) is int and n >= 0 for n in t)  # noqa: E731
        if not (isinstance(storage, _Storage) and type(offset) is int and offset >= 0 and ints(size)
                and ints(stride) and len(size) == len(stride) and isinstance(requires_grad, bool)):
            raise pickle.UnpicklingError(f"{self!r}: expected (storage, offset, size, stride, "
                                         f"requires_grad, ...), got {args[:5]!r}")
        end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if 0 not in size and end > storage.array.size:
            raise pickle.UnpicklingError(f"a tensor of size {size}, stride {stride} at offset "
                                         f"{offset} reaches past its storage of {storage.array.size} elements")
        return _TensorRecord(storage, offset, size, stride, requires_grad)


class WeightsOnlyUnpickler(pickle.Unpickler):
    """find_class resolves exactly the globals of a weights-only file; persistent_load reads
    the storage records of the archive. `records` maps a storage key to its bytes."""

    def __init__(self, file, records, big_endian):
        super().__init__(file)
        self.records, self.big_endian, self.storages = records, big_endian, {}

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full == "collections.OrderedDict":
            return collections.OrderedDict
        if full in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"):
            return _Rebuild(name)
        if full in DTYPE_OF:
            return _StorageType(full, DTYPE_OF[full])
        if module == "torch" and name in OTHER_STORAGES:
            raise UnpicklingValueError(f"refused global {full!r}: tensors of dtype "
                                       f"{OTHER_STORAGES[name]}; tinyalex has float32, float64, int64 "
                                       "and bool (convert them in torch, e.g. with .float())")
        raise UnpicklingValueError(f"refused global {full!r} (nothing in the file was run): {HOLDS}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[3], str) and type(pid[4]) is int):
            raise UnpicklingValueError(f"refused persistent id {pid!r}: expected ('storage', "
                                       "torch.<Type>Storage, key, location, numel)")
        kind, key, location, numel = pid[1:]
        if key not in self.storages:
            data = self.records(key)
            dtype = kind.dtype.newbyteorder(">" if self.big_endian else "<")
            if len(data) != numel * dtype.itemsize:
                raise UnpicklingValueError(f"storage data/{key}: expected {numel} elements of "
                                           f"{kind.dtype} ({numel * dtype.itemsize} bytes), got {len(data)} bytes")
            self.storages[key] = _Storage(np.frombuffer(data, dtype).astype(kind.dtype), location)
        return self.storages[key]


class _Tensors:
    """The unpickled object with each tensor record made a Tensor, every container rebuilt
    as a plain dict/OrderedDict/list/tuple, and anything else refused."""

    def __init__(self, location, name):
        self.location, self.name, self.done = location, name, {}

    def value(self, obj, path="obj"):
        seen = self.done.get(id(obj))
        if seen is not None:
            return seen[1]
        if isinstance(obj, _TensorRecord):
            result = self.tensor(obj, path)
        elif type(obj) in PLAIN:
            return obj
        elif type(obj) in (dict, collections.OrderedDict):
            result = type(obj)()
            self.done[id(obj)] = (obj, result)
            for key, value in dict.items(obj):
                if type(key) not in PLAIN and type(key) is not tuple:
                    raise UnpicklingValueError(f"{path}: refused a dict key of type {type(key).__name__}: {HOLDS}")
                result[self.value(key, path)] = self.value(value, f"{path}[{key!r}]")
            attributes = vars(obj) if type(obj) is collections.OrderedDict else {}
            if set(attributes) - {"_metadata"}:
                raise UnpicklingValueError(f"{path}: refused attributes {sorted(attributes)} set on "
                                           "an OrderedDict (torch sets only _metadata)")
            if "_metadata" in attributes:
                result._metadata = self.value(attributes["_metadata"], f"{path}._metadata")
            return result
        elif type(obj) is list:
            result = []
            self.done[id(obj)] = (obj, result)
            result.extend(self.value(v, f"{path}[{i}]") for i, v in enumerate(obj))
            return result
        elif type(obj) is tuple:
            result = tuple(self.value(v, f"{path}[{i}]") for i, v in enumerate(obj))
        else:
            what = repr(obj) if isinstance(obj, _Inert) else f"a {type(obj).__name__}"
            raise UnpicklingValueError(f"{path}: refused {what}: {HOLDS}")
        self.done[id(obj)] = (obj, result)
        return result

    def tensor(self, record, path):
        storage = record.storage.array
        if 0 in record.size:
            array = np.empty(record.size, storage.dtype)
        else:
            view = np.lib.stride_tricks.as_strided(
                storage[record.offset:], record.size, tuple(s * storage.itemsize for s in record.stride),
                writeable=False)
            array = np.array(view, order="C")
        device = self.location or ("cuda" if record.storage.location.startswith("cuda") else "cpu")
        if device == "cuda" and not _device.cuda_is_available():
            raise ValueRuntimeError(f"load: {self.name} holds CUDA tensors and CUDA is not "
                                    "available here; pass map_location='cpu'")
        try:
            return Tensor(_device.to_device(array, device), requires_grad=record.requires_grad)
        except (TypeError, ValueError) as exc:
            raise UnpicklingValueError(f"{path}: {exc}") from None


def read(archive, top, name, location):
    """The object in the torch.save archive `archive` (a zipfile.ZipFile whose records sit
    under the folder `top`), tensors on `location` or where they were saved."""
    names = set(archive.namelist())
    byteorder = archive.read(f"{top}/byteorder").decode("ascii", "replace") if f"{top}/byteorder" in names else "little"
    if byteorder not in ("little", "big"):
        raise UnpicklingValueError(f"load: {name}: byteorder record: expected 'little' or 'big', got {byteorder!r}")

    def record(key):
        path = f"{top}/data/{key}"
        if path not in names:
            raise UnpicklingValueError(f"the pickle refers to storage {key!r}, and there is no record {path}")
        return archive.read(path)

    with archive.open(f"{top}/data.pkl") as data:
        unpickler = WeightsOnlyUnpickler(data, record, byteorder == "big")
        try:
            obj = unpickler.load()
        except UnpicklingValueError as exc:
            raise UnpicklingValueError(f"load: {name}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
                IndexError, KeyError, MemoryError) as exc:
            raise UnpicklingValueError(f"load: {name}: data.pkl cannot be read as a weights-only "
                                       f"pickle: {type(exc).__name__}: {exc}") from None
    try:
        return _Tensors(location, name).value(obj)
    except UnpicklingValueError as exc:
        raise UnpicklingValueError(f"load: {name}: {exc}") from None
    except RecursionError:
        raise UnpicklingValueError(f"load: {name}: containers nested too deeply") from None
