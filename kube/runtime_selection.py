"""ServingRuntimes: which one can serve a Predictor.

The controller (``meshserve controller``) decides this as a pure function of
the resources' documents, so it is tested without an API server and reads
the same on every controller replica. KServe ModelMesh Serving's rules, so
that its YAML behaves the same: a Predictor naming ``spec.runtime.name``
needs that runtime to exist in its namespace (a ServingRuntime, or else a
ClusterServingRuntime of that name; ``RuntimeNotRecognized`` otherwise) and
to list the model type among its ``supportedModelFormats``
(``NoSupportingRuntime`` otherwise); a Predictor naming no runtime needs a
runtime that lists its type with ``autoSelect: true``. A model type version,
when the Predictor gives one, must equal the format's version. Disabled
runtimes, single-model runtimes (``multiModel`` not true) and runtimes that
cannot run as mesh nodes do not count. A Predictor nobody can serve is not
registered at all: it gets ``InvalidSpec`` (:mod:`kube.predictor_status`),
where ModelMesh Serving registers it and lets the placement fail. The reason
is a :class:`kube.predictor_status.FailureReason` itself: there is no second
enum to translate.

The Deployment that runs a runtime is :mod:`kube.runtime_deployment`'s.
Imports no Kubernetes library: documents in, decisions out.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from kube import predictor, predictor_status
from mesh.core import errors

GROUP = "serving.kserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
NAMESPACED_KIND = "ServingRuntime"
CLUSTER_KIND = "ClusterServingRuntime"

MESH_CONTAINER = "mesh-node"
"""The mesh node's container name in a runtime pod."""

POD_FIELDS = ("nodeSelector", "affinity", "tolerations", "imagePullSecrets", "hostIPC")
"""Pod-level fields of a ServingRuntime copied into the pod template as written."""

_DEFAULT_RUNTIME_PORT = 8001


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
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """``metadata.annotations`` (the autoscaler's: :mod:`kube.runtime_replicas`)."""

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
        if k in (*POD_FIELDS, "containers", "volumes", "labels", "annotations", "builtInAdapter")
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
        annotations={
            str(k): str(v) for k, v in (meta.get("annotations") or {}).items() if v is not None
        },
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
    reason: predictor_status.FailureReason | None = None
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
                reason=predictor_status.FailureReason.RUNTIME_NOT_RECOGNIZED,
                message=f"Specified runtime {spec.runtime!r} {why}",
            )
        if not rt.supports(spec.model_type, spec.model_type_version):
            return Support(
                reason=predictor_status.FailureReason.NO_SUPPORTING_RUNTIME,
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
        reason=predictor_status.FailureReason.NO_SUPPORTING_RUNTIME,
        message=f"No ServingRuntime supports model type {wanted}",
    )


def _unusable(rt: Runtime) -> str:
    if rt.disabled:
        return "is disabled"
    if not rt.multi_model:
        return "is not a multi-model runtime (spec.multiModel is not true)"
    return f"cannot run: {rt.problem}"
