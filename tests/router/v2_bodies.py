"""V2 request bodies as ``tritonclient`` builds them, and tensors' raw bytes
as ``tritonclient.grpc`` carries them: the reference the REST edge's pure
halves (:mod:`router.v2json`, :mod:`router.tensor_packing`, :mod:`router.rest`)
are tested against, not those modules' own idea of the wire format."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
from tritonclient import http as triton_http
from tritonclient import utils as triton_utils

from router import v2json

NUMERIC: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
"""Each fixed-size V2 datatype and the numpy type a client holds it in."""


def client_body(
    arrays: dict[str, tuple[str, npt.NDArray[Any]]],
    binary: bool,
    outputs: list[triton_http.InferRequestedOutput] | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The body ``tritonclient.http`` sends for these inputs."""
    inputs = []
    for name, (datatype, arr) in arrays.items():
        inp = triton_http.InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    body, length = triton_http.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, parameters=parameters
    )
    return bytes(body), length


def raw_bytes(arr: npt.NDArray[Any], datatype: str) -> bytes:
    """What ``tritonclient.grpc`` puts in ``raw_input_contents``."""
    if datatype == "BYTES":
        out: bytes = triton_utils.serialize_byte_tensor(arr).item() if arr.size else b""
        return out
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def parse(body: bytes | str, length: int | None = None) -> v2json.InferRequest:
    """The request in ``body`` (JSON text, or bytes with ``length`` bytes of JSON)."""
    data = body.encode() if isinstance(body, str) else body
    return v2json.parse_infer_request(data, length)


def input_json(datatype: str, shape: list[Any], data: Any, **extra: Any) -> dict[str, Any]:
    """An input named ``x``, as a request's JSON holds it."""
    return {"name": "x", "datatype": datatype, "shape": shape, "data": data, **extra}


def request_json(*inputs: dict[str, Any], **extra: Any) -> str:
    """A request's JSON text with these inputs (and ``extra`` top-level fields)."""
    return json.dumps({"inputs": list(inputs), **extra})
