"""``MESHSERVE_CHURN_THRESHOLD`` on a real node over a real MLServer and etcd:
room held by recently used models is refused, not taken.

Why it exists: the settings promise that with the guard on, "a request that
would need such an eviction fails with RESOURCE_EXHAUSTED instead of
thrashing the cache"; until now only the cache manager's unit tests (a
scripted runtime) checked it. The node here has room for one model and a
one-hour threshold; the models are custom MLServer classes that load in
milliseconds (:mod:`tests.integration.gated_models`).
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from kube import mesh_client, predictor
from mesh.edges import etcd_process
from mesh.edges.proto import model_mesh_pb2 as pb2
from tests.integration import gated_models, mesh_fixtures

MiB = 1024 * 1024
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def guarded_node(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[mesh_fixtures.NodeThread]:
    """Room for one model (100 MiB each at least, 150 MiB of capacity); a
    model used within the last hour is never evicted."""
    n = mesh_fixtures.NodeThread(
        mesh_fixtures.node_settings(
            module_etcd.endpoint,
            tmp_path_factory.mktemp("guarded"),
            capacity_bytes=150 * MiB,
            min_model_size_bytes=100 * MiB,
            churn_threshold_seconds=3600.0,
        )
    )
    n.start()
    try:
        yield n
    finally:
        n.stop()


def _refused(endpoint: str, name: str) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(endpoint, name, gated_models.free_input())
    return info.value


def _entry(mesh: mesh_client.MeshClient, model_id: str) -> Any:
    (entry,) = [m for m in mesh.models() if m.model_id == model_id]
    return entry


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two Predictors: ``recent`` fills the node, ``newcomer`` wants its room."""

    recent: predictor.PredictorSpec
    newcomer: predictor.PredictorSpec
    newcomer_model: gated_models.GatedModel


@pytest.fixture
def pair(guarded_node: mesh_fixtures.NodeThread, tmp_path: pathlib.Path) -> Iterator[Pair]:
    """Both registered, the recent one used; it waits until the node's record
    in the mesh counts that model (so placement everywhere knows the node is
    full). Both are deleted after the test, which empties the node."""
    node = guarded_node
    tag = next(_tags)
    recent = gated_models.write_gated_model(tmp_path, f"recent-{tag}")
    newcomer = gated_models.write_gated_model(tmp_path, f"newcomer-{tag}")
    made = Pair(
        mesh_fixtures.predictor_spec(f"recent-{tag}", recent.folder),
        mesh_fixtures.predictor_spec(f"newcomer-{tag}", newcomer.folder),
        newcomer,
    )
    with node.client() as mesh:
        mesh.apply(made.recent)
        mesh.apply(made.newcomer)
        try:
            got = mesh_fixtures.infer(node.endpoint, made.recent.name, gated_models.free_input())
            np.testing.assert_array_equal(got, [2.0])
            mesh_fixtures.wait_for(lambda: mesh.instances()[0].model_count == 1)
            yield made
        finally:
            mesh.delete(made.recent.name)
            mesh.delete(made.newcomer.name)
            mesh_fixtures.wait_for(lambda: mesh.instances()[0].model_count == 0)


def test_room_held_by_a_recently_used_model_is_refused_and_the_model_not_marked_failed(
    guarded_node: mesh_fixtures.NodeThread, pair: Pair
) -> None:
    node = guarded_node
    with node.client() as mesh:
        newcomer = pair.newcomer
        for _ in range(2):  # refused each time: never failed fast as a broken model
            e = _refused(node.endpoint, newcomer.name)
            assert e.status() == "StatusCode.RESOURCE_EXHAUSTED", e.message()
            assert newcomer.model_id in e.message() and "churn threshold" in e.message()
        status = mesh.vmodel_status(newcomer.name).activeModelStatus
        assert status.status == pb2.ModelStatusInfo.NOT_LOADED
        assert not status.errors
        entry = _entry(mesh, newcomer.model_id)
        assert not entry.failures and not entry.copies
        assert pair.newcomer_model.count("load-started") == 0
        # The recent model kept its room and still answers.
        assert _entry(mesh, pair.recent.model_id).status == "LOADED"
        got = mesh_fixtures.infer(node.endpoint, pair.recent.name, gated_models.free_input())
        np.testing.assert_array_equal(got, [2.0])


def test_the_refusal_names_the_variable_that_sets_the_threshold(
    guarded_node: mesh_fixtures.NodeThread, pair: Pair
) -> None:
    e = _refused(guarded_node.endpoint, pair.newcomer.name)
    assert e.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "MESHSERVE_CHURN_THRESHOLD" in e.message(), e.message()
