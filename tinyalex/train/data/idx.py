"""The IDX file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).

An IDX file is a tiny header followed by a dense big-endian array::

    bytes 0-1   0x00 0x00
    byte  2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                           0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension, big-endian uint32
    the rest    prod(sizes) items, row-major (C order), big-endian

So the images file has magic 0x00000803 (uint8, 3-D: N, 28, 28) and the labels file
0x00000801 (uint8, 1-D: N). Files are often shipped gzipped; :func:`read_idx` reads
either form, recognising gzip by its own magic bytes (0x1F 0x8B) rather than by the name.
"""
import gzip
import math
import os
import struct
import zlib

import numpy as np

#: IDX type code -> big-endian NumPy dtype. 0x0A is unassigned in the format.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path, ndim=None):
    """Read an IDX file (raw or gzipped) into a native-endian, writable NumPy array.

    ndim: if given, the number of dimensions the file must declare (3 for images,
    1 for labels).

    Every inconsistency raises ValueError naming the file and saying what was expected
    and what was found: a corrupt or truncated gzip stream, a bad magic number, an
    unknown type code, a short header, and a payload whose length differs from
    prod(sizes) * itemsize (so a truncated download never loads as fewer samples).
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file: expected a 4-byte magic number,"
                         f" found {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    code, file_ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{path}: bad IDX magic number 0x{magic:08X}: expected 0x0000TTDD"
                         f" with type code TT in {{{codes}}}")
    if file_ndim == 0 or (ndim is not None and file_ndim != ndim):
        wanted = f"{ndim}" if ndim is not None else "at least 1"
        raise ValueError(f"{path}: expected an IDX file with {wanted} dimension(s),"
                         f" found {file_ndim} (magic 0x{magic:08X})")

    header_len = 4 + 4 * file_ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header: expected {header_len} bytes,"
                         f" found {len(raw)}")
    shape = struct.unpack(f">{file_ndim}I", raw[4:header_len])
    dtype = IDX_DTYPES[code]
    count = math.prod(shape)
    expected, found = count * dtype.itemsize, len(raw) - header_len
    if found != expected:
        raise ValueError(f"{path}: IDX header declares shape {shape} of {dtype.name},"
                         f" i.e. {expected} payload bytes, but found {found}"
                         " (the file is truncated or corrupt)")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-endian, writable copy


def write_idx(path, array):
    """Write `array` as an uncompressed IDX file (the inverse of :func:`read_idx`).

    Useful for building small test fixtures; the dtype must be one IDX can store.
    """
    array = np.asarray(array)
    by_kind = {dtype.newbyteorder("=").str: code for code, dtype in IDX_DTYPES.items()}
    code = by_kind.get(array.dtype.newbyteorder("=").str)
    if code is None:
        names = ", ".join(d.newbyteorder("=").name for d in IDX_DTYPES.values())
        raise TypeError(f"array: expected a dtype in {{{names}}}, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array: expected 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, IDX_DTYPES[code]).tobytes())


def _read_bytes(path):
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip stream:"
                         f" {type(exc).__name__}: {exc}") from exc
