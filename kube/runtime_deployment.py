"""ServingRuntimes: the Deployment that runs one as mesh nodes.

:func:`runtime_deployment` builds it, as a pure function of the runtime's
document (:class:`kube.runtime_selection.Runtime`) and the controller's
settings: one pod template per runtime with a mesh node (``meshserve node``)
next to the runtime container(s), sharing the model volume, ready on
``/ready`` at :8089, draining on ``/drain`` before it stops, and with
``MM_LABELS`` (``mt:<format>[:<version>]`` for every supported format and
``rt:<runtime name>``) so placement only puts a model where it can load. A
runtime that brings its own ``mesh-node`` container (this project's runtimes
in ``deploy/runtimes`` do, so that what runs is what the YAML says) keeps it,
with the labels set and a drain hook and readiness probe added where
missing; a runtime written for ModelMesh Serving (its runtime container only,
with a ``builtInAdapter``) gets one injected. Every format gets an ``mt:``
label, ``autoSelect`` or not: ``autoSelect`` decides which runtime a
Predictor may be *given*, while the mesh places a registered model by its
type label alone, so a Predictor pinned to a runtime must still find its
type label there.

The Deployment carries a hash of what the controller rendered
(:data:`ANNOTATION_HASH`), so keeping it is a comparison of two strings: a
real API server adds defaults to every field it stores, which a comparison of
whole objects would take for drift.

Imports no Kubernetes library: documents in, documents out.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kube import runtime_selection
from mesh.core import errors, settings

MODELS_VOLUME = "models-dir"
"""The volume the mesh node pulls models into and the runtime loads them from."""
STORAGE_VOLUME = "storage-config"
STORAGE_MOUNT = "/storage-config"
"""Where the ``storage-config`` Secret is mounted in an injected mesh node."""

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_RUNTIME = "meshserve.io/runtime"
"""The runtime a Deployment (and its pods) belongs to."""
LABEL_SERVICE = "meshserve.io/service"
"""The label the ``meshserve`` Service selects runtime pods by."""
MANAGED_BY = "meshserve-controller"
ANNOTATION_HASH = "meshserve.io/spec-hash"
"""Hash of the rendered Deployment: differs from the desired one → rewrite it."""


@dataclasses.dataclass(frozen=True)
class DeploymentOptions:
    """What the runtime Deployments share, from the controller's settings."""

    namespace: str
    node_image: str = "meshserve:latest"
    """Image of an injected mesh node (``MESHSERVE_NODE_IMAGE``)."""
    service_name: str = "meshserve"
    """Value of the :data:`LABEL_SERVICE` pod label: the Service that selects the pods."""
    config_map: str = "meshserve-config"
    """ConfigMap of settings an injected mesh node reads (``envFrom``)."""
    storage_secret: str = "storage-config"
    default_replicas: int = 1
    data_dir: str = "/models"
    """Mount path of the model volume; the node's models go in ``<data_dir>/models``."""
    grpc_port: int = 8033
    http_port: int = 8008
    metrics_port: int = 2112
    health_port: int = 8089
    termination_grace_seconds: int = 60
    """Longer than the nodes' drain timeout (``MESHSERVE_DRAIN_TIMEOUT``, 30 s)."""
    pull_policy: str = "IfNotPresent"


def deployment_name(runtime_name: str) -> str:
    return f"meshserve-{runtime_name}"


def node_labels(rt: runtime_selection.Runtime) -> tuple[str, ...]:
    """The node labels (``MM_LABELS``) of a runtime's pods: ``mt:<format>``
    and ``mt:<format>:<version>`` for each supported format, ``rt:<name>``."""
    labels: list[str] = []
    for f in rt.formats:
        for label in (f"mt:{f.name}", f"mt:{f.name}:{f.version}" if f.version else ""):
            if label and label not in labels:
                labels.append(label)
    labels.append(f"rt:{rt.name}")
    return tuple(labels)


def selector_labels(rt: runtime_selection.Runtime) -> dict[str, str]:
    """The Deployment's selector: fixed for a runtime (a selector cannot change)."""
    return {LABEL_NAME: "meshserve", LABEL_COMPONENT: "runtime", LABEL_RUNTIME: rt.name}


def _env_list(container: dict[str, Any]) -> list[dict[str, Any]]:
    env = container.get("env")
    if not isinstance(env, list):
        env = container["env"] = []
    return env


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    """Set ``name`` (replacing any definition of it)."""
    env = [e for e in _env_list(container) if e.get("name") != name]
    env.append({"name": name, "value": value})
    container["env"] = env


def _default_env(container: dict[str, Any], name: str, value: str) -> None:
    """Set ``name`` unless the container defines it already."""
    env = _env_list(container)
    if not any(e.get("name") == name for e in env):
        env.append({"name": name, "value": value})


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def node_capacity(rt: runtime_selection.Runtime) -> int | None:
    """Model capacity of an injected node: the runtime container's memory
    limit less ``builtInAdapter.memBufferBytes`` (as ModelMesh Serving sizes it)."""
    adapter = rt.pod.get("builtInAdapter") or {}
    buffer = adapter.get("memBufferBytes")
    for c in rt.pod.get("containers") or []:
        limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is None:
            continue
        try:
            total = settings.parse_size(str(limit))
        except errors.ConfigError:
            return None
        spare = total - (buffer if isinstance(buffer, int) else 0)
        return spare if spare > 0 else None
    return None


def _probe(path: str, port: int, period: int, failures: int, delay: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def _mesh_container(rt: runtime_selection.Runtime, opts: DeploymentOptions) -> dict[str, Any]:
    """A mesh node for a runtime written for ModelMesh Serving."""
    env: list[dict[str, Any]] = [
        {"name": "MESHSERVE_RUNTIME", "value": rt.server_type},
        {"name": "MESHSERVE_RUNTIME_ENDPOINT", "value": f"127.0.0.1:{rt.runtime_port}"},
        {"name": "MESHSERVE_DATA_DIR", "value": opts.data_dir},
        {"name": "MESHSERVE_STORAGE_CONFIG", "value": STORAGE_MOUNT},
        {"name": "MM_SVC_GRPC_PORT", "value": str(opts.grpc_port)},
        _field_env("MM_INSTANCE_ID", "metadata.name"),
        _field_env("MESHSERVE_ADVERTISE_HOST", "status.podIP"),
    ]
    capacity = node_capacity(rt)
    if capacity is not None:
        env.append({"name": "MESHSERVE_CAPACITY", "value": str(capacity)})
    adapter_env = (rt.pod.get("builtInAdapter") or {}).get("env") or []
    env.extend(
        copy.deepcopy(dict(e)) for e in adapter_env if isinstance(e, Mapping) and e.get("name")
    )
    return {
        "name": runtime_selection.MESH_CONTAINER,
        "image": opts.node_image,
        "imagePullPolicy": opts.pull_policy,
        "command": ["meshserve", "node"],
        "envFrom": [{"configMapRef": {"name": opts.config_map, "optional": True}}],
        "env": env,
        "ports": [
            {"name": "grpc", "containerPort": opts.grpc_port},
            {"name": "http", "containerPort": opts.http_port},
            {"name": "prometheus", "containerPort": opts.metrics_port},
            {"name": "health", "containerPort": opts.health_port},
        ],
        "livenessProbe": _probe("/live", opts.health_port, 10, 6, delay=30),
        "volumeMounts": [
            {"name": MODELS_VOLUME, "mountPath": opts.data_dir},
            {"name": STORAGE_VOLUME, "mountPath": STORAGE_MOUNT, "readOnly": True},
        ],
    }


def _prepare_runtime_container(
    c: dict[str, Any], rt: runtime_selection.Runtime, opts: DeploymentOptions
) -> None:
    """Give a ModelMesh-style runtime container the shared model volume (and
    MLServer the repository the injected node fills)."""
    mounts = c.get("volumeMounts")
    if not isinstance(mounts, list):
        mounts = c["volumeMounts"] = []
    if not any(m.get("name") == MODELS_VOLUME for m in mounts):
        mounts.append({"name": MODELS_VOLUME, "mountPath": opts.data_dir})
    if rt.server_type == "mlserver":
        _set_env(c, "MLSERVER_MODELS_DIR", f"{opts.data_dir}/models")
        _default_env(c, "MLSERVER_GRPC_PORT", str(rt.runtime_port))
        _default_env(c, "MLSERVER_LOAD_MODELS_AT_STARTUP", "false")


def _pod_template(rt: runtime_selection.Runtime, opts: DeploymentOptions) -> dict[str, Any]:
    containers = [copy.deepcopy(dict(c)) for c in rt.pod.get("containers") or []]
    volumes = [copy.deepcopy(dict(v)) for v in rt.pod.get("volumes") or []]
    volume_names = {v.get("name") for v in volumes}
    if rt.brings_mesh_node:
        mesh = next(c for c in containers if c.get("name") == runtime_selection.MESH_CONTAINER)
    else:
        if MODELS_VOLUME not in volume_names:
            volumes.append({"name": MODELS_VOLUME, "emptyDir": {}})
        if STORAGE_VOLUME not in volume_names:
            volumes.append(
                {
                    "name": STORAGE_VOLUME,
                    "secret": {"secretName": opts.storage_secret, "optional": True},
                }
            )
        for c in containers:
            _prepare_runtime_container(c, rt, opts)
        mesh = _mesh_container(rt, opts)
        containers.insert(0, mesh)
    _set_env(mesh, "MM_LABELS", ",".join(node_labels(rt)))
    mesh.setdefault("readinessProbe", _probe("/ready", opts.health_port, 5, 3))
    lifecycle = mesh.setdefault("lifecycle", {})
    lifecycle.setdefault("preStop", {"httpGet": {"path": "/drain", "port": opts.health_port}})
    labels = {
        **{str(k): str(v) for k, v in (rt.pod.get("labels") or {}).items()},
        **selector_labels(rt),
        LABEL_SERVICE: opts.service_name,
    }
    pod_spec: dict[str, Any] = {
        "containers": containers,
        "volumes": volumes,
        "terminationGracePeriodSeconds": opts.termination_grace_seconds,
    }
    for key in runtime_selection.POD_FIELDS:
        if key in rt.pod:
            pod_spec[key] = copy.deepcopy(rt.pod[key])
    metadata: dict[str, Any] = {"labels": labels}
    annotations = rt.pod.get("annotations")
    if annotations:
        metadata["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    return {"metadata": metadata, "spec": pod_spec}


def runtime_deployment(
    rt: runtime_selection.Runtime, opts: DeploymentOptions, replicas: int | None = None
) -> dict[str, Any]:
    """The Deployment that runs ``rt``'s pods in ``opts.namespace``, with
    ``replicas`` pods (default: the runtime's own count, else the default)."""
    if replicas is None:
        replicas = rt.replicas if rt.replicas is not None else opts.default_replicas
    selector = selector_labels(rt)
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(rt.name),
            "namespace": opts.namespace,
            "labels": {**selector, LABEL_MANAGED_BY: MANAGED_BY},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            # Never fewer ready nodes during a rollout: a leaving node drains
            # (hands its recently used models over) before it stops.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            "template": _pod_template(rt, opts),
        },
    }
    if rt.uid:
        manifest["metadata"]["ownerReferences"] = [
            {
                "apiVersion": runtime_selection.API_VERSION,
                "kind": rt.kind,
                "name": rt.name,
                "uid": rt.uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    manifest["metadata"]["annotations"] = {ANNOTATION_HASH: spec_hash(manifest)}
    return manifest


def spec_hash(manifest: Mapping[str, Any]) -> str:
    """A hash of a rendered Deployment (ignoring the hash annotation itself)."""
    meta = {k: v for k, v in manifest.get("metadata", {}).items() if k != "annotations"}
    body = {**manifest, "metadata": meta}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def desired_deployments(
    runtimes: Mapping[str, runtime_selection.Runtime],
    opts: DeploymentOptions,
    replicas: Mapping[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Deployment name → manifest, for every usable runtime the namespace
    sees, with the replica counts given by runtime name (default: each
    runtime's own)."""
    counts = replicas or {}
    return {
        deployment_name(rt.name): runtime_deployment(rt, opts, counts.get(rt.name))
        for rt in runtimes.values()
        if rt.usable
    }


def is_current(actual: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether a stored Deployment is the one the controller would render now."""
    if actual is None:
        return False
    stored = ((actual.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)
    return bool(stored) and stored == desired["metadata"]["annotations"][ANNOTATION_HASH]
