"""JSON tensor data ↔ the raw bytes the runtimes take, for every V2 datatype.

Bodies are built by ``tritonclient.http`` itself (its public
``generate_request_body``) and the expected raw bytes are what
``tritonclient.grpc`` would carry, so these check the wire format the real
clients speak, not :mod:`router.tensor_packing`'s idea of it.
"""

from __future__ import annotations

import json
import struct
from typing import Literal

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from router import tensor_packing, v2json
from tests.router.v2_bodies import NUMERIC, client_body, input_json, parse, raw_bytes, request_json

# --- every datatype, as the client sends it ---------------------------------------


@pytest.mark.parametrize("datatype", sorted(NUMERIC))
@pytest.mark.parametrize("binary", [False, True])
def test_every_numeric_datatype_arrives_as_the_raw_bytes_grpc_would_carry(
    datatype: str, binary: bool
) -> None:
    arr = (np.arange(6) % 2 == 0) if datatype == "BOOL" else np.arange(6) * 3
    arr = arr.astype(NUMERIC[datatype]).reshape(2, 3)
    body, length = client_body({"x": (datatype, arr)}, binary)
    (t,) = v2json.parse_infer_request(body, length).inputs
    assert (t.name, t.datatype, t.shape) == ("x", datatype, (2, 3))
    assert t.raw == raw_bytes(arr, datatype)
    assert "binary_data_size" not in t.parameters


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_inputs_carry_a_length_before_each_element(binary: bool) -> None:
    arr = np.array([["héllo", ""], ["wörld", "x" * 300]], dtype=np.object_)
    body, length = client_body({"x": ("BYTES", arr)}, binary)
    (t,) = v2json.parse_infer_request(body, length).inputs
    assert t.raw == raw_bytes(arr, "BYTES")
    assert tensor_packing.split_bytes(t.raw)[1] == b""
    assert tensor_packing.unpack("BYTES", t.raw, (2, 2)) == ["héllo", "", "wörld", "x" * 300]


def test_binary_bytes_elements_need_not_be_text() -> None:
    arr = np.array([b"\xff\x00", b"ok"], dtype=np.object_)
    body, length = client_body({"x": ("BYTES", arr)}, binary=True)
    (t,) = v2json.parse_infer_request(body, length).inputs
    assert tensor_packing.split_bytes(t.raw) == [b"\xff\x00", b"ok"]


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
    body, length = client_body({"x": (datatype, arr)}, binary=False)
    (t,) = v2json.parse_infer_request(body, length).inputs
    assert t.raw == raw_bytes(arr, datatype)
    assert tensor_packing.unpack(datatype, t.raw, shape) == arr.reshape(-1).tolist()


def test_nested_and_flat_data_are_the_same_tensor() -> None:
    nested = parse(request_json(input_json("INT32", [2, 2], [[1, 2], [3, 4]])))
    flat = parse(request_json(input_json("INT32", [2, 2], [1, 2, 3, 4])))
    assert nested.inputs[0].raw == flat.inputs[0].raw == np.arange(1, 5, dtype="<i4").tobytes()


def test_scalar_and_empty_shapes() -> None:
    (scalar,) = parse(request_json(input_json("FP64", [], [2.5]))).inputs
    assert scalar.shape == () and scalar.raw == struct.pack("<d", 2.5)
    (empty,) = parse(request_json(input_json("INT64", [0, 3], []))).inputs
    assert empty.shape == (0, 3) and empty.raw == b""


def test_bf16_is_the_upper_half_of_float32_rounded_to_nearest_even() -> None:
    raw = tensor_packing.pack("BF16", [1.0, -2.0, 1.00390625, 1.01171875, float("nan"), 3e38], [6])
    bits = struct.unpack("<6H", raw)
    assert bits[:4] == (0x3F80, 0xC000, 0x3F80, 0x3F82)
    assert bits[4] == 0x7FC0  # NaN stays NaN
    values = tensor_packing.unpack("BF16", raw, [6])
    assert values[:4] == [1.0, -2.0, 1.0, 1.015625]
    assert np.isnan(values[4]) and values[5] == pytest.approx(3e38, rel=1e-2)


def test_bf16_binary_input_is_taken_as_is() -> None:
    raw = struct.pack("<2H", 0x3F80, 0x4000)
    doc = {"inputs": [input_json("BF16", [2], None)]}
    del doc["inputs"][0]["data"]
    doc["inputs"][0]["parameters"] = {"binary_data_size": 4}
    head = json.dumps(doc).encode()
    (t,) = v2json.parse_infer_request(head + raw, len(head)).inputs
    assert t.raw == raw and tensor_packing.unpack("BF16", t.raw, [2]) == [1.0, 2.0]


def test_bool_output_bytes_other_than_zero_read_as_true() -> None:
    assert tensor_packing.unpack("BOOL", b"\x00\x01\x02", [3]) == [False, True, True]
