"""Triton's model-repository, shared-memory and metadata calls through the
mesh, as tritonclient's example clients make them: the index lists the
Predictors, load loads one now, unload drops its copy and keeps it
registered; shared memory says none is registered and refuses to register
(real etcd, MLServer and gRPC)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient import http as triton_http
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from meshserve import samples
from tests.integration import mesh_fixtures


@pytest.fixture(scope="module")
def iris(
    mesh_node: mesh_fixtures.NodeThread, tmp_path_factory: pytest.TempPathFactory
) -> samples.Sample:
    sample = samples.train_iris_logistic(tmp_path_factory.mktemp("repo") / "iris")
    with mesh_node.client() as mesh:
        mesh.apply(mesh_fixtures.predictor_spec("iris-repo", sample.folder))
    return sample


def _state(c: triton.InferenceServerClient, name: str) -> tuple[str, str]:
    for m in c.get_model_repository_index().models:
        if m.name == name:
            return m.state, m.reason
    raise AssertionError(f"{name} is not in the index")


def _ready_names(endpoint: str) -> list[str]:
    """The index with ``ready`` set: loaded models only."""
    request = service_pb2.RepositoryIndexRequest(ready=True).SerializeToString()
    with grpc.insecure_channel(endpoint) as channel:
        data = channel.unary_unary("/inference.GRPCInferenceService/RepositoryIndex")(
            request, timeout=30
        )
    return [m.name for m in service_pb2.RepositoryIndexResponse.FromString(data).models]


def test_index_load_and_unload_follow_the_mesh(
    mesh_node: mesh_fixtures.NodeThread, iris: samples.Sample
) -> None:
    manager = mesh_node.node.manager
    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        state, reason = _state(c, "iris-repo")
        assert state == "UNAVAILABLE" and "loads on its first request" in reason
        c.load_model("iris-repo")
        # the index reads the node's mirror, which follows the load a moment later
        mesh_fixtures.wait_for(lambda: _state(c, "iris-repo") == ("READY", ""))
        assert "iris-repo" in _ready_names(mesh_node.endpoint)
        assert c.is_model_ready("iris-repo")
        c.unload_model("iris-repo")
        vmodel = mesh_node.node.table.vmodel("iris-repo")
        assert vmodel is not None and not manager.has_copy(vmodel.active_model)
        mesh_fixtures.wait_for(lambda: _state(c, "iris-repo")[0] == "UNAVAILABLE")  # kept
        assert "iris-repo" not in _ready_names(mesh_node.endpoint)
        got = mesh_fixtures.infer(mesh_node.endpoint, "iris-repo", iris.inputs)
        np.testing.assert_array_equal(got, iris.expected)  # loads again on demand
        with pytest.raises(InferenceServerException) as info:
            c.load_model("not-registered")
        assert info.value.status() == "StatusCode.NOT_FOUND"


def test_shared_memory_is_none_and_cannot_be_registered(
    mesh_node: mesh_fixtures.NodeThread,
) -> None:
    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        assert not c.get_system_shared_memory_status().regions
        assert not c.get_cuda_shared_memory_status().regions
        c.unregister_system_shared_memory()
        c.unregister_cuda_shared_memory()
        with pytest.raises(InferenceServerException) as info:
            c.register_system_shared_memory("region", "/shm-key", 64)
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "over the network" in (info.value.message() or "")


def test_server_metadata_lists_the_extensions_the_mesh_serves(
    mesh_node: mesh_fixtures.NodeThread,
) -> None:
    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        extensions = set(c.get_server_metadata().extensions)
    assert {"statistics", "model_repository", "binary_tensor_data"} <= extensions
    assert not extensions & {"system_shared_memory", "cuda_shared_memory"}


def _rest_state(c: triton_http.InferenceServerClient, name: str) -> str:
    (entry,) = [m for m in c.get_model_repository_index() if m["name"] == name]
    return str(entry["state"])


def test_the_same_calls_work_over_rest(
    mesh_node: mesh_fixtures.NodeThread, iris: samples.Sample
) -> None:
    c = triton_http.InferenceServerClient(f"127.0.0.1:{mesh_node.node.rest.port}")
    try:
        c.load_model("iris-repo")
        mesh_fixtures.wait_for(lambda: _rest_state(c, "iris-repo") == "READY")
        c.unload_model("iris-repo")
        mesh_fixtures.wait_for(lambda: _rest_state(c, "iris-repo") == "UNAVAILABLE")
        with pytest.raises(InferenceServerException) as info:
            c.load_model("not-registered")
        assert info.value.status() == "404"
    finally:
        c.close()
