"""What ``meshserve controller`` is configured with, read from its environment.

The controller runs in a pod next to the mesh: most of its settings are the
nodes' own (the etcd it watches, its instance id, the failure expiry), read
through the nodes' reader so that the same variable means the same thing in
both; the rest (its namespace, the Service clients call, the image of an
injected mesh node) are its own. Reading them once, into one frozen
dataclass, keeps every other controller module free of environment lookups;
a bad variable is a :class:`mesh.core.errors.ConfigError` naming it, which the
command prints as one line.
"""

from __future__ import annotations

import dataclasses
import pathlib
import socket
from collections.abc import Mapping

from kube import runtime_deployment, runtime_replicas
from mesh.core import errors, settings
from mesh.edges import process_env

HTTP_PORT = 8008
"""The nodes' V2 REST port (``status.httpEndpoint``)."""

_SERVICE_ACCOUNT_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    """Everything the controller is configured with."""

    namespace: str
    """The namespace served: its Predictors, ServingRuntimes and runtime
    Deployments (``MESHSERVE_NAMESPACE``, else ``POD_NAMESPACE``, else the
    service account's namespace)."""
    deployment: runtime_deployment.DeploymentOptions
    mesh_endpoint: str = "meshserve:8033"
    """A node's management API, host:port: the ``meshserve`` Service
    (``MESHSERVE_ENDPOINT``)."""
    kv: settings.KVSettings = dataclasses.field(default_factory=settings.KVSettings)
    """The mesh's etcd (``KV_STORE``, ``MM_KVSTORE_PREFIX``): status comes
    from its watch events, and the replicas elect a leader in it."""
    instance_id: str = dataclasses.field(default_factory=socket.gethostname)
    """This replica's name in the election (``MM_INSTANCE_ID``, the pod name)."""
    service_name: str = "meshserve"
    """The Service clients call (``MESHSERVE_SERVICE``), for status endpoints."""
    grpc_port: int = 8033
    failure_expiry_seconds: float = 15 * 60.0
    """As the nodes' ``MESHSERVE_FAILURE_EXPIRY``: a failure older than this
    is no longer shown."""
    resync_seconds: float = 60.0
    """How often a Predictor whose registration failed or went missing is
    registered again (``MESHSERVE_RESYNC_INTERVAL``)."""
    retry_seconds: float = 5.0
    """Delay before retrying an API or mesh call that failed."""
    mesh_timeout_seconds: float = 30.0
    """Deadline of each management API call."""
    kopf_watch_seconds: float | None = None
    """Length of one kopf watch request (``None``: the API server decides)."""
    scale_to_zero: runtime_replicas.ScaleToZero = dataclasses.field(
        default_factory=runtime_replicas.ScaleToZero
    )
    """Runtimes no resource needs go to zero pods (``MESHSERVE_SCALE_TO_ZERO``,
    default true) after a grace period (``MESHSERVE_SCALE_TO_ZERO_GRACE``, 60 s)."""

    @property
    def leader_key(self) -> str:
        return f"{self.kv.prefix}/controller-leader"


def settings_from_env(
    env: Mapping[str, str], namespace_file: pathlib.Path = _SERVICE_ACCOUNT_NAMESPACE
) -> ControllerSettings:
    """The controller's settings from the environment (and the pod's service
    account namespace); :class:`mesh.core.errors.ConfigError` names a bad variable."""

    def get(name: str) -> str:
        return (env.get(name) or "").strip()

    def number(name: str, default: float) -> float:
        text = get(name)
        try:
            return float(text) if text else default
        except ValueError:
            raise errors.ConfigError(f"{name}: {text!r} is not a number") from None

    node = settings.from_env(process_env.completed(env))
    namespace = get("MESHSERVE_NAMESPACE") or get("POD_NAMESPACE")
    if not namespace and namespace_file.is_file():
        namespace = namespace_file.read_text().strip()
    namespace = namespace or "default"
    service = get("MESHSERVE_SERVICE") or "meshserve"
    grpc_port = node.service.grpc_port
    endpoint = get("MESHSERVE_ENDPOINT") or f"{service}:{grpc_port}"
    settings.parse_endpoint(endpoint, "MESHSERVE_ENDPOINT")
    scale_to_zero = get("MESHSERVE_SCALE_TO_ZERO").lower() or "true"
    if scale_to_zero not in ("true", "false"):
        raise errors.ConfigError(f"MESHSERVE_SCALE_TO_ZERO: {scale_to_zero!r} is not true or false")
    grace = number("MESHSERVE_SCALE_TO_ZERO_GRACE", 60.0)
    if grace < 0:
        raise errors.ConfigError("MESHSERVE_SCALE_TO_ZERO_GRACE: must be 0 or more")
    replicas = int(number("MESHSERVE_RUNTIME_REPLICAS", 1))
    if replicas < 0:
        raise errors.ConfigError("MESHSERVE_RUNTIME_REPLICAS: must be 0 or more")
    return ControllerSettings(
        namespace=namespace,
        deployment=runtime_deployment.DeploymentOptions(
            namespace=namespace,
            node_image=get("MESHSERVE_NODE_IMAGE") or "meshserve:latest",
            service_name=service,
            config_map=get("MESHSERVE_CONFIGMAP") or "meshserve-config",
            storage_secret=get("MESHSERVE_STORAGE_SECRET") or "storage-config",
            default_replicas=replicas,
            grpc_port=grpc_port,
        ),
        mesh_endpoint=endpoint,
        kv=node.kv,
        instance_id=node.node.instance_id,
        service_name=service,
        grpc_port=grpc_port,
        failure_expiry_seconds=node.cache.failure_expiry_seconds,
        resync_seconds=number("MESHSERVE_RESYNC_INTERVAL", 60.0),
        scale_to_zero=runtime_replicas.ScaleToZero(scale_to_zero == "true", grace),
    )
