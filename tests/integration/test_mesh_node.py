"""A user's view of one mesh node: Predictors in, right answers out.

Real etcd, real MLServer, real gRPC; answers compared with scikit-learn's.
"""

from __future__ import annotations

import itertools
import pathlib
import shutil
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from kube import mesh_client
from mesh.edges.proto import model_mesh_pb2 as pb2
from meshserve import client, samples
from tests.integration import mesh_fixtures

_names = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def _series(text: str, name: str) -> float:
    """The value of one unlabelled series in Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exposed")


_PULLS = "meshserve_model_pull_milliseconds_count"


def _model_state(c: mesh_client.MeshClient, model_id: str) -> str:
    for m in c.models():
        if m.model_id == model_id:
            return str(m.status)
    return "NOT_FOUND"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, samples.Sample]:
    d = tmp_path_factory.mktemp("trained")
    return {
        "iris": samples.train_iris_logistic(d / "iris"),
        "wine": samples.train_wine_forest(d / "wine"),
        "diabetes": samples.train_diabetes_ridge(d / "diabetes"),
    }


@pytest.fixture
def mesh(mesh_node: mesh_fixtures.NodeThread) -> Iterator[mesh_client.MeshClient]:
    with mesh_node.client() as c:
        yield c


def test_serves_a_predictor_by_name_with_sklearns_answers(
    mesh_node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    trained: dict[str, samples.Sample],
) -> None:
    name = _name("iris")
    spec = mesh_fixtures.predictor_spec(name, trained["iris"].folder)
    mesh.apply(spec)
    got = mesh_fixtures.infer(mesh_node.endpoint, name, trained["iris"].inputs)
    np.testing.assert_array_equal(got, trained["iris"].expected)
    status = client.predictor_status(mesh.vmodel_status(name))
    assert status.available and status.active_model_state == "Loaded"
    (entry,) = [m for m in mesh.models() if m.model_id == spec.model_id]
    assert entry.status == "LOADED"
    assert [c.instance for c in entry.copies] == [mesh_node.config.node.instance_id]
    assert entry.size_bytes > 0


def test_the_response_carries_the_name_the_caller_used(
    mesh_node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    trained: dict[str, samples.Sample],
) -> None:
    name = _name("diabetes")
    mesh.apply(mesh_fixtures.predictor_spec(name, trained["diabetes"].folder))
    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        x = trained["diabetes"].inputs
        inp = triton.InferInput("predict", list(x.shape), "FP64")
        inp.set_data_from_numpy(x)
        result = c.infer(name, [inp])
        assert result.get_response().model_name == name
        np.testing.assert_allclose(
            result.as_numpy("predict").reshape(-1), trained["diabetes"].expected.astype(np.float64)
        )
        meta = c.get_model_metadata(name)
        assert meta.name == name
        assert c.is_model_ready(name)


def test_routes_by_mm_vmodel_id_and_mm_model_id_headers(
    mesh_node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    trained: dict[str, samples.Sample],
) -> None:
    name = _name("wine")
    spec = mesh_fixtures.predictor_spec(name, trained["wine"].folder)
    mesh.apply(spec)
    x, want = trained["wine"].inputs, trained["wine"].expected
    np.testing.assert_array_equal(
        mesh_fixtures.infer(mesh_node.endpoint, "ignored", x, headers={"mm-vmodel-id": name}), want
    )
    np.testing.assert_array_equal(
        mesh_fixtures.infer(
            mesh_node.endpoint, "ignored", x, headers={"mm-model-id": spec.model_id}
        ),
        want,
    )


def test_unknown_model_is_not_found_naming_the_model(mesh_node: mesh_fixtures.NodeThread) -> None:
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(mesh_node.endpoint, "no-such-model", np.zeros((1, 4)))
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "no-such-model" in info.value.message()
    with (
        triton.InferenceServerClient(mesh_node.endpoint) as c,
        pytest.raises(InferenceServerException, match="no-such-model"),
    ):
        c.is_model_ready("no-such-model")


def test_malformed_request_bytes_are_invalid_argument(mesh_node: mesh_fixtures.NodeThread) -> None:
    with grpc.insecure_channel(mesh_node.endpoint) as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\x0a\x50short", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request" in info.value.details()


def test_server_calls_are_answered_by_the_mesh(mesh_node: mesh_fixtures.NodeThread) -> None:
    with triton.InferenceServerClient(mesh_node.endpoint) as c:
        assert c.is_server_live()
        assert c.is_server_ready()
        assert c.get_server_metadata().name == "meshserve"


def test_corrupt_model_fails_with_the_runtimes_message_and_the_node_keeps_serving(
    mesh_node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    trained: dict[str, samples.Sample],
    tmp_path: pathlib.Path,
) -> None:
    bad = _name("corrupt")
    spec = mesh_fixtures.predictor_spec(
        bad, samples.write_corrupt_model(tmp_path / "corrupt").parent
    )
    mesh.apply(spec)
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(mesh_node.endpoint, bad, np.zeros((1, 4)))
    assert info.value.status() in ("StatusCode.FAILED_PRECONDITION", "StatusCode.INTERNAL")
    assert spec.model_id in info.value.message()
    status = mesh.vmodel_status(bad)
    assert status.activeModelStatus.status == pb2.ModelStatusInfo.LOADING_FAILED
    assert status.activeModelStatus.errors  # the runtime's own message
    assert "LOADING_FAILED" in client.models_table(mesh.models())
    text = mesh_node.node.metrics.exposition().decode()
    assert _series(text, "modelmesh_loadmodel_failure_total") >= 1
    assert _series(text, "modelmesh_models_with_failure_total") >= 1
    # A second request fails fast with the recorded message, no new load.
    with pytest.raises(InferenceServerException, match="failed to load"):
        mesh_fixtures.infer(mesh_node.endpoint, bad, np.zeros((1, 4)))
    good = _name("iris")
    mesh.apply(mesh_fixtures.predictor_spec(good, trained["iris"].folder))
    np.testing.assert_array_equal(
        mesh_fixtures.infer(mesh_node.endpoint, good, trained["iris"].inputs),
        trained["iris"].expected,
    )


def test_missing_model_files_fail_with_a_message_naming_the_path(
    mesh_node: mesh_fixtures.NodeThread, mesh: mesh_client.MeshClient, tmp_path: pathlib.Path
) -> None:
    name = _name("missing")
    mesh.apply(mesh_fixtures.predictor_spec(name, tmp_path / "nothing-here"))
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(mesh_node.endpoint, name, np.zeros((1, 4)))
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "nothing-here" in info.value.message()


def test_applying_a_changed_predictor_moves_it_to_the_new_model(
    mesh_node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    trained: dict[str, samples.Sample],
    tmp_path: pathlib.Path,
) -> None:
    name = _name("swap")
    folder = tmp_path / "model"
    shutil.copytree(trained["iris"].folder, folder)
    first = mesh_fixtures.predictor_spec(name, folder)
    mesh.apply(first)
    mesh_fixtures.infer(mesh_node.endpoint, name, trained["iris"].inputs)
    # Same name, new spec (another model): the old model serves until the new
    # one is loaded, then the name moves and the old model is deleted.
    second = mesh_fixtures.predictor_spec(name, trained["diabetes"].folder)
    mesh.apply(second)
    mesh_fixtures.wait_for(lambda: mesh.vmodel_status(name).activeModelId == second.model_id)
    np.testing.assert_allclose(
        mesh_fixtures.infer(mesh_node.endpoint, name, trained["diabetes"].inputs),
        trained["diabetes"].expected.astype(np.float64),
    )
    mesh_fixtures.wait_for(lambda: _model_state(mesh, first.model_id) == "NOT_FOUND")


def test_registering_a_model_again_with_a_different_spec_updates_it(
    mesh_node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    trained: dict[str, samples.Sample],
) -> None:
    model_id = _name("direct")
    info = pb2.ModelInfo(type="sklearn", path=str(trained["iris"].folder))
    mesh.mesh.registerModel(
        pb2.RegisterModelRequest(modelId=model_id, modelInfo=info, loadNow=True, sync=True)
    )
    assert _model_state(mesh, model_id) == "LOADED"
    np.testing.assert_array_equal(
        mesh_fixtures.infer(mesh_node.endpoint, model_id, trained["iris"].inputs),
        trained["iris"].expected,
    )
    info2 = pb2.ModelInfo(type="sklearn", path=str(trained["diabetes"].folder))
    mesh.mesh.registerModel(pb2.RegisterModelRequest(modelId=model_id, modelInfo=info2))
    np.testing.assert_allclose(
        mesh_fixtures.infer(mesh_node.endpoint, model_id, trained["diabetes"].inputs),
        trained["diabetes"].expected.astype(np.float64),
    )


def test_unregistering_a_loaded_model_unloads_it_from_the_runtime(
    mesh_node: mesh_fixtures.NodeThread,
    mesh: mesh_client.MeshClient,
    trained: dict[str, samples.Sample],
) -> None:
    name = _name("gone")
    spec = mesh_fixtures.predictor_spec(name, trained["iris"].folder)
    mesh.apply(spec)
    mesh_fixtures.infer(mesh_node.endpoint, name, trained["iris"].inputs)
    runtime = mesh_node.node.runtime.grpc_target
    with triton.InferenceServerClient(runtime) as direct:
        assert direct.is_model_ready(spec.model_id)
        assert mesh.delete(name)
        mesh_fixtures.wait_for(lambda: _model_state(mesh, spec.model_id) == "NOT_FOUND")

        def unloaded() -> bool:
            try:
                return not direct.is_model_ready(spec.model_id)
            except InferenceServerException:
                return True

        mesh_fixtures.wait_for(unloaded)
    model_dir = mesh_node.config.node.model_dir / spec.model_id
    mesh_fixtures.wait_for(lambda: not model_dir.exists())
    with pytest.raises(InferenceServerException, match=r"NOT_FOUND|not registered"):
        mesh_fixtures.infer(mesh_node.endpoint, name, trained["iris"].inputs)


def test_bad_management_calls_get_clear_statuses(mesh: mesh_client.MeshClient) -> None:
    with pytest.raises(grpc.RpcError) as info:
        mesh.mesh.registerModel(
            pb2.RegisterModelRequest(modelId="a/b", modelInfo=pb2.ModelInfo(type="sklearn"))
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "a/b" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        mesh.mesh.registerModel(pb2.RegisterModelRequest(modelId="no-info"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        mesh.mesh.setVModel(pb2.SetVModelRequest(vModelId="v", targetModelId="no-such-model"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        mesh.mesh.ensureLoaded(pb2.EnsureLoadedRequest(modelId="no-such-model"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    status = mesh.mesh.getModelStatus(pb2.GetStatusRequest(modelId="no-such-model"))
    assert status.status == pb2.ModelStatusInfo.NOT_FOUND


def test_evicts_least_recently_used_model_when_capacity_is_full(
    small_node: mesh_fixtures.NodeThread, trained: dict[str, samples.Sample]
) -> None:
    with small_node.client() as mesh:
        names = {k: _name(k) for k in ("iris", "wine", "diabetes")}
        specs = {k: mesh_fixtures.predictor_spec(n, trained[k].folder) for k, n in names.items()}
        for s in specs.values():
            mesh.apply(s)
        for k in ("iris", "wine"):
            mesh_fixtures.infer(small_node.endpoint, names[k], trained[k].inputs)
        mesh_fixtures.infer(
            small_node.endpoint, names["iris"], trained["iris"].inputs
        )  # wine is now LRU
        got = mesh_fixtures.infer(
            small_node.endpoint, names["diabetes"], trained["diabetes"].inputs
        )
        np.testing.assert_allclose(got, trained["diabetes"].expected.astype(np.float64))
        mesh_fixtures.wait_for(lambda: _model_state(mesh, specs["wine"].model_id) == "NOT_LOADED")
        assert _model_state(mesh, specs["iris"].model_id) == "LOADED"
        assert _model_state(mesh, specs["diabetes"].model_id) == "LOADED"
        # The node's instance record follows within its publishing delay.
        mesh_fixtures.wait_for(lambda: mesh.instances()[0].model_count == 2)
        (inst,) = mesh.instances()
        assert inst.used_bytes <= inst.capacity_bytes
        pulls = _series(small_node.node.metrics.exposition().decode(), _PULLS)
        # The evicted model still serves: it is loaded again on demand, from
        # the files the disk tier kept (no pull), and says so in its record.
        rec = small_node.node.table.model(specs["wine"].model_id)
        assert rec is not None and rec.disk_copies == (small_node.config.node.instance_id,)
        np.testing.assert_array_equal(
            mesh_fixtures.infer(small_node.endpoint, names["wine"], trained["wine"].inputs),
            trained["wine"].expected,
        )
    # What an operator's dashboard shows of it (the node's :2112 metrics).
    text = small_node.node.metrics.exposition().decode()
    assert _series(text, _PULLS) == pulls == 3
    assert _series(text, "meshserve_disk_cache_hits_total") == 1
    assert _series(text, "meshserve_disk_cache_misses_total") == 3
    assert _series(text, "meshserve_disk_cache_bytes") > 0
    assert _series(text, "modelmesh_model_evicted_total") >= 1
    assert _series(text, "modelmesh_age_at_eviction_milliseconds_count") >= 1
    assert _series(text, "modelmesh_unloadmodel_milliseconds_count") >= 1
    assert _series(text, "modelmesh_loadmodel_milliseconds_count") >= 4
