"""V2 protobuf messages built from plain tensors and read back into them.

The REST edge (:mod:`router.rest`) hands the data plane the very
``ModelInferRequest`` (``ModelMetadataRequest``, ``ModelReadyRequest``,
``ModelStatisticsRequest``) a ``tritonclient.grpc`` caller would have sent,
and reads the runtime's protobuf answer back into the plain tensors of
:mod:`router.v2json`. Pure: protobuf only, no server and no socket. An
answer that is not a valid message raises :class:`mesh.core.errors.MeshError`.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import message as pb_message
from tritonclient.grpc import service_pb2

from mesh.core import errors
from router import tensor_packing, v2json


def _set_parameters(target: Any, params: v2json.Parameters) -> None:
    for key, value in params.items():
        setattr(target[key], v2json.parameter_field(value), value)


def _read_parameters(source: Any) -> dict[str, v2json.Scalar]:
    out: dict[str, v2json.Scalar] = {}
    for key, p in source.items():
        field = p.WhichOneof("parameter_choice")
        if field is not None:
            out[key] = getattr(p, field)
    return out


def infer_request(model: str, version: str, request: v2json.InferRequest) -> bytes:
    """The ``ModelInferRequest`` a gRPC client would send: inputs raw."""
    msg = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=request.id)
    _set_parameters(msg.parameters, request.parameters)
    for t in request.inputs:
        tensor = msg.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        _set_parameters(tensor.parameters, t.parameters)
        msg.raw_input_contents.append(t.raw)
    for o in request.outputs:
        out = msg.outputs.add(name=o.name)
        _set_parameters(out.parameters, o.parameters)
    data: bytes = msg.SerializeToString()
    return data


_STAT_PARTS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)
"""The parts of Triton's ``inference_stats``; the mesh counts success and fail."""


def stats_json(data: bytes) -> bytes:
    """A ``ModelStatisticsResponse`` as Triton's REST statistics JSON."""
    msg = _decode(service_pb2.ModelStatisticsResponse, data, "ModelStatistics")

    def duration(d: Any) -> dict[str, int]:
        return {"count": int(d.count), "ns": int(d.ns)}

    stats = [
        {
            "name": m.name,
            "version": m.version,
            "last_inference": int(m.last_inference),
            "inference_count": int(m.inference_count),
            "execution_count": int(m.execution_count),
            "inference_stats": {
                part: duration(getattr(m.inference_stats, part)) for part in _STAT_PARTS
            },
            "batch_stats": [],
        }
        for m in msg.model_stats
    ]
    return json.dumps({"model_stats": stats}, separators=(",", ":")).encode()


def _decode(cls: Any, data: bytes, what: str) -> Any:
    try:
        return cls.FromString(data)
    except pb_message.DecodeError as e:
        raise errors.MeshError(f"the runtime's {what} answer is not a valid message: {e}") from None


def infer_response(data: bytes) -> v2json.InferResponse:
    """A ``ModelInferResponse``'s outputs in raw form, from
    ``raw_output_contents`` or else from the typed ``contents``."""
    msg = _decode(service_pb2.ModelInferResponse, data, "ModelInfer")
    raws = msg.raw_output_contents
    if raws and len(raws) != len(msg.outputs):
        raise errors.MeshError(
            f"the runtime's answer has {len(msg.outputs)} outputs and {len(raws)} raw contents"
        )
    outputs = []
    for i, out in enumerate(msg.outputs):
        shape = tuple(out.shape)
        if raws:
            raw = raws[i]
        else:
            field = tensor_packing.CONTENTS_FIELD.get(out.datatype)
            values = list(getattr(out.contents, field)) if field else []
            try:
                raw = tensor_packing.pack(out.datatype, values, shape)
            except ValueError as e:
                raise errors.MeshError(
                    f"output {out.name!r} of the runtime's answer: {e}"
                ) from None
        outputs.append(
            v2json.Tensor(out.name, out.datatype, shape, raw, _read_parameters(out.parameters))
        )
    return v2json.InferResponse(
        model_name=msg.model_name,
        model_version=msg.model_version,
        id=msg.id,
        parameters=_read_parameters(msg.parameters),
        outputs=tuple(outputs),
    )


def metadata_request(model: str, version: str) -> bytes:
    data: bytes = service_pb2.ModelMetadataRequest(name=model, version=version).SerializeToString()
    return data


def ready_request(model: str, version: str) -> bytes:
    data: bytes = service_pb2.ModelReadyRequest(name=model, version=version).SerializeToString()
    return data


def model_metadata(data: bytes) -> v2json.ModelMetadata:
    """A ``ModelMetadataResponse`` as plain data."""
    msg = _decode(service_pb2.ModelMetadataResponse, data, "ModelMetadata")

    def tensors(ts: Any) -> tuple[v2json.TensorMetadata, ...]:
        return tuple(v2json.TensorMetadata(t.name, t.datatype, tuple(t.shape)) for t in ts)

    return v2json.ModelMetadata(
        name=msg.name,
        versions=tuple(msg.versions),
        platform=msg.platform,
        inputs=tensors(msg.inputs),
        outputs=tensors(msg.outputs),
    )


# --- the HTTP edge -------------------------------------------------------------
