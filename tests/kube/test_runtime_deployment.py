"""The Deployment that runs a ServingRuntime as mesh nodes
(:mod:`kube.runtime_deployment`), from documents as users write them."""

from __future__ import annotations

import copy
from typing import Any

from kube import runtime_deployment, runtime_selection
from tests.kube import runtime_documents

_doc = runtime_documents.runtime_doc
_rt = runtime_documents.runtime


SKLEARN = [{"name": "sklearn", "version": "1", "autoSelect": True}]


def test_node_labels_name_every_format_and_the_runtime() -> None:
    rt = _rt("mlserver-1.x", [*SKLEARN, {"name": "xgboost"}, {"name": "sklearn", "version": "0"}])
    assert runtime_deployment.node_labels(rt) == (
        "mt:sklearn",
        "mt:sklearn:1",
        "mt:xgboost",
        "mt:sklearn:0",
        "rt:mlserver-1.x",
    )


def _containers(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in manifest["spec"]["template"]["spec"]["containers"]}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


OPTS = runtime_deployment.DeploymentOptions(namespace="serving", node_image="meshserve:1.0")


def test_a_modelmesh_runtime_gets_a_mesh_node_injected() -> None:
    doc = _doc(
        "mlserver-0.x",
        SKLEARN,
        replicas=2,
        tolerations=[{"key": "gpu", "operator": "Exists"}],
        labels={"team": "a"},
        annotations={"prometheus.io/scrape": "true"},
    )
    doc["spec"]["builtInAdapter"]["memBufferBytes"] = 128 * 1024 * 1024
    doc["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1Gi"}}
    doc["spec"]["containers"][0]["env"] = [{"name": "MLSERVER_MODELS_DIR", "value": "/elsewhere"}]
    d = runtime_deployment.runtime_deployment(runtime_selection.parse_runtime(doc), OPTS)
    assert d["metadata"]["name"] == "meshserve-mlserver-0.x"
    assert d["metadata"]["namespace"] == "serving"
    assert d["metadata"]["ownerReferences"][0]["uid"] == "uid-mlserver-0.x"
    assert d["spec"]["replicas"] == 2
    template = d["spec"]["template"]
    assert d["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"][runtime_deployment.LABEL_SERVICE] == "meshserve"
    assert template["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert template["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    containers = _containers(d)
    assert list(containers) == [runtime_selection.MESH_CONTAINER, "mlserver"]
    mesh = containers[runtime_selection.MESH_CONTAINER]
    assert mesh["image"] == "meshserve:1.0" and mesh["command"] == ["meshserve", "node"]
    env = _env(mesh)
    assert env["MM_LABELS"] == "mt:sklearn,mt:sklearn:1,rt:mlserver-0.x"
    assert env["MESHSERVE_RUNTIME"] == "mlserver"
    assert env["MESHSERVE_RUNTIME_ENDPOINT"] == "127.0.0.1:8001"
    assert env["MESHSERVE_CAPACITY"] == str(1024**3 - 128 * 1024 * 1024)
    assert env["MM_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert mesh["envFrom"] == [{"configMapRef": {"name": "meshserve-config", "optional": True}}]
    assert mesh["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8089}
    assert mesh["lifecycle"]["preStop"]["httpGet"] == {"path": "/drain", "port": 8089}
    runtime_env = _env(containers["mlserver"])
    assert runtime_env["MLSERVER_MODELS_DIR"] == "/models/models"  # where the node puts models
    assert runtime_env["MLSERVER_LOAD_MODELS_AT_STARTUP"] == "false"
    volumes = {v["name"] for v in template["spec"]["volumes"]}
    assert volumes == {runtime_deployment.MODELS_VOLUME, runtime_deployment.STORAGE_VOLUME}
    for c in containers.values():
        assert {"name": runtime_deployment.MODELS_VOLUME, "mountPath": "/models"} in c[
            "volumeMounts"
        ]


def test_a_runtime_with_its_own_mesh_node_keeps_it() -> None:
    mesh_node = {
        "name": runtime_selection.MESH_CONTAINER,
        "image": "meshserve:latest",
        "env": [
            {"name": "MM_LABELS", "value": "stale"},
            {"name": "MESHSERVE_DATA_DIR", "value": "/m"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "health"}},
        "volumeMounts": [{"name": "models", "mountPath": "/m"}],
    }
    runtime = {
        "name": "mlserver",
        "image": "mlserver",
        "volumeMounts": [{"name": "models", "mountPath": "/m"}],
    }
    doc = _doc(
        "own",
        SKLEARN,
        containers=[mesh_node, runtime],
        volumes=[{"name": "models", "emptyDir": {}}],
    )
    d = runtime_deployment.runtime_deployment(runtime_selection.parse_runtime(doc), OPTS)
    containers = _containers(d)
    assert list(containers) == [runtime_selection.MESH_CONTAINER, "mlserver"]
    mesh = containers[runtime_selection.MESH_CONTAINER]
    assert mesh["image"] == "meshserve:latest"  # as written, not the controller's image
    env = _env(mesh)
    assert (
        env["MM_LABELS"] == "mt:sklearn,mt:sklearn:1,rt:own" and env["MESHSERVE_DATA_DIR"] == "/m"
    )
    assert mesh["readinessProbe"] == {"httpGet": {"path": "/ready", "port": "health"}}
    assert "preStop" in mesh["lifecycle"]
    assert containers["mlserver"] == runtime  # untouched
    volumes = d["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "models", "emptyDir": {}}]


def test_the_hash_tells_whether_a_stored_deployment_is_current() -> None:
    rt = _rt("r", SKLEARN)
    desired = runtime_deployment.runtime_deployment(rt, OPTS)
    assert desired == runtime_deployment.runtime_deployment(rt, OPTS)  # deterministic
    stored = copy.deepcopy(desired)
    stored["metadata"]["resourceVersion"] = "42"
    stored["spec"]["revisionHistoryLimit"] = 10  # server defaults do not count
    assert runtime_deployment.is_current(stored, desired)
    assert not runtime_deployment.is_current(None, desired)
    relabelled = runtime_deployment.runtime_deployment(
        _rt("r", [*SKLEARN, {"name": "xgboost"}]), OPTS
    )
    assert not runtime_deployment.is_current(stored, relabelled)
    del stored["metadata"]["annotations"]
    assert not runtime_deployment.is_current(stored, desired)


def test_desired_deployments_cover_usable_runtimes_only() -> None:
    visible = {"a": _rt("a", SKLEARN), "b": _rt("b", SKLEARN, disabled=True)}
    assert list(runtime_deployment.desired_deployments(visible, OPTS)) == ["meshserve-a"]
