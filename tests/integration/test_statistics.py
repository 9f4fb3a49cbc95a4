"""Triton's statistics calls through the mesh, as tritonclient's example
clients make them: ``get_inference_statistics`` on gRPC and REST, asked of
either node, sums the inferences every node's runtime answered, under the
name the client used (real etcd, two nodes with an MLServer each)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from tritonclient import grpc as triton_grpc
from tritonclient import http as triton_http
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from mesh.core import records
from mesh.edges import etcd_process
from meshserve import samples
from tests.integration import mesh_fixtures

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def pair(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[mesh_fixtures.NodeThread]]:
    nodes = mesh_fixtures.start_cluster(module_etcd.endpoint, tmp_path_factory, 2)
    try:
        yield nodes
    finally:
        mesh_fixtures.stop_cluster(nodes)


@pytest.fixture(scope="module")
def iris(
    pair: list[mesh_fixtures.NodeThread], tmp_path_factory: pytest.TempPathFactory
) -> samples.Sample:
    """``iris-stats``, with a copy on each node (two minimum copies)."""
    sample = samples.train_iris_logistic(tmp_path_factory.mktemp("stats") / "iris")
    spec = dataclasses.replace(
        mesh_fixtures.predictor_spec("iris-stats", sample.folder), min_copies=2
    )
    with pair[0].client() as mesh:
        mesh.apply(spec)

    def both_loaded() -> bool:
        rec = pair[0].node.table.model(spec.model_id)
        return rec is not None and (
            sum(c.state is records.CopyState.LOADED for c in rec.copies.values()) == 2
        )

    mesh_fixtures.mirror_until(pair[0], both_loaded, "a copy on each node")
    return sample


def _refused(endpoint: str) -> None:
    """An inference the runtime refuses (a raw tensor too short)."""
    msg = service_pb2.ModelInferRequest(model_name="iris-stats")
    msg.inputs.add(name="predict", datatype="FP64", shape=[1, 4])
    msg.raw_input_contents.append(b"\0" * 8)
    with grpc.insecure_channel(endpoint) as channel, pytest.raises(grpc.RpcError):
        channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(
            msg.SerializeToString(), timeout=60
        )


def test_statistics_sum_every_nodes_inferences_under_the_name_asked(
    pair: list[mesh_fixtures.NodeThread], iris: samples.Sample
) -> None:
    for node, times in ((pair[0], 3), (pair[1], 2)):
        for _ in range(times):
            got = mesh_fixtures.infer(node.endpoint, "iris-stats", iris.inputs)
            np.testing.assert_array_equal(got, iris.expected)
    _refused(pair[1].endpoint)
    # each node answered from its own copy
    for node in pair:
        (mine,) = node.node.metrics.model_stats.models()
        assert node.node.metrics.model_stats.of(mine) is not None
    for node in pair:
        with triton_grpc.InferenceServerClient(node.endpoint) as c:
            (stats,) = c.get_inference_statistics("iris-stats").model_stats
        assert stats.name == "iris-stats"
        assert stats.inference_count == stats.execution_count == 5
        assert stats.inference_stats.success.count == 5
        assert stats.inference_stats.fail.count == 1
        assert stats.inference_stats.success.ns > 0 and stats.last_inference > 0
    rest = triton_http.InferenceServerClient(f"127.0.0.1:{pair[1].node.rest.port}")
    try:
        (doc,) = rest.get_inference_statistics("iris-stats")["model_stats"]
        everything = rest.get_inference_statistics()["model_stats"]
    finally:
        rest.close()
    assert doc["name"] == "iris-stats" and doc["inference_count"] == 5
    assert doc["inference_stats"]["fail"] == {
        "count": 1,
        "ns": doc["inference_stats"]["fail"]["ns"],
    }
    assert [d["inference_count"] for d in everything] == [5]  # listed by concrete id


def test_statistics_of_an_unknown_model_are_not_found(
    pair: list[mesh_fixtures.NodeThread],
) -> None:
    with (
        triton_grpc.InferenceServerClient(pair[0].endpoint) as c,
        pytest.raises(InferenceServerException) as info,
    ):
        c.get_inference_statistics("nothing-here")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "Request for unknown model: 'nothing-here'" in (info.value.message() or "")
