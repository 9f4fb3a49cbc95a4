"""V2 JSON requests and answers, and the binary tensor extension, without a
server.

Requests are built by ``tritonclient.http`` itself (its public
``generate_request_body``) and answers read back by its ``InferResult``, so
the round trips check the wire format the real client speaks, not this
module's idea of it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from tritonclient import http as triton_http

from mesh.core import errors
from router import v2json
from tests.router.v2_bodies import client_body, input_json, parse, raw_bytes, request_json

# --- the rest of the request ------------------------------------------------------


def test_parameters_id_and_requested_outputs() -> None:
    outputs = [
        triton_http.InferRequestedOutput("a", binary_data=True),
        triton_http.InferRequestedOutput("b", binary_data=False, class_count=2),
    ]
    body, length = client_body(
        {"x": ("FP32", np.ones((1, 2), np.float32))},
        binary=False,
        outputs=outputs,
        parameters={"temperature": 0.5, "mode": "fast", "n": 3, "big": 2**63, "flag": True},
    )
    doc = json.loads(body)
    doc["id"] = "req-7"
    r = v2json.parse_infer_request(json.dumps(doc).encode(), length)
    assert r.id == "req-7"
    assert r.parameters == {"temperature": 0.5, "mode": "fast", "n": 3, "big": 2**63, "flag": True}
    assert [(o.name, o.binary, dict(o.parameters)) for o in r.outputs] == [
        ("a", True, {}),
        ("b", False, {"classification": 2}),
    ]
    assert r.binary("a") and not r.binary("b") and not r.binary("unlisted")


def test_without_outputs_the_client_asks_for_every_output_in_binary() -> None:
    body, length = client_body({"x": ("FP64", np.zeros(2))}, binary=False)
    r = v2json.parse_infer_request(body, length)
    assert r.outputs == () and r.binary_outputs and r.binary("anything")
    assert "binary_data_output" not in r.parameters


def test_binary_data_output_is_the_default_of_listed_outputs() -> None:
    r = parse(
        request_json(
            input_json("FP64", [1], [1.0]),
            outputs=[{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
            parameters={"binary_data_output": True},
        )
    )
    assert r.binary("a") and not r.binary("b")


def test_several_binary_inputs_take_consecutive_slices() -> None:
    a = np.arange(3, dtype=np.int16)
    b = np.array(["p", "qq"], dtype=np.object_)
    c = np.full((2, 2), 7.5, np.float64)
    body, length = client_body({"a": ("INT16", a), "b": ("BYTES", b), "c": ("FP64", c)}, True)
    r = v2json.parse_infer_request(body, length)
    assert [t.raw for t in r.inputs] == [
        raw_bytes(a, "INT16"),
        raw_bytes(b, "BYTES"),
        raw_bytes(c, "FP64"),
    ]


def test_json_and_binary_inputs_mix() -> None:
    head = json.dumps(
        {
            "inputs": [
                input_json("INT8", [2], [1, -1]),
                {
                    "name": "y",
                    "datatype": "UINT8",
                    "shape": [3],
                    "parameters": {"binary_data_size": 3},
                },
            ]
        }
    ).encode()
    r = v2json.parse_infer_request(head + b"\x01\x02\x03", len(head))
    assert [t.raw for t in r.inputs] == [b"\x01\xff", b"\x01\x02\x03"]


# --- malformed requests name the problem ------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("", "empty"),
        ("{nope", "not valid JSON: .*line 1 column 2"),
        ("[1, 2]", "must be a JSON object, got an array"),
        ("{}", "no 'inputs'"),
        ('{"inputs": []}', "'inputs' is empty"),
        ('{"inputs": {}}', "inputs must be a JSON array"),
        (
            '{"inputs": [{"name": "x", "shape": [1], "data": [1]}]}',
            r"inputs\[0\] has no 'datatype'",
        ),
        (request_json(input_json("FP33", [1], [1])), "'FP33' is not a V2 datatype.*BF16"),
        (
            request_json(input_json("FP32", [-1], [1])),
            "input 'x': shape must hold non-negative integers",
        ),
        (request_json(input_json("FP32", [1.5], [1])), "shape must hold non-negative integers"),
        (
            request_json(input_json("FP32", [3], [1, 2])),
            "input 'x': 2 elements where shape \\[3\\] needs 3",
        ),
        (request_json(input_json("FP32", [2, 2], [[1, 2], [3]])), "not a regular"),
        (request_json(input_json("INT32", [2], [1, 2.5])), "INT32 data must be integers"),
        (
            request_json(input_json("INT8", [1], [128])),
            "INT8 data must be integers from -128 to 127",
        ),
        (request_json(input_json("UINT8", [1], [-1])), "UINT8 data must be integers from 0 to 255"),
        (request_json(input_json("INT32", [1], [True])), "INT32 data must be integers"),
        (request_json(input_json("FP32", [1], ["1.0"])), "FP32 data must be numbers"),
        (request_json(input_json("FP32", [1], [None])), "FP32 data must be numbers"),
        (request_json(input_json("BOOL", [2], [1, 0])), "BOOL data must be true or false"),
        (request_json(input_json("BYTES", [2], ["a", 1])), "BYTES data must be strings, got int"),
        (
            request_json(input_json("FP32", [1], 5)),
            "input 'x': data must be a JSON array, got a number",
        ),
        (request_json({"name": "x", "datatype": "FP32", "shape": [1]}), "neither 'data' nor"),
        (
            request_json(input_json("FP32", [1], [1]), input_json("FP32", [1], [1])),
            "input 'x' is given twice",
        ),
        (
            request_json(input_json("FP32", [1], [1], parameters={"shared_memory_region": "r"})),
            "shared memory .* not supported",
        ),
        (
            request_json(input_json("FP32", [1], [1], parameters={"p": [1]})),
            "parameters.p must be a",
        ),
        (request_json(input_json("FP32", [1], [1]), id=5), "id must be a string"),
        (
            request_json(input_json("FP32", [1], [1]), parameters={"n": 2**64}),
            "out of the 64-bit range",
        ),
        (request_json(input_json("FP32", [1], [1]), outputs=[{}]), r"outputs\[0\] has no 'name'"),
        (
            request_json(
                input_json("FP32", [1], [1]),
                outputs=[{"name": "o", "parameters": {"binary_data": 1}}],
            ),
            "output 'o': binary_data must be true or false",
        ),
        (
            request_json(
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4},
                }
            ),
            "no Inference-Header-Content-Length header",
        ),
        (request_json(input_json("FP64", [2], [1.0, 2.0])).replace("2.0", "NaN"), "NaN"),
        (request_json(input_json("FP64", [1], [1.0])).replace("1.0", "-Infinity"), "-Infinity"),
    ],
)
def test_malformed_requests_are_invalid_and_say_why(body: str, problem: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=problem):
        parse(body, None)


def _binary_body(
    size: int, extra: bytes, datatype: str = "FP32", shape: int = 2
) -> tuple[bytes, int]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": [shape],
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return head + extra, len(head)


@pytest.mark.parametrize(
    ("size", "extra", "problem"),
    [
        (8, b"\0" * 4, "binary_data_size 8 runs past the end of the body \\(4 bytes"),
        (8, b"\0" * 12, "4 bytes of binary data follow the last input's binary_data_size"),
        (4, b"\0" * 4, "binary data: 4 bytes where shape \\[2\\] of FP32 needs 8"),
        (-1, b"", "binary_data_size must be a non-negative integer"),
    ],
)
def test_binary_bodies_that_do_not_add_up_are_invalid(
    size: int, extra: bytes, problem: str
) -> None:
    body, length = _binary_body(size, extra)
    with pytest.raises(errors.InvalidRequest, match=problem):
        v2json.parse_infer_request(body, length)


def test_binary_bytes_elements_must_fit_the_shape() -> None:
    body, length = _binary_body(6, struct.pack("<I", 9) + b"ab", "BYTES", 1)
    with pytest.raises(errors.InvalidRequest, match="says 9 bytes, 2 are left"):
        v2json.parse_infer_request(body, length)


@pytest.mark.parametrize(
    ("value", "problem"), [("x", "not a number"), ("-1", "outside"), ("99", "outside")]
)
def test_header_length_must_be_within_the_body(value: str, problem: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=f"Inference-Header-Content-Length.*{problem}"):
        v2json.header_length(value, 10)


def test_header_length_absent_means_all_json() -> None:
    assert v2json.header_length(None, 10) is None
    assert v2json.header_length(" 7 ", 10) == 7


# --- answers ----------------------------------------------------------------------


def _answer(*outputs: v2json.Tensor) -> v2json.InferResponse:
    return v2json.InferResponse("iris", outputs, model_version="1", id="req-1")


def _read(body: bytes, length: int | None) -> Any:
    return triton_http.InferResult.from_response_body(body, header_length=length)


def test_json_answers_read_back_with_the_client() -> None:
    fp = np.array([[0.5, -1.25]], np.float64)
    text = np.array(["a", "bé"], dtype=np.object_)
    flags = np.array([True, False])
    r = parse(request_json(input_json("FP64", [1], [1.0])))
    body, length = v2json.render_infer_response(
        _answer(
            v2json.Tensor("p", "FP64", (1, 2), raw_bytes(fp, "FP64"), {"content_type": "np"}),
            v2json.Tensor("s", "BYTES", (2,), raw_bytes(text, "BYTES")),
            v2json.Tensor("b", "BOOL", (2,), raw_bytes(flags, "BOOL")),
        ),
        r,
    )
    assert length is None
    doc = json.loads(body)
    assert doc["model_name"] == "iris" and doc["model_version"] == "1" and doc["id"] == "req-1"
    assert doc["outputs"][0] == {
        "name": "p",
        "datatype": "FP64",
        "shape": [1, 2],
        "parameters": {"content_type": "np"},
        "data": [0.5, -1.25],
    }
    result = _read(body, length)
    np.testing.assert_array_equal(result.as_numpy("p").reshape(1, 2), fp)
    assert result.as_numpy("s").tolist() == ["a", "bé"]
    assert result.as_numpy("b").tolist() == [True, False]


def test_binary_answers_read_back_with_the_client() -> None:
    fp = np.arange(6, dtype=np.float32).reshape(2, 3)
    ints = np.array([-3, 4], np.int64)
    text = np.array([b"\xff", b"z"], dtype=np.object_)
    r = parse(
        request_json(
            input_json("FP64", [1], [1.0]),
            outputs=[{"name": "f", "parameters": {"binary_data": True}}, {"name": "i"}],
            parameters={"binary_data_output": True},
        )
    )
    body, length = v2json.render_infer_response(
        _answer(
            v2json.Tensor("f", "FP32", (2, 3), raw_bytes(fp, "FP32")),
            v2json.Tensor("i", "INT64", (2,), raw_bytes(ints, "INT64")),
            v2json.Tensor("t", "BYTES", (2,), raw_bytes(text, "BYTES")),
        ),
        r,
    )
    assert length is not None
    head = json.loads(body[:length])
    assert [o["parameters"]["binary_data_size"] for o in head["outputs"]] == [24, 16, 10]
    assert all("data" not in o for o in head["outputs"])
    result = _read(body, length)
    np.testing.assert_array_equal(result.as_numpy("f").reshape(2, 3), fp)
    np.testing.assert_array_equal(result.as_numpy("i"), ints)
    assert result.as_numpy("t").tolist() == [b"\xff", b"z"]


def test_json_and_binary_outputs_mix_in_one_answer() -> None:
    r = parse(
        request_json(
            input_json("FP64", [1], [1.0]),
            outputs=[{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}],
        )
    )
    a, b = np.array([1, 2], np.int32), np.array([3.5], np.float64)
    body, length = v2json.render_infer_response(
        _answer(
            v2json.Tensor("a", "INT32", (2,), raw_bytes(a, "INT32")),
            v2json.Tensor("b", "FP64", (1,), raw_bytes(b, "FP64")),
        ),
        r,
    )
    result = _read(body, length)
    assert result.as_numpy("a").tolist() == [1, 2] and result.as_numpy("b").tolist() == [3.5]
    assert json.loads(body[:length])["outputs"][1]["data"] == [3.5]


def test_bytes_that_are_not_text_cannot_be_answered_as_json() -> None:
    raw = raw_bytes(np.array([b"\xff"], dtype=np.object_), "BYTES")
    r = parse(request_json(input_json("FP64", [1], [1.0])))
    with pytest.raises(errors.InvalidRequest, match=r"output 't' .* not UTF-8.*binary_data"):
        v2json.render_infer_response(_answer(v2json.Tensor("t", "BYTES", (1,), raw)), r)


def test_a_runtime_answer_that_does_not_add_up_is_an_internal_error() -> None:
    r = parse(request_json(input_json("FP64", [1], [1.0])))
    bad = _answer(v2json.Tensor("p", "FP64", (3,), b"\0" * 16))
    with pytest.raises(errors.MeshError, match="output 'p' of the runtime's answer") as e:
        v2json.render_infer_response(bad, r)
    assert not isinstance(e.value, errors.InvalidRequest)


def test_metadata_and_health_bodies() -> None:
    m = v2json.ModelMetadata(
        "iris", ("1",), "sklearn", (v2json.TensorMetadata("predict", "FP64", (-1, 4)),), ()
    )
    assert json.loads(v2json.render_model_metadata(m)) == {
        "name": "iris",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "predict", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [],
    }
    assert json.loads(v2json.render_server_metadata("meshserve", "1.0", ["x"])) == {
        "name": "meshserve",
        "version": "1.0",
        "extensions": ["x"],
    }
    assert json.loads(v2json.render_ready(False, "iris")) == {"name": "iris", "ready": False}
    assert json.loads(v2json.error_body('model "a" is not registered')) == {
        "error": 'model "a" is not registered'
    }
