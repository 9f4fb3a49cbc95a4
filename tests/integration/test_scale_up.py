"""A hot model gets a second copy on the other node: two real nodes (each
with its own MLServer) on one real etcd.

Why it exists: the README promises that "a copy serving more than
``MESHSERVE_SCALE_UP_RPM`` requests a minute gets another on another node";
the scaler's decisions are unit-tested in ``tests/mesh/node/test_scaler.py``,
and this checks the whole path: the rate counted on the node that serves,
the ask to the peer over gRPC, the peer's load, the placement table, and the
peer's own runtime holding the model.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
from collections.abc import Iterator

import pytest
from tritonclient import grpc as triton

from kube import mesh_client
from mesh.edges import etcd_process
from tests.integration import gated_models, mesh_fixtures

SCALE_UP_RPM = 5


@pytest.fixture(scope="module")
def pair_of_nodes(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[mesh_fixtures.NodeThread]]:
    """Two nodes of one mesh that add a copy above ``SCALE_UP_RPM``."""
    prefix = f"scale{os.getpid()}"
    nodes = []
    for i in range(2):
        cfg = mesh_fixtures.node_settings(
            module_etcd.endpoint, tmp_path_factory.mktemp(f"scale{i}-"), prefix
        )
        scaling = dataclasses.replace(cfg.scaling, scale_up_rpm=SCALE_UP_RPM)
        nodes.append(mesh_fixtures.NodeThread(dataclasses.replace(cfg, scaling=scaling)))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = [pool.submit(n.start) for n in nodes]
    try:
        for f in started:
            f.result()
        yield nodes
    finally:
        mesh_fixtures.stop_cluster(nodes)


def _loaded_on(mesh: mesh_client.MeshClient, model_id: str) -> set[str]:
    for m in mesh.models():
        if m.model_id == model_id:
            return {c.instance for c in m.copies if c.state == "LOADED"}
    return set()


def test_a_model_above_the_rate_threshold_gets_a_copy_on_the_other_node(
    pair_of_nodes: list[mesh_fixtures.NodeThread], tmp_path: pathlib.Path
) -> None:
    by_id = {n.config.node.instance_id: n for n in pair_of_nodes}
    hot = gated_models.write_gated_model(tmp_path, "hot")
    spec = mesh_fixtures.predictor_spec("hot", hot.folder)
    with pair_of_nodes[0].client() as mesh:
        mesh_fixtures.wait_for(lambda: len(mesh.instances()) == 2)
        mesh.apply(spec)
        mesh_fixtures.infer(pair_of_nodes[0].endpoint, "hot", gated_models.free_input())
        (holder,) = _loaded_on(mesh, spec.model_id)
        (other,) = set(by_id) - {holder}
        for _ in range(SCALE_UP_RPM + 1):  # served by the holder's own copy
            got = mesh_fixtures.infer(by_id[holder].endpoint, "hot", gated_models.free_input())
            assert list(got) == [2.0]
        mesh_fixtures.wait_for(
            lambda: _loaded_on(mesh, spec.model_id) == {holder, other}, 30, "a second copy"
        )
    with triton.InferenceServerClient(by_id[other].node.runtime.grpc_target) as direct:
        assert direct.is_model_ready(spec.model_id)
    assert hot.count("loaded") == 2
