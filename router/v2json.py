"""The V2 REST protocol's JSON documents, and its binary tensor extension, as
plain data.

The REST edge (:mod:`router.rest`) turns an HTTP request into the same
``ModelInferRequest`` a gRPC client sends, so that both take one routing path
(:mod:`router.dataplane`). Everything between "bytes of an HTTP body" and
"fields of a V2 message" lives here, in pure functions tested without a
server: parsing and validating the JSON body (every problem named: which
input, which field, what was expected), the ``Inference-Header-Content-Length``
binary extension that ``tritonclient.http`` uses with ``binary_data=True``
(one JSON header, then each tensor's raw bytes in order), and rendering the
answers as JSON or binary. The tensors' raw form, and packing JSON data into
it, are :mod:`router.tensor_packing`'s; the HTTP status of a failure is
:mod:`router.http_status`'s.

Tensors travel as raw bytes in both directions, as ``tritonclient.grpc``
sends them: an input's JSON ``data`` (flat or nested lists) is packed into
``raw_input_contents``; an output is ``raw_output_contents`` (or the typed
``contents`` a runtime may send instead, packed too).

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
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from mesh.core import errors
from router import tensor_packing

HEADER_LENGTH = "Inference-Header-Content-Length"
"""HTTP header of the binary extension: bytes of JSON before the tensors' bytes."""

BINARY_EXTENSION = "binary_tensor_data"
"""The extension's name, as ``GET /v2`` lists it."""
SERVED_EXTENSIONS = (
    BINARY_EXTENSION,
    "parameters",
    "statistics",
    "model_repository",
    "model_configuration",
)
"""Triton's protocol extensions the mesh serves, listed by ``ServerMetadata``
on gRPC and REST: ``model_configuration`` is the runtime's own ``ModelConfig``,
routed, which only Triton models answer."""

Scalar: TypeAlias = bool | int | float | str
Parameters: TypeAlias = Mapping[str, Scalar]

_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1

# Extension parameters: consumed at the REST edge, never forwarded.
_BINARY_SIZE = "binary_data_size"
_BINARY_OUT = "binary_data"
_BINARY_DEFAULT = "binary_data_output"
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def error_body(message: str) -> bytes:
    """A V2 error: ``{"error": "..."}``."""
    return _dumps({"error": message})


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

# --- the request ---------------------------------------------------------------


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _refuse_constant(token: str) -> Any:
    """JSON has no NaN or Infinity; Python's reader would take them."""
    raise errors.InvalidRequest(f"the request body holds {token}, which JSON has no number for")


def loads(text: bytes) -> Any:
    """A request body's JSON; :class:`mesh.core.errors.InvalidRequest` when it
    is empty, not UTF-8, not JSON, holds NaN or Infinity, or nests too deeply."""
    return _loads(text)


def _loads(text: bytes) -> Any:
    if not text.strip():
        raise errors.InvalidRequest("the request body is empty: expected a V2 JSON object")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
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
    if datatype not in tensor_packing.DATATYPES:
        known = ", ".join(tensor_packing.DATATYPES)
        raise errors.InvalidRequest(f"{where}: {datatype!r} is not a V2 datatype (one of {known})")
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
    inputs = _inputs(doc, binary, json_length is not None)
    outputs = _requested_outputs(doc, binary_default)
    return InferRequest(inputs, outputs, request_id, params, binary_default)


def _inputs(doc: dict[str, Any], binary: bytes, has_binary: bool) -> tuple[Tensor, ...]:
    """The request's inputs; ``binary`` the bytes after the JSON, taken in
    order by the inputs that give a ``binary_data_size``."""
    if "inputs" not in doc:
        raise errors.InvalidRequest("the request has no 'inputs'")
    raw_inputs = _list(doc["inputs"], "inputs")
    if not raw_inputs:
        raise errors.InvalidRequest("'inputs' is empty: a request needs at least one input")
    inputs: list[Tensor] = []
    offset = 0
    seen: set[str] = set()
    for i, item in enumerate(raw_inputs):
        tensor, offset = _input(item, f"inputs[{i}]", seen, binary, offset, has_binary)
        inputs.append(tensor)
    if offset != len(binary):
        raise errors.InvalidRequest(
            f"{len(binary) - offset} bytes of binary data follow the last input's {_BINARY_SIZE}"
        )
    return tuple(inputs)


def _input(
    item: Any, where: str, seen: set[str], binary: bytes, offset: int, has_binary: bool
) -> tuple[Tensor, int]:
    """One input, and the offset in ``binary`` after its binary data."""
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
    if size is None:
        raw = _json_data(obj, where, datatype, shape)
    else:
        raw = _binary_data(obj, where, datatype, shape, size, binary, offset, has_binary)
        offset += len(raw)
    return Tensor(name, datatype, shape, raw, tparams), offset


def _json_data(obj: dict[str, Any], where: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    """The raw bytes of an input given as JSON ``data``."""
    if "data" not in obj:
        raise errors.InvalidRequest(f"{where} has neither 'data' nor {_BINARY_SIZE}")
    data = _list(obj["data"], f"{where}: data")
    try:
        return tensor_packing.pack(datatype, data, shape)
    except ValueError as e:
        raise errors.InvalidRequest(f"{where}: {e}") from None


def _binary_data(
    obj: dict[str, Any],
    where: str,
    datatype: str,
    shape: tuple[int, ...],
    size: Scalar,
    binary: bytes,
    offset: int,
    has_binary: bool,
) -> bytes:
    """The raw bytes of an input given in the binary extension: ``size``
    bytes of ``binary`` from ``offset``."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise errors.InvalidRequest(f"{where}: {_BINARY_SIZE} must be a non-negative integer")
    if "data" in obj:
        raise errors.InvalidRequest(f"{where} has both 'data' and {_BINARY_SIZE}")
    if not has_binary:
        raise errors.InvalidRequest(
            f"{where} gives {_BINARY_SIZE} but the request has no {HEADER_LENGTH} header"
        )
    if offset + size > len(binary):
        raise errors.InvalidRequest(
            f"{where}: {_BINARY_SIZE} {size} runs past the end of the body "
            f"({len(binary) - offset} bytes of binary data left)"
        )
    raw = binary[offset : offset + size]
    try:
        tensor_packing.check_raw(datatype, raw, shape)
    except ValueError as e:
        raise errors.InvalidRequest(f"{where}: binary data: {e}") from None
    return raw


def _requested_outputs(doc: dict[str, Any], binary_default: bool) -> tuple[RequestedOutput, ...]:
    """The outputs the request names (none: every output the model has)."""
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
    return tuple(outputs)


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
                tensor_packing.check_raw(t.datatype, t.raw, t.shape)
            except ValueError as e:
                raise errors.MeshError(f"output {t.name!r} of the runtime's answer: {e}") from None
            params[_BINARY_SIZE] = len(t.raw)
            blobs.append(t.raw)
            _with_parameters(out, params)
        else:
            try:
                data = tensor_packing.unpack(t.datatype, t.raw, t.shape)
            except tensor_packing.NotText:
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
