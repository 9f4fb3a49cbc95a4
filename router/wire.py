"""Read and rewrite a V2 request's model name on the wire, without decoding it.

``ModelInferRequest``, ``ModelMetadataRequest`` and ``ModelReadyRequest`` all
carry the model name in field 1 (a length-delimited string), and so do their
responses. The router only needs that one field: it walks the message's
top-level fields (tags and lengths, never the tensors inside), takes field 1,
and splices a new field 1 in. A request of several megabytes costs a few
varint reads and one copy.

Protobuf allows a field to appear more than once (the last one wins) and in
any order; :func:`rewrite_name` drops every occurrence and puts the new one
first, which every parser reads the same way.

Pure: no gRPC, no protobuf library. Malformed bytes raise
:class:`mesh.core.errors.InvalidRequest`.
"""

from __future__ import annotations

from mesh.core import errors

NAME_FIELD = 1
VERSION_FIELD = 2
"""``model_version`` / ``version`` of every model-scoped V2 request."""
INPUTS_FIELD = 5
"""``ModelInferRequest.inputs``; in each, field 1 is its name, 5 its contents."""
RAW_INPUTS_FIELD = 7
"""``ModelInferRequest.raw_input_contents``."""
_CONTENTS_FIELD = 5
LEN = 2
"""The wire type of length-delimited fields."""
_NAME_TAG = bytes([NAME_FIELD << 3 | LEN])
_ONE_BYTE = [bytes([n]) for n in range(0x80)]
"""Lengths under 128 as their one-byte varints."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise errors.InvalidRequest("malformed request: truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise errors.InvalidRequest("malformed request: varint too long")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields(data: bytes, pos: int = 0, end: int = -1) -> list[tuple[int, int, int, int]]:
    """Each top-level field as (number, start, value_start, end), of the
    whole of ``data`` or of the message embedded in ``data[pos:end]``."""
    out = []
    if end < 0:
        end = len(data)
    while pos < end:
        start = pos
        key = data[pos]  # one-byte tags (fields 1-15) skip the general reader
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise errors.InvalidRequest("malformed request: field number 0")
        value_start = pos
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == LEN:
            if pos < end and data[pos] < 0x80:
                length, value_start = data[pos], pos + 1
            else:
                length, value_start = _varint(data, pos)
            pos = value_start + length
        elif wire_type == 5:
            pos += 4
        else:  # 3 and 4 (groups) are not used by the V2 protocol
            raise errors.InvalidRequest(f"malformed request: wire type {wire_type}")
        if pos > end:
            raise errors.InvalidRequest("malformed request: field runs past the end")
        out.append((number, start, value_start, pos))
    return out


def _read_string(data: bytes, field: int, what: str) -> str:
    """The string in ``field`` (the last occurrence), or ``""`` if absent."""
    value = b""
    for number, start, value_start, end in fields(data):
        if number == field:
            if data[start] & 7 != LEN:
                raise errors.InvalidRequest(f"malformed request: {what} is not a string")
            value = data[value_start:end]
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidRequest(f"malformed request: {what} is not UTF-8") from None


def read_name(data: bytes) -> str:
    """The model name in field 1 (the last occurrence), or ``""`` if absent."""
    return _read_string(data, NAME_FIELD, "model name")


def read_version(data: bytes) -> str:
    """The model version a request names (field 2), or ``""`` for none."""
    return _read_string(data, VERSION_FIELD, "model version")


def input_in_both_forms(data: bytes) -> str | None:
    """The name of the first input of a ``ModelInferRequest`` that carries
    ``contents`` while the request also has ``raw_input_contents`` (which
    Triton refuses and other runtimes read one way or the other); ``None``
    if there is none. Walks the top-level fields and, only when raw data is
    present, each input's few small fields: never the tensors."""
    top = fields(data)
    for number, *_ in top:
        if number == RAW_INPUTS_FIELD:
            break
    else:
        return None
    for number, start, value_start, end in top:
        if number != INPUTS_FIELD or data[start] & 7 != LEN:
            continue
        for n, _, v, e in fields(data, value_start, end):
            if n == _CONTENTS_FIELD and e > v:
                return _read_string(data[value_start:end], NAME_FIELD, "input name")
    return None


def read_flag(data: bytes, field: int) -> bool:
    """The bool in ``field`` of a small message (``ModelReadyResponse.ready``
    is field 1); absent is ``False``, as protobuf reads it."""
    flag = False
    for number, start, value_start, _ in fields(data):
        if number == field and data[start] & 7 == 0:
            flag = _varint(data, value_start)[0] != 0
    return flag


def rewrite_name(data: bytes, name: str) -> bytes:
    """``data`` with field 1 set to ``name`` (every other field untouched)."""
    encoded = name.encode("utf-8")
    size = len(encoded)
    head = (
        _NAME_TAG + _ONE_BYTE[size] + encoded
        if size < 0x80
        else _NAME_TAG + encode_varint(size) + encoded
    )
    names = [(start, end) for number, start, _, end in fields(data) if number == NAME_FIELD]
    if not names:
        return head + data
    if len(names) == 1 and names[0][0] == 0:  # the usual message: one name, first
        return head + data[names[0][1] :]
    parts = [head]
    pos = 0
    for start, end in names:
        parts.append(data[pos:start])
        pos = end
    parts.append(data[pos:])
    return b"".join(parts)


def rewrite_nested_name(data: bytes, field: int, name: str) -> bytes:
    """``data`` with field 1 of the message embedded in ``field`` set to
    ``name`` (a ``ModelStreamInferResponse`` carries its ``ModelInferResponse``
    in field 2); ``data`` itself if it has no such field."""
    parts = []
    pos = 0
    for number, start, value_start, end in fields(data):
        if number == field and data[start] & 7 == LEN:
            inner = rewrite_name(data[value_start:end], name)
            parts.append(data[pos:start])
            parts.append(encode_varint(field << 3 | LEN) + encode_varint(len(inner)) + inner)
            pos = end
    if not parts:
        return data
    parts.append(data[pos:])
    return b"".join(parts)


def embed(data: bytes, field: int) -> bytes:
    """A message whose only field, ``field``, holds the message ``data``
    (wrapping a ``ModelInferResponse`` as a ``ModelStreamInferResponse``)."""
    return encode_varint(field << 3 | LEN) + encode_varint(len(data)) + data
