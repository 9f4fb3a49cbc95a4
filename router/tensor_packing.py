"""Tensor data in the V2 protocol's raw form: packing JSON data into the raw
little-endian bytes the runtimes take, and unpacking a runtime's raw output
back into JSON data.

Tensors travel through the mesh as raw bytes, as ``tritonclient.grpc``
sends them (``raw_input_contents`` / ``raw_output_contents``), whichever
protocol the caller spoke. The REST edge (:mod:`router.v2json`) and the
protobuf conversion in :mod:`router.rest` share one definition of that form,
here: BYTES elements are each a 4-byte little-endian length and the bytes;
BOOL one byte each; BF16 the upper 16 bits of a float32, rounded to nearest
even; every other datatype its little-endian fixed-size numbers, row-major.

Pure (numpy only). A value that does not fit raises :class:`ValueError`
naming the problem; the callers turn it into the error their caller gets.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# Raw layout of each fixed-size datatype (BF16: the raw 16 bits).
_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
}

DATATYPES: tuple[str, ...] = (*_DTYPES, "BYTES")
"""Every V2 tensor datatype (BF16 is Triton's addition)."""

CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed ``InferTensorContents`` field of each datatype (FP16 and BF16 have
none: they travel raw only)."""


class NotText(ValueError):
    """BYTES elements that are not UTF-8 cannot be written as JSON strings."""


def element_count(shape: Sequence[int]) -> int:
    """Elements of a tensor of ``shape`` (1 for a scalar, ``()``)."""
    return math.prod(shape)


def _flatten_bytes(data: Any, out: list[bytes]) -> None:
    if isinstance(data, list):
        for item in data:
            _flatten_bytes(item, out)
    elif isinstance(data, str):
        out.append(data.encode("utf-8", "surrogatepass"))
    elif isinstance(data, bytes):
        out.append(data)
    else:
        raise ValueError(f"BYTES data must be strings, got {type(data).__name__} {data!r}")


def _bf16_bits(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """bfloat16 bit patterns of float32 values, rounded to nearest even."""
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    out[np.isnan(values)] = 0x7FC0
    return out


def _integer_range(datatype: str) -> tuple[int, int]:
    info = np.iinfo(_DTYPES[datatype])
    return int(info.min), int(info.max)


def pack(datatype: str, data: Any, shape: Sequence[int]) -> bytes:
    """Raw bytes of ``data``: JSON data (a flat or nested list) or the values of
    a typed ``contents`` field. Raises :class:`ValueError` naming the problem."""
    count = element_count(shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        _flatten_bytes(data, items)
        if len(items) != count:
            raise ValueError(f"{len(items)} elements where shape {list(shape)} needs {count}")
        return b"".join(struct.pack("<I", len(b)) + b for b in items)
    dtype = _DTYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"unknown datatype {datatype!r}")
    try:
        arr = np.array(data)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"data is not a regular (nested) list of numbers: {e}") from None
    if arr.size != count:
        raise ValueError(f"{arr.size} elements where shape {list(shape)} needs {count}")
    if count == 0:
        return b""
    kind = arr.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise ValueError("BOOL data must be true or false")
        return arr.astype(dtype).tobytes()
    if datatype.startswith(("INT", "UINT")):
        low, high = _integer_range(datatype)
        problem = ValueError(f"{datatype} data must be integers from {low} to {high}")
        if kind in "fO":
            # numpy turns integers past int64 mixed with others into float64
            # (or objects): look at the Python values themselves.
            values = np.array(data, dtype=object).reshape(-1).tolist()
            if not all(type(v) is int and low <= v <= high for v in values):
                raise problem
            return np.array(values, dtype=dtype).tobytes()
        if kind not in "iu" or int(arr.min()) < low or int(arr.max()) > high:
            raise problem
        return arr.astype(dtype).tobytes()
    if kind not in "iuf":
        raise ValueError(f"{datatype} data must be numbers")
    with np.errstate(over="ignore"):
        if datatype == "BF16":
            return _bf16_bits(arr.astype(np.float32)).tobytes()
        return arr.astype(dtype).tobytes()


def split_bytes(raw: bytes) -> list[bytes]:
    """The elements of a raw BYTES tensor. Raises :class:`ValueError`."""
    out = []
    pos = 0
    end = len(raw)
    while pos < end:
        if pos + 4 > end:
            raise ValueError(f"BYTES data ends inside an element's 4-byte length at byte {pos}")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise ValueError(
                f"BYTES element at byte {pos - 4} says {n} bytes, {end - pos} are left"
            )
        out.append(raw[pos : pos + n])
        pos += n
    return out


def check_raw(datatype: str, raw: bytes, shape: Sequence[int]) -> None:
    """Raise :class:`ValueError` unless ``raw`` holds a tensor of ``shape``."""
    count = element_count(shape)
    if datatype == "BYTES":
        n = len(split_bytes(raw))
        if n != count:
            raise ValueError(f"{n} BYTES elements where shape {list(shape)} needs {count}")
        return
    dtype = _DTYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"unknown datatype {datatype!r}")
    if len(raw) != count * dtype.itemsize:
        raise ValueError(
            f"{len(raw)} bytes where shape {list(shape)} of {datatype} needs "
            f"{count * dtype.itemsize}"
        )


def unpack(datatype: str, raw: bytes, shape: Sequence[int]) -> list[Any]:
    """JSON data (a flat list, as Triton answers) of a raw tensor. Raises
    :class:`ValueError`, or :class:`NotText` for BYTES that are not UTF-8."""
    check_raw(datatype, raw, shape)
    if datatype == "BYTES":
        try:
            return [b.decode("utf-8") for b in split_bytes(raw)]
        except UnicodeDecodeError:
            raise NotText("BYTES that are not UTF-8 text cannot be JSON strings") from None
    values: list[Any]
    if datatype == "BOOL":
        values = (np.frombuffer(raw, np.uint8) != 0).tolist()
    elif datatype == "BF16":
        bits = np.frombuffer(raw, _DTYPES["BF16"]).astype(np.uint32) << 16
        values = bits.view(np.float32).tolist()
    else:
        values = np.frombuffer(raw, _DTYPES[datatype]).tolist()
    return values
