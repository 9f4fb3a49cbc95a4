"""The controller registers Predictors with the mesh and writes their status.

End to end, as a user of KServe ModelMesh Serving sees it after ``kubectl
apply``: the stand-in API server (real REST and watch protocol), kopf running
the real controller code, a real etcd and a real mesh node with its own
MLServer. A Predictor's status goes Loading → Loaded and tritonclient gets
answers; a changed spec switches the answers to the new model with no failed
request in between; a Predictor nobody can serve says why; deleting one
removes its models before the object goes; and a vmodel deleted behind the
controller's back is registered again.
"""

from __future__ import annotations

import json
import threading
import urllib.request

import kubernetes
import numpy as np

from kube import kopf_operator, predictor, runtime_selection
from meshserve import samples
from tests.integration import controller_fixtures as cf
from tests.integration import mesh_fixtures
from tests.kube.apiserver import FakeApiServer

NS = cf.NS


def test_a_predictor_loads_and_its_status_follows_the_mesh(
    ctl: list[cf.ControllerThread],
    apiserver: FakeApiServer,
    kube: cf.Kube,
    kube_config: kubernetes.client.Configuration,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("iris")
    seen: list[str] = []
    since = kube.resource_version("predictors")

    def watch() -> None:
        with kubernetes.client.ApiClient(kube_config) as api:
            w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            objects = kubernetes.client.CustomObjectsApi(api)
            for event in w.stream(  # type: ignore[no-untyped-call]
                objects.list_namespaced_custom_object,
                runtime_selection.GROUP,
                runtime_selection.VERSION,
                NS,
                "predictors",
                field_selector=f"metadata.name={name}",
                resource_version=since,  # every change after it, however late the watch opens
                timeout_seconds=30,
            ):
                state = (event["object"].get("status") or {}).get("activeModelState")
                if state and (not seen or seen[-1] != state):
                    seen.append(state)
                if state == "Loaded":
                    return

    watcher = threading.Thread(target=watch)
    watcher.start()
    kube.create("predictors", cf.predictor_doc(name, models["iris"].folder))
    status = cf.wait_for(lambda: cf.loaded(kube, name), what="Loaded")
    watcher.join(30)
    assert status["available"] is True
    assert status["totalCopies"] == 1 and status["failedCopies"] == 0
    assert status["grpcEndpoint"] == f"grpc://meshserve.{NS}:8033"
    assert status["httpEndpoint"] == f"http://meshserve.{NS}:8008"
    assert "lastFailureInfo" not in status
    assert seen[-1] == "Loaded" and "Loading" in seen, seen
    vmodel = mesh_node.node.table.vmodel(name)
    assert vmodel is not None and vmodel.owner == predictor.OWNER
    assert vmodel.active_model == vmodel.target_model == cf.model_id(kube, name)
    got = mesh_fixtures.infer(mesh_node.endpoint, name, models["iris"].inputs)
    np.testing.assert_array_equal(got, models["iris"].expected)
    registered = cf.wait_for(
        lambda: cf.events(apiserver, name, "Registered"), what="a Registered event"
    )
    assert registered[0]["type"] == "Normal" and vmodel.target_model in registered[0]["message"]


def test_a_changed_spec_switches_models_with_no_failed_request(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("switch")
    kube.create("predictors", cf.predictor_doc(name, models["iris"].folder))
    cf.wait_for(lambda: cf.loaded(kube, name), what="first model Loaded")
    old_id = cf.model_id(kube, name)
    answers: list[str] = []
    failures: list[Exception] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                got = mesh_fixtures.infer(mesh_node.endpoint, name, models["iris"].inputs)
            except Exception as e:
                failures.append(e)
                continue
            if np.array_equal(got, models["twos"].expected):
                answers.append("twos")
            else:
                np.testing.assert_array_equal(got, models["iris"].expected)
                answers.append("iris")

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        cf.wait_for(lambda: answers, what="first answers")
        kube.patch("predictors", name, {"spec": {"storage": {"path": str(models["twos"].folder)}}})
        cf.wait_for(lambda: answers[-1] == "twos", what="answers switched")
        new_id = cf.model_id(kube, name)
        assert new_id != old_id
        status = cf.wait_for(lambda: cf.loaded(kube, name), what="new model Loaded")
    finally:
        stop.set()
        asker.join(30)
    assert not failures, failures[:3]
    assert answers[0] == "iris" and answers[-1] == "twos"
    switch = answers.index("twos")
    assert set(answers[switch:]) == {"twos"}  # never back to the old model
    assert status["targetModelState"] == "" and status["available"] is True
    vmodel = mesh_node.node.table.vmodel(name)
    assert vmodel is not None and vmodel.active_model == new_id
    cf.wait_for(lambda: cf.predictor_models(mesh_node, name) == [new_id], what="old model deleted")


def test_a_predictor_no_runtime_serves_gets_invalid_spec(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    apiserver: FakeApiServer,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("nobody")
    doc = cf.predictor_doc(name, models["iris"].folder, model_type="no-such-format")
    kube.create("predictors", doc)
    status = cf.wait_for(
        lambda: kube.status(name).get("lastFailureInfo") and kube.status(name), what="failure"
    )
    assert status["transitionStatus"] == "InvalidSpec"
    assert status["lastFailureInfo"]["reason"] == "NoSupportingRuntime"
    assert "no-such-format" in status["lastFailureInfo"]["message"]
    assert status["lastFailureInfo"]["modelId"] == cf.model_id(kube, name)
    assert status["available"] is False and status["activeModelState"] == "Pending"
    assert mesh_node.node.table.vmodel(name) is None
    warning = cf.wait_for(
        lambda: cf.events(apiserver, name, "NoSupportingRuntime"), what="a Warning event"
    )
    assert warning[0]["type"] == "Warning" and "no-such-format" in warning[0]["message"]


def test_a_predictor_pinned_to_a_missing_runtime_waits_for_it(
    ctl: list[cf.ControllerThread], kube: cf.Kube, models: dict[str, samples.Sample]
) -> None:
    """Pinned to a runtime that does not exist yet: not recognized, until it
    appears (the mesh node carries its label, as its pods would)."""
    late = cf.LATE_RUNTIME
    pinned = cf.unique_name("pinned")
    kube.create("predictors", cf.predictor_doc(pinned, models["iris"].folder, runtime=late))
    status = cf.wait_for(
        lambda: kube.status(pinned).get("lastFailureInfo") and kube.status(pinned),
        what="failure",
    )
    assert status["lastFailureInfo"]["reason"] == "RuntimeNotRecognized"
    assert status["transitionStatus"] == "InvalidSpec"
    kube.create("servingruntimes", cf.runtime_doc(late, [{"name": "sklearn"}]))
    status = cf.wait_for(lambda: cf.loaded(kube, pinned), what="Loaded")
    assert "lastFailureInfo" not in status


def test_deleting_a_predictor_removes_its_models_before_the_object(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    apiserver: FakeApiServer,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("doomed")
    kube.create("predictors", cf.predictor_doc(name, models["iris"].folder))
    cf.wait_for(lambda: cf.loaded(kube, name), what="Loaded")
    obj = kube.get("predictors", name)
    assert obj is not None and kopf_operator.FINALIZER in obj["metadata"]["finalizers"]
    assert cf.predictor_models(mesh_node, name)
    rv = apiserver.resource_version
    kube.delete("predictors", name)
    cf.wait_for(lambda: kube.get("predictors", name) is None, what="gone")
    assert mesh_node.node.table.vmodel(name) is None
    assert cf.predictor_models(mesh_node, name) == []
    # The object was held (deletionTimestamp set) and released by the controller.
    url = (
        f"{apiserver.url}/apis/{runtime_selection.GROUP}/{runtime_selection.VERSION}"
        f"/namespaces/{NS}/predictors?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        f"&fieldSelector=metadata.name={name}"
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    types = [e["type"] for e in events if e["type"] != "BOOKMARK"]
    assert types[-1] == "DELETED"
    held = [
        e
        for e in events
        if e["type"] == "MODIFIED" and e["object"]["metadata"].get("deletionTimestamp")
    ]
    assert held and kopf_operator.FINALIZER in held[0]["object"]["metadata"]["finalizers"]


def test_a_vmodel_deleted_behind_its_back_is_registered_again(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = cf.unique_name("resynced")
    kube.create("predictors", cf.predictor_doc(name, models["iris"].folder))
    cf.wait_for(lambda: cf.loaded(kube, name), what="Loaded")
    with mesh_node.client() as c:
        assert c.delete(name)
    cf.wait_for(
        lambda: kube.status(name).get("activeModelState") == "Pending", what="status follows"
    )
    cf.wait_for(lambda: cf.loaded(kube, name), what="registered again")
    assert cf.predictor_models(mesh_node, name) == [cf.model_id(kube, name)]
