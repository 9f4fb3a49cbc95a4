"""The REST edge's pure half: V2 JSON's plain tensors ↔ the protobuf messages
a ``tritonclient.grpc`` caller sends and a runtime answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from mesh.core import errors
from router import rest_messages, tensor_packing, v2json
from tests.router.v2_bodies import input_json, parse, request_json


def test_the_proto_request_is_what_a_grpc_client_sends() -> None:
    arr = np.arange(8, dtype=np.float64).reshape(2, 4)
    r = parse(
        request_json(
            input_json("FP64", [2, 4], arr.tolist(), parameters={"content_type": "np"}),
            id="r1",
            parameters={"n": 2**63 + 1, "t": 0.5, "s": "x", "b": False, "i": -3},
            outputs=[{"name": "predict", "parameters": {"binary_data": True, "classification": 1}}],
        )
    )
    msg = service_pb2.ModelInferRequest.FromString(rest_messages.infer_request("iris", "2", r))
    assert (msg.model_name, msg.model_version, msg.id) == ("iris", "2", "r1")
    assert (msg.inputs[0].name, msg.inputs[0].datatype, list(msg.inputs[0].shape)) == (
        "x",
        "FP64",
        [2, 4],
    )
    assert msg.inputs[0].parameters["content_type"].string_param == "np"
    assert list(msg.raw_input_contents) == [arr.tobytes()]
    p = msg.parameters
    assert p["n"].uint64_param == 2**63 + 1 and p["t"].double_param == 0.5
    assert p["s"].string_param == "x" and p["b"].WhichOneof("parameter_choice") == "bool_param"
    assert p["i"].int64_param == -3
    (out,) = msg.outputs
    assert out.name == "predict" and dict(out.parameters).keys() == {"classification"}
    assert out.parameters["classification"].int64_param == 1


def test_proto_answers_with_raw_contents() -> None:
    msg = service_pb2.ModelInferResponse(model_name="iris", model_version="1", id="r")
    out = msg.outputs.add(name="predict", datatype="INT64", shape=[3])
    out.parameters["content_type"].string_param = "np"
    msg.parameters["sequence_id"].int64_param = 4
    msg.raw_output_contents.append(np.array([0, 1, 2], "<i8").tobytes())
    answer = rest_messages.infer_response(msg.SerializeToString())
    assert answer.model_name == "iris" and answer.parameters == {"sequence_id": 4}
    (t,) = answer.outputs
    assert (t.name, t.datatype, t.shape, dict(t.parameters)) == (
        "predict",
        "INT64",
        (3,),
        {"content_type": "np"},
    )
    assert tensor_packing.unpack(t.datatype, t.raw, t.shape) == [0, 1, 2]


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False]),
        ("INT8", [-1, 2]),
        ("INT32", [-70000, 5]),
        ("INT64", [-(2**40), 1]),
        ("UINT16", [65535, 0]),
        ("UINT64", [2**64 - 1, 0]),
        ("FP32", [0.5, -2.0]),
        ("FP64", [0.1, 1e300]),
        ("BYTES", [b"ab", b""]),
    ],
)
def test_proto_answers_with_typed_contents(datatype: str, values: list[Any]) -> None:
    msg = service_pb2.ModelInferResponse(model_name="m")
    out = msg.outputs.add(name="o", datatype=datatype, shape=[2])
    getattr(out.contents, tensor_packing.CONTENTS_FIELD[datatype]).extend(values)
    (t,) = rest_messages.infer_response(msg.SerializeToString()).outputs
    expected = [v.decode() for v in values] if datatype == "BYTES" else values
    assert tensor_packing.unpack(datatype, t.raw, t.shape) == expected


def test_proto_answers_that_do_not_add_up_are_internal_errors() -> None:
    msg = service_pb2.ModelInferResponse(model_name="m")
    msg.outputs.add(name="a", datatype="FP32", shape=[1])
    msg.outputs.add(name="b", datatype="FP32", shape=[1])
    msg.raw_output_contents.append(b"\0" * 4)
    with pytest.raises(errors.MeshError, match="2 outputs and 1 raw contents"):
        rest_messages.infer_response(msg.SerializeToString())
    with pytest.raises(errors.MeshError, match="not a valid message"):
        rest_messages.infer_response(b"\xff\xff\xff")


def test_proto_metadata() -> None:
    msg = service_pb2.ModelMetadataResponse(name="iris", versions=["1"], platform="sklearn")
    msg.inputs.add(name="predict", datatype="FP64", shape=[-1, 4])
    msg.outputs.add(name="predict", datatype="INT64", shape=[-1])
    m = rest_messages.model_metadata(msg.SerializeToString())
    assert m == v2json.ModelMetadata(
        "iris",
        ("1",),
        "sklearn",
        (v2json.TensorMetadata("predict", "FP64", (-1, 4)),),
        (v2json.TensorMetadata("predict", "INT64", (-1,)),),
    )
