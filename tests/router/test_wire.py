"""The model name is read and rewritten on the wire, the rest left intact."""

from __future__ import annotations

import contextlib

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from mesh.core import errors
from router import wire


def _infer_request(name: str, version: str = "") -> bytes:
    req = service_pb2.ModelInferRequest(model_name=name, model_version=version, id="req-1")
    t = req.inputs.add()
    t.name = "predict"
    t.datatype = "FP64"
    t.shape.extend([2, 4])
    req.raw_input_contents.append(np.arange(8, dtype=np.float64).tobytes())
    out: bytes = req.SerializeToString()
    return out


def test_reads_model_name_of_an_infer_request() -> None:
    assert wire.read_name(_infer_request("iris")) == "iris"


def test_reads_utf8_model_names() -> None:
    assert wire.read_name(_infer_request("modèle-ß")) == "modèle-ß"


def test_missing_name_reads_as_empty() -> None:
    req = service_pb2.ModelInferRequest(id="x").SerializeToString()
    assert wire.read_name(req) == ""


def test_rewrite_changes_only_the_name() -> None:
    data = _infer_request("iris", version="3")
    out = service_pb2.ModelInferRequest.FromString(wire.rewrite_name(data, "iris__ksp-0123"))
    original = service_pb2.ModelInferRequest.FromString(data)
    assert out.model_name == "iris__ksp-0123"
    original.model_name = "iris__ksp-0123"
    assert out == original


def test_last_occurrence_of_a_repeated_name_wins_and_rewrite_removes_all() -> None:
    data = (
        _infer_request("first")
        + service_pb2.ModelInferRequest(model_name="second").SerializeToString()
    )
    assert service_pb2.ModelInferRequest.FromString(data).model_name == "second"
    assert wire.read_name(data) == "second"
    out = wire.rewrite_name(data, "third")
    assert wire.read_name(out) == "third"
    assert service_pb2.ModelInferRequest.FromString(out).model_name == "third"


def test_rewrites_metadata_requests_and_responses() -> None:
    req = service_pb2.ModelMetadataRequest(name="a", version="1").SerializeToString()
    out = service_pb2.ModelMetadataRequest.FromString(wire.rewrite_name(req, "b"))
    assert (out.name, out.version) == ("b", "1")
    resp = service_pb2.ModelMetadataResponse(name="b", platform="sklearn")
    resp.inputs.add(name="predict", datatype="FP64", shape=[-1, 4])
    back = service_pb2.ModelMetadataResponse.FromString(
        wire.rewrite_name(resp.SerializeToString(), "a")
    )
    assert back.name == "a" and back.inputs[0].name == "predict"


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05ab",  # name runs past the end
        b"\x0a",  # truncated length
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # endless varint
        b"\x00\x01",  # field number 0
        b"\x0b",  # group wire type
        b"\x08\x01",  # field 1 as a varint, not a string
        b"\x0a\x02\xff\xfe",  # name not UTF-8
    ],
)
def test_malformed_bytes_are_invalid_requests(data: bytes) -> None:
    with pytest.raises(errors.InvalidRequest, match="malformed request"):
        wire.read_name(data)


@hypothesis.given(
    name=st.text(min_size=1, max_size=300),
    new=st.text(min_size=1, max_size=300),
    version=st.text(max_size=20),
    tensor=st.binary(max_size=2000),
)
@hypothesis.settings(deadline=None)  # no wall-clock limit per example: a busy machine is slow
def test_rewrite_agrees_with_protobuf(name: str, new: str, version: str, tensor: bytes) -> None:
    req = service_pb2.ModelInferRequest(model_name=name, model_version=version)
    req.raw_input_contents.append(tensor)
    data = req.SerializeToString()
    assert wire.read_name(data) == name
    out = service_pb2.ModelInferRequest.FromString(wire.rewrite_name(data, new))
    req.model_name = new
    assert out == req


@hypothesis.given(st.binary(max_size=64))
@hypothesis.settings(deadline=None)
def test_arbitrary_bytes_never_crash_the_reader(data: bytes) -> None:
    with contextlib.suppress(errors.InvalidRequest):
        wire.read_name(data)


def test_reads_the_version_a_request_names_and_none_as_empty() -> None:
    req = service_pb2.ModelInferRequest(model_name="iris", model_version="99")
    assert wire.read_version(req.SerializeToString()) == "99"
    meta = service_pb2.ModelMetadataRequest(name="iris", version="2")
    assert wire.read_version(meta.SerializeToString()) == "2"
    assert (
        wire.read_version(service_pb2.ModelInferRequest(model_name="iris").SerializeToString())
        == ""
    )


@pytest.mark.parametrize("ready", [True, False])
def test_reads_a_ready_flag_as_protobuf_does(ready: bool) -> None:
    data = service_pb2.ModelReadyResponse(ready=ready).SerializeToString()
    assert wire.read_flag(data, 1) is ready
    # the request the mesh builds to ask is a valid ModelReadyRequest
    asked = service_pb2.ModelReadyRequest.FromString(wire.rewrite_name(b"", "iris__ksp-1"))
    assert asked.name == "iris__ksp-1" and asked.version == ""


def test_an_input_in_both_forms_is_found_by_tags_and_lengths_alone() -> None:
    tensor = service_pb2.ModelInferRequest.InferInputTensor
    both = tensor(name="b", datatype="FP32", shape=[1])
    both.contents.fp32_contents.append(1.0)
    plain = tensor(name="a", datatype="FP32", shape=[1])
    mixed = service_pb2.ModelInferRequest(model_name="m", inputs=[plain, both])
    mixed.raw_input_contents.extend([b"\0" * 4, b"\0" * 4])
    assert wire.input_in_both_forms(mixed.SerializeToString()) == "b"
    only_raw = service_pb2.ModelInferRequest(model_name="m", inputs=[plain])
    only_raw.raw_input_contents.append(b"\0" * 4)
    assert wire.input_in_both_forms(only_raw.SerializeToString()) is None
    only_contents = service_pb2.ModelInferRequest(model_name="m", inputs=[both])
    assert wire.input_in_both_forms(only_contents.SerializeToString()) is None
