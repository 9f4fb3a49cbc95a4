"""String (BYTES) tensors through the mesh to MLServer: a scikit-learn text
pipeline gets the strings a client sent, with the request parameter MLServer
reads them by, and its answers come back (real etcd, MLServer)."""

from __future__ import annotations

import pathlib

import joblib
import numpy as np
from sklearn import feature_extraction, naive_bayes, pipeline
from tritonclient import grpc as triton

from tests.integration import mesh_fixtures

TEXTS = ["cheap pills now", "meeting at noon", "win cash now", "lunch at noon"]
LABELS = [1, 0, 1, 0]


def test_a_text_model_reads_the_strings_a_client_sends(
    mesh_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path
) -> None:
    model = pipeline.make_pipeline(
        feature_extraction.text.CountVectorizer(), naive_bayes.MultinomialNB()
    ).fit(TEXTS, LABELS)
    folder = tmp_path / "spam"
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    with mesh_node.client() as c:
        c.apply(mesh_fixtures.predictor_spec("spam-text", folder))
    asked = ["win pills now", "noon meeting", "café at noon"]
    expected = model.predict(asked)
    words = np.array([t.encode() for t in asked], dtype=np.object_)
    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        inp = triton.InferInput("predict", [len(words)], "BYTES")
        inp.set_data_from_numpy(words)
        # MLServer decodes BYTES as strings when the request says so (its
        # StringRequestCodec); the mesh passes the parameter through.
        answer = c.infer("spam-text", [inp], parameters={"content_type": "str"}, client_timeout=120)
        got = answer.as_numpy("predict")
    np.testing.assert_array_equal(got.reshape(-1), expected)
