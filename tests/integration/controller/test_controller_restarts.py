"""The controller survives its own restarts, an unreachable mesh, and a rival.

End to end, with the stand-in API server, kopf running the real controller
code, a real etcd and a real mesh node: a controller that cannot reach the
mesh says so in the status and registers once it can; a controller restarted
mid-way neither loses nor duplicates a registration; and of two replicas only
the one elected in etcd acts, the other taking over when it resigns.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import kubernetes
import numpy as np

from kube import controller_settings, predictor
from mesh.core import records
from mesh.edges import ports
from meshserve import samples
from tests.integration import controller_fixtures as cf
from tests.integration import mesh_fixtures

SettingsFor = Callable[..., controller_settings.ControllerSettings]


def test_an_unreachable_mesh_is_reported_then_retried(
    ctl: list[cf.ControllerThread],
    settings_for: SettingsFor,
    kube_config: kubernetes.client.Configuration,
    kube: cf.Kube,
    models: dict[str, samples.Sample],
) -> None:
    ctl[0].stop()
    nowhere = f"127.0.0.1:{ports.free_port()}"
    blind = cf.ControllerThread(
        dataclasses.replace(settings_for(), mesh_endpoint=nowhere), kube_config
    ).start()
    name = cf.unique_name("patient")
    try:
        blind.wait_ready()
        kube.create("predictors", cf.predictor_doc(name, models["iris"].folder))
        failure = cf.wait_for(lambda: kube.status(name).get("lastFailureInfo"), what="failure")
        assert failure["reason"] == "RuntimeUnhealthy" and nowhere in failure["message"]
        status = kube.status(name)
        assert status["activeModelState"] == "Pending" and status["available"] is False
    finally:
        blind.stop()
        ctl[0] = cf.ControllerThread(settings_for(), kube_config).start()
        ctl[0].wait_ready()
    status = cf.wait_for(lambda: cf.loaded(kube, name), what="Loaded")
    assert "lastFailureInfo" not in status


def test_a_restarted_controller_neither_loses_nor_duplicates_registrations(
    ctl: list[cf.ControllerThread],
    settings_for: SettingsFor,
    kube_config: kubernetes.client.Configuration,
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    names = (cf.unique_name(p) for p in ("steady", "changed", "gone", "newborn"))
    steady, changed, doomed, newborn = names
    for n in (steady, changed, doomed):
        kube.create("predictors", cf.predictor_doc(n, models["iris"].folder))
    for n in (steady, changed, doomed):
        cf.wait_for(functools.partial(cf.loaded, kube, n), what=f"{n} Loaded")
    steady_id = cf.model_id(kube, steady)

    ctl[0].stop()  # while it is down: one change, one deletion, one creation
    kube.patch("predictors", changed, {"spec": {"storage": {"path": str(models["twos"].folder)}}})
    kube.delete("predictors", doomed)
    kube.create("predictors", cf.predictor_doc(newborn, models["iris"].folder))
    ctl[0] = cf.ControllerThread(settings_for(), kube_config).start()
    ctl[0].wait_ready()

    for n in (changed, newborn):
        cf.wait_for(functools.partial(cf.loaded, kube, n), what=f"{n} Loaded")
    cf.wait_for(lambda: kube.get("predictors", doomed) is None, what="deleted")
    changed_id = cf.model_id(kube, changed)
    # (The mesh deletes the old model once the new one is active; see the
    # report on Management._complete_transition if this ever times out.)
    cf.wait_for(
        lambda: cf.predictor_models(mesh_node, changed) == [changed_id], what="old model gone"
    )
    assert cf.predictor_models(mesh_node, steady) == [steady_id]
    assert cf.predictor_models(mesh_node, newborn) == [cf.model_id(kube, newborn)]
    assert cf.predictor_models(mesh_node, doomed) == []
    assert mesh_node.node.table.vmodel(doomed) is None
    got = mesh_fixtures.infer(mesh_node.endpoint, changed, models["iris"].inputs)
    np.testing.assert_array_equal(got, models["twos"].expected)
    # Every Predictor left has exactly its registration, and nothing else is registered.
    left = kube.names("predictors")
    vmodels = {
        v for v, rec in mesh_node.node.table.vmodels().items() if rec.owner == predictor.OWNER
    }
    assert vmodels == {n for n in left if mesh_node.node.table.vmodel(n) is not None}
    invalid = {n for n in left if kube.status(n).get("transitionStatus") == "InvalidSpec"}
    assert vmodels == left - invalid


def test_only_the_elected_controller_acts(
    ctl: list[cf.ControllerThread],
    settings_for: SettingsFor,
    kube_config: kubernetes.client.Configuration,
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    standby = cf.ControllerThread(settings_for("controller-b"), kube_config).start()
    try:
        first = cf.unique_name("first")
        kube.create("predictors", cf.predictor_doc(first, models["iris"].folder))
        cf.wait_for(lambda: cf.loaded(kube, first), what="Loaded")
        assert ctl[0].leading and not standby.leading
        assert standby.controller.terms == 0
        ctl[0].stop()  # resigns: the standby takes over at once
        standby.wait_ready(timeout=10)
        second = cf.unique_name("second")
        kube.create("predictors", cf.predictor_doc(second, models["iris"].folder))
        cf.wait_for(lambda: cf.loaded(kube, second), what="Loaded by the new leader")
        record = mesh_node.node.table.vmodel(second)
        assert record is not None and isinstance(record, records.VModelRecord)
    finally:
        standby.stop()
        ctl[0] = cf.ControllerThread(settings_for(), kube_config).start()
        ctl[0].wait_ready()
