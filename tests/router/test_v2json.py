"""V2 JSON and the binary tensor extension ↔ tensors ↔ protobuf, without a server.

Requests are built by ``tritonclient.http`` itself (its public
``generate_request_body``) and answers read back by its ``InferResult``, so
the round trips check the wire format the real client speaks, not this
module's idea of it.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal

import grpc
import hypothesis
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient import http as triton_http
from tritonclient import utils as triton_utils
from tritonclient.grpc import service_pb2

from mesh.core import errors
from router import dataplane, rest, v2json

NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def _client_body(
    arrays: dict[str, tuple[str, npt.NDArray[Any]]],
    binary: bool,
    outputs: list[triton_http.InferRequestedOutput] | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The body ``tritonclient.http`` sends for these inputs."""
    inputs = []
    for name, (datatype, arr) in arrays.items():
        inp = triton_http.InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    body, length = triton_http.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, parameters=parameters
    )
    return bytes(body), length


def _raw(arr: npt.NDArray[Any], datatype: str) -> bytes:
    """What ``tritonclient.grpc`` puts in ``raw_input_contents``."""
    if datatype == "BYTES":
        out: bytes = triton_utils.serialize_byte_tensor(arr).item() if arr.size else b""
        return out
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def _parse(body: bytes | str, length: int | None = None) -> v2json.InferRequest:
    data = body.encode() if isinstance(body, str) else body
    return v2json.parse_infer_request(data, length)


def _input(datatype: str, shape: list[Any], data: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": datatype, "shape": shape, "data": data, **extra}


def _request(*inputs: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"inputs": list(inputs), **extra})


# --- every datatype, as the client sends it ---------------------------------------


@pytest.mark.parametrize("datatype", sorted(NUMERIC))
@pytest.mark.parametrize("binary", [False, True])
def test_every_numeric_datatype_arrives_as_the_raw_bytes_grpc_would_carry(
    datatype: str, binary: bool
) -> None:
    arr = (np.arange(6) % 2 == 0) if datatype == "BOOL" else np.arange(6) * 3
    arr = arr.astype(NUMERIC[datatype]).reshape(2, 3)
    body, length = _client_body({"x": (datatype, arr)}, binary)
    (t,) = v2json.parse_infer_request(body, length).inputs
    assert (t.name, t.datatype, t.shape) == ("x", datatype, (2, 3))
    assert t.raw == _raw(arr, datatype)
    assert "binary_data_size" not in t.parameters


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_inputs_carry_a_length_before_each_element(binary: bool) -> None:
    arr = np.array([["héllo", ""], ["wörld", "x" * 300]], dtype=np.object_)
    body, length = _client_body({"x": ("BYTES", arr)}, binary)
    (t,) = v2json.parse_infer_request(body, length).inputs
    assert t.raw == _raw(arr, "BYTES")
    assert v2json.split_bytes(t.raw)[1] == b""
    assert v2json.unpack("BYTES", t.raw, (2, 2)) == ["héllo", "", "wörld", "x" * 300]


def test_binary_bytes_elements_need_not_be_text() -> None:
    arr = np.array([b"\xff\x00", b"ok"], dtype=np.object_)
    body, length = _client_body({"x": ("BYTES", arr)}, binary=True)
    (t,) = v2json.parse_infer_request(body, length).inputs
    assert v2json.split_bytes(t.raw) == [b"\xff\x00", b"ok"]


@hypothesis.given(
    datatype=st.sampled_from(sorted(NUMERIC)),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    data=st.data(),
)
@hypothesis.settings(max_examples=200, deadline=None)
def test_json_data_round_trips_for_any_shape(
    datatype: str, shape: tuple[int, ...], data: st.DataObject
) -> None:
    dtype = np.dtype(NUMERIC[datatype])
    widths: dict[int, Literal[16, 32, 64]] = {2: 16, 4: 32, 8: 64}
    elements = (
        st.floats(width=widths[dtype.itemsize], allow_nan=False, allow_infinity=False)
        if dtype.kind == "f"
        else None
    )
    arr = data.draw(hnp.arrays(dtype, shape, elements=elements))
    body, length = _client_body({"x": (datatype, arr)}, binary=False)
    (t,) = v2json.parse_infer_request(body, length).inputs
    assert t.raw == _raw(arr, datatype)
    assert v2json.unpack(datatype, t.raw, shape) == arr.reshape(-1).tolist()


def test_nested_and_flat_data_are_the_same_tensor() -> None:
    nested = _parse(_request(_input("INT32", [2, 2], [[1, 2], [3, 4]])))
    flat = _parse(_request(_input("INT32", [2, 2], [1, 2, 3, 4])))
    assert nested.inputs[0].raw == flat.inputs[0].raw == np.arange(1, 5, dtype="<i4").tobytes()


def test_scalar_and_empty_shapes() -> None:
    (scalar,) = _parse(_request(_input("FP64", [], [2.5]))).inputs
    assert scalar.shape == () and scalar.raw == struct.pack("<d", 2.5)
    (empty,) = _parse(_request(_input("INT64", [0, 3], []))).inputs
    assert empty.shape == (0, 3) and empty.raw == b""


def test_bf16_is_the_upper_half_of_float32_rounded_to_nearest_even() -> None:
    raw = v2json.pack("BF16", [1.0, -2.0, 1.00390625, 1.01171875, float("nan"), 3e38], [6])
    bits = struct.unpack("<6H", raw)
    assert bits[:4] == (0x3F80, 0xC000, 0x3F80, 0x3F82)
    assert bits[4] == 0x7FC0  # NaN stays NaN
    values = v2json.unpack("BF16", raw, [6])
    assert values[:4] == [1.0, -2.0, 1.0, 1.015625]
    assert np.isnan(values[4]) and values[5] == pytest.approx(3e38, rel=1e-2)


def test_bf16_binary_input_is_taken_as_is() -> None:
    raw = struct.pack("<2H", 0x3F80, 0x4000)
    doc = {"inputs": [_input("BF16", [2], None)]}
    del doc["inputs"][0]["data"]
    doc["inputs"][0]["parameters"] = {"binary_data_size": 4}
    head = json.dumps(doc).encode()
    (t,) = v2json.parse_infer_request(head + raw, len(head)).inputs
    assert t.raw == raw and v2json.unpack("BF16", t.raw, [2]) == [1.0, 2.0]


def test_bool_output_bytes_other_than_zero_read_as_true() -> None:
    assert v2json.unpack("BOOL", b"\x00\x01\x02", [3]) == [False, True, True]


# --- the rest of the request ------------------------------------------------------


def test_parameters_id_and_requested_outputs() -> None:
    outputs = [
        triton_http.InferRequestedOutput("a", binary_data=True),
        triton_http.InferRequestedOutput("b", binary_data=False, class_count=2),
    ]
    body, length = _client_body(
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
    body, length = _client_body({"x": ("FP64", np.zeros(2))}, binary=False)
    r = v2json.parse_infer_request(body, length)
    assert r.outputs == () and r.binary_outputs and r.binary("anything")
    assert "binary_data_output" not in r.parameters


def test_binary_data_output_is_the_default_of_listed_outputs() -> None:
    r = _parse(
        _request(
            _input("FP64", [1], [1.0]),
            outputs=[{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
            parameters={"binary_data_output": True},
        )
    )
    assert r.binary("a") and not r.binary("b")


def test_several_binary_inputs_take_consecutive_slices() -> None:
    a = np.arange(3, dtype=np.int16)
    b = np.array(["p", "qq"], dtype=np.object_)
    c = np.full((2, 2), 7.5, np.float64)
    body, length = _client_body({"a": ("INT16", a), "b": ("BYTES", b), "c": ("FP64", c)}, True)
    r = v2json.parse_infer_request(body, length)
    assert [t.raw for t in r.inputs] == [_raw(a, "INT16"), _raw(b, "BYTES"), _raw(c, "FP64")]


def test_json_and_binary_inputs_mix() -> None:
    head = json.dumps(
        {
            "inputs": [
                _input("INT8", [2], [1, -1]),
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
        (_request(_input("FP33", [1], [1])), "'FP33' is not a V2 datatype.*BF16"),
        (_request(_input("FP32", [-1], [1])), "input 'x': shape must hold non-negative integers"),
        (_request(_input("FP32", [1.5], [1])), "shape must hold non-negative integers"),
        (
            _request(_input("FP32", [3], [1, 2])),
            "input 'x': 2 elements where shape \\[3\\] needs 3",
        ),
        (_request(_input("FP32", [2, 2], [[1, 2], [3]])), "not a regular"),
        (_request(_input("INT32", [2], [1, 2.5])), "INT32 data must be integers"),
        (_request(_input("INT8", [1], [128])), "INT8 data must be integers from -128 to 127"),
        (_request(_input("UINT8", [1], [-1])), "UINT8 data must be integers from 0 to 255"),
        (_request(_input("INT32", [1], [True])), "INT32 data must be integers"),
        (_request(_input("FP32", [1], ["1.0"])), "FP32 data must be numbers"),
        (_request(_input("FP32", [1], [None])), "FP32 data must be numbers"),
        (_request(_input("BOOL", [2], [1, 0])), "BOOL data must be true or false"),
        (_request(_input("BYTES", [2], ["a", 1])), "BYTES data must be strings, got int"),
        (_request(_input("FP32", [1], 5)), "input 'x': data must be a JSON array, got a number"),
        (_request({"name": "x", "datatype": "FP32", "shape": [1]}), "neither 'data' nor"),
        (_request(_input("FP32", [1], [1]), _input("FP32", [1], [1])), "input 'x' is given twice"),
        (
            _request(_input("FP32", [1], [1], parameters={"shared_memory_region": "r"})),
            "shared memory .* not supported",
        ),
        (_request(_input("FP32", [1], [1], parameters={"p": [1]})), "parameters.p must be a"),
        (_request(_input("FP32", [1], [1]), id=5), "id must be a string"),
        (_request(_input("FP32", [1], [1]), parameters={"n": 2**64}), "out of the 64-bit range"),
        (_request(_input("FP32", [1], [1]), outputs=[{}]), r"outputs\[0\] has no 'name'"),
        (
            _request(
                _input("FP32", [1], [1]), outputs=[{"name": "o", "parameters": {"binary_data": 1}}]
            ),
            "output 'o': binary_data must be true or false",
        ),
        (
            _request(
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4},
                }
            ),
            "no Inference-Header-Content-Length header",
        ),
    ],
)
def test_malformed_requests_are_invalid_and_say_why(body: str, problem: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=problem):
        _parse(body, None)


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
    r = _parse(_request(_input("FP64", [1], [1.0])))
    body, length = v2json.render_infer_response(
        _answer(
            v2json.Tensor("p", "FP64", (1, 2), _raw(fp, "FP64"), {"content_type": "np"}),
            v2json.Tensor("s", "BYTES", (2,), _raw(text, "BYTES")),
            v2json.Tensor("b", "BOOL", (2,), _raw(flags, "BOOL")),
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
    r = _parse(
        _request(
            _input("FP64", [1], [1.0]),
            outputs=[{"name": "f", "parameters": {"binary_data": True}}, {"name": "i"}],
            parameters={"binary_data_output": True},
        )
    )
    body, length = v2json.render_infer_response(
        _answer(
            v2json.Tensor("f", "FP32", (2, 3), _raw(fp, "FP32")),
            v2json.Tensor("i", "INT64", (2,), _raw(ints, "INT64")),
            v2json.Tensor("t", "BYTES", (2,), _raw(text, "BYTES")),
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
    r = _parse(
        _request(
            _input("FP64", [1], [1.0]),
            outputs=[{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}],
        )
    )
    a, b = np.array([1, 2], np.int32), np.array([3.5], np.float64)
    body, length = v2json.render_infer_response(
        _answer(
            v2json.Tensor("a", "INT32", (2,), _raw(a, "INT32")),
            v2json.Tensor("b", "FP64", (1,), _raw(b, "FP64")),
        ),
        r,
    )
    result = _read(body, length)
    assert result.as_numpy("a").tolist() == [1, 2] and result.as_numpy("b").tolist() == [3.5]
    assert json.loads(body[:length])["outputs"][1]["data"] == [3.5]


def test_bytes_that_are_not_text_cannot_be_answered_as_json() -> None:
    raw = _raw(np.array([b"\xff"], dtype=np.object_), "BYTES")
    r = _parse(_request(_input("FP64", [1], [1.0])))
    with pytest.raises(errors.InvalidRequest, match=r"output 't' .* not UTF-8.*binary_data"):
        v2json.render_infer_response(_answer(v2json.Tensor("t", "BYTES", (1,), raw)), r)


def test_a_runtime_answer_that_does_not_add_up_is_an_internal_error() -> None:
    r = _parse(_request(_input("FP64", [1], [1.0])))
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


# --- protobuf (router.rest's pure half) ---------------------------------------------


def test_the_proto_request_is_what_a_grpc_client_sends() -> None:
    arr = np.arange(8, dtype=np.float64).reshape(2, 4)
    r = _parse(
        _request(
            _input("FP64", [2, 4], arr.tolist(), parameters={"content_type": "np"}),
            id="r1",
            parameters={"n": 2**63 + 1, "t": 0.5, "s": "x", "b": False, "i": -3},
            outputs=[{"name": "predict", "parameters": {"binary_data": True, "classification": 1}}],
        )
    )
    msg = service_pb2.ModelInferRequest.FromString(rest.infer_request("iris", "2", r))
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
    answer = rest.infer_response(msg.SerializeToString())
    assert answer.model_name == "iris" and answer.parameters == {"sequence_id": 4}
    (t,) = answer.outputs
    assert (t.name, t.datatype, t.shape, dict(t.parameters)) == (
        "predict",
        "INT64",
        (3,),
        {"content_type": "np"},
    )
    assert v2json.unpack(t.datatype, t.raw, t.shape) == [0, 1, 2]


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
    getattr(out.contents, v2json.CONTENTS_FIELD[datatype]).extend(values)
    (t,) = rest.infer_response(msg.SerializeToString()).outputs
    expected = [v.decode() for v in values] if datatype == "BYTES" else values
    assert v2json.unpack(datatype, t.raw, t.shape) == expected


def test_proto_answers_that_do_not_add_up_are_internal_errors() -> None:
    msg = service_pb2.ModelInferResponse(model_name="m")
    msg.outputs.add(name="a", datatype="FP32", shape=[1])
    msg.outputs.add(name="b", datatype="FP32", shape=[1])
    msg.raw_output_contents.append(b"\0" * 4)
    with pytest.raises(errors.MeshError, match="2 outputs and 1 raw contents"):
        rest.infer_response(msg.SerializeToString())
    with pytest.raises(errors.MeshError, match="not a valid message"):
        rest.infer_response(b"\xff\xff\xff")


def test_proto_metadata() -> None:
    msg = service_pb2.ModelMetadataResponse(name="iris", versions=["1"], platform="sklearn")
    msg.inputs.add(name="predict", datatype="FP64", shape=[-1, 4])
    msg.outputs.add(name="predict", datatype="INT64", shape=[-1])
    m = rest.model_metadata(msg.SerializeToString())
    assert m == v2json.ModelMetadata(
        "iris",
        ("1",),
        "sklearn",
        (v2json.TensorMetadata("predict", "FP64", (-1, 4)),),
        (v2json.TensorMetadata("predict", "INT64", (-1,)),),
    )


# --- errors -----------------------------------------------------------------------


def test_every_grpc_code_has_an_http_status() -> None:
    assert set(v2json.HTTP_STATUS) == {c.name for c in grpc.StatusCode}
    assert v2json.http_status("SOMETHING_NEW") == 500


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidRequest("bad"), 400),
        (errors.InvalidPredictor("spec.x", "bad"), 400),
        (errors.ModelNotFound("iris", "vmodel"), 404),
        (errors.AlreadyExists("taken"), 409),
        (errors.ModelLoadFailed("iris", "boom"), 503),
        (errors.InsufficientCapacity("full"), 503),
        (errors.RuntimeUnavailable("down"), 503),
        (errors.StoreUnavailable("etcd down"), 503),
        (errors.Conflict("lost"), 503),
        (errors.Reroute("elsewhere"), 503),
        (errors.DeadlineExceeded("late"), 504),
        (errors.ConfigError("bad setting"), 500),
        (errors.MeshError("odd answer"), 500),
    ],
)
def test_mesh_errors_get_one_http_status_each(error: errors.MeshError, status: int) -> None:
    assert rest.status_of(error) == (status, error.message)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("INVALID_ARGUMENT", 400),
        ("NOT_FOUND", 404),
        ("FAILED_PRECONDITION", 503),
        ("RESOURCE_EXHAUSTED", 503),
        ("UNAVAILABLE", 503),
        ("DEADLINE_EXCEEDED", 504),
        ("UNIMPLEMENTED", 501),
        ("INTERNAL", 500),
        ("UNAUTHENTICATED", 401),
        ("PERMISSION_DENIED", 403),
    ],
)
def test_runtime_errors_keep_their_code_meaning(code: str, status: int) -> None:
    assert rest.status_of(dataplane.UpstreamError(code, "from the runtime")) == (
        status,
        "from the runtime",
    )
