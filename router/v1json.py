"""KServe's V1 REST protocol, as V2 inference requests and answers.

KServe's Python SDK and many KServe users call ``POST
/v1/models/<m>:predict`` with ``{"instances": [...]}`` (or ``"inputs"``) and
read ``{"predictions": [...]}``. The REST edge (:mod:`router.rest`) turns
such a body into the V2 request every runtime here speaks: the instances
become one input tensor, ``input-0``, whose shape is the instances' shape and
whose datatype follows their values (BOOL, INT64, FP64 or BYTES); the
predictions are the model's first output, shaped as the runtime shaped it
(one value per instance, ``[N, 1]``, is N predictions, as KServe's own
sklearn and xgboost servers answer).
Pure: JSON and numpy only. A body that is not a V1 request raises
:class:`mesh.core.errors.InvalidRequest` saying why.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mesh.core import errors
from router import tensor_packing, v2json

V1_INPUT = "input-0"
"""The name of the one V2 input a V1 request becomes."""

_DATATYPES = {"b": "BOOL", "i": "INT64", "u": "INT64", "f": "FP64", "U": "BYTES"}


def parse_predict(body: bytes) -> v2json.InferRequest:
    """A V1 ``:predict`` body as a V2 inference request."""
    doc = v2json.loads(body)
    if not isinstance(doc, dict):
        raise errors.InvalidRequest("a V1 request is a JSON object with instances")
    instances = doc.get("instances", doc.get("inputs"))
    if not isinstance(instances, list) or not instances:
        raise errors.InvalidRequest('a V1 request needs "instances": a non-empty list')
    try:
        array = np.array(instances)
    except ValueError:
        raise errors.InvalidRequest("the instances are not a regular (nested) list") from None
    datatype = _DATATYPES.get(array.dtype.kind)
    if datatype == "BYTES" and not all(
        isinstance(v, str) for v in np.array(instances, dtype=object).reshape(-1)
    ):
        datatype = None  # numpy made text of mixed numbers and strings
    if datatype is None:
        raise errors.InvalidRequest(
            "the instances must all be numbers, all true/false or all strings, in a regular "
            "(nested) list"
        )
    shape = tuple(int(d) for d in array.shape)
    data = array.reshape(-1).tolist()
    try:
        raw = tensor_packing.pack(datatype, data, shape)
    except ValueError as e:
        raise errors.InvalidRequest(f"instances: {e}") from None
    return v2json.InferRequest(inputs=(v2json.Tensor(V1_INPUT, datatype, shape, raw),))


def _shaped(out: v2json.Tensor) -> Any:
    """An output's values as nested lists of its shape."""
    try:
        flat = tensor_packing.unpack(out.datatype, out.raw, out.shape)
    except ValueError as e:
        raise errors.MeshError(f"output {out.name!r} of the runtime's answer: {e}") from None
    shape = out.shape
    return np.array(flat, dtype=object).reshape(shape).tolist() if shape else flat


def render_predictions(response: v2json.InferResponse) -> bytes:
    """``{"predictions": ...}``: the first output, shaped."""
    if not response.outputs:
        raise errors.MeshError("the runtime's answer has no output to give as predictions")
    out = response.outputs[0]
    if len(out.shape) == 2 and out.shape[1] == 1:
        # One value per instance: a flat list, as KServe's servers answer.
        out = v2json.Tensor(out.name, out.datatype, out.shape[:1], out.raw)
    return json.dumps({"predictions": _shaped(out)}, separators=(",", ":")).encode()


def render_outputs(response: v2json.InferResponse) -> bytes:
    """An explanation (``:explain``): each output of the explainer's answer
    by name, shaped (``{"shap_values": [...], "expected_value": [...]}``)."""
    doc = {out.name: _shaped(out) for out in response.outputs}
    return json.dumps(doc, separators=(",", ":")).encode()


def render_model(name: str, ready: bool) -> bytes:
    """``GET /v1/models/<m>``: the model's name and whether it is ready."""
    return json.dumps({"name": name, "ready": ready}, separators=(",", ":")).encode()
