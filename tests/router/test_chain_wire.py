"""A stage's answer becomes the next stage's request on the wire: what
protobuf itself reads from the converted bytes is the answer's tensors as
inputs, with the id, the parameters and the stage set."""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import service_pb2

from router import chain_wire


def _response() -> service_pb2.ModelInferResponse:
    resp = service_pb2.ModelInferResponse(model_name="t-1", model_version="3", id="req-9")
    resp.parameters["content_type"].string_param = "np"
    raw = resp.outputs.add(name="scaled", datatype="FP64", shape=[2, 2])
    raw.parameters["content_type"].string_param = "np"
    typed = resp.outputs.add(name="labels", datatype="INT64", shape=[2])
    typed.contents.int64_contents.extend([4, 5])
    resp.raw_output_contents.append(np.arange(4, dtype=np.float64).tobytes())
    return resp


def test_an_answer_becomes_a_request_to_the_next_stage_with_its_tensors_as_inputs() -> None:
    resp = _response()
    req = service_pb2.ModelInferRequest.FromString(
        chain_wire.response_as_request(resp.SerializeToString(), "predictor-abc")
    )
    assert (req.model_name, req.model_version, req.id) == ("predictor-abc", "", "req-9")
    assert req.parameters["content_type"].string_param == "np"
    assert [(i.name, i.datatype, list(i.shape)) for i in req.inputs] == [
        ("scaled", "FP64", [2, 2]),
        ("labels", "INT64", [2]),
    ]
    assert req.inputs[0].parameters["content_type"].string_param == "np"
    assert list(req.inputs[1].contents.int64_contents) == [4, 5]
    assert req.raw_input_contents == resp.raw_output_contents


def test_a_stage_parameter_is_added_and_a_later_one_wins() -> None:
    req = service_pb2.ModelInferRequest(model_name="t")
    req.parameters[chain_wire.STAGE_PARAMETER].string_param = "from-the-client"
    req.parameters["other"].int64_param = 7
    data = chain_wire.with_parameter(
        req.SerializeToString(), chain_wire.STAGE_PARAMETER, "preprocess"
    )
    parsed = service_pb2.ModelInferRequest.FromString(data)
    assert parsed.parameters[chain_wire.STAGE_PARAMETER].string_param == "preprocess"
    assert parsed.parameters["other"].int64_param == 7
