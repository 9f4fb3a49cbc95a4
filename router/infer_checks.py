"""What is wrong with an inference request: asked once a runtime refused it,
and one cheap check before it is sent.

The data plane forwards a ``ModelInferRequest`` without decoding it (the
model name aside: :mod:`router.wire`). A request the runtime cannot use
because of the request itself (bytes that are not a ``ModelInferRequest``, a
raw tensor shorter or longer than its shape and datatype say, an unknown
datatype, one input sent both as ``contents`` and raw) comes back with the
runtime's own status, often ``INTERNAL`` or ``UNKNOWN``: the server's fault
as a client reads it. When a runtime says no with such a status, the edge
decodes the request once and, if it finds the client's mistake, answers
``INVALID_ARGUMENT`` naming the input. A request that decodes fine but does
not fit the model (a wrong feature count, strings for a numeric model) is
known only by the runtime's own words: :data:`RUNTIME_WORDS` lists those of
the libraries the runtimes run, and a refusal in them is the client's
mistake too. Only a refused request is decoded. One mistake no runtime
reports the same way is caught before sending: an input given both as
``contents`` and as raw data (Triton refuses it, MLServer silently reads one
of the two), by :func:`router.client_messages.refuse_mixed_forms`, which
reads tags and lengths only.
"""

from __future__ import annotations

import math
import re
import struct

from google.protobuf import message as pb_message
from tritonclient.grpc import service_pb2

from mesh.core import errors
from router import upstream

ELEMENT_BYTES = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "BF16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
}
"""Bytes per element of each fixed-size V2 datatype; ``BYTES`` is the other."""

_CONTENTS_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)

RUNTIME_WORDS = re.compile(
    "|".join(
        (
            # scikit-learn: a batch with the wrong number of columns.
            r"X has \d+ features?, but \w+ is expecting \d+ features?",
            # XGBoost and LightGBM: the same, in their words.
            r"[Ff]eature shape mismatch",
            r"feature_names mismatch",
            r"number of features in data \(\d+\) is not the same as it was in training data",
            # numpy, under every runtime's codecs: bytes that do not fit the
            # datatype the model reads, or a shape that does not fit the data.
            r"buffer size must be a multiple of element size",
            r"cannot reshape array of size \d+ into shape",
            r"could not convert string to float",
            r"invalid literal for int\(\) with base",
        )
    )
)
"""A runtime's refusal in these words means the request does not fit the
model: the client's mistake, whatever status the runtime gave it."""

CHECKED_CODES = frozenset({"INTERNAL", "UNKNOWN", "INVALID_ARGUMENT", "FAILED_PRECONDITION"})
"""Runtime statuses after which the request is checked."""


def _bytes_elements(raw: bytes) -> int | None:
    """How many elements a raw ``BYTES`` tensor holds (each a 4-byte
    little-endian length and that many bytes), ``None`` if it does not parse."""
    count, pos = 0, 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            return None
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4 + length
        count += 1
    return count if pos == len(raw) else None


def _input_fault(inp: service_pb2.ModelInferRequest.InferInputTensor, raw: bytes | None) -> str:
    name = errors.shown(inp.name)
    if inp.datatype not in ELEMENT_BYTES and inp.datatype != "BYTES":
        return f"input {name!r}: unknown datatype {errors.shown(inp.datatype)!r}"
    if any(d < 0 for d in inp.shape):
        return f"input {name!r}: shape {list(inp.shape)} has a negative dimension"
    count = math.prod(inp.shape)
    given = [f for f in _CONTENTS_FIELDS if len(getattr(inp.contents, f))]
    if raw is not None and given:
        return f"input {name!r} is sent both as contents and as raw_input_contents"
    if raw is not None:
        size = ELEMENT_BYTES.get(inp.datatype)
        if size is not None and len(raw) != count * size:
            return (
                f"input {name!r}: {len(raw)} bytes of raw data, but shape {list(inp.shape)} "
                f"of {inp.datatype} takes {count * size}"
            )
        if size is None and _bytes_elements(raw) != count:
            return f"input {name!r}: the raw BYTES data does not hold {count} elements"
        return ""
    held = sum(len(getattr(inp.contents, f)) for f in given)
    if held != count:
        return (
            f"input {name!r}: {held} values in contents, but shape {list(inp.shape)} takes {count}"
        )
    return ""


def client_fault(request: bytes) -> str:
    """What is wrong with ``request`` as a ``ModelInferRequest``, or ``""``."""
    try:
        msg = service_pb2.ModelInferRequest.FromString(request)
    except pb_message.DecodeError as e:
        return f"the request is not a valid inference.ModelInferRequest ({e})"
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        return f"the request has {len(msg.inputs)} inputs but {len(raw)} raw_input_contents"
    for i, inp in enumerate(msg.inputs):
        fault = _input_fault(inp, raw[i] if raw else None)
        if fault:
            return fault
    return ""


def refined(method: str, request: bytes, error: Exception) -> Exception:
    """``error`` as the client should read it: a runtime's refusal of a
    malformed ``ModelInfer`` becomes :class:`mesh.core.errors.InvalidRequest`."""
    if (
        method == "ModelInfer"
        and isinstance(error, upstream.UpstreamError)
        and error.code in CHECKED_CODES
    ):
        fault = client_fault(request)
        if fault:
            return errors.InvalidRequest(f"{fault} (the runtime said: {error.details})")
        if RUNTIME_WORDS.search(error.details):
            return errors.InvalidRequest(
                f"{_inputs_named(request)} do not fit the model: {errors.shown(error.details)}"
            )
    return error


def _inputs_named(request: bytes) -> str:
    """``the inputs 'a', 'b'`` of a request that decodes."""
    names = [errors.shown(i.name) for i in service_pb2.ModelInferRequest.FromString(request).inputs]
    listed = ", ".join(repr(n) for n in names) or "(none)"
    return f"the inputs {listed}"
