"""The controller keeps one Deployment of mesh nodes per ServingRuntime.

End to end, as a user of KServe ModelMesh Serving sees it after ``kubectl
apply``: the stand-in API server (real REST and watch protocol, and no
garbage collector), kopf running the real controller code, a real etcd and a
real mesh node. A ServingRuntime becomes a Deployment of mesh nodes labelled
with its formats, follows the runtime's changes, comes back when deleted
behind the controller's back, and goes when its runtime is disabled or
deleted: deleted by the controller itself, since nothing else here deletes.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from kube import api_client, runtime_deployment, runtime_selection
from tests.integration import controller_fixtures as cf
from tests.kube import crds
from tests.kube.apiserver import FakeApiServer, Request


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def test_a_serving_runtime_becomes_a_deployment_of_labelled_mesh_nodes(
    ctl: list[cf.ControllerThread], kube: cf.Kube
) -> None:
    name = cf.unique_name("mlserver")
    formats = [{"name": "sklearn", "version": "1", "autoSelect": True}]
    created = kube.create("servingruntimes", cf.runtime_doc(name, formats))
    deployment_name = runtime_deployment.deployment_name(name)
    d = cf.wait_for(lambda: kube.deployment(deployment_name), what="Deployment")
    containers = _containers(d)
    assert list(containers) == [runtime_selection.MESH_CONTAINER, "mlserver"]
    mesh = containers[runtime_selection.MESH_CONTAINER]
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
        if m["name"] == runtime_deployment.MODELS_VOLUME
    ]
    assert models_mounts == ["/models", "/models"]  # one volume, both containers
    assert _env(containers["mlserver"])["MLSERVER_MODELS_DIR"] == "/models/models"
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels[runtime_deployment.LABEL_SERVICE] == "meshserve"
    owner = d["metadata"]["ownerReferences"][0]
    assert owner["uid"] == created["metadata"]["uid"] and owner["kind"] == "ServingRuntime"

    # A new format relabels the nodes; a deleted Deployment comes back.
    formats.append({"name": "xgboost", "autoSelect": True})
    kube.patch("servingruntimes", name, {"spec": {"supportedModelFormats": formats}})
    cf.wait_for(
        lambda: (
            "mt:xgboost"
            in _env(_containers(kube.deployment(deployment_name) or d)["mesh-node"])["MM_LABELS"]
        ),
        what="MM_LABELS updated",
    )
    kube.delete("deployments", deployment_name, "apps", "v1")
    cf.wait_for(lambda: kube.deployment(deployment_name), what="Deployment recreated")


def test_the_project_runtimes_keep_their_own_mesh_node(
    ctl: list[cf.ControllerThread], kube: cf.Kube
) -> None:
    path = pathlib.Path(crds.REPO_ROOT, "deploy", "runtimes", "mlserver.yaml")
    if not path.is_file():
        pytest.skip("deploy/runtimes/mlserver.yaml is not written yet")
    doc = yaml.safe_load(path.read_text())
    kube.create("clusterservingruntimes", doc)
    name = runtime_deployment.deployment_name(doc["metadata"]["name"])
    d = cf.wait_for(lambda: kube.deployment(name), what="Deployment")
    containers = _containers(d)
    assert [c["name"] for c in doc["spec"]["containers"]] == list(containers)
    mesh = containers[runtime_selection.MESH_CONTAINER]
    assert _env(mesh)["MM_LABELS"].endswith(f"rt:{doc['metadata']['name']}")
    assert "mt:sklearn" in _env(mesh)["MM_LABELS"].split(",")
    assert d["spec"]["template"]["metadata"]["labels"]["meshserve.io/service"] == "meshserve"


_CONTROLLER_DELETES = Request(
    agent=api_client.USER_AGENT,
    verb="delete",
    group="apps",
    resource="deployments",
    namespaced=True,
)


def _controller_deletes(apiserver: FakeApiServer) -> int:
    """How many Deployment DELETEs the controller itself has sent so far."""
    return apiserver.call(lambda: apiserver.requests[_CONTROLLER_DELETES])


@pytest.mark.parametrize("retire", ["disable", "delete"])
def test_the_controller_deletes_the_deployment_of_a_retired_runtime(
    retire: str, ctl: list[cf.ControllerThread], kube: cf.Kube, apiserver: FakeApiServer
) -> None:
    """A runtime disabled, or deleted, takes its Deployment with it. The
    stand-in collects no garbage (a real cluster's collector is
    kube-controller-manager, which does not run here), so the Deployment
    goes only if the controller sends the DELETE; the request log shows it
    did, and the watch history shows the Deployment deleted, not held."""
    name = cf.unique_name(f"retired-{retire}")
    kube.create("servingruntimes", cf.runtime_doc(name, [{"name": "sklearn"}]))
    deployment_name = runtime_deployment.deployment_name(name)
    created = cf.wait_for(lambda: kube.deployment(deployment_name), what="Deployment")
    deletes_before = _controller_deletes(apiserver)
    if retire == "disable":
        kube.patch("servingruntimes", name, {"spec": {"disabled": True}})
    else:
        kube.delete("servingruntimes", name)
        assert kube.get("servingruntimes", name) is None
    cf.wait_for(lambda: kube.deployment(deployment_name) is None, what="Deployment deleted")
    assert _controller_deletes(apiserver) == deletes_before + 1
    since = int(created["metadata"]["resourceVersion"])
    changes = [
        type_
        for type_, obj in apiserver.changes("apps", "deployments", since)
        if obj["metadata"]["name"] == deployment_name
    ]
    assert changes == ["DELETED"]  # deleted at once: not held for a collector
