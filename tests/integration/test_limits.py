"""Large messages through two nodes (real MLServers), with the limit raised
to 64 MiB (the default is 16 MiB).

A request exactly at ``MM_SVC_GRPC_MAX_MSG_SIZE``, sent under a Predictor's
name to the node that does not hold the model, crosses client → node → peer
→ runtime and back, although each node rewrites its name to the (longer)
model id; one byte more is refused by the first node with
``RESOURCE_EXHAUSTED`` naming the limit, before anything is forwarded. The
requests are built by hand so their size is exact.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from mesh.edges import etcd_process
from meshserve import samples
from router import client_messages
from tests.integration import mesh_fixtures

LIMIT = 64 * 1024 * 1024
NAME = "big-iris"


@pytest.fixture(scope="module")
def nodes(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[mesh_fixtures.NodeThread]]:
    threads = []
    for i in range(2):
        base = mesh_fixtures.node_settings(
            module_etcd.endpoint, tmp_path_factory.mktemp(f"limits{i}-"), prefix="limits"
        )
        service = dataclasses.replace(base.service, max_message_bytes=LIMIT)
        threads.append(mesh_fixtures.NodeThread(dataclasses.replace(base, service=service)))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = [pool.submit(t.start) for t in threads]
    try:
        for f in started:
            f.result()
        yield threads
    finally:
        mesh_fixtures.stop_cluster(threads)


@pytest.fixture(scope="module")
def placed(
    nodes: list[mesh_fixtures.NodeThread], tmp_path_factory: pytest.TempPathFactory
) -> tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread]:
    """The iris Predictor, loaded on one node: (the node without it, the holder)."""
    sample = samples.train_iris_logistic(tmp_path_factory.mktemp("iris") / "model")
    with nodes[0].client() as c:
        c.apply(mesh_fixtures.predictor_spec(NAME, sample.folder))
    mesh_fixtures.infer(nodes[1].endpoint, NAME, sample.inputs)
    holder = nodes[1] if nodes[1].node.manager.model_count() else nodes[0]
    entry = nodes[0] if holder is nodes[1] else nodes[1]
    assert entry.node.manager.model_count() == 0
    return entry, holder


def request_of_size(size: int) -> tuple[bytes, int]:
    """A ``ModelInferRequest`` for ``NAME`` of exactly ``size`` bytes (rows
    of the 4 iris features, the request id padding the rest), and its rows."""
    rows = (size - 1024) // 32
    x = np.tile(np.array([[5.1, 3.5, 1.4, 0.2]]), (rows, 1))

    def build(pad: int) -> Any:
        msg = service_pb2.ModelInferRequest(model_name=NAME, id="p" * pad)
        msg.inputs.add(name="predict", datatype="FP64", shape=[rows, 4])
        msg.raw_input_contents.append(x.astype(np.float64).tobytes())
        return msg

    pad = 900
    for _ in range(3):  # the length prefix of the id may take another byte
        pad += size - build(pad).ByteSize()
    data: bytes = build(pad).SerializeToString()
    assert len(data) == size
    return data, rows


def _call(endpoint: str, request: bytes) -> bytes:
    with grpc.insecure_channel(
        endpoint,
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    ) as ch:
        answer: bytes = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(
            request, timeout=120
        )
        return answer


def test_a_request_exactly_at_the_limit_crosses_two_nodes_under_a_predictor_name(
    placed: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread],
) -> None:
    entry, _ = placed
    request, rows = request_of_size(LIMIT)
    before = entry.node.plane.forwarded
    answer = service_pb2.ModelInferResponse.FromString(_call(entry.endpoint, request))
    assert entry.node.plane.forwarded == before + 1
    assert answer.model_name == NAME
    out = np.frombuffer(answer.raw_output_contents[0], dtype=np.int64)
    assert out.shape == (rows,) and set(out.tolist()) == {0}  # every row is a setosa


def test_a_request_one_byte_over_the_limit_is_refused_naming_the_limit(
    placed: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread],
) -> None:
    entry, _ = placed
    request, _ = request_of_size(LIMIT + 1)
    before = entry.node.plane.forwarded
    with pytest.raises(grpc.RpcError) as e:
        _call(entry.endpoint, request)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.value.details() == (
        f"the request of {LIMIT + 1} bytes is over the limit of {LIMIT} bytes "
        "(MM_SVC_GRPC_MAX_MSG_SIZE)"
    )
    assert entry.node.plane.forwarded == before


def test_a_request_far_over_the_limit_is_refused_by_grpc_itself(
    placed: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread],
) -> None:
    entry, _ = placed
    too_big = client_messages.transport_limit(LIMIT) + 1
    with pytest.raises(grpc.RpcError) as e:
        _call(entry.endpoint, b"\x0a\x08big-iris" + b"\x00" * (too_big - 10))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(client_messages.transport_limit(LIMIT)) in (e.value.details() or "")


def test_a_rest_body_over_the_limit_is_413_naming_the_limit(
    placed: tuple[mesh_fixtures.NodeThread, mesh_fixtures.NodeThread],
) -> None:
    entry, _ = placed
    conn = http.client.HTTPConnection("127.0.0.1", entry.node.rest.port, timeout=60)
    try:
        conn.request(
            "POST",
            f"/v2/models/{NAME}/infer",
            b"{" + b" " * LIMIT + b"}",
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    assert response.status == 413
    assert f"over the limit of {LIMIT} bytes (MM_SVC_GRPC_MAX_MSG_SIZE)" in body
