"""The controller as it runs in its pod, for the tests, and the world around it.

The controller runs on an event loop in a thread of its own
(:class:`ControllerThread`), against the stand-in API server
(:mod:`tests.kube.apiserver`: real REST and watch protocol), a real etcd and a
real mesh node with its own MLServer; the tests read what it wrote through
the official client (:class:`Kube`). The module-scoped fixtures below build
that world once per test module: each ``test_controller_*`` module imports
the ones it uses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import joblib
import kubernetes
import numpy as np
import pytest
from sklearn import datasets, dummy

from kube import (
    controller,
    controller_settings,
    inference_service,
    predictor,
    runtime_deployment,
    runtime_replicas,
    runtime_selection,
)
from mesh.core import settings
from mesh.edges import etcd_process
from meshserve import samples
from tests.integration import mesh_fixtures
from tests.kube import crds, fixtures
from tests.kube.apiserver import FakeApiServer

_T = TypeVar("_T")
GROUP, VERSION = runtime_selection.GROUP, runtime_selection.VERSION
NS = "meshserve"
LATE_RUNTIME = "late-runtime"
"""A runtime that does not exist when the tests start, but the mesh node
carries its label (``rt:late-runtime``), as its pods would."""
_names = itertools.count(1)
NO_SCALE_TO_ZERO = runtime_replicas.ScaleToZero(enabled=False)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def controller_settings_for(
    namespace: str,
    etcd_endpoint: str,
    prefix: str,
    mesh_endpoint: str,
    instance_id: str = "controller-a",
    scale_to_zero: runtime_replicas.ScaleToZero = NO_SCALE_TO_ZERO,
) -> controller_settings.ControllerSettings:
    """Settings of a test controller: short lease, retries and resyncs; no
    scale to zero unless asked (the scaling tests set their own grace)."""
    return controller_settings.ControllerSettings(
        namespace=namespace,
        deployment=runtime_deployment.DeploymentOptions(namespace=namespace),
        mesh_endpoint=mesh_endpoint,
        kv=settings.KVSettings(endpoints=(etcd_endpoint,), prefix=prefix, lease_ttl_seconds=2),
        instance_id=instance_id,
        resync_seconds=1.0,
        retry_seconds=0.3,
        mesh_timeout_seconds=30.0,
        scale_to_zero=scale_to_zero,
    )


class ControllerThread:
    """A :class:`kube.controller.Controller` running in a thread."""

    def __init__(
        self,
        config: controller_settings.ControllerSettings,
        kube_config: kubernetes.client.Configuration,
    ) -> None:
        self.controller = controller.Controller(config, kube_config)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._running = threading.Event()
        self._result: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def body() -> None:
            self._stop = asyncio.Event()
            self._running.set()
            await self.controller.run(self._stop)

        try:
            self._loop.run_until_complete(body())
            self._result.set_result(None)
        except BaseException as e:
            self._result.set_exception(e)
        finally:
            self._running.set()
            self._loop.close()

    def start(self) -> ControllerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop it (resigning leadership) and re-raise what it failed with, if anything."""
        assert self._running.wait(10), "the controller never started"
        if self._stop is not None and not self._result.done():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the controller did not stop"
        self._result.result(0)

    @property
    def leading(self) -> bool:
        return self.controller.leading

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until it leads and its kopf is up."""
        wait_for(lambda: self.leading and self.controller.ready.is_set(), timeout)


def wait_for(predicate: Callable[[], _T | None], timeout: float = 30, what: str = "") -> _T:
    """Poll until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not met within {timeout} s: {what}"
        time.sleep(0.05)


class Kube:
    """Typed, dict-valued access to the custom and apps resources of one namespace."""

    def __init__(self, config: kubernetes.client.Configuration, namespace: str) -> None:
        self.namespace = namespace
        self.client = kubernetes.client.ApiClient(config)
        self.api = kubernetes.client.CustomObjectsApi(self.client)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        group, version = str(body["apiVersion"]).split("/")
        if plural == "clusterservingruntimes":
            out = self.api.create_cluster_custom_object(group, version, plural, body)
        else:
            out = self.api.create_namespaced_custom_object(
                group, version, self.namespace, plural, body
            )
        assert isinstance(out, dict)
        return out

    def get(
        self, plural: str, name: str, group: str = GROUP, version: str = VERSION
    ) -> dict[str, Any] | None:
        try:
            out = self.api.get_namespaced_custom_object(
                group, version, self.namespace, plural, name
            )
        except kubernetes.client.exceptions.NotFoundException:
            return None
        assert isinstance(out, dict)
        return out

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        out = self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, patch
        )
        assert isinstance(out, dict)
        return out

    def patch_of(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a Predictor or (``inferenceservices``) an InferenceService."""
        group, version = (
            (inference_service.GROUP, inference_service.VERSION)
            if plural == inference_service.PLURAL
            else (GROUP, VERSION)
        )
        out = self.api.patch_namespaced_custom_object(
            group, version, self.namespace, plural, name, patch
        )
        assert isinstance(out, dict)
        return out

    def delete(self, plural: str, name: str, group: str = GROUP, version: str = VERSION) -> None:
        self.api.delete_namespaced_custom_object(group, version, self.namespace, plural, name)

    def names(self, plural: str) -> set[str]:
        found = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
        assert isinstance(found, dict)
        return {o["metadata"]["name"] for o in found["items"]}

    def names_of(self, plural: str) -> set[str]:
        """The names of the namespace's ``plural`` of either API version."""
        group, version = (
            (inference_service.GROUP, inference_service.VERSION)
            if plural == inference_service.PLURAL
            else (GROUP, VERSION)
        )
        found = self.api.list_namespaced_custom_object(group, version, self.namespace, plural)
        assert isinstance(found, dict)
        return {o["metadata"]["name"] for o in found["items"]}

    def resource_version(self, plural: str) -> str:
        """The version a list of ``plural`` was taken at (to watch from)."""
        group, version = (
            (inference_service.GROUP, inference_service.VERSION)
            if plural == inference_service.PLURAL
            else (GROUP, VERSION)
        )
        found = self.api.list_namespaced_custom_object(group, version, self.namespace, plural)
        assert isinstance(found, dict)
        return str(found["metadata"]["resourceVersion"])

    def deployment(self, name: str) -> dict[str, Any] | None:
        return self.get("deployments", name, "apps", "v1")

    def status(self, name: str) -> dict[str, Any]:
        """A Predictor's status (``{}`` if it has none or is gone)."""
        return self.status_of("predictors", name)

    def status_of(self, plural: str, name: str) -> dict[str, Any]:
        """The status of a Predictor or (``inferenceservices``) an
        InferenceService; ``{}`` if it has none or is gone."""
        group, version = (
            (inference_service.GROUP, inference_service.VERSION)
            if plural == inference_service.PLURAL
            else (GROUP, VERSION)
        )
        obj = self.get(plural, name, group, version)
        status = (obj or {}).get("status") or {}
        assert isinstance(status, dict)
        return status


# -- documents as users write them ---------------------------------------------------


def runtime_doc(
    name: str, formats: list[dict[str, Any]], kind: str = "ServingRuntime"
) -> dict[str, Any]:
    """A ServingRuntime as written for ModelMesh Serving: the runtime container only."""
    return {
        "apiVersion": runtime_selection.API_VERSION,
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


def predictor_doc(
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


def isvc_doc(name: str, predictor_part: dict[str, Any], modelmesh: bool = True) -> dict[str, Any]:
    annotations = (
        {inference_service.DEPLOYMENT_MODE: inference_service.MODELMESH_MODE} if modelmesh else {}
    )
    return {
        "apiVersion": inference_service.API_VERSION,
        "kind": inference_service.KIND,
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"predictor": predictor_part},
    }


def sklearn_model(sample: samples.Sample) -> dict[str, Any]:
    """``spec.predictor`` in the current form, the model's folder as ``storage.path``."""
    return {"model": {"modelFormat": {"name": "sklearn"}, "storage": {"path": str(sample.folder)}}}


def isvc_ready(kube: Kube, name: str) -> dict[str, Any] | None:
    """An InferenceService's status once Ready and up to date, else ``None``."""
    status = kube.status_of(inference_service.PLURAL, name)
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    model = status.get("modelStatus", {})
    done = (
        conditions.get("Ready") == "True"
        and model.get("states", {}).get("activeModelState") == "Loaded"
        and model.get("transitionStatus") == "UpToDate"
    )
    return status if done else None


# -- what the controller wrote ---------------------------------------------------------


def model_id(kube: Kube, name: str) -> str:
    obj = kube.get("predictors", name)
    assert obj is not None
    return predictor.parse(obj).model_id


def loaded(kube: Kube, name: str) -> dict[str, Any] | None:
    """A Predictor's status once its model is loaded and up to date, else ``None``."""
    status = kube.status(name)
    done = (
        status.get("activeModelState") == "Loaded" and status.get("transitionStatus") == "UpToDate"
    )
    return status if done else None


def events(apiserver: FakeApiServer, name: str, reason: str) -> list[dict[str, Any]]:
    """The Kubernetes events about a Predictor with this reason."""
    return [
        e
        for e in apiserver.objects("", "events", NS)
        if e["involvedObject"]["name"] == name and e["reason"] == reason
    ]


def predictor_models(node: mesh_fixtures.NodeThread, name: str) -> list[str]:
    return sorted(m for m in node.node.table.models() if m.startswith(f"{name}__"))


# -- fixtures: one world per test module -----------------------------------------------


@pytest.fixture(scope="module")
def mesh_node(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[mesh_fixtures.NodeThread]:
    """The mesh behind the controller: one node labelled as a pod of the
    ServingRuntime :data:`LATE_RUNTIME` would be, so a Predictor pinned to
    that runtime can load on it, reading a storage-config folder of its own
    (empty until a test writes a key into it), as a runtime pod mounts one."""
    config = mesh_fixtures.node_settings(module_etcd.endpoint, tmp_path_factory.mktemp("node"))
    config = dataclasses.replace(
        config,
        node=dataclasses.replace(
            config.node,
            labels=(f"rt:{LATE_RUNTIME}",),
            storage_config_dir=tmp_path_factory.mktemp("storage-config"),
        ),
    )
    node = mesh_fixtures.NodeThread(config)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer(crds.load(), namespaces=("default", NS), bookmark_interval=1.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kube_config(
    apiserver: FakeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> kubernetes.client.Configuration:
    return fixtures.client_configuration(apiserver, tmp_path_factory.mktemp("kube"))


@pytest.fixture(scope="module")
def kube(kube_config: kubernetes.client.Configuration) -> Iterator[Kube]:
    k = Kube(kube_config, NS)
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
def settings_for(
    module_etcd: etcd_process.EtcdServer, mesh_node: mesh_fixtures.NodeThread
) -> Callable[..., controller_settings.ControllerSettings]:
    """Settings of a controller of this module's world (``instance_id`` to tell replicas apart)."""

    def make(instance_id: str = "controller-a") -> controller_settings.ControllerSettings:
        return controller_settings_for(
            NS, module_etcd.endpoint, mesh_node.config.kv.prefix, mesh_node.endpoint, instance_id
        )

    return make


@pytest.fixture(scope="module")
def ctl(
    settings_for: Callable[..., controller_settings.ControllerSettings],
    kube_config: kubernetes.client.Configuration,
    kube: Kube,
) -> Iterator[list[ControllerThread]]:
    """The running controller (a list: tests that restart it replace it),
    with a ServingRuntime for sklearn in the namespace."""
    kube.create(
        "servingruntimes",
        runtime_doc("mlserver-sklearn", [{"name": "sklearn", "autoSelect": True}]),
    )
    holder = [ControllerThread(settings_for(), kube_config).start()]
    holder[0].wait_ready()
    try:
        yield holder
    finally:
        holder[0].stop()
