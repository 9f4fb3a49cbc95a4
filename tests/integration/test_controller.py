"""The controller end to end: the stand-in API server (real REST and watch
protocol), kopf running the real controller code, a real etcd and a real mesh
node with its own MLServer.

What a user of KServe ModelMesh Serving checks after ``kubectl apply``: a
ServingRuntime becomes a Deployment of mesh nodes labelled with its formats;
a Predictor's status goes Loading → Loaded and tritonclient gets answers; a
changed spec switches the answers to the new model with no failed request in
between; a Predictor nobody can serve says why; deleting one removes its
models before the object goes; a controller restarted mid-way neither loses
nor duplicates a registration; and only the elected controller acts.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import joblib
import kubernetes
import numpy as np
import pytest
import yaml
from sklearn import datasets, dummy

from kube import controller, predictor, serving_runtimes
from mesh.core import errors, records
from mesh.edges import etcd_process, processes
from meshserve import cli, samples
from tests.integration import controller_fixtures, mesh_fixtures
from tests.kube import crds, fake_apiserver, fixtures

NS = "meshserve"
_names = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


LATE_RUNTIME = "late-runtime"


@pytest.fixture(scope="module")
def mesh_node(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[mesh_fixtures.NodeThread]:
    """The mesh behind the controller: one node labelled as a pod of the
    ServingRuntime ``late-runtime`` would be (``MM_LABELS=rt:late-runtime``),
    so a Predictor pinned to that runtime can load on it."""
    config = mesh_fixtures.node_settings(module_etcd.endpoint, tmp_path_factory.mktemp("node"))
    config = dataclasses.replace(
        config, node=dataclasses.replace(config.node, labels=(f"rt:{LATE_RUNTIME}",))
    )
    node = mesh_fixtures.NodeThread(config)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def apiserver() -> Iterator[fake_apiserver.FakeApiServer]:
    server = fake_apiserver.FakeApiServer(
        crds.load(), namespaces=("default", NS), bookmark_interval=1.0
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kube_config(
    apiserver: fake_apiserver.FakeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> kubernetes.client.Configuration:
    return fixtures.client_configuration(apiserver, tmp_path_factory.mktemp("kube"))


@pytest.fixture(scope="module")
def kube(kube_config: kubernetes.client.Configuration) -> Iterator[controller_fixtures.Kube]:
    k = controller_fixtures.Kube(kube_config, NS)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, samples.Sample]:
    """Two models of iris' shape with different answers: a logistic regression,
    and one that always says 2."""
    d = tmp_path_factory.mktemp("models")
    iris = samples.train_iris_logistic(d / "iris")
    x, y = datasets.load_iris(return_X_y=True)
    constant = dummy.DummyClassifier(strategy="constant", constant=2).fit(x, y)
    (d / "twos").mkdir()
    joblib.dump(constant, d / "twos" / "model.joblib")
    twos = samples.Sample(
        folder=d / "twos",
        model_type="sklearn",
        inputs=iris.inputs,
        expected=np.full(len(iris.inputs), 2),
    )
    assert not np.array_equal(iris.expected, twos.expected)
    return {"iris": iris, "twos": twos}


@pytest.fixture(scope="module")
def settings_for(module_etcd: etcd_process.EtcdServer, mesh_node: mesh_fixtures.NodeThread) -> Any:
    def make(instance_id: str = "controller-a") -> Any:
        return controller_fixtures.controller_settings(
            NS,
            module_etcd.endpoint,
            mesh_node.config.kv.prefix,
            mesh_node.endpoint,
            instance_id,
        )

    return make


@pytest.fixture(scope="module")
def ctl(
    settings_for: Any,
    kube_config: kubernetes.client.Configuration,
    kube: controller_fixtures.Kube,
) -> Iterator[list[controller_fixtures.ControllerThread]]:
    """The running controller (a list: tests that restart it replace it),
    with a ServingRuntime for sklearn in the namespace."""
    kube.create(
        "servingruntimes", _runtime("mlserver-sklearn", [{"name": "sklearn", "autoSelect": True}])
    )
    holder = [controller_fixtures.ControllerThread(settings_for(), kube_config).start()]
    holder[0].wait_ready()
    try:
        yield holder
    finally:
        holder[0].stop()


def _runtime(
    name: str, formats: list[dict[str, Any]], kind: str = "ServingRuntime"
) -> dict[str, Any]:
    """A ServingRuntime as written for ModelMesh Serving: the runtime container only."""
    return {
        "apiVersion": f"{serving_runtimes.GROUP}/{serving_runtimes.VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "supportedModelFormats": formats,
            "multiModel": True,
            "grpcDataEndpoint": "port:8001",
            "builtInAdapter": {"serverType": "mlserver", "runtimeManagementPort": 8001},
            "containers": [
                {
                    "name": "mlserver",
                    "image": "seldonio/mlserver:1.7.1",
                    "env": [{"name": "MLSERVER_MODELS_DIR", "value": "/models/_mlserver_models/"}],
                    "resources": {"limits": {"memory": "1Gi"}},
                }
            ],
        },
    }


def _predictor(
    name: str, path: pathlib.Path, model_type: str = "sklearn", runtime: str = ""
) -> dict[str, Any]:
    spec: dict[str, Any] = {"modelType": {"name": model_type}, "storage": {"path": str(path)}}
    if runtime:
        spec["runtime"] = {"name": runtime}
    return {
        "apiVersion": predictor.API_VERSION,
        "kind": predictor.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def _model_id(kube: controller_fixtures.Kube, name: str) -> str:
    obj = kube.get("predictors", name)
    assert obj is not None
    return predictor.parse(obj).model_id


def _loaded(kube: controller_fixtures.Kube, name: str) -> dict[str, Any] | None:
    status = kube.status(name)
    done = (
        status.get("activeModelState") == "Loaded" and status.get("transitionStatus") == "UpToDate"
    )
    return status if done else None


def _events(
    apiserver: fake_apiserver.FakeApiServer, name: str, reason: str
) -> list[dict[str, Any]]:
    """The Kubernetes events about a Predictor with this reason."""
    return [
        e
        for e in apiserver.objects("", "events", NS)
        if e["involvedObject"]["name"] == name and e["reason"] == reason
    ]


def _predictor_models(node: mesh_fixtures.NodeThread, name: str) -> list[str]:
    return sorted(m for m in node.node.table.models() if m.startswith(f"{name}__"))


def test_a_serving_runtime_becomes_a_deployment_of_labelled_mesh_nodes(
    ctl: list[controller_fixtures.ControllerThread], kube: controller_fixtures.Kube
) -> None:
    name = _name("mlserver")
    formats = [{"name": "sklearn", "version": "1", "autoSelect": True}]
    created = kube.create("servingruntimes", _runtime(name, formats))
    deployment_name = serving_runtimes.deployment_name(name)
    d = controller_fixtures.wait_for(lambda: kube.deployment(deployment_name), what="Deployment")
    containers = _containers(d)
    assert list(containers) == [serving_runtimes.MESH_CONTAINER, "mlserver"]
    mesh = containers[serving_runtimes.MESH_CONTAINER]
    env = _env(mesh)
    assert env["MM_LABELS"] == f"mt:sklearn,mt:sklearn:1,rt:{name}"
    assert env["MESHSERVE_RUNTIME"] == "mlserver"
    assert env["MESHSERVE_RUNTIME_ENDPOINT"] == "127.0.0.1:8001"
    assert env["MESHSERVE_CAPACITY"] == str(1024**3)
    assert mesh["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8089}
    assert mesh["lifecycle"]["preStop"]["httpGet"] == {"path": "/drain", "port": 8089}
    models_mounts = [
        m["mountPath"]
        for c in containers.values()
        for m in c.get("volumeMounts", [])
        if m["name"] == serving_runtimes.MODELS_VOLUME
    ]
    assert models_mounts == ["/models", "/models"]  # one volume, both containers
    assert _env(containers["mlserver"])["MLSERVER_MODELS_DIR"] == "/models/models"
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels[serving_runtimes.LABEL_SERVICE] == "meshserve"
    owner = d["metadata"]["ownerReferences"][0]
    assert owner["uid"] == created["metadata"]["uid"] and owner["kind"] == "ServingRuntime"

    # A new format relabels the nodes; a deleted Deployment comes back.
    formats.append({"name": "xgboost", "autoSelect": True})
    kube.patch("servingruntimes", name, {"spec": {"supportedModelFormats": formats}})
    controller_fixtures.wait_for(
        lambda: (
            "mt:xgboost"
            in _env(_containers(kube.deployment(deployment_name) or d)["mesh-node"])["MM_LABELS"]
        ),
        what="MM_LABELS updated",
    )
    kube.delete("deployments", deployment_name, "apps", "v1")
    controller_fixtures.wait_for(
        lambda: kube.deployment(deployment_name), what="Deployment recreated"
    )

    # Deleting the runtime removes its Deployment.
    kube.delete("servingruntimes", name)
    controller_fixtures.wait_for(
        lambda: kube.deployment(deployment_name) is None, what="Deployment deleted"
    )


def test_the_project_runtimes_keep_their_own_mesh_node(
    ctl: list[controller_fixtures.ControllerThread], kube: controller_fixtures.Kube
) -> None:
    path = pathlib.Path(crds.REPO_ROOT, "deploy", "runtimes", "mlserver.yaml")
    if not path.is_file():
        pytest.skip("deploy/runtimes/mlserver.yaml is not written yet")
    doc = yaml.safe_load(path.read_text())
    kube.create("clusterservingruntimes", doc)
    name = serving_runtimes.deployment_name(doc["metadata"]["name"])
    d = controller_fixtures.wait_for(lambda: kube.deployment(name), what="Deployment")
    containers = _containers(d)
    assert [c["name"] for c in doc["spec"]["containers"]] == list(containers)
    mesh = containers[serving_runtimes.MESH_CONTAINER]
    assert _env(mesh)["MM_LABELS"].endswith(f"rt:{doc['metadata']['name']}")
    assert "mt:sklearn" in _env(mesh)["MM_LABELS"].split(",")
    assert d["spec"]["template"]["metadata"]["labels"]["meshserve.io/service"] == "meshserve"


def test_a_predictor_loads_and_its_status_follows_the_mesh(
    ctl: list[controller_fixtures.ControllerThread],
    apiserver: fake_apiserver.FakeApiServer,
    kube: controller_fixtures.Kube,
    kube_config: kubernetes.client.Configuration,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = _name("iris")
    seen: list[str] = []
    watching = threading.Event()

    def watch() -> None:
        with kubernetes.client.ApiClient(kube_config) as api:
            w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            objects = kubernetes.client.CustomObjectsApi(api)
            watching.set()
            for event in w.stream(  # type: ignore[no-untyped-call]
                objects.list_namespaced_custom_object,
                serving_runtimes.GROUP,
                serving_runtimes.VERSION,
                NS,
                "predictors",
                field_selector=f"metadata.name={name}",
                timeout_seconds=30,
            ):
                state = (event["object"].get("status") or {}).get("activeModelState")
                if state and (not seen or seen[-1] != state):
                    seen.append(state)
                if state == "Loaded":
                    return

    watcher = threading.Thread(target=watch)
    watcher.start()
    watching.wait(5)
    kube.create("predictors", _predictor(name, models["iris"].folder))
    status = controller_fixtures.wait_for(lambda: _loaded(kube, name), what="Loaded")
    watcher.join(30)
    assert status["available"] is True
    assert status["totalCopies"] == 1 and status["failedCopies"] == 0
    assert status["grpcEndpoint"] == f"grpc://meshserve.{NS}:8033"
    assert status["httpEndpoint"] == f"http://meshserve.{NS}:8008"
    assert "lastFailureInfo" not in status
    assert seen[-1] == "Loaded" and "Loading" in seen, seen
    vmodel = mesh_node.node.table.vmodel(name)
    assert vmodel is not None and vmodel.owner == predictor.OWNER
    assert vmodel.active_model == vmodel.target_model == _model_id(kube, name)
    got = mesh_fixtures.infer(mesh_node.endpoint, name, models["iris"].inputs)
    np.testing.assert_array_equal(got, models["iris"].expected)
    registered = controller_fixtures.wait_for(
        lambda: _events(apiserver, name, "Registered"), what="a Registered event"
    )
    assert registered[0]["type"] == "Normal" and vmodel.target_model in registered[0]["message"]


def test_a_changed_spec_switches_models_with_no_failed_request(
    ctl: list[controller_fixtures.ControllerThread],
    kube: controller_fixtures.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = _name("switch")
    kube.create("predictors", _predictor(name, models["iris"].folder))
    controller_fixtures.wait_for(lambda: _loaded(kube, name), what="first model Loaded")
    old_id = _model_id(kube, name)
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
        controller_fixtures.wait_for(lambda: answers, what="first answers")
        kube.patch("predictors", name, {"spec": {"storage": {"path": str(models["twos"].folder)}}})
        controller_fixtures.wait_for(lambda: answers[-1] == "twos", what="answers switched")
        new_id = _model_id(kube, name)
        assert new_id != old_id
        status = controller_fixtures.wait_for(lambda: _loaded(kube, name), what="new model Loaded")
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
    controller_fixtures.wait_for(
        lambda: _predictor_models(mesh_node, name) == [new_id], what="old model deleted"
    )


def test_a_predictor_no_runtime_serves_gets_invalid_spec(
    ctl: list[controller_fixtures.ControllerThread],
    kube: controller_fixtures.Kube,
    apiserver: fake_apiserver.FakeApiServer,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = _name("nobody")
    kube.create("predictors", _predictor(name, models["iris"].folder, model_type="no-such-format"))
    status = controller_fixtures.wait_for(
        lambda: kube.status(name).get("lastFailureInfo") and kube.status(name), what="failure"
    )
    assert status["transitionStatus"] == "InvalidSpec"
    assert status["lastFailureInfo"]["reason"] == "NoSupportingRuntime"
    assert "no-such-format" in status["lastFailureInfo"]["message"]
    assert status["lastFailureInfo"]["modelId"] == _model_id(kube, name)
    assert status["available"] is False and status["activeModelState"] == "Pending"
    assert mesh_node.node.table.vmodel(name) is None
    warning = controller_fixtures.wait_for(
        lambda: _events(apiserver, name, "NoSupportingRuntime"), what="a Warning event"
    )
    assert warning[0]["type"] == "Warning" and "no-such-format" in warning[0]["message"]

    # Pinned to a runtime that does not exist yet: not recognized, until it appears.
    late = LATE_RUNTIME  # the mesh node below carries its label, as its pods would
    pinned = _name("pinned")
    kube.create("predictors", _predictor(pinned, models["iris"].folder, runtime=late))
    status = controller_fixtures.wait_for(
        lambda: kube.status(pinned).get("lastFailureInfo") and kube.status(pinned),
        what="failure",
    )
    assert status["lastFailureInfo"]["reason"] == "RuntimeNotRecognized"
    assert status["transitionStatus"] == "InvalidSpec"
    kube.create("servingruntimes", _runtime(late, [{"name": "sklearn"}]))
    status = controller_fixtures.wait_for(lambda: _loaded(kube, pinned), what="Loaded")
    assert "lastFailureInfo" not in status


def test_deleting_a_predictor_removes_its_models_before_the_object(
    ctl: list[controller_fixtures.ControllerThread],
    kube: controller_fixtures.Kube,
    apiserver: fake_apiserver.FakeApiServer,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = _name("doomed")
    kube.create("predictors", _predictor(name, models["iris"].folder))
    controller_fixtures.wait_for(lambda: _loaded(kube, name), what="Loaded")
    obj = kube.get("predictors", name)
    assert obj is not None and "meshserve.io/controller" in obj["metadata"]["finalizers"]
    assert _predictor_models(mesh_node, name)
    rv = apiserver.resource_version
    kube.delete("predictors", name)
    controller_fixtures.wait_for(lambda: kube.get("predictors", name) is None, what="gone")
    assert mesh_node.node.table.vmodel(name) is None
    assert _predictor_models(mesh_node, name) == []
    # The object was held (deletionTimestamp set) and released by the controller.
    url = (
        f"{apiserver.url}/apis/{serving_runtimes.GROUP}/{serving_runtimes.VERSION}/namespaces/{NS}/predictors"
        f"?watch=true&resourceVersion={rv}&timeoutSeconds=1&fieldSelector=metadata.name={name}"
    )
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(url, timeout=10) as response:
        events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    types = [e["type"] for e in events if e["type"] != "BOOKMARK"]
    assert types[-1] == "DELETED"
    held = [
        e
        for e in events
        if e["type"] == "MODIFIED" and e["object"]["metadata"].get("deletionTimestamp")
    ]
    assert held and "meshserve.io/controller" in held[0]["object"]["metadata"]["finalizers"]


def test_a_vmodel_deleted_behind_its_back_is_registered_again(
    ctl: list[controller_fixtures.ControllerThread],
    kube: controller_fixtures.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    name = _name("resynced")
    kube.create("predictors", _predictor(name, models["iris"].folder))
    controller_fixtures.wait_for(lambda: _loaded(kube, name), what="Loaded")
    with mesh_node.client() as c:
        assert c.delete(name)
    controller_fixtures.wait_for(
        lambda: kube.status(name).get("activeModelState") == "Pending", what="status follows"
    )
    controller_fixtures.wait_for(lambda: _loaded(kube, name), what="registered again")
    assert _predictor_models(mesh_node, name) == [_model_id(kube, name)]


def test_an_unreachable_mesh_is_reported_then_retried(
    ctl: list[controller_fixtures.ControllerThread],
    settings_for: Any,
    kube_config: kubernetes.client.Configuration,
    kube: controller_fixtures.Kube,
    models: dict[str, samples.Sample],
) -> None:
    ctl[0].stop()
    nowhere = f"127.0.0.1:{processes.free_port()}"
    blind = controller_fixtures.ControllerThread(
        dataclasses.replace(settings_for(), mesh_endpoint=nowhere), kube_config
    ).start()
    name = _name("patient")
    try:
        blind.wait_ready()
        kube.create("predictors", _predictor(name, models["iris"].folder))
        failure = controller_fixtures.wait_for(
            lambda: kube.status(name).get("lastFailureInfo"), what="failure"
        )
        assert failure["reason"] == "RuntimeUnhealthy" and nowhere in failure["message"]
        status = kube.status(name)
        assert status["activeModelState"] == "Pending" and status["available"] is False
    finally:
        blind.stop()
        ctl[0] = controller_fixtures.ControllerThread(settings_for(), kube_config).start()
        ctl[0].wait_ready()
    status = controller_fixtures.wait_for(lambda: _loaded(kube, name), what="Loaded")
    assert "lastFailureInfo" not in status


def test_a_restarted_controller_neither_loses_nor_duplicates_registrations(
    ctl: list[controller_fixtures.ControllerThread],
    settings_for: Any,
    kube_config: kubernetes.client.Configuration,
    kube: controller_fixtures.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    steady, changed, doomed, newborn = (_name(p) for p in ("steady", "changed", "gone", "newborn"))
    for n in (steady, changed, doomed):
        kube.create("predictors", _predictor(n, models["iris"].folder))
    for n in (steady, changed, doomed):
        controller_fixtures.wait_for(functools.partial(_loaded, kube, n), what=f"{n} Loaded")
    steady_id = _model_id(kube, steady)

    ctl[0].stop()  # while it is down: one change, one deletion, one creation
    kube.patch("predictors", changed, {"spec": {"storage": {"path": str(models["twos"].folder)}}})
    kube.delete("predictors", doomed)
    kube.create("predictors", _predictor(newborn, models["iris"].folder))
    ctl[0] = controller_fixtures.ControllerThread(settings_for(), kube_config).start()
    ctl[0].wait_ready()

    for n in (changed, newborn):
        controller_fixtures.wait_for(functools.partial(_loaded, kube, n), what=f"{n} Loaded")
    controller_fixtures.wait_for(lambda: kube.get("predictors", doomed) is None, what="deleted")
    changed_id = _model_id(kube, changed)
    # (The mesh deletes the old model once the new one is active; see the
    # report on Management._complete_transition if this ever times out.)
    controller_fixtures.wait_for(
        lambda: _predictor_models(mesh_node, changed) == [changed_id], what="old model gone"
    )
    assert _predictor_models(mesh_node, steady) == [steady_id]
    assert _predictor_models(mesh_node, newborn) == [_model_id(kube, newborn)]
    assert _predictor_models(mesh_node, doomed) == []
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
    ctl: list[controller_fixtures.ControllerThread],
    settings_for: Any,
    kube_config: kubernetes.client.Configuration,
    kube: controller_fixtures.Kube,
    mesh_node: mesh_fixtures.NodeThread,
    models: dict[str, samples.Sample],
) -> None:
    standby = controller_fixtures.ControllerThread(
        settings_for("controller-b"), kube_config
    ).start()
    try:
        first = _name("first")
        kube.create("predictors", _predictor(first, models["iris"].folder))
        controller_fixtures.wait_for(lambda: _loaded(kube, first), what="Loaded")
        assert ctl[0].leading and not standby.leading
        assert standby.controller.terms == 0
        ctl[0].stop()  # resigns: the standby takes over at once
        standby.wait_ready(timeout=10)
        second = _name("second")
        kube.create("predictors", _predictor(second, models["iris"].folder))
        controller_fixtures.wait_for(lambda: _loaded(kube, second), what="Loaded by the new leader")
        record = mesh_node.node.table.vmodel(second)
        assert record is not None and isinstance(record, records.VModelRecord)
    finally:
        standby.stop()
        ctl[0] = controller_fixtures.ControllerThread(settings_for(), kube_config).start()
        ctl[0].wait_ready()


def test_settings_come_from_the_environment(tmp_path: pathlib.Path) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("from-service-account\n")
    env = {
        "KV_STORE": "etcd:etcd:2379",
        "MM_KVSTORE_PREFIX": "mm",
        "MM_INSTANCE_ID": "meshserve-controller-0",
        "MESHSERVE_NODE_IMAGE": "registry/meshserve:1.0",
        "MESHSERVE_FAILURE_EXPIRY": "60",
    }
    cfg = controller.settings_from_env(env, namespace_file)
    assert cfg.namespace == cfg.deployment.namespace == "from-service-account"
    assert cfg.mesh_endpoint == "meshserve:8033" and cfg.kv.endpoints == ("etcd:2379",)
    assert cfg.leader_key == "mm/controller-leader" and cfg.instance_id == "meshserve-controller-0"
    assert cfg.deployment.node_image == "registry/meshserve:1.0"
    assert cfg.failure_expiry_seconds == 60
    missing = tmp_path / "absent"
    assert controller.settings_from_env({"POD_NAMESPACE": "pod"}, missing).namespace == "pod"
    both = {"POD_NAMESPACE": "pod", "MESHSERVE_NAMESPACE": "chosen"}
    assert controller.settings_from_env(both, missing).namespace == "chosen"
    assert controller.settings_from_env({}, missing).namespace == "default"
    with pytest.raises(errors.ConfigError, match="MESHSERVE_ENDPOINT"):
        controller.settings_from_env({"MESHSERVE_ENDPOINT": "no-port"}, missing)


def test_the_command_reports_bad_settings_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESHSERVE_ENDPOINT", "no-port")
    assert cli.main(["controller", "--namespace", NS]) == 1
    err = capsys.readouterr().err
    assert err.startswith("meshserve: MESHSERVE_ENDPOINT") and err.count("\n") == 1


def test_the_rbac_in_deploy_allows_every_request_the_controller_made(
    ctl: list[controller_fixtures.ControllerThread], apiserver: fake_apiserver.FakeApiServer
) -> None:
    """Run last: every request kopf and the controller made in this module
    must be allowed by deploy/base/rbac.yaml (a Role in the namespace, a
    ClusterRole for cluster-wide requests), and every grant there used."""
    path = pathlib.Path(crds.REPO_ROOT, "deploy", "base", "rbac.yaml")
    rules: dict[str, list[dict[str, Any]]] = {"Role": [], "ClusterRole": []}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") in rules:
            rules[doc["kind"]].extend(doc.get("rules") or [])

    def allowed(request: fake_apiserver.Request) -> bool:
        usable = rules["ClusterRole"] + (rules["Role"] if request.namespaced else [])
        return any(
            request.group in r.get("apiGroups", [])
            and request.resource in r.get("resources", [])
            and request.verb in r.get("verbs", [])
            and not r.get("resourceNames")
            for r in usable
        )

    made = {
        r
        for r in apiserver.call(lambda: list(apiserver.requests))
        if r.agent in ("kopf", controller.USER_AGENT)
    }
    assert made, "no request from the controller was seen"
    denied = sorted(
        f"{r.verb} {r.group or 'core'}/{r.resource}{'' if r.namespaced else ' (cluster-wide)'}"
        for r in made
        if not allowed(r)
    )
    assert not denied, denied
    # And nothing more: every verb granted was used in this run, but for
    # deleting a Deployment (done when a runtime is disabled; garbage
    # collection of the owner reference usually gets there first).
    used = {(r.group, r.resource, r.verb) for r in made}
    granted = {
        (group, resource, verb)
        for kind in ("Role", "ClusterRole")
        for r in rules[kind]
        for group in r.get("apiGroups", [])
        for resource in r.get("resources", [])
        for verb in r.get("verbs", [])
    }
    unused = sorted(granted - used - {("apps", "deployments", "delete")})
    assert not unused, f"granted but never used: {unused}"
