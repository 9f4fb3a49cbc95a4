"""deploy/ renders with the real kustomize, and what it renders fits together:
namespaces, the Service and the runtime pods it selects, the settings the
processes read, and the production overlay's differences."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest

from kube import inference_service, predictor
from mesh.core import errors, settings
from tests.deploy import manifests
from tests.deploy.manifests import NAMESPACE, Obj, Rendered, find, ident, one

OVERLAYS = ("overlays/quickstart", "overlays/production")
CLUSTER_SCOPED_BUILT_IN = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
}


def test_the_tree_has_a_base_crds_runtimes_samples_and_both_overlays() -> None:
    assert {"base", "crd", "runtimes", "samples", *OVERLAYS} <= set(manifests.kustomizations())


@pytest.mark.parametrize("folder", manifests.kustomizations())
def test_every_kustomization_renders_without_errors_or_warnings(
    rendered: dict[str, Rendered], folder: str
) -> None:
    r = rendered[folder]
    assert r.returncode == 0, f"kubectl kustomize deploy/{folder} failed:\n{r.stderr}"
    assert r.stderr == "", f"kubectl kustomize deploy/{folder} warned:\n{r.stderr}"
    assert r.objects, f"deploy/{folder} renders nothing"


def _referenced_files(kustomization: pathlib.Path) -> set[pathlib.Path]:
    k = manifests.load(kustomization.read_text())
    names: list[str] = [*k.get("resources", []), *k.get("configurations", [])]
    names += [p["path"] for p in k.get("patches", []) if "path" in p]
    return {(kustomization.parent / n).resolve() for n in names}


def test_every_yaml_file_in_deploy_is_used_by_a_kustomization() -> None:
    used: set[pathlib.Path] = set()
    for k in manifests.DEPLOY.rglob("kustomization.yaml"):
        used |= _referenced_files(k)
    files = {
        p.resolve() for p in manifests.DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml"
    }
    assert sorted(str(p.relative_to(manifests.DEPLOY)) for p in files - used) == []


@pytest.mark.parametrize("folder", ["base", *OVERLAYS])
def test_namespaced_objects_live_in_meshserve_and_cluster_scoped_ones_have_no_namespace(
    rendered: dict[str, Rendered], crds: dict[str, Obj], folder: str
) -> None:
    cluster_kinds = CLUSTER_SCOPED_BUILT_IN | {
        kind for kind, crd in crds.items() if crd["spec"]["scope"] == "Cluster"
    }
    for obj in rendered[folder].objects:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_kinds:
            assert ns is None, f"{ident(obj)}: cluster-scoped, must not carry a namespace"
        else:
            assert ns == NAMESPACE, f"{ident(obj)}: expected namespace {NAMESPACE}"


@pytest.mark.parametrize("folder", OVERLAYS)
def test_overlays_install_the_crds_controller_service_settings_and_both_runtimes(
    rendered: dict[str, Rendered], folder: str
) -> None:
    objs = rendered[folder].objects
    assert {c["spec"]["names"]["kind"] for c in find(objs, "CustomResourceDefinition")} - {
        "InferenceService"  # the quickstart's only: test_inference_service_crd
    } == {"Predictor", "ServingRuntime", "ClusterServingRuntime"}
    one(objs, "Namespace", NAMESPACE)
    one(objs, "Deployment", "meshserve-controller")
    one(objs, "Service", "meshserve")
    one(objs, "ConfigMap", "meshserve-config")
    assert {r["metadata"]["name"] for r in find(objs, "ClusterServingRuntime")} == {
        "mlserver-1.x",
        "triton-2.x",
    }


def test_the_controller_runs_meshserve_controller_as_its_service_account(
    rendered: dict[str, Rendered],
) -> None:
    deployment = one(rendered["base"].objects, "Deployment", "meshserve-controller")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "meshserve:latest"
    assert container["command"] == ["meshserve", "controller"]
    assert pod["serviceAccountName"] == manifests.CONTROLLER_SA
    assert {"configMapRef": {"name": "meshserve-config"}} in container["envFrom"]


def _ports(spec: Obj) -> dict[str, int]:
    return {p["name"]: p["port"] for p in spec["ports"]}


def test_the_meshserve_service_exposes_grpc_rest_and_metrics_of_every_runtime_pod(
    rendered: dict[str, Rendered],
) -> None:
    objs = rendered["overlays/quickstart"].objects
    service = one(objs, "Service", "meshserve")
    assert _ports(service["spec"]) == {"grpc": 8033, "http": 8008, "prometheus": 2112}
    selector = service["spec"]["selector"]
    for runtime in find(objs, "ClusterServingRuntime"):
        labels = runtime["spec"]["labels"]
        assert selector.items() <= labels.items(), f"{ident(runtime)}: pods not selected"
        node = _container(runtime, "mesh-node")
        named = {p["name"]: p["containerPort"] for p in node["ports"]}
        for port in service["spec"]["ports"]:
            assert named[port["targetPort"]] == port["port"], (ident(runtime), port)


def _container(runtime: Obj, name: str) -> Obj:
    found: list[Obj] = [c for c in runtime["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{ident(runtime)}: one container named {name}"
    return found[0]


@pytest.mark.parametrize("name", ["mlserver-1.x", "triton-2.x"])
def test_runtime_pods_are_a_mesh_node_and_a_runtime_sharing_the_model_folder(
    rendered: dict[str, Rendered], name: str
) -> None:
    runtime = one(rendered["runtimes"].objects, "ClusterServingRuntime", name)
    spec = runtime["spec"]
    node, *others = spec["containers"]
    assert node["name"] == "mesh-node", "the mesh node must be the first container"
    assert node["command"] == ["meshserve", "node"]
    assert len(others) == 1
    (runtime_container,) = others
    mounts = {
        c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        for c in spec["containers"]
    }
    assert mounts[node["name"]]["models-dir"] == mounts[runtime_container["name"]]["models-dir"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["models-dir"]
    assert volumes["storage-config"]["secret"]["secretName"] == "storage-config"
    probe = node["readinessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in node["ports"]}
    assert probe["path"] == "/ready"
    assert ports[probe["port"]] == 8089
    env = {e["name"]: e.get("value") for e in node["env"]}
    endpoint_port = int(env["MESHSERVE_RUNTIME_ENDPOINT"].rpartition(":")[2])
    assert spec["grpcDataEndpoint"] == f"port:{endpoint_port}"
    assert spec["builtInAdapter"]["runtimeManagementPort"] == endpoint_port
    assert env["MESHSERVE_RUNTIME"] == spec["builtInAdapter"]["serverType"]
    # Model capacity is the runtime container's memory less the adapter's buffer.
    limit = settings.parse_size(runtime_container["resources"]["limits"]["memory"])
    capacity = settings.parse_size(env["MESHSERVE_CAPACITY"])
    assert capacity == limit - spec["builtInAdapter"]["memBufferBytes"]
    assert spec["multiModel"] is True


def _read_by_meshserve(name: str) -> bool:
    sources = [
        *(manifests.REPO / "mesh").rglob("*.py"),
        *(manifests.REPO / "meshserve").rglob("*.py"),
    ]
    return any(f'"{name}"' in p.read_text() for p in sources)


def _node_env(objs: tuple[Obj, ...], runtime: Obj) -> dict[str, str]:
    """The environment a mesh node starts with; downward-API values filled in."""
    config = one(objs, "ConfigMap", "meshserve-config")["data"]
    env: dict[str, str] = dict(config)
    for e in _container(runtime, "mesh-node")["env"]:
        env[e["name"]] = e.get("value", "10.0.0.1" if "podIP" in str(e) else "pod-0")
    return env


def test_every_setting_in_the_configmap_and_node_env_is_one_meshserve_reads(
    rendered: dict[str, Rendered],
) -> None:
    objs = rendered["overlays/quickstart"].objects
    names: set[str] = set(one(objs, "ConfigMap", "meshserve-config")["data"])
    for runtime in find(objs, "ClusterServingRuntime"):
        names |= {e["name"] for e in _container(runtime, "mesh-node")["env"]}
    unknown = sorted(n for n in names if not _read_by_meshserve(n))
    assert unknown == [], "settings no meshserve code reads (typo?)"


def test_the_quickstart_mesh_nodes_settings_parse(rendered: dict[str, Rendered]) -> None:
    objs = rendered["overlays/quickstart"].objects
    for runtime in find(objs, "ClusterServingRuntime"):
        try:
            s = settings.from_env(_node_env(objs, runtime))
        except errors.ConfigError as e:
            pytest.fail(f"{ident(runtime)}: {e}")
        assert s.kv.endpoints == ("etcd:2379",)
        node = _container(runtime, "mesh-node")
        ports = {p["name"]: p["containerPort"] for p in node["ports"]}
        assert ports == {
            "grpc": s.service.grpc_port,
            "http": s.service.rest_port,
            "prometheus": s.service.metrics_port,
            "health": s.service.probe_port,
        }, f"{ident(runtime)}: the pod's ports are not the ones the node listens on"
        mounts = {m["name"]: pathlib.Path(m["mountPath"]) for m in node["volumeMounts"]}
        assert s.node.model_dir == mounts["models-dir"] / "models"
        assert s.node.storage_config_dir == mounts["storage-config"]


def test_quickstart_etcd_is_the_one_kv_store_points_at(rendered: dict[str, Rendered]) -> None:
    objs = rendered["overlays/quickstart"].objects
    kv_store = one(objs, "ConfigMap", "meshserve-config")["data"]["KV_STORE"]
    host, port = settings.parse_kv_store(kv_store)[0].split(":")
    service = one(objs, "Service", host)
    assert _ports(service["spec"])["client"] == int(port)
    deployment = one(objs, "Deployment", host)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_quickstart_samples_find_their_storage_key_and_parse_as_meshserve_predictors(
    rendered: dict[str, Rendered],
) -> None:
    objs = rendered["overlays/quickstart"].objects
    keys = set(one(objs, "Secret", "storage-config")["stringData"])
    predictors = find(objs, "Predictor")
    assert len(predictors) >= 3
    for doc in predictors:
        spec = predictor.parse(doc)
        assert spec.storage_key in keys, f"{ident(doc)}: no storage-config key {spec.storage_key!r}"
    legacy = one(objs, "Predictor", "example-sklearn-mnist-svm")
    assert legacy["spec"]["storage"]["s3"]["secretKey"] in keys


def test_the_quickstart_sample_inference_service_is_served_and_finds_its_storage_key(
    rendered: dict[str, Rendered],
) -> None:
    objs = rendered["overlays/quickstart"].objects
    keys = set(one(objs, "Secret", "storage-config")["stringData"])
    (isvc,) = find(objs, "InferenceService")
    assert inference_service.in_modelmesh_mode(isvc), "the controller serves ModelMesh mode only"
    spec = inference_service.parse(isvc)
    assert spec.storage_key in keys, f"{ident(isvc)}: no storage-config key {spec.storage_key!r}"
    names = {p["metadata"]["name"] for p in find(objs, "Predictor")}
    assert isvc["metadata"]["name"] not in names, "a name is one vmodel: not a Predictor's too"


def _limits(container: Obj) -> dict[str, Any]:
    limits: dict[str, Any] = container.get("resources", {}).get("limits", {})
    return limits


def test_production_uses_external_etcd_more_replicas_limits_and_disruption_budgets(
    rendered: dict[str, Rendered],
) -> None:
    objs = rendered["overlays/production"].objects
    assert find(objs, "Predictor") == []
    assert find(objs, "Secret") == [], "production references Secrets, it ships none"
    assert not [d for d in find(objs, "Deployment") if d["metadata"]["name"] == "etcd"]
    config = one(objs, "ConfigMap", "meshserve-config")["data"]
    mount = "/etc/meshserve/etcd"
    assert config["KV_STORE"] == f"etcd:{mount}/etcd_connection"

    controller = one(objs, "Deployment", "meshserve-controller")
    assert controller["spec"]["replicas"] >= 2
    pod = controller["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"cpu", "memory"} <= set(_limits(container))
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["etcd-connection"] == mount
    assert mounts["tmp"] == "/tmp", "the base's mounts survive the patch"
    assert secrets["etcd-connection"] == "meshserve-etcd"

    for runtime in find(objs, "ClusterServingRuntime"):
        spec = runtime["spec"]
        assert spec["replicas"] >= 2
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["etcd-connection"]["secret"]["secretName"] == "meshserve-etcd"
        node = _container(runtime, "mesh-node")
        assert {"name": "etcd-connection", "mountPath": mount, "readOnly": True} in node[
            "volumeMounts"
        ]
        for c in spec["containers"]:
            assert "memory" in _limits(c), f"{ident(runtime)} {c['name']}: no memory limit"
            assert not c["image"].endswith(":latest"), f"{ident(runtime)} {c['name']}"
    assert controller["spec"]["template"]["spec"]["containers"][0]["image"] == "meshserve:0.1.0"

    budgets = {
        tuple(sorted(p["spec"]["selector"]["matchLabels"].items())): p
        for p in find(objs, "PodDisruptionBudget")
    }
    controller_labels = controller["spec"]["selector"]["matchLabels"]
    assert tuple(sorted(controller_labels.items())) in budgets
    service_selector = one(objs, "Service", "meshserve")["spec"]["selector"]
    assert budgets[tuple(sorted(service_selector.items()))]["spec"]["maxUnavailable"] == 1


def test_no_image_in_quickstart_floats_except_meshserve_and_the_example_models(
    rendered: dict[str, Rendered],
) -> None:
    images: set[str] = set()
    for obj in rendered["overlays/quickstart"].objects:
        if obj["kind"] == "Deployment":
            images |= {c["image"] for c in obj["spec"]["template"]["spec"]["containers"]}
        elif obj["kind"] == "ClusterServingRuntime":
            images |= {c["image"] for c in obj["spec"]["containers"]}
    floating = {i for i in images if ":" not in i or re.search(r":latest$", i)}
    assert floating == {"meshserve:latest", "kserve/modelmesh-minio-examples:latest"}
