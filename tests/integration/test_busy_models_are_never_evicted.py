"""A full node never evicts a model that is loading or serving a request, on
a real node over a real MLServer and etcd.

Why it exists: the README promises that eviction takes "never a model
loading, serving, or with requests waiting for it", and that a load finding
the room held by such models waits for it; the cache manager's unit tests
check this against a scripted runtime only. The node here has room for one
model; the busy one is a custom MLServer class whose load or answer waits
for the test (:mod:`tests.integration.gated_models`). The second model's
load is known to be waiting once the node logs that it waits for room.
"""

from __future__ import annotations

import concurrent.futures
import logging
import pathlib
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from tritonclient import grpc as triton

from kube import mesh_client
from mesh.edges import etcd_process
from tests.integration import gated_models, mesh_fixtures

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def one_model_node(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[mesh_fixtures.NodeThread]:
    """A node with room for one model: each counts as 100 MiB at least, the
    capacity is 150 MiB."""
    n = mesh_fixtures.NodeThread(
        mesh_fixtures.node_settings(
            module_etcd.endpoint,
            tmp_path_factory.mktemp("one-model"),
            capacity_bytes=150 * MiB,
            min_model_size_bytes=100 * MiB,
        )
    )
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(4) as p:
        yield p


def _state(mesh: mesh_client.MeshClient, model_id: str) -> dict[str, str]:
    """The model's copies in the placement table: instance → state."""
    for m in mesh.models():
        if m.model_id == model_id:
            return {c.instance: c.state for c in m.copies}
    return {}


def _waits_for_room(caplog: pytest.LogCaptureFixture, model_id: str) -> None:
    """Until the node logs that ``model_id``'s load waits for room."""
    mesh_fixtures.wait_for(
        lambda: any(
            "waits for room" in r.getMessage() and model_id in r.getMessage()
            for r in caplog.records
        ),
        30,
        f"the load of {model_id} waiting for room",
    )


def _infer(endpoint: str, name: str, x: npt.NDArray[np.float64]) -> list[float]:
    return [float(v) for v in mesh_fixtures.infer(endpoint, name, x)]


def _runtime_ready(node: mesh_fixtures.NodeThread, model_id: str) -> bool:
    with triton.InferenceServerClient(node.node.runtime.grpc_target) as direct:
        return bool(direct.is_model_ready(model_id))


def test_a_model_serving_a_request_is_not_evicted_and_the_other_load_waits_for_it(
    one_model_node: mesh_fixtures.NodeThread,
    tmp_path: pathlib.Path,
    pool: concurrent.futures.ThreadPoolExecutor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    node, me = one_model_node, one_model_node.config.node.instance_id
    busy = gated_models.write_gated_model(tmp_path, "busy")
    other = gated_models.write_gated_model(tmp_path, "other")
    busy_spec = mesh_fixtures.predictor_spec("busy", busy.folder)
    other_spec = mesh_fixtures.predictor_spec("other", other.folder)
    with node.client() as mesh:
        mesh.apply(busy_spec)
        mesh.apply(other_spec)
        assert _infer(node.endpoint, "busy", gated_models.free_input()) == [2.0]
        held = pool.submit(_infer, node.endpoint, "busy", gated_models.held_input())
        busy.wait_marks("held")  # the request is in the runtime now
        waiting = pool.submit(_infer, node.endpoint, "other", gated_models.free_input())
        _waits_for_room(caplog, other_spec.model_id)
        mesh_fixtures.wait_for(lambda: _state(mesh, busy_spec.model_id) == {me: "LOADED"})
        assert _runtime_ready(node, busy_spec.model_id)
        assert _state(mesh, other_spec.model_id) != {me: "LOADED"}
        assert not waiting.done() and not held.done()
        busy.open_predict()
        assert held.result(60) == [3.0]
        assert waiting.result(60) == [2.0]
        # Only now, idle, does the busy model make room for the other one.
        mesh_fixtures.wait_for(lambda: _state(mesh, busy_spec.model_id) == {})
        mesh_fixtures.wait_for(lambda: _state(mesh, other_spec.model_id) == {me: "LOADED"})


def test_a_model_still_loading_is_not_evicted_and_the_other_load_waits_for_it(
    one_model_node: mesh_fixtures.NodeThread,
    tmp_path: pathlib.Path,
    pool: concurrent.futures.ThreadPoolExecutor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    node, me = one_model_node, one_model_node.config.node.instance_id
    slow = gated_models.write_gated_model(tmp_path, "slow", gate_load=True)
    other = gated_models.write_gated_model(tmp_path, "after-slow")
    slow_spec = mesh_fixtures.predictor_spec("slow", slow.folder)
    other_spec = mesh_fixtures.predictor_spec("after-slow", other.folder)
    with node.client() as mesh:
        mesh.apply(slow_spec)
        mesh.apply(other_spec)
        loading = pool.submit(_infer, node.endpoint, "slow", gated_models.free_input())
        slow.wait_marks("load-started")  # the runtime is loading it now
        waiting = pool.submit(_infer, node.endpoint, "after-slow", gated_models.free_input())
        _waits_for_room(caplog, other_spec.model_id)
        mesh_fixtures.wait_for(lambda: _state(mesh, slow_spec.model_id) == {me: "LOADING"})
        assert not waiting.done() and not loading.done()
        slow.open_load()
        assert loading.result(60) == [2.0]
        assert waiting.result(60) == [2.0]
        assert slow.count("load-cancelled") == 0
        mesh_fixtures.wait_for(lambda: _state(mesh, slow_spec.model_id) == {})
        mesh_fixtures.wait_for(lambda: _state(mesh, other_spec.model_id) == {me: "LOADED"})
