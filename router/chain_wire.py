"""Turn one stage's answer into the next stage's request, on the wire.

A chain (transformer → predictor → transformer) feeds each stage's
``ModelInferResponse`` to the next stage as a ``ModelInferRequest``. The two
messages are laid out alike: ``id`` (3), ``parameters`` (4) and the tensors
(5: ``outputs`` / ``inputs``, whose own fields — name, datatype, shape,
parameters, contents — have the same numbers) keep their numbers, and the
raw tensor bytes move from field 6 (``raw_output_contents``) to field 7
(``raw_input_contents``). So the conversion renumbers one field and sets the
name, walking only top-level tags and lengths, never the tensors: a stage's
answer of many megabytes is one copy.

A stage is told which step it runs by a request parameter
(:data:`STAGE_PARAMETER`), appended as one more entry of the ``parameters``
map (the last entry of a key wins, as protobuf reads maps).

Pure: no gRPC, no protobuf library.
"""

from __future__ import annotations

from router import wire

STAGE_PARAMETER = "meshserve_stage"
"""The request parameter naming the step a transformer runs: ``preprocess``
or ``postprocess``."""
PREDICTOR_PARAMETER = "meshserve_predictor"
"""The request parameter naming, to an explainer, the model to explain."""

_ID_FIELD = 3
_PARAMETERS_FIELD = 4
_TENSORS_FIELD = 5
_RAW_OUTPUTS_FIELD = 6
_RAW_INPUTS_FIELD = 7
_KEPT = frozenset({_ID_FIELD, _PARAMETERS_FIELD, _TENSORS_FIELD})
_STRING_PARAM_FIELD = 3
"""``InferParameter.string_param``."""


def _len_field(number: int, value: bytes) -> bytes:
    return wire.encode_varint(number << 3 | wire.LEN) + wire.encode_varint(len(value)) + value


def string_parameter(key: str, value: str) -> bytes:
    """One entry of a request's ``parameters`` map: ``key`` → a string."""
    entry = _len_field(1, key.encode("utf-8")) + _len_field(
        2, _len_field(_STRING_PARAM_FIELD, value.encode("utf-8"))
    )
    return _len_field(_PARAMETERS_FIELD, entry)


def with_parameter(request: bytes, key: str, value: str) -> bytes:
    """``request`` (a ``ModelInferRequest``) with parameter ``key`` set to ``value``."""
    return request + string_parameter(key, value)


def response_as_request(response: bytes, model_name: str) -> bytes:
    """The ``ModelInferRequest`` to ``model_name`` whose inputs are the
    outputs of ``response`` (a ``ModelInferResponse``), with its id and
    parameters; its ``model_version`` is dropped."""
    head = _len_field(wire.NAME_FIELD, model_name.encode("utf-8"))
    parts = [head]
    for number, start, value_start, end in wire.fields(response):
        if number in _KEPT:
            parts.append(response[start:end])
        elif number == _RAW_OUTPUTS_FIELD and response[start] & 7 == wire.LEN:
            parts.append(_len_field(_RAW_INPUTS_FIELD, response[value_start:end]))
    return b"".join(parts)
