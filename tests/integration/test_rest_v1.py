"""KServe's V1 REST protocol through the mesh, as the KServe SDK and curl
users call it: ``GET /v1/models/<m>`` and ``POST /v1/models/<m>:predict``
with instances, answered with scikit-learn's own predictions (real etcd,
MLServer and HTTP)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from meshserve import node, samples
from router import rest
from tests.integration import mesh_fixtures


@pytest.fixture(scope="module")
def v1_url(mesh_node: mesh_fixtures.NodeThread) -> Iterator[str]:
    server = rest.RestServer(
        mesh_node.node.plane, mesh_node.node.ready, node.version(), "127.0.0.1", 0, 1 << 24
    )
    mesh_node.run(server.start())
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        mesh_node.run(server.stop())


@pytest.fixture(scope="module")
def iris(
    mesh_node: mesh_fixtures.NodeThread, tmp_path_factory: pytest.TempPathFactory
) -> samples.Sample:
    sample = samples.train_iris_logistic(tmp_path_factory.mktemp("v1") / "iris")
    with mesh_node.client() as mesh:
        mesh.apply(mesh_fixtures.predictor_spec("iris-v1", sample.folder))
    return sample


def _call(url: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST" if body is not None else "GET", path, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_predict_answers_scikit_learns_predictions(v1_url: str, iris: samples.Sample) -> None:
    body = json.dumps({"instances": iris.inputs.tolist()}).encode()
    status, answer = _call(v1_url, "/v1/models/iris-v1:predict", body)
    assert status == 200, answer
    assert answer == {"predictions": iris.expected.tolist()}


def test_a_registered_model_is_ready_and_an_unknown_one_is_404(
    v1_url: str, iris: samples.Sample
) -> None:
    assert _call(v1_url, "/v1/models/iris-v1") == (200, {"name": "iris-v1", "ready": True})
    status, answer = _call(v1_url, "/v1/models/nothing-here:predict", b'{"instances": [[1]]}')
    assert status == 404 and "nothing-here" in answer["error"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/models/iris-v1:predict", b'{"instances": [[1, NaN, 2, 3]]}', 400, "NaN"),
        ("/v1/models/iris-v1:predict", b'{"instances": [[1, 2], [3]]}', 400, "regular"),
        ("/v1/models/iris-v1:explain", b'{"instances": [[1, 2, 3, 4]]}', 404, "has no explainer"),
        ("/v1/models/iris-v1:train", b"{}", 404, ":predict"),
    ],
)
def test_what_cannot_be_answered_says_why(
    v1_url: str, iris: samples.Sample, path: str, body: bytes, status: int, says: str
) -> None:
    got, answer = _call(v1_url, path, body)
    assert got == status and says in answer["error"], answer
