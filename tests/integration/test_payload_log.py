"""Payload logging and log lines on real nodes (real etcd, real MLServers):
one node logs payloads to a local HTTP sink, the other to a file.

Only the node a client called logs a call (a peer serving a forwarded one
does not), as CloudEvents naming the Predictor and the model; with the sink
down, every request still gets its answer and the failures are counted. The
node's own log lines about a model carry its id, whether a request or a
management call caused them.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import pathlib
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from mesh.core import payload_log_settings
from mesh.edges import etcd_process, ports
from mesh.edges.proto import model_mesh_pb2 as pb2
from mesh.node import logs
from meshserve import samples
from tests.integration import mesh_fixtures

NAME = "iris-logged"


class Sink:
    """A CloudEvents HTTP sink on 127.0.0.1 that can be stopped and started
    again on the same port."""

    def __init__(self) -> None:
        self.port = ports.free_port()
        self.events: list[tuple[dict[str, str], bytes]] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> None:
        events = self.events

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                events.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def nodes(
    module_etcd: etcd_process.EtcdServer,
    tmp_path_factory: pytest.TempPathFactory,
    sink: Sink,
) -> Iterator[tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread, pathlib.Path]]:
    """(node logging to the HTTP sink, node logging to a file, the file)."""
    log_file = tmp_path_factory.mktemp("payloads") / "events.jsonl"
    targets = [sink.url, f"file://{log_file}"]
    threads = []
    for i, target in enumerate(targets):
        base = mesh_fixtures.node_settings(
            module_etcd.endpoint, tmp_path_factory.mktemp(f"logged{i}-"), prefix="logged"
        )
        threads.append(
            mesh_fixtures.NodeThread(
                dataclasses.replace(
                    base, payload_log=payload_log_settings.PayloadLogSettings(target=target)
                )
            )
        )
    for t in threads:
        t.start()
    try:
        yield threads[0], threads[1], log_file
    finally:
        mesh_fixtures.stop_cluster(threads)


@pytest.fixture(scope="module")
def iris(
    nodes: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread, pathlib.Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[samples.Sample, str]:
    """The Predictor, loaded on the file-logging node only."""
    http_node, file_node, _ = nodes
    sample = samples.train_iris_logistic(tmp_path_factory.mktemp("iris") / "model")
    spec = mesh_fixtures.predictor_spec(NAME, sample.folder)
    with http_node.client() as c:
        c.apply(spec)
    file_node.run(file_node.node.manager.ensure_loaded(spec.model_id, 60))
    return sample, spec.model_id


def test_a_call_is_logged_by_the_node_the_client_called_as_cloudevents(
    nodes: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread, pathlib.Path],
    iris: tuple[samples.Sample, str],
    sink: Sink,
) -> None:
    http_node, file_node, log_file = nodes
    sample, model_id = iris
    before = len(sink.events)
    forwarded = http_node.node.plane.forwarded
    got = mesh_fixtures.infer(http_node.endpoint, NAME, sample.inputs)
    np.testing.assert_array_equal(got, sample.expected)
    assert http_node.node.plane.forwarded == forwarded + 1  # served by the file node
    mesh_fixtures.wait_for(lambda: len(sink.events) >= before + 2, 10, "two events")
    (req_h, req_body), (resp_h, resp_body) = sink.events[before : before + 2]
    assert req_h["ce-type"] == "org.kubeflow.serving.inference.request"
    assert resp_h["ce-type"] == "org.kubeflow.serving.inference.response"
    assert req_h["ce-requestid"] == resp_h["ce-requestid"] and req_h["ce-id"] != resp_h["ce-id"]
    assert req_h["ce-inferenceservicename"] == NAME and req_h["ce-modelid"] == model_id
    assert req_h["content-type"] == "application/x-protobuf"
    assert service_pb2.ModelInferRequest.FromString(req_body).model_name == NAME
    answer = service_pb2.ModelInferResponse.FromString(resp_body)
    assert answer.model_name == NAME
    np.testing.assert_array_equal(
        np.frombuffer(answer.raw_output_contents[0], dtype=np.int64), sample.expected
    )
    # The node that served the forwarded call logged nothing for it.
    assert not log_file.exists() or log_file.read_text() == ""
    assert file_node.node.payload_log is not None  # configured, and silent


def test_the_file_node_appends_structured_events_for_its_own_clients(
    nodes: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread, pathlib.Path],
    iris: tuple[samples.Sample, str],
) -> None:
    _, file_node, log_file = nodes
    sample, model_id = iris
    mesh_fixtures.infer(file_node.endpoint, NAME, sample.inputs)

    def lines() -> list[dict[str, str]]:
        text = log_file.read_text() if log_file.exists() else ""
        return [json.loads(x) for x in text.splitlines()]

    mesh_fixtures.wait_for(lambda: len(lines()) >= 2, 10, "two lines in the file")
    request, response = lines()[-2:]
    assert request["type"].endswith(".request") and response["type"].endswith(".response")
    assert request["modelid"] == model_id and request["source"].startswith("meshserve/")
    assert "data_base64" in response


def test_with_the_sink_down_every_request_is_answered_and_failures_are_counted(
    nodes: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread, pathlib.Path],
    iris: tuple[samples.Sample, str],
    sink: Sink,
) -> None:
    http_node = nodes[0]
    sample, _ = iris
    logger = http_node.node.payload_log
    assert logger is not None
    sink.stop()
    try:
        failed = logger.failed
        for _ in range(10):
            got = mesh_fixtures.infer(http_node.endpoint, NAME, sample.inputs)
            np.testing.assert_array_equal(got, sample.expected)
        mesh_fixtures.wait_for(lambda: logger.failed >= failed + 20, 20, "failures counted")
    finally:
        sink.start()
    port = http_node.node.ops.ports["metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'meshserve_payload_log_events_total{outcome="failed"}' in text
    # Back up: events flow again.
    before = len(sink.events)
    mesh_fixtures.infer(http_node.endpoint, NAME, sample.inputs)
    mesh_fixtures.wait_for(lambda: len(sink.events) >= before + 2, 10, "events again")


def _loaded_lines(caplog: pytest.LogCaptureFixture, model_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "mesh.node.cache_manager"
        and r.getMessage().startswith(f"model {model_id} loaded")
    ]


def test_log_lines_about_a_model_carry_its_id(
    nodes: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread, pathlib.Path],
    iris: tuple[samples.Sample, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    http_node = nodes[0]
    sample, _ = iris
    caplog.handler.addFilter(logs.ModelIdFilter())
    caplog.set_level(logging.INFO)
    # A load caused by a request (the data plane names the model)...
    spec = mesh_fixtures.predictor_spec("iris-lines", sample.folder)
    with http_node.client() as c:
        c.apply(spec)
    mesh_fixtures.infer(http_node.endpoint, "iris-lines", sample.inputs)
    mesh_fixtures.wait_for(lambda: bool(_loaded_lines(caplog, spec.model_id)), 10, "a load line")
    assert {getattr(r, "model_id", None) for r in _loaded_lines(caplog, spec.model_id)} == {
        spec.model_id
    }
    # ... and one caused by the management API (its interceptor names it).
    model_id = "ensured-by-api"
    with http_node.client() as c:
        c.mesh.registerModel(
            pb2.RegisterModelRequest(
                modelId=model_id,
                modelInfo=pb2.ModelInfo(type="sklearn", path=str(sample.folder)),
                loadNow=True,
                sync=True,
            ),
            timeout=60,
        )
    lines = _loaded_lines(caplog, model_id)
    assert lines and {getattr(r, "model_id", None) for r in lines} == {model_id}
