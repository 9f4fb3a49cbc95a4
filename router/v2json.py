"""The V2 REST protocol's JSON, and its binary tensor extension, as plain data.

The REST edge (:mod:`router.rest`) turns an HTTP request into the same
``ModelInferRequest`` a gRPC client sends, so that both take one routing path
(:mod:`router.dataplane`). Everything between "bytes of an HTTP body" and
"fields of a V2 message" lives here, in pure functions tested without a
server: parsing and validating the JSON body (every problem named: which
input, which field, what was expected), the ``Inference-Header-Content-Length``
binary extension that ``tritonclient.http`` uses with ``binary_data=True``
(one JSON header, then each tensor's raw bytes in order), packing JSON data
into the raw little-endian form the runtimes take, unpacking a runtime's raw
output back into JSON or binary, and the table from gRPC status codes to HTTP
statuses.

Tensors travel as raw bytes in both directions, as ``tritonclient.grpc``
sends them: an input's JSON ``data`` (flat or nested lists) is packed into
``raw_input_contents``; an output is ``raw_output_contents`` (or the typed
``contents`` a runtime may send instead, packed here too). BYTES elements
are each a 4-byte little-endian length and the bytes; BOOL one byte each;
BF16 the upper 16 bits of a float32, rounded to nearest even.

The extension's own parameters (``binary_data_size`` on inputs,
``binary_data`` on requested outputs, ``binary_data_output`` on the request)
are consumed here and never forwarded to the runtime; every other parameter
is. Shared-memory parameters are refused: the tensors would live in memory
of the caller's host, which a mesh node cannot read.

Pure: no HTTP server, gRPC or protobuf library. A malformed request raises
:class:`mesh.core.errors.InvalidRequest` with the problem in words; a runtime
answer that does not add up raises :class:`mesh.core.errors.MeshError` (an
internal error, not the caller's).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from mesh.core import errors

HEADER_LENGTH = "Inference-Header-Content-Length"
"""HTTP header of the binary extension: bytes of JSON before the tensors' bytes."""

BINARY_EXTENSION = "binary_tensor_data"
"""The extension's name, as ``GET /v2`` lists it."""

Scalar: TypeAlias = bool | int | float | str
Parameters: TypeAlias = Mapping[str, Scalar]

_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1

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

# Extension parameters: consumed at the REST edge, never forwarded.
_BINARY_SIZE = "binary_data_size"
_BINARY_OUT = "binary_data"
_BINARY_DEFAULT = "binary_data_output"
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


HTTP_STATUS: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    # The mesh's RESOURCE_EXHAUSTED means "no node has room for this model
    # now" (and, for a runtime, a message over its size limit): a server-side
    # condition, not a client sending too fast, so 503 rather than 429.
    "RESOURCE_EXHAUSTED": 503,
    # The mesh's FAILED_PRECONDITION means "this model failed to load"
    # (ModelLoadFailed). The request itself is fine; the model cannot be
    # served now, and the recorded failures expire. 400 would tell the
    # client to fix its request, which it cannot.
    "FAILED_PRECONDITION": 503,
    # The mesh's ABORTED is a lost race between nodes (Conflict, Reroute)
    # that outlived the routing retries: transient and not the caller's doing.
    "ABORTED": 503,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}
"""HTTP status of each gRPC status code (by name). Mesh errors reach it through
:mod:`mesh.edges.grpc_status`'s table, runtime errors with the runtime's own code,
so one failure gets one status on both protocols. Otherwise grpc-gateway's
mapping, which KServe's REST proxy uses."""


def http_status(code: str) -> int:
    """The HTTP status of a gRPC status code name (500 for one not known)."""
    return HTTP_STATUS.get(code, 500)


def error_body(message: str) -> bytes:
    """A V2 error: ``{"error": "..."}``."""
    return _dumps({"error": message})


class NotText(ValueError):
    """BYTES elements that are not UTF-8 cannot be written as JSON strings."""


@dataclasses.dataclass(frozen=True)
class Tensor:
    """An input or output tensor with its data in raw form."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes
    """Row-major, little-endian; BYTES: each element's 4-byte length, then it."""
    parameters: Parameters = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RequestedOutput:
    """An output the caller asked for by name."""

    name: str
    binary: bool
    """Answer it in the binary extension (``binary_data``), not as JSON data."""
    parameters: Parameters = dataclasses.field(default_factory=dict)
    """Forwarded to the runtime (``classification``...)."""


@dataclasses.dataclass(frozen=True)
class InferRequest:
    """The body of ``POST /v2/models/{name}/infer``, validated."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[RequestedOutput, ...] = ()
    """Empty: every output the model has."""
    id: str = ""
    parameters: Parameters = dataclasses.field(default_factory=dict)
    binary_outputs: bool = False
    """``binary_data_output``: outputs not listed (or listed without
    ``binary_data``) are answered in binary."""

    def binary(self, output: str) -> bool:
        """Whether ``output`` goes back as binary data."""
        for o in self.outputs:
            if o.name == output:
                return o.binary
        return self.binary_outputs


@dataclasses.dataclass(frozen=True)
class InferResponse:
    """A runtime's answer, outputs in raw form."""

    model_name: str
    outputs: tuple[Tensor, ...]
    model_version: str = ""
    id: str = ""
    parameters: Parameters = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TensorMetadata:
    """One input or output of a model's metadata (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """``GET /v2/models/{name}``."""

    name: str
    versions: tuple[str, ...] = ()
    platform: str = ""
    inputs: tuple[TensorMetadata, ...] = ()
    outputs: tuple[TensorMetadata, ...] = ()


# --- tensors -------------------------------------------------------------------


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


# --- the request ---------------------------------------------------------------


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _loads(text: bytes) -> Any:
    if not text.strip():
        raise errors.InvalidRequest("the request body is empty: expected a V2 JSON object")
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise errors.InvalidRequest("the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise errors.InvalidRequest(f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise errors.InvalidRequest("the request body's JSON is nested too deeply") from None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.InvalidRequest(f"{where} must be a JSON object, got {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise errors.InvalidRequest(f"{where} must be a JSON array, got {_kind(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise errors.InvalidRequest(f"{where} must be a string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if type(value) in names:
        return names[type(value)]
    return f"a number ({value!r})" if isinstance(value, int | float) else type(value).__name__


def parameters(value: Any, where: str) -> dict[str, Scalar]:
    """Checked V2 ``parameters``: a JSON object of booleans, numbers and strings
    (integers within int64, or uint64 for large positive ones)."""
    if value is None:
        return {}
    out: dict[str, Scalar] = {}
    for key, v in _object(value, where).items():
        if isinstance(v, int) and not isinstance(v, bool) and not _INT64[0] <= v <= _UINT64_MAX:
            raise errors.InvalidRequest(f"{where}.{key}: {v} is out of the 64-bit range")
        if not isinstance(v, bool | int | float | str):
            raise errors.InvalidRequest(
                f"{where}.{key} must be a boolean, number or string, got {_kind(v)}"
            )
        out[key] = v
    return out


def parameter_field(value: Scalar) -> str:
    """The ``InferParameter`` field that carries ``value``."""
    if isinstance(value, bool):
        return "bool_param"
    if isinstance(value, int):
        return "int64_param" if value <= _INT64[1] else "uint64_param"
    if isinstance(value, float):
        return "double_param"
    return "string_param"


def _refuse_shared_memory(params: Mapping[str, Scalar], where: str) -> None:
    for key in _SHARED_MEMORY:
        if key in params:
            raise errors.InvalidRequest(
                f"{where}: shared memory ({key}) is not supported through the mesh: "
                "send the data in the request"
            )


def _shape(value: Any, where: str) -> tuple[int, ...]:
    dims = _list(value, where)
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise errors.InvalidRequest(f"{where} must hold non-negative integers, got {_kind(d)}")
    return tuple(dims)


def _datatype(value: Any, where: str) -> str:
    datatype = _string(value, where)
    if datatype not in DATATYPES:
        raise errors.InvalidRequest(
            f"{where}: {datatype!r} is not a V2 datatype (one of {', '.join(DATATYPES)})"
        )
    return datatype


def header_length(value: str | None, body_size: int) -> int | None:
    """The checked ``Inference-Header-Content-Length`` of a body of ``body_size``."""
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        raise errors.InvalidRequest(
            f"{HEADER_LENGTH}: {value!r} is not a number of bytes"
        ) from None
    if not 0 <= n <= body_size:
        raise errors.InvalidRequest(f"{HEADER_LENGTH}: {n} is outside the body's {body_size} bytes")
    return n


def parse_infer_request(body: bytes, json_length: int | None = None) -> InferRequest:
    """The V2 inference request in ``body``: all JSON, or (binary extension)
    ``json_length`` bytes of JSON followed by the inputs' raw bytes in the
    order of the inputs that give a ``binary_data_size``."""
    text = body if json_length is None else body[:json_length]
    binary = b"" if json_length is None else body[json_length:]
    doc = _object(_loads(text), "the request body")
    request_id = _string(doc.get("id", ""), "id")
    params = parameters(doc.get("parameters"), "parameters")
    _refuse_shared_memory(params, "parameters")
    binary_default = params.pop(_BINARY_DEFAULT, False)
    if not isinstance(binary_default, bool):
        raise errors.InvalidRequest(f"parameters.{_BINARY_DEFAULT} must be true or false")

    if "inputs" not in doc:
        raise errors.InvalidRequest("the request has no 'inputs'")
    raw_inputs = _list(doc["inputs"], "inputs")
    if not raw_inputs:
        raise errors.InvalidRequest("'inputs' is empty: a request needs at least one input")
    inputs: list[Tensor] = []
    offset = 0
    seen: set[str] = set()
    for i, item in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        obj = _object(item, where)
        for key in ("name", "datatype", "shape"):
            if key not in obj:
                raise errors.InvalidRequest(f"{where} has no {key!r}")
        name = _string(obj["name"], f"{where}.name")
        where = f"input {name!r}"
        if name in seen:
            raise errors.InvalidRequest(f"{where} is given twice")
        seen.add(name)
        datatype = _datatype(obj["datatype"], f"{where}: datatype")
        shape = _shape(obj["shape"], f"{where}: shape")
        tparams = parameters(obj.get("parameters"), f"{where}: parameters")
        _refuse_shared_memory(tparams, where)
        size = tparams.pop(_BINARY_SIZE, None)
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise errors.InvalidRequest(
                    f"{where}: {_BINARY_SIZE} must be a non-negative integer"
                )
            if "data" in obj:
                raise errors.InvalidRequest(f"{where} has both 'data' and {_BINARY_SIZE}")
            if json_length is None:
                raise errors.InvalidRequest(
                    f"{where} gives {_BINARY_SIZE} but the request has no {HEADER_LENGTH} header"
                )
            if offset + size > len(binary):
                raise errors.InvalidRequest(
                    f"{where}: {_BINARY_SIZE} {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes of binary data left)"
                )
            raw = binary[offset : offset + size]
            offset += size
            try:
                check_raw(datatype, raw, shape)
            except ValueError as e:
                raise errors.InvalidRequest(f"{where}: binary data: {e}") from None
        else:
            if "data" not in obj:
                raise errors.InvalidRequest(f"{where} has neither 'data' nor {_BINARY_SIZE}")
            data = _list(obj["data"], f"{where}: data")
            try:
                raw = pack(datatype, data, shape)
            except ValueError as e:
                raise errors.InvalidRequest(f"{where}: {e}") from None
        inputs.append(Tensor(name, datatype, shape, raw, tparams))
    if offset != len(binary):
        raise errors.InvalidRequest(
            f"{len(binary) - offset} bytes of binary data follow the last input's {_BINARY_SIZE}"
        )

    outputs: list[RequestedOutput] = []
    for i, item in enumerate(_list(doc.get("outputs", []), "outputs")):
        obj = _object(item, f"outputs[{i}]")
        if "name" not in obj:
            raise errors.InvalidRequest(f"outputs[{i}] has no 'name'")
        name = _string(obj["name"], f"outputs[{i}].name")
        where = f"output {name!r}"
        oparams = parameters(obj.get("parameters"), f"{where}: parameters")
        _refuse_shared_memory(oparams, where)
        binary_out = oparams.pop(_BINARY_OUT, binary_default)
        if not isinstance(binary_out, bool):
            raise errors.InvalidRequest(f"{where}: {_BINARY_OUT} must be true or false")
        outputs.append(RequestedOutput(name, binary_out, oparams))
    return InferRequest(tuple(inputs), tuple(outputs), request_id, params, binary_default)


# --- the answers ---------------------------------------------------------------


def _with_parameters(obj: dict[str, Any], params: Parameters) -> dict[str, Any]:
    if params:
        obj["parameters"] = dict(params)
    return obj


def render_infer_response(
    response: InferResponse, request: InferRequest
) -> tuple[bytes, int | None]:
    """The HTTP body of an inference answer, and the length of its JSON part
    when outputs follow in binary (``None``: the body is all JSON)."""
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version:
        doc["model_version"] = response.model_version
    if response.id:
        doc["id"] = response.id
    _with_parameters(doc, response.parameters)
    outputs = []
    blobs: list[bytes] = []
    for t in response.outputs:
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        params = dict(t.parameters)
        if request.binary(t.name):
            try:
                check_raw(t.datatype, t.raw, t.shape)
            except ValueError as e:
                raise errors.MeshError(f"output {t.name!r} of the runtime's answer: {e}") from None
            params[_BINARY_SIZE] = len(t.raw)
            blobs.append(t.raw)
            _with_parameters(out, params)
        else:
            try:
                data = unpack(t.datatype, t.raw, t.shape)
            except NotText:
                raise errors.InvalidRequest(
                    f"output {t.name!r} holds BYTES that are not UTF-8 text: ask for it "
                    f"as binary data ({_BINARY_OUT}: true)"
                ) from None
            except ValueError as e:
                raise errors.MeshError(f"output {t.name!r} of the runtime's answer: {e}") from None
            _with_parameters(out, params)
            out["data"] = data
        outputs.append(out)
    doc["outputs"] = outputs
    head = _dumps(doc)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def render_model_metadata(m: ModelMetadata) -> bytes:
    """``GET /v2/models/{name}`` as V2 JSON."""

    def tensors(ts: tuple[TensorMetadata, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]

    return _dumps(
        {
            "name": m.name,
            "versions": list(m.versions),
            "platform": m.platform,
            "inputs": tensors(m.inputs),
            "outputs": tensors(m.outputs),
        }
    )


def render_server_metadata(name: str, version: str, extensions: Sequence[str]) -> bytes:
    """``GET /v2`` as V2 JSON."""
    return _dumps({"name": name, "version": version, "extensions": list(extensions)})


def render_ready(ready: bool, name: str = "") -> bytes:
    """Body of a health answer (the HTTP status carries the answer itself)."""
    return _dumps({"name": name, "ready": ready} if name else {"ready": ready})


def render_live(live: bool) -> bytes:
    """Body of ``GET /v2/health/live``."""
    return _dumps({"live": live})
