"""ServingRuntimes: which one can serve a Predictor, and the Deployment that runs one.

The controller (``meshserve controller``) makes two decisions about runtimes,
and both are here, as pure functions of the resources' documents, so they are
tested without an API server and read the same on every controller replica:

- **Can any runtime serve this Predictor?** KServe ModelMesh Serving's rules,
  so that its YAML behaves the same: a Predictor naming ``spec.runtime.name``
  needs that runtime to exist in its namespace (a ServingRuntime, or else a
  ClusterServingRuntime of that name; ``RuntimeNotRecognized`` otherwise) and
  to list the model type among its ``supportedModelFormats``
  (``NoSupportingRuntime`` otherwise); a Predictor naming no runtime needs a
  runtime that lists its type with ``autoSelect: true``. A model type version,
  when the Predictor gives one, must equal the format's version. Disabled
  runtimes, single-model runtimes (``multiModel`` not true) and runtimes that
  cannot run as mesh nodes do not count. A Predictor nobody can serve is not
  registered at all: it gets ``InvalidSpec`` (:mod:`kube.predictor_status`),
  where ModelMesh Serving registers it and lets the placement fail.
- **Which Deployment runs a runtime?** :func:`runtime_deployment` builds it:
  one pod template per runtime with a mesh node (``meshserve node``) next to
  the runtime container(s), sharing the model volume, ready on ``/ready`` at
  :8089, draining on ``/drain`` before it stops, and with ``MM_LABELS``
  (``mt:<format>[:<version>]`` for every supported format and
  ``rt:<runtime name>``) so placement only puts a model where it can load. A
  runtime that brings its own ``mesh-node`` container (this project's
  runtimes in ``deploy/runtimes`` do, so that what runs is what the YAML says)
  keeps it, with the labels set and a drain hook and readiness probe added
  where missing; a runtime written for ModelMesh Serving (its runtime
  container only, with a ``builtInAdapter``) gets one injected. Every format
  gets an ``mt:`` label, ``autoSelect`` or not: ``autoSelect`` decides which
  runtime a Predictor may be *given*, while the mesh places a registered model
  by its type label alone, so a Predictor pinned to a runtime must still find
  its type label there.

The Deployment carries a hash of what the controller rendered
(:data:`ANNOTATION_HASH`), so keeping it is a comparison of two strings: a
real API server adds defaults to every field it stores, which a comparison of
whole objects would take for drift.

Imports no Kubernetes library: documents in, documents out.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from kube import predictor
from mesh.core import errors, settings

GROUP = "serving.kserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
NAMESPACED_KIND = "ServingRuntime"
CLUSTER_KIND = "ClusterServingRuntime"

MESH_CONTAINER = "mesh-node"
"""The mesh node's container name in a runtime pod."""
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

_PASSED_THROUGH = ("nodeSelector", "affinity", "tolerations", "imagePullSecrets", "hostIPC")
"""Pod-level fields of a ServingRuntime copied into the pod template as written."""

_DEFAULT_RUNTIME_PORT = 8001


class Reason(enum.StrEnum):
    """Why no runtime can serve a Predictor (ModelMesh Serving's failure reasons)."""

    NO_SUPPORTING_RUNTIME = "NoSupportingRuntime"
    RUNTIME_NOT_RECOGNIZED = "RuntimeNotRecognized"


@dataclasses.dataclass(frozen=True)
class ModelFormat:
    """One entry of ``spec.supportedModelFormats``."""

    name: str
    version: str = ""
    auto_select: bool = False

    def matches(self, model_type: str, version: str = "") -> bool:
        """Whether a model of this type (and version, if given) is this format."""
        return self.name == model_type and (not version or self.version == version)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What the controller needs of a ServingRuntime or ClusterServingRuntime."""

    name: str
    kind: str
    """:data:`NAMESPACED_KIND` or :data:`CLUSTER_KIND`."""
    uid: str = ""
    """``metadata.uid``, for the Deployment's owner reference."""
    formats: tuple[ModelFormat, ...] = ()
    multi_model: bool = False
    disabled: bool = False
    server_type: str = ""
    """``spec.builtInAdapter.serverType`` (``mlserver``, ``triton``): the node's runtime adapter."""
    runtime_port: int = _DEFAULT_RUNTIME_PORT
    """The runtime's gRPC port inside the pod."""
    replicas: int | None = None
    """``spec.replicas``; ``None``: the controller's default."""
    pod: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The spec's pod fields as written (containers, volumes, labels...)."""
    problem: str = ""
    """Why this runtime cannot run as mesh nodes ("" if it can)."""

    @property
    def usable(self) -> bool:
        """Whether the controller deploys it and may give Predictors to it."""
        return self.multi_model and not self.disabled and not self.problem

    @property
    def brings_mesh_node(self) -> bool:
        return any(c.get("name") == MESH_CONTAINER for c in self.pod.get("containers") or [])

    def supports(self, model_type: str, version: str = "", *, auto_select: bool = False) -> bool:
        """Whether it lists the type (with ``autoSelect``, if asked)."""
        return any(
            f.matches(model_type, version) and (f.auto_select or not auto_select)
            for f in self.formats
        )


def _port_of(endpoint: object) -> int | None:
    """The port of a ``port:8001`` endpoint, else ``None``."""
    if isinstance(endpoint, str) and endpoint.startswith("port:") and endpoint[5:].isdigit():
        return int(endpoint[5:])
    return None


def parse_runtime(doc: Mapping[str, Any]) -> Runtime:
    """A :class:`Runtime` from a ServingRuntime or ClusterServingRuntime
    document; :class:`mesh.core.errors.InvalidRequest` if it is not one."""
    kind = doc.get("kind")
    if kind not in (NAMESPACED_KIND, CLUSTER_KIND):
        raise errors.InvalidRequest(f"not a ServingRuntime: kind {kind!r}")
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise errors.InvalidRequest(f"{kind}: metadata and spec must be mappings")
    name = str(meta.get("name") or "")
    if not name:
        raise errors.InvalidRequest(f"{kind}: metadata.name is required")
    formats = tuple(
        ModelFormat(
            name=str(f.get("name") or ""),
            version=str(f.get("version") or ""),
            auto_select=f.get("autoSelect") is True,
        )
        for f in spec.get("supportedModelFormats") or []
        if isinstance(f, Mapping) and f.get("name")
    )
    adapter = spec.get("builtInAdapter") or {}
    server_type = str(adapter.get("serverType") or "")
    port = adapter.get("runtimeManagementPort")
    runtime_port = (
        port
        if isinstance(port, int) and 0 < port < 65536
        else _port_of(spec.get("grpcDataEndpoint"))
        or _port_of(spec.get("grpcEndpoint"))
        or _DEFAULT_RUNTIME_PORT
    )
    replicas = spec.get("replicas")
    pod = {
        k: copy.deepcopy(v)
        for k, v in spec.items()
        if k
        in (*_PASSED_THROUGH, "containers", "volumes", "labels", "annotations", "builtInAdapter")
    }
    runtime = Runtime(
        name=name,
        kind=str(kind),
        uid=str(meta.get("uid") or ""),
        formats=formats,
        multi_model=spec.get("multiModel") is True,
        disabled=spec.get("disabled") is True,
        server_type=server_type,
        runtime_port=runtime_port,
        replicas=replicas if isinstance(replicas, int) and replicas >= 0 else None,
        pod=pod,
    )
    return dataclasses.replace(runtime, problem=_problem(runtime))


def _problem(rt: Runtime) -> str:
    containers = rt.pod.get("containers") or []
    if not containers:
        return "it has no containers"
    if not rt.brings_mesh_node and not rt.server_type:
        return (
            f"it has no {MESH_CONTAINER!r} container and no builtInAdapter.serverType "
            "to inject one for"
        )
    return ""


def visible_runtimes(
    namespaced: Iterable[Runtime], cluster: Iterable[Runtime]
) -> dict[str, Runtime]:
    """The runtimes a namespace sees, by name: its ServingRuntimes, and the
    ClusterServingRuntimes no ServingRuntime of the same name hides."""
    out = {r.name: r for r in cluster}
    out.update({r.name: r for r in namespaced})
    return out


@dataclasses.dataclass(frozen=True)
class Support:
    """Which runtimes can serve a Predictor; when none, why."""

    runtimes: tuple[str, ...] = ()
    reason: Reason | None = None
    message: str = ""

    @property
    def supported(self) -> bool:
        return bool(self.runtimes)


def support(spec: predictor.PredictorSpec, runtimes: Mapping[str, Runtime]) -> Support:
    """Which of the namespace's runtimes (:func:`visible_runtimes`) can serve ``spec``."""
    wanted = spec.model_type + (
        f" (version {spec.model_type_version})" if spec.model_type_version else ""
    )
    if spec.runtime:
        rt = runtimes.get(spec.runtime)
        if rt is None or not rt.usable:
            why = "does not exist" if rt is None else _unusable(rt)
            return Support(
                reason=Reason.RUNTIME_NOT_RECOGNIZED,
                message=f"Specified runtime {spec.runtime!r} {why}",
            )
        if not rt.supports(spec.model_type, spec.model_type_version):
            return Support(
                reason=Reason.NO_SUPPORTING_RUNTIME,
                message=f"Runtime {spec.runtime!r} does not support model type {wanted}",
            )
        return Support(runtimes=(rt.name,))
    able = sorted(
        name
        for name, rt in runtimes.items()
        if rt.usable and rt.supports(spec.model_type, spec.model_type_version, auto_select=True)
    )
    if able:
        return Support(runtimes=tuple(able))
    return Support(
        reason=Reason.NO_SUPPORTING_RUNTIME,
        message=f"No ServingRuntime supports model type {wanted}",
    )


def _unusable(rt: Runtime) -> str:
    if rt.disabled:
        return "is disabled"
    if not rt.multi_model:
        return "is not a multi-model runtime (spec.multiModel is not true)"
    return f"cannot run: {rt.problem}"


# -- the Deployment ------------------------------------------------------------------


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


def node_labels(rt: Runtime) -> tuple[str, ...]:
    """The node labels (``MM_LABELS``) of a runtime's pods: ``mt:<format>``
    and ``mt:<format>:<version>`` for each supported format, ``rt:<name>``."""
    labels: list[str] = []
    for f in rt.formats:
        for label in (f"mt:{f.name}", f"mt:{f.name}:{f.version}" if f.version else ""):
            if label and label not in labels:
                labels.append(label)
    labels.append(f"rt:{rt.name}")
    return tuple(labels)


def selector_labels(rt: Runtime) -> dict[str, str]:
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


def _capacity(rt: Runtime) -> int | None:
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


def _mesh_container(rt: Runtime, opts: DeploymentOptions) -> dict[str, Any]:
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
    capacity = _capacity(rt)
    if capacity is not None:
        env.append({"name": "MESHSERVE_CAPACITY", "value": str(capacity)})
    adapter_env = (rt.pod.get("builtInAdapter") or {}).get("env") or []
    env.extend(
        copy.deepcopy(dict(e)) for e in adapter_env if isinstance(e, Mapping) and e.get("name")
    )
    return {
        "name": MESH_CONTAINER,
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


def _prepare_runtime_container(c: dict[str, Any], rt: Runtime, opts: DeploymentOptions) -> None:
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


def _pod_template(rt: Runtime, opts: DeploymentOptions) -> dict[str, Any]:
    containers = [copy.deepcopy(dict(c)) for c in rt.pod.get("containers") or []]
    volumes = [copy.deepcopy(dict(v)) for v in rt.pod.get("volumes") or []]
    volume_names = {v.get("name") for v in volumes}
    if rt.brings_mesh_node:
        mesh = next(c for c in containers if c.get("name") == MESH_CONTAINER)
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
    for key in _PASSED_THROUGH:
        if key in rt.pod:
            pod_spec[key] = copy.deepcopy(rt.pod[key])
    metadata: dict[str, Any] = {"labels": labels}
    annotations = rt.pod.get("annotations")
    if annotations:
        metadata["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    return {"metadata": metadata, "spec": pod_spec}


def runtime_deployment(rt: Runtime, opts: DeploymentOptions) -> dict[str, Any]:
    """The Deployment that runs ``rt``'s pods in ``opts.namespace``."""
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
            "replicas": rt.replicas if rt.replicas is not None else opts.default_replicas,
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
                "apiVersion": API_VERSION,
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
    runtimes: Mapping[str, Runtime], opts: DeploymentOptions
) -> dict[str, dict[str, Any]]:
    """Deployment name → manifest, for every usable runtime the namespace sees."""
    return {
        deployment_name(rt.name): runtime_deployment(rt, opts)
        for rt in runtimes.values()
        if rt.usable
    }


def is_current(actual: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether a stored Deployment is the one the controller would render now."""
    if actual is None:
        return False
    stored = ((actual.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_HASH)
    return bool(stored) and stored == desired["metadata"]["annotations"][ANNOTATION_HASH]
