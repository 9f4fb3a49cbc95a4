"""Which runtime serves a Predictor, and the Deployment that runs a runtime
(:mod:`kube.serving_runtimes`), from documents as users write them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kube import predictor, serving_runtimes
from mesh.core import errors


def _doc(
    name: str,
    formats: list[dict[str, Any]],
    kind: str = serving_runtimes.NAMESPACED_KIND,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": serving_runtimes.API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {
            "supportedModelFormats": formats,
            "multiModel": True,
            "builtInAdapter": {"serverType": "mlserver", "runtimeManagementPort": 8001},
            "containers": [{"name": "mlserver", "image": "seldonio/mlserver:1.7.1"}],
            **spec,
        },
    }


def _rt(name: str, formats: list[dict[str, Any]], **spec: Any) -> serving_runtimes.Runtime:
    return serving_runtimes.parse_runtime(_doc(name, formats, **spec))


def _spec(
    model_type: str = "sklearn", version: str = "", runtime: str = ""
) -> predictor.PredictorSpec:
    return predictor.PredictorSpec(
        name="p", model_type=model_type, path="m", model_type_version=version, runtime=runtime
    )


SKLEARN = [{"name": "sklearn", "version": "1", "autoSelect": True}]


def test_parse_reads_formats_adapter_and_pod_fields() -> None:
    rt = _rt(
        "mlserver-1.x",
        [*SKLEARN, {"name": "xgboost"}],
        grpcDataEndpoint="port:9001",
        replicas=3,
        nodeSelector={"pool": "cpu"},
    )
    assert rt.formats == (
        serving_runtimes.ModelFormat("sklearn", "1", True),
        serving_runtimes.ModelFormat("xgboost", "", False),
    )
    assert rt.server_type == "mlserver" and rt.runtime_port == 8001  # the adapter's port wins
    assert rt.replicas == 3 and rt.uid == "uid-mlserver-1.x" and rt.usable
    assert rt.pod["nodeSelector"] == {"pool": "cpu"}
    no_adapter = _doc("x", SKLEARN, grpcDataEndpoint="port:9001")
    del no_adapter["spec"]["builtInAdapter"]
    no_adapter["spec"]["containers"].insert(
        0, {"name": serving_runtimes.MESH_CONTAINER, "image": "m"}
    )
    assert serving_runtimes.parse_runtime(no_adapter).runtime_port == 9001


def test_parse_rejects_what_is_not_a_runtime() -> None:
    with pytest.raises(errors.InvalidRequest):
        serving_runtimes.parse_runtime({"kind": "Predictor", "metadata": {"name": "x"}})
    with pytest.raises(errors.InvalidRequest):
        serving_runtimes.parse_runtime({"kind": serving_runtimes.NAMESPACED_KIND, "metadata": {}})


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"disabled": True}, "is disabled"),
        ({"multiModel": False}, "not a multi-model runtime"),
        ({"containers": []}, "no containers"),
        ({"builtInAdapter": {}}, "no 'mesh-node' container and no builtInAdapter.serverType"),
    ],
)
def test_unusable_runtimes_are_not_recognized(spec: dict[str, Any], problem: str) -> None:
    rt = _rt("r", SKLEARN, **spec)
    assert not rt.usable
    found = serving_runtimes.support(_spec(runtime="r"), {"r": rt})
    assert found.reason is serving_runtimes.Reason.RUNTIME_NOT_RECOGNIZED
    assert problem in found.message
    assert not serving_runtimes.support(_spec(), {"r": rt}).supported
    assert (
        serving_runtimes.desired_deployments({"r": rt}, serving_runtimes.DeploymentOptions("ns"))
        == {}
    )


def test_support_by_type_needs_auto_select_and_the_version_if_given() -> None:
    auto = _rt("auto", SKLEARN)
    manual = _rt("manual", [{"name": "sklearn", "version": "1"}])
    both = {"auto": auto, "manual": manual}
    assert serving_runtimes.support(_spec(), both).runtimes == ("auto",)
    assert serving_runtimes.support(_spec(version="1"), both).runtimes == ("auto",)
    none = serving_runtimes.support(_spec(version="2"), both)
    assert not none.supported and none.reason is serving_runtimes.Reason.NO_SUPPORTING_RUNTIME
    assert "sklearn (version 2)" in none.message
    assert (
        serving_runtimes.support(_spec("onnx"), both).reason
        is serving_runtimes.Reason.NO_SUPPORTING_RUNTIME
    )
    assert (
        serving_runtimes.support(_spec(), {}).reason
        is serving_runtimes.Reason.NO_SUPPORTING_RUNTIME
    )


def test_a_pinned_runtime_must_exist_and_list_the_type() -> None:
    manual = _rt("manual", [{"name": "sklearn"}])
    runtimes_ = {"manual": manual}
    assert serving_runtimes.support(_spec(runtime="manual"), runtimes_).runtimes == ("manual",)
    missing = serving_runtimes.support(_spec(runtime="other"), runtimes_)
    assert missing.reason is serving_runtimes.Reason.RUNTIME_NOT_RECOGNIZED
    assert "'other' does not exist" in missing.message
    wrong = serving_runtimes.support(_spec("xgboost", runtime="manual"), runtimes_)
    assert wrong.reason is serving_runtimes.Reason.NO_SUPPORTING_RUNTIME


def test_a_serving_runtime_hides_the_cluster_runtime_of_its_name() -> None:
    cluster = serving_runtimes.parse_runtime(
        _doc("shared", SKLEARN, kind=serving_runtimes.CLUSTER_KIND)
    )
    other = serving_runtimes.parse_runtime(
        _doc("only-cluster", SKLEARN, kind=serving_runtimes.CLUSTER_KIND)
    )
    local = _rt("shared", [{"name": "xgboost", "autoSelect": True}])
    visible = serving_runtimes.visible_runtimes([local], [cluster, other])
    assert visible["shared"] is local and visible["only-cluster"] is other
    assert serving_runtimes.support(_spec(runtime="shared"), visible).reason is (
        serving_runtimes.Reason.NO_SUPPORTING_RUNTIME
    )


def test_node_labels_name_every_format_and_the_runtime() -> None:
    rt = _rt("mlserver-1.x", [*SKLEARN, {"name": "xgboost"}, {"name": "sklearn", "version": "0"}])
    assert serving_runtimes.node_labels(rt) == (
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


OPTS = serving_runtimes.DeploymentOptions(namespace="serving", node_image="meshserve:1.0")


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
    d = serving_runtimes.runtime_deployment(serving_runtimes.parse_runtime(doc), OPTS)
    assert d["metadata"]["name"] == "meshserve-mlserver-0.x"
    assert d["metadata"]["namespace"] == "serving"
    assert d["metadata"]["ownerReferences"][0]["uid"] == "uid-mlserver-0.x"
    assert d["spec"]["replicas"] == 2
    template = d["spec"]["template"]
    assert d["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"][serving_runtimes.LABEL_SERVICE] == "meshserve"
    assert template["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert template["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    containers = _containers(d)
    assert list(containers) == [serving_runtimes.MESH_CONTAINER, "mlserver"]
    mesh = containers[serving_runtimes.MESH_CONTAINER]
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
    assert volumes == {serving_runtimes.MODELS_VOLUME, serving_runtimes.STORAGE_VOLUME}
    for c in containers.values():
        assert {"name": serving_runtimes.MODELS_VOLUME, "mountPath": "/models"} in c["volumeMounts"]


def test_a_runtime_with_its_own_mesh_node_keeps_it() -> None:
    mesh_node = {
        "name": serving_runtimes.MESH_CONTAINER,
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
    d = serving_runtimes.runtime_deployment(serving_runtimes.parse_runtime(doc), OPTS)
    containers = _containers(d)
    assert list(containers) == [serving_runtimes.MESH_CONTAINER, "mlserver"]
    mesh = containers[serving_runtimes.MESH_CONTAINER]
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
    desired = serving_runtimes.runtime_deployment(rt, OPTS)
    assert desired == serving_runtimes.runtime_deployment(rt, OPTS)  # deterministic
    stored = copy.deepcopy(desired)
    stored["metadata"]["resourceVersion"] = "42"
    stored["spec"]["revisionHistoryLimit"] = 10  # server defaults do not count
    assert serving_runtimes.is_current(stored, desired)
    assert not serving_runtimes.is_current(None, desired)
    relabelled = serving_runtimes.runtime_deployment(
        _rt("r", [*SKLEARN, {"name": "xgboost"}]), OPTS
    )
    assert not serving_runtimes.is_current(stored, relabelled)
    del stored["metadata"]["annotations"]
    assert not serving_runtimes.is_current(stored, desired)


def test_desired_deployments_cover_usable_runtimes_only() -> None:
    visible = {"a": _rt("a", SKLEARN), "b": _rt("b", SKLEARN, disabled=True)}
    assert list(serving_runtimes.desired_deployments(visible, OPTS)) == ["meshserve-a"]
