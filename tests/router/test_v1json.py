"""KServe V1 bodies as V2 requests, and V2 answers as V1 predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mesh.core import errors
from router import tensor_packing, v1json, v2json


def test_instances_become_one_input_of_their_shape_and_type() -> None:
    req = v1json.parse_predict(b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.0, 2.2, 5.0, 1.5]]}')
    (t,) = req.inputs
    assert (t.name, t.datatype, t.shape) == (v1json.V1_INPUT, "FP64", (2, 4))
    assert np.frombuffer(t.raw, np.float64).tolist() == [5.1, 3.5, 1.4, 0.2, 6.0, 2.2, 5.0, 1.5]


@pytest.mark.parametrize(
    ("body", "datatype", "shape"),
    [
        (b'{"inputs": [1, 2, 3]}', "INT64", (3,)),
        (b'{"instances": [[true], [false]]}', "BOOL", (2, 1)),
        (b'{"instances": ["a cat", "a dog"]}', "BYTES", (2,)),
    ],
)
def test_the_datatype_follows_the_values(
    body: bytes, datatype: str, shape: tuple[int, ...]
) -> None:
    (t,) = v1json.parse_predict(body).inputs
    assert (t.datatype, t.shape) == (datatype, shape)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"[1, 2]", "JSON object"),
        (b'{"instances": []}', "non-empty list"),
        (b'{"predict": [1]}', "non-empty list"),
        (b'{"instances": [[1, 2], [3]]}', "regular"),
        (b'{"instances": [1, "a"]}', "must all be"),
        (b'{"instances": [NaN]}', "NaN"),
        (b'{"instances": [[{"a": 1}]]}', "must all be"),
    ],
)
def test_a_body_that_is_not_a_v1_request_is_refused_saying_why(body: bytes, complaint: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=complaint):
        v1json.parse_predict(body)


def test_predictions_are_the_first_output_shaped() -> None:
    out = v2json.Tensor("predict", "INT64", (2, 1), np.array([[0], [2]], np.int64).tobytes())
    words = v2json.Tensor("labels", "BYTES", (2,), tensor_packing.pack("BYTES", ["a", "b"], (2,)))
    body = v1json.render_predictions(v2json.InferResponse("iris", (out, words)))
    assert json.loads(body) == {"predictions": [0, 2]}  # one value per instance: flat
    pairs = v2json.Tensor("proba", "FP64", (1, 2), np.array([[0.25, 0.75]]).tobytes())
    assert json.loads(v1json.render_predictions(v2json.InferResponse("m", (pairs,)))) == {
        "predictions": [[0.25, 0.75]]
    }
    only_words = v1json.render_predictions(v2json.InferResponse("m", (words,)))
    assert json.loads(only_words) == {"predictions": ["a", "b"]}
