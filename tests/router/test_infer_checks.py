"""A refused inference request is checked for the client's own mistakes."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from mesh.core import errors
from router import infer_checks, upstream

Input = service_pb2.ModelInferRequest.InferInputTensor


def _request(*inputs: Any, raw: list[bytes] | None = None) -> bytes:
    msg = service_pb2.ModelInferRequest(model_name="m", inputs=list(inputs))
    msg.raw_input_contents.extend(raw or [])
    data: bytes = msg.SerializeToString()
    return data


def test_a_well_formed_request_has_no_fault() -> None:
    x = np.zeros((2, 4), np.float64)
    assert (
        infer_checks.client_fault(
            _request(Input(name="x", datatype="FP64", shape=[2, 4]), raw=[x.tobytes()])
        )
        == ""
    )
    words = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    assert (
        infer_checks.client_fault(
            _request(Input(name="s", datatype="BYTES", shape=[2]), raw=[words])
        )
        == ""
    )
    typed = Input(name="y", datatype="INT64", shape=[3])
    typed.contents.int64_contents.extend([1, 2, 3])
    assert infer_checks.client_fault(_request(typed)) == ""


@pytest.mark.parametrize(
    ("request_bytes", "named"),
    [
        (b"\x0a\x01m\x12\xff", "not a valid inference.ModelInferRequest"),
        (_request(Input(name="x", datatype="FP64", shape=[2, 4]), raw=[b"\0" * 8]), "takes 64"),
        (_request(Input(name="x", datatype="FLOAT", shape=[1]), raw=[b"\0" * 4]), "'FLOAT'"),
        (_request(Input(name="x", datatype="FP32", shape=[1]), raw=[]), "0 values in contents"),
        (_request(Input(name="x", datatype="FP32", shape=[1]), raw=[b"1234", b"5678"]), "2 raw"),
        (_request(Input(name="s", datatype="BYTES", shape=[2]), raw=[b"\x05\0\0\0ab"]), "BYTES"),
        (_request(Input(name="x", datatype="FP32", shape=[-1]), raw=[b""]), "negative"),
    ],
    ids=["not-protobuf", "short-raw", "datatype", "no-data", "extra-raw", "bytes", "negative"],
)
def test_the_clients_mistake_is_named(request_bytes: bytes, named: str) -> None:
    assert named in infer_checks.client_fault(request_bytes)


def test_an_input_sent_both_as_contents_and_raw_is_refused() -> None:
    both = Input(name="x", datatype="FP32", shape=[1])
    both.contents.fp32_contents.append(1.0)
    fault = infer_checks.client_fault(_request(both, raw=[b"\0\0\0\0"]))
    assert "both as contents and as raw_input_contents" in fault


def test_only_a_refused_model_infer_is_refined() -> None:
    bad = _request(Input(name="x", datatype="FP64", shape=[2]), raw=[b"\0"])
    refused = upstream.UpstreamError("INTERNAL", "boom")
    refined = infer_checks.refined("ModelInfer", bad, refused)
    assert isinstance(refined, errors.InvalidRequest) and "input 'x'" in refined.message
    assert infer_checks.refined("ModelMetadata", bad, refused) is refused
    unavailable = upstream.UpstreamError("UNAVAILABLE", "gone")
    assert infer_checks.refined("ModelInfer", bad, unavailable) is unavailable
    good = _request(Input(name="x", datatype="FP64", shape=[1]), raw=[b"\0" * 8])
    assert infer_checks.refined("ModelInfer", good, refused) is refused  # the runtime's own


@pytest.mark.parametrize(
    "words",
    [
        "X has 3 features, but LogisticRegression is expecting 4 features as input.",
        "Feature shape mismatch, expected: 4, got 3",
        "The number of features in data (3) is not the same as it was in training data (4).",
        "buffer size must be a multiple of element size",
        "cannot reshape array of size 6 into shape (4)",
    ],
)
def test_a_refusal_in_the_libraries_words_for_a_misfit_is_the_clients(words: str) -> None:
    fits_v2 = _request(Input(name="predict", datatype="FP64", shape=[1, 3]), raw=[b"\0" * 24])
    refused = upstream.UpstreamError("INTERNAL", words)
    refined = infer_checks.refined("ModelInfer", fits_v2, refused)
    assert isinstance(refined, errors.InvalidRequest)
    assert "'predict'" in refined.message and words in refined.message
    crash = upstream.UpstreamError("INTERNAL", "KeyError: 29")
    assert infer_checks.refined("ModelInfer", fits_v2, crash) is crash
