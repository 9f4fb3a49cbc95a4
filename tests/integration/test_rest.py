"""A user's view of the V2 REST endpoint: unmodified ``tritonclient.http``
against a real node (real etcd, real MLServer), answers compared with
scikit-learn's and with what the gRPC port says for the same model.

The REST server runs on the node's own event loop, over the node's own data
plane, as the node runs it in production.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import pathlib
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from tritonclient import grpc as triton_grpc
from tritonclient import http as triton_http
from tritonclient.utils import InferenceServerException

from meshserve import node, samples
from router import rest
from tests.integration import mesh_fixtures

_names = itertools.count(1)


def _name(prefix: str) -> str:
    return f"rest-{prefix}-{next(_names)}"


def _start(n: mesh_fixtures.NodeThread, max_body_bytes: int = 16 * 1024 * 1024) -> rest.RestServer:
    server = rest.RestServer(
        n.node.plane, n.node.ready, node.version(), "127.0.0.1", 0, max_body_bytes
    )
    n.run(server.start())
    return server


@pytest.fixture(scope="module")
def rest_url(mesh_node: mesh_fixtures.NodeThread) -> Iterator[str]:
    server = _start(mesh_node)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        mesh_node.run(server.stop())


@pytest.fixture(scope="module")
def iris(
    mesh_node: mesh_fixtures.NodeThread, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, samples.Sample]:
    """An iris Predictor, registered once for the module."""
    sample = samples.train_iris_logistic(tmp_path_factory.mktemp("iris") / "model")
    name = _name("iris")
    with mesh_node.client() as mesh:
        mesh.apply(mesh_fixtures.predictor_spec(name, sample.folder))
    return name, sample


def _infer(
    url: str,
    model: str,
    x: npt.NDArray[np.float64],
    binary: bool | None,
    headers: dict[str, str] | None = None,
) -> triton_http.InferResult:
    """``predict`` through REST; ``binary`` None: ask for no output by name."""
    with triton_http.InferenceServerClient(url, network_timeout=60) as c:
        inp = triton_http.InferInput("predict", list(x.shape), "FP64")
        inp.set_data_from_numpy(x, binary_data=bool(binary))
        outputs = None if binary is None else [triton_http.InferRequestedOutput("predict", binary)]
        return c.infer(model, [inp], outputs=outputs, headers=headers)


def _get(url: str, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("binary", [False, True, None])
def test_infers_a_predictor_by_name_with_sklearns_answers(
    rest_url: str, iris: tuple[str, samples.Sample], binary: bool | None
) -> None:
    name, sample = iris
    result = _infer(rest_url, name, sample.inputs, binary)
    np.testing.assert_array_equal(result.as_numpy("predict").reshape(-1), sample.expected)
    response = result.get_response()
    assert response["model_name"] == name
    (out,) = response["outputs"]
    assert ("data" in out) is (binary is False)


def test_compressed_requests_and_a_batch_too_big_to_parse_on_the_event_loop(
    rest_url: str, iris: tuple[str, samples.Sample]
) -> None:
    name, sample = iris
    reps = 8000  # about 2.5 MB of JSON: over rest.OFFLOAD_BYTES
    x = np.tile(sample.inputs, (reps, 1))
    with triton_http.InferenceServerClient(rest_url, network_timeout=60) as c:
        inp = triton_http.InferInput("predict", list(x.shape), "FP64")
        inp.set_data_from_numpy(x, binary_data=False)
        out = triton_http.InferRequestedOutput("predict", binary_data=False)
        for compression in (None, "gzip", "deflate"):
            result = c.infer(
                name,
                [inp],
                outputs=[out],
                request_compression_algorithm=compression,
                response_compression_algorithm=compression,
            )
            np.testing.assert_array_equal(
                result.as_numpy("predict").reshape(-1), np.tile(sample.expected, reps)
            )


def test_routes_by_the_mm_headers_as_grpc_does(
    rest_url: str, iris: tuple[str, samples.Sample]
) -> None:
    name, sample = iris
    model_id = mesh_fixtures.predictor_spec(name, sample.folder).model_id
    for headers in ({"mm-vmodel-id": name}, {"mm-model-id": model_id}):
        result = _infer(rest_url, "ignored", sample.inputs, True, headers)
        np.testing.assert_array_equal(result.as_numpy("predict").reshape(-1), sample.expected)


def test_metadata_and_readiness_match_the_grpc_port(
    mesh_node: mesh_fixtures.NodeThread, rest_url: str, iris: tuple[str, samples.Sample]
) -> None:
    name, sample = iris
    _infer(rest_url, name, sample.inputs, True)  # loaded
    with (
        triton_http.InferenceServerClient(rest_url) as h,
        triton_grpc.InferenceServerClient(mesh_node.endpoint) as g,
    ):
        meta = h.get_model_metadata(name)
        assert meta["name"] == name
        want = g.get_model_metadata(name, as_json=True)
        assert meta["platform"] == want.get("platform", "")
        assert meta["versions"] == want.get("versions", [])
        for key in ("inputs", "outputs"):
            got = [{**t, "shape": [str(d) for d in t["shape"]]} for t in meta[key]]
            assert got == want.get(key, [])
        assert h.is_model_ready(name)
        assert h.is_model_ready(name, model_version="1")  # the mesh answers, any version
        assert h.is_server_live() and h.is_server_ready()
        server = h.get_server_metadata()
        assert server["name"] == "meshserve" and server["version"] == node.version()
        assert "binary_tensor_data" in server["extensions"]


def test_unknown_model_is_404_naming_it(rest_url: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        _infer(rest_url, "no-such-model", np.zeros((1, 4)), True)
    assert info.value.status() == "404"
    assert "no-such-model" in info.value.message()
    for path in ("/v2/models/no-such-model", "/v2/models/no-such-model/ready"):
        status, body = _get(rest_url, path)
        assert status == 404 and "no-such-model" in body["error"]
    with triton_http.InferenceServerClient(rest_url) as c:
        assert not c.is_model_ready("no-such-model")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{nope", "not valid JSON"),
        (b'{"inputs": [{"name": "predict", "datatype": "FP64", "shape": [1, 4]}]}', "neither"),
        (
            b'{"inputs": [{"name": "predict", "datatype": "FP64", "shape": [1, 4], "data": [1]}]}',
            "1 elements where shape [1, 4] needs 4",
        ),
        (
            b'{"inputs": [{"name": "predict", "datatype": "FP64", "shape": [1, 4],'
            b' "data": [1, NaN, 3, 4]}]}',
            "NaN",
        ),
        (
            b'{"inputs": [{"name": "predict", "datatype": "FLOAT64", "shape": [1, 4],'
            b' "data": [1, 2, 3, 4]}]}',
            "FLOAT64",
        ),
        (
            b'{"inputs": [{"name": "predict", "datatype": "FP64", "shape": [1, 3],'
            b' "data": [1, 2, 3]}]}',
            "features",
        ),
    ],
    ids=["json", "no-data", "short", "nan", "datatype", "features"],
)
def test_malformed_body_is_400_naming_the_problem_and_the_copy_is_untouched(
    rest_url: str,
    iris: tuple[str, samples.Sample],
    mesh_node: mesh_fixtures.NodeThread,
    body: bytes,
    problem: str,
) -> None:
    registry = mesh_node.node.manager.metrics.registry
    counts = ("modelmesh_loadmodel_milliseconds_count", "modelmesh_unloadmodel_milliseconds_count")
    _infer(rest_url, iris[0], iris[1].inputs, True)  # loaded before
    before = [registry.get_sample_value(c) for c in counts]
    status, answer = _get(rest_url, f"/v2/models/{iris[0]}/infer", "POST", body)
    assert status == 400, answer
    assert problem in answer["error"]
    assert [registry.get_sample_value(c) for c in counts] == before


def test_a_batch_that_does_not_fit_the_model_is_400_naming_the_input(
    rest_url: str, iris: tuple[str, samples.Sample]
) -> None:
    name, sample = iris
    with pytest.raises(InferenceServerException) as info:
        _infer(rest_url, name, np.zeros((1, 3)), True)  # iris has 4 features
    assert info.value.status() == "400"
    assert "'predict'" in info.value.message() and "features" in info.value.message()
    words = {
        "inputs": [
            {"name": "predict", "datatype": "BYTES", "shape": [1, 4], "data": ["a", "b", "c", "d"]}
        ]
    }
    status, answer = _get(rest_url, f"/v2/models/{name}/infer", "POST", json.dumps(words).encode())
    assert status == 400, answer
    np.testing.assert_array_equal(  # and the model serves on
        _infer(rest_url, name, sample.inputs, True).as_numpy("predict").reshape(-1),
        sample.expected,
    )


def test_a_model_that_fails_to_load_is_503(
    mesh_node: mesh_fixtures.NodeThread, rest_url: str, tmp_path: pathlib.Path
) -> None:
    name = _name("corrupt")
    with mesh_node.client() as mesh:
        folder = samples.write_corrupt_model(tmp_path / "corrupt").parent
        mesh.apply(mesh_fixtures.predictor_spec(name, folder))
    with pytest.raises(InferenceServerException) as info:
        _infer(rest_url, name, np.zeros((1, 4)), True)
    assert info.value.status() in ("503", "500")  # FAILED_PRECONDITION or the runtime's INTERNAL
    with pytest.raises(InferenceServerException, match="failed to load") as again:
        _infer(rest_url, name, np.zeros((1, 4)), True)  # fails fast with the recorded failure
    assert again.value.status() == "503"


def test_unknown_routes_and_methods_answer_in_v2_json(rest_url: str) -> None:
    status, body = _get(rest_url, "/v2/nothing")
    assert status == 404 and "/v2/nothing" in body["error"]
    status, body = _get(rest_url, "/v2/health/live", "POST", b"")
    assert status == 405 and "GET" in body["error"]


def test_a_body_over_the_limit_is_413(mesh_node: mesh_fixtures.NodeThread) -> None:
    server = _start(mesh_node, max_body_bytes=1024)
    try:
        status, body = _get(f"127.0.0.1:{server.port}", "/v2/models/m/infer", "POST", b" " * 4096)
        assert status == 413 and "1024 bytes" in body["error"]
    finally:
        mesh_node.run(server.stop())


def _read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP response's head and body, read as far as it goes and no
    further (the server may keep the connection open afterwards)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536) or b"<closed>"
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += s.recv(65536) or b"<closed>"
    return head, body


@pytest.mark.parametrize("declared", [1025, 10**12, 2**63 - 1])
def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(
    mesh_node: mesh_fixtures.NodeThread, declared: int
) -> None:
    server = _start(mesh_node, max_body_bytes=1024)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n{" % declared
            )
            head, body = _read_response(s)  # a timeout here is the old hang
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"1024 bytes" in body
    finally:
        mesh_node.run(server.stop())


def test_a_client_hanging_up_mid_body_is_one_info_line(
    mesh_node: mesh_fixtures.NodeThread, caplog: pytest.LogCaptureFixture
) -> None:
    server = _start(mesh_node, max_body_bytes=1024)
    caplog.set_level(logging.INFO, logger=rest.__name__)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            )
        mesh_fixtures.wait_for(
            lambda: any("hung up" in r.getMessage() for r in caplog.records), what="the log line"
        )
    finally:
        mesh_node.run(server.stop())
    mine = [r for r in caplog.records if r.name == rest.__name__]
    assert [(r.levelno, r.exc_info) for r in mine] == [(logging.INFO, None)], mine


def test_a_taken_port_is_a_config_error(mesh_node: mesh_fixtures.NodeThread, rest_url: str) -> None:
    taken = int(rest_url.rsplit(":", 1)[1])
    server = rest.RestServer(
        mesh_node.node.plane, mesh_node.node.ready, "v", "127.0.0.1", taken, 1024
    )
    with pytest.raises(Exception, match=f"cannot listen on 127.0.0.1:{taken}"):
        mesh_node.run(server.start())
