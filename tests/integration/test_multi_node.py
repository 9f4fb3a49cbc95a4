"""Three mesh nodes, each with its own MLServer, sharing one etcd.

What a user of the mesh checks: any node answers for any model, a storm of
first requests loads a model once, a model that cannot load stops being
retried, a leaving node hands its models over, and loaded models keep
serving while etcd is down.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import pathlib
import shutil
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from mesh.core import records
from mesh.edges import etcd_process
from mesh.edges.proto import model_mesh_pb2 as pb2
from meshserve import samples
from tests.integration import mesh_fixtures

MiB = 1024 * 1024
_names = itertools.count(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, samples.Sample]:
    d = tmp_path_factory.mktemp("trained")
    return {
        "iris": samples.train_iris_logistic(d / "iris"),
        "wine": samples.train_wine_forest(d / "wine"),
        "diabetes": samples.train_diabetes_ridge(d / "diabetes"),
    }


@pytest.fixture(scope="module")
def cluster(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[mesh_fixtures.NodeThread]]:
    """Three nodes; each holds two models at most (every model counts as
    100 MiB, capacity 250 MiB)."""
    nodes = mesh_fixtures.start_cluster(
        module_etcd.endpoint,
        tmp_path_factory,
        3,
        capacity_bytes=250 * MiB,
        min_model_size_bytes=100 * MiB,
    )
    try:
        yield nodes
    finally:
        mesh_fixtures.stop_cluster(nodes)


def _register(
    node: mesh_fixtures.NodeThread, name: str, folder: pathlib.Path, min_copies: int = 0
) -> str:
    spec = mesh_fixtures.predictor_spec(name, folder)
    with node.client() as c:
        c.apply(spec)
        if min_copies:
            c.mesh.registerModel(
                pb2.RegisterModelRequest(
                    modelId=spec.model_id,
                    modelInfo=pb2.ModelInfo(type="sklearn", path=str(folder)),
                    minCopies=min_copies,
                )
            )
    return spec.model_id


def _copies(node: mesh_fixtures.NodeThread, model_id: str) -> dict[str, records.CopyInfo]:
    rec = node.node.table.model(model_id)
    return dict(rec.copies) if rec else {}


@dataclasses.dataclass(frozen=True)
class View:
    """A node as a record shows it: its instance record and the models it
    holds (LOADED copies)."""

    record: records.InstanceRecord | None
    holds: frozenset[str]


def _own_view(node: mesh_fixtures.NodeThread, model_ids: list[str]) -> View:
    """The node as it is, read on its own loop."""

    async def read() -> View:
        manager = node.node.manager
        held = frozenset(m for m in model_ids if manager.holds(m))
        return View(node.node.instance_record(), held)

    return node.run(read())


def _seen_view(observer: mesh_fixtures.NodeThread, instance_id: str, model_ids: list[str]) -> View:
    """``instance_id`` as ``observer``'s mirror of the records shows it."""

    async def read() -> View:
        held = frozenset(
            m
            for m in model_ids
            if (c := _copies(observer, m).get(instance_id)) and c.state is records.CopyState.LOADED
        )
        return View(observer.node.table.instance(instance_id), held)

    return observer.run(read())


def _at_rest(cluster: list[mesh_fixtures.NodeThread], model_ids: list[str]) -> dict[str, View]:
    """Each node as it is, once no node loads anything and ``cluster[0]``'s
    mirror shows every node as it is.

    A node's record is republished a moment after each change, and until
    then shows an earlier state; and while loads wait for room its
    ``used_bytes`` counts them too (placement must see that room as
    spoken for), so a record read mid-flight may exceed the capacity
    although the node never held more. Polled: the two sides live on
    different event loops, and no single event covers both."""
    views: dict[str, View] = {}

    def settled() -> bool:
        for node in cluster:
            node_id = node.config.node.instance_id
            own = _own_view(node, model_ids)
            seen = _seen_view(cluster[0], node_id, model_ids)
            assert own.record is not None
            if own.record.in_flight_loads or seen.record is None or seen.holds != own.holds:
                return False
            if (seen.record.used_bytes, seen.record.model_count) != (
                own.record.used_bytes,
                own.record.model_count,
            ):
                return False
            views[node_id] = own
        return True

    mesh_fixtures.wait_for(settled, mesh_fixtures.WAIT, "the records show every node at rest")
    return views


def test_every_model_answers_from_every_node_with_more_models_than_fit(
    cluster: list[mesh_fixtures.NodeThread],
    trained: dict[str, samples.Sample],
    tmp_path: pathlib.Path,
) -> None:
    models = {}
    for i in range(8):  # 8 models, room for 6 copies in the mesh
        kind = ("iris", "wine", "diabetes")[i % 3]
        folder = tmp_path / f"m{i}"
        shutil.copytree(trained[kind].folder, folder)
        name = f"many-{i}"
        models[name] = (kind, _register(cluster[0], name, folder))
    for _ in range(2):
        for name, (kind, _) in models.items():
            for node in cluster:
                got = mesh_fixtures.infer(node.endpoint, name, trained[kind].inputs)
                np.testing.assert_allclose(
                    got.astype(np.float64), trained[kind].expected.astype(np.float64)
                )
    views = _at_rest(cluster, [m for _, m in models.values()])
    for view in views.values():  # nothing over capacity, as it is and as published
        assert view.record is not None
        assert view.record.used_bytes <= view.record.capacity_bytes
        assert len(view.holds) == view.record.model_count <= 2
    assert sum(n.node.plane.forwarded for n in cluster) > 0


def test_a_storm_of_first_requests_over_all_nodes_loads_the_model_once(
    cluster: list[mesh_fixtures.NodeThread], trained: dict[str, samples.Sample]
) -> None:
    name = f"storm-{next(_names)}"
    model_id = _register(cluster[0], name, trained["wine"].folder)
    before = sum(n.node.manager.loads_claimed for n in cluster)

    def call(i: int) -> np.ndarray:
        return mesh_fixtures.infer(cluster[i % 3].endpoint, name, trained["wine"].inputs)

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(call, range(50)))
    for got in answers:
        np.testing.assert_array_equal(got, trained["wine"].expected)
    assert sum(n.node.manager.loads_claimed for n in cluster) - before == 1

    def loaded_somewhere() -> bool:
        return any(
            c.state is records.CopyState.LOADED for c in _copies(cluster[0], model_id).values()
        )

    mesh_fixtures.mirror_until(cluster[0], loaded_somewhere, "the copy is recorded LOADED")
    assert len(_copies(cluster[0], model_id)) == 1


def test_a_model_that_never_loads_is_tried_on_three_nodes_then_fails_fast(
    cluster: list[mesh_fixtures.NodeThread],
    trained: dict[str, samples.Sample],
    tmp_path: pathlib.Path,
) -> None:
    name = f"broken-{next(_names)}"
    model_id = _register(cluster[1], name, samples.write_corrupt_model(tmp_path / "bad").parent)
    before = sum(n.node.manager.loads_claimed for n in cluster)
    with pytest.raises(InferenceServerException) as info:
        mesh_fixtures.infer(cluster[0].endpoint, name, np.zeros((1, 4)))
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "pop from empty list" in info.value.message()  # the runtime's own words

    def failures(node: mesh_fixtures.NodeThread) -> int:
        rec = node.node.table.model(model_id)
        return len(rec.failures) if rec else 0

    def three_failures(node: mesh_fixtures.NodeThread) -> Callable[[], bool]:
        return lambda: failures(node) >= 3

    # Each node records its failure before it answers; the others' mirrors
    # follow a moment later.
    for node in cluster:
        mesh_fixtures.mirror_until(node, three_failures(node), "three failures recorded")
    assert failures(cluster[0]) == 3
    for node in cluster:  # now every node fails fast, without loading again
        with pytest.raises(InferenceServerException, match="failed to load"):
            mesh_fixtures.infer(node.endpoint, name, np.zeros((1, 4)))
    assert sum(n.node.manager.loads_claimed for n in cluster) - before == 3
    good = f"fine-{next(_names)}"
    _register(cluster[2], good, trained["iris"].folder)
    np.testing.assert_array_equal(
        mesh_fixtures.infer(cluster[1].endpoint, good, trained["iris"].inputs),
        trained["iris"].expected,
    )


def test_a_model_with_min_copies_is_loaded_on_two_nodes_without_traffic(
    cluster: list[mesh_fixtures.NodeThread], trained: dict[str, samples.Sample]
) -> None:
    name = f"pair-{next(_names)}"
    model_id = _register(cluster[0], name, trained["iris"].folder, min_copies=2)

    def two_loaded() -> bool:
        states = _copies(cluster[0], model_id).values()
        return sum(c.state is records.CopyState.LOADED for c in states) == 2

    mesh_fixtures.mirror_until(cluster[0], two_loaded, "two copies LOADED")


def test_loaded_models_keep_serving_from_every_node_while_etcd_is_down(
    cluster: list[mesh_fixtures.NodeThread],
    trained: dict[str, samples.Sample],
    module_etcd: etcd_process.EtcdServer,
) -> None:
    name = f"outage-{next(_names)}"
    _register(cluster[0], name, trained["diabetes"].folder)
    want = trained["diabetes"].expected.astype(np.float64)
    for node in cluster:
        mesh_fixtures.infer(node.endpoint, name, trained["diabetes"].inputs)
    module_etcd.stop()
    try:
        # The outage lasts at least 20 s, far past the nodes' 3 s leases
        # (how long, not a wait for anything), and ten rounds of calls.
        t_end = time.monotonic() + 20
        rounds = 0
        while time.monotonic() < t_end or rounds < 10:
            for node in cluster:
                got = mesh_fixtures.infer(node.endpoint, name, trained["diabetes"].inputs)
                np.testing.assert_allclose(got.astype(np.float64), want)
            rounds += 1
            time.sleep(0.2)  # the pace of the calls
        with cluster[1].client() as c, pytest.raises(grpc.RpcError) as info:
            c.apply(mesh_fixtures.predictor_spec("during-outage", trained["iris"].folder))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        module_etcd.start()
    # Once etcd is back, registrations work again (the nodes' etcd
    # connections reconnect with a back-off of at most 1 s; the deadline is
    # generous, as a busy machine is slow, not wrong).
    late = f"after-outage-{next(_names)}"
    deadline = time.monotonic() + mesh_fixtures.WAIT
    while True:
        try:
            _register(cluster[1], late, trained["iris"].folder)
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() < deadline, "registrations did not recover"
            time.sleep(0.2)
    # Every node serves it within the same deadline (each node's own etcd
    # connection comes back on its own back-off).
    while True:
        try:
            got = mesh_fixtures.infer(cluster[2].endpoint, late, trained["iris"].inputs)
            break
        except InferenceServerException as e:
            assert "UNAVAILABLE" in str(e.status()), e
            assert time.monotonic() < deadline, "serving did not recover"
            time.sleep(0.2)
    np.testing.assert_array_equal(got, trained["iris"].expected)


def test_a_node_that_leaves_hands_its_only_copies_over_first(
    module_etcd: etcd_process.EtcdServer,
    tmp_path_factory: pytest.TempPathFactory,
    trained: dict[str, samples.Sample],
) -> None:
    nodes = mesh_fixtures.start_cluster(module_etcd.endpoint, tmp_path_factory, 2)
    try:
        name = f"handover-{next(_names)}"
        model_id = _register(nodes[0], name, trained["iris"].folder)
        mesh_fixtures.infer(nodes[0].endpoint, name, trained["iris"].inputs)
        (holder,) = _copies(nodes[0], model_id)
        leaving = next(n for n in nodes if n.config.node.instance_id == holder)
        staying = next(n for n in nodes if n is not leaving)
        leaving.stop()
        # The hand-over is recorded before the leaving node withdraws its
        # copy; the staying node's mirror applies both a moment later.
        mesh_fixtures.mirror_until(
            staying,
            lambda: list(_copies(staying, model_id)) == [staying.config.node.instance_id],
            "only the staying node's copy is left",
        )
        states = _copies(staying, model_id)
        assert states[staying.config.node.instance_id].state is records.CopyState.LOADED
        np.testing.assert_array_equal(
            mesh_fixtures.infer(staying.endpoint, name, trained["iris"].inputs),
            trained["iris"].expected,
        )
        nodes.remove(leaving)
    finally:
        mesh_fixtures.stop_cluster(nodes)
