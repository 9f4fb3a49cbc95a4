"""``meshserve controller``: Predictors and ServingRuntimes in; registrations,
status and runtime Deployments out.

This is the Kubernetes edge of the mesh. Every decision it takes is a pure
function elsewhere (:mod:`kube.serving_runtimes`: which runtime serves a Predictor
and the Deployment of a runtime; :mod:`kube.predictor_status`: a Predictor's
status from the placement table); this module does the I/O around them:

- **Predictors** (kopf handlers on create, update and resume): the spec is
  registered through a node's management API (``setVModel`` with the
  Predictor's name as vmodel, owner ``predictor``, a concrete model id that
  changes with the spec, auto-delete), exactly as ``meshserve predictor
  apply`` and ModelMesh Serving's controller do; the mesh keeps the old model
  serving until the new one is loaded, then deletes it. A spec no runtime can
  serve is not registered and gets ``InvalidSpec``. A kopf finalizer makes a
  deletion wait until the vmodel (and with it its models) is gone from etcd.
  A timer re-registers a Predictor whose registration is missing or stale
  (the mesh was unreachable, the vmodel was deleted behind the controller's
  back).
- **Status** is written from etcd watch events, not by polling: the
  controller mirrors the placement table (:class:`mesh.kv.placement_table.PlacementTable`)
  and a listener marks the Predictors whose vmodel or models changed; the
  :class:`StatusWriter` recomputes their status and patches ``/status`` when
  it differs from what it wrote last.
- **ServingRuntimes and ClusterServingRuntimes**: every change to one (or to a
  Deployment the controller manages) reconciles all runtime Deployments of the
  namespace against :func:`kube.serving_runtimes.desired_deployments`, and looks again
  at the Predictors whose runtime support changed.

**One controller acts at a time**: replicas elect a leader through etcd
(:class:`mesh.node.leader.Leader` under the key ``<prefix>/controller-leader``),
the same lease-based election the nodes use for their janitor, rather than
kopf's peering: the controller needs etcd anyway, the lease bounds how long a
dead leader blocks the others, and peering would need its own CRD and RBAC
(and pauses every operator of equal priority instead of electing one).
Every replica mirrors the placement table, so a standby takes over warm.
While a replica leads, it writes status and runs kopf; kopf runs on an event
loop of its own in a thread, because it treats every task of its loop as its
own (when it stops it waits for them, then cancels them): etcd, the mirror,
the election and the status writer stay on the controller's loop, and the
handlers reach them through :class:`Core`. A term ends when the process
stops, when leadership is lost (a leader that cannot renew its lease steps
down when the lease may have expired, before another replica can have
taken over), or when kopf fails (the process then exits with an error,
resigning).

kopf keeps its bookkeeping in ``meshserve.io/`` annotations, never in
``status`` (which belongs to ModelMesh Serving's schema), runs standalone
(no peering objects) and with resource and namespace scanning off: it
serves the controller's own namespace, which is all its RBAC allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import pathlib
import socket
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import grpc
import kopf
import kubernetes

from kube import mesh_client, predictor, predictor_status, serving_runtimes
from mesh.core import errors, records, settings
from mesh.edges import process_env
from mesh.kv import etcd_kv, placement_table, records_store
from mesh.node import leader

log = logging.getLogger(__name__)

GROUP, VERSION = serving_runtimes.GROUP, serving_runtimes.VERSION
PREDICTORS = (GROUP, VERSION, "predictors")
SERVING_RUNTIMES = (GROUP, VERSION, "servingruntimes")
CLUSTER_SERVING_RUNTIMES = (GROUP, VERSION, "clusterservingruntimes")
DEPLOYMENTS = ("apps", "v1", "deployments")
FINALIZER = "meshserve.io/controller"
"""Held by every Predictor until its vmodel is deleted from the mesh."""
KOPF_PREFIX = "meshserve.io"
"""Prefix of kopf's bookkeeping annotations."""
USER_AGENT = "meshserve-controller"
"""How the controller's own API calls name it (kopf's say ``kopf/<version>``)."""
HTTP_PORT = 8008
"""The nodes' V2 REST port (``status.httpEndpoint``)."""

_SERVICE_ACCOUNT_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


# -- settings ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    """Everything the controller is configured with."""

    namespace: str
    """The namespace served: its Predictors, ServingRuntimes and runtime
    Deployments (``MESHSERVE_NAMESPACE``, else ``POD_NAMESPACE``, else the
    service account's namespace)."""
    deployment: serving_runtimes.DeploymentOptions
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
    replicas = int(number("MESHSERVE_RUNTIME_REPLICAS", 1))
    if replicas < 0:
        raise errors.ConfigError("MESHSERVE_RUNTIME_REPLICAS: must be 0 or more")
    return ControllerSettings(
        namespace=namespace,
        deployment=serving_runtimes.DeploymentOptions(
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
    )


def kube_configuration(kubeconfig: str = "") -> kubernetes.client.Configuration:
    """The API server and credentials: ``kubeconfig`` if given, else the pod's
    service account, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    config = kubernetes.client.Configuration()
    try:
        if kubeconfig:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=config
            )
            return config
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=config
            )
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=config
            )
    except (kubernetes.config.ConfigException, OSError) as e:
        raise errors.ConfigError(f"no Kubernetes credentials: {e}") from None
    return config


def connection_info(config: kubernetes.client.Configuration, namespace: str) -> kopf.ConnectionInfo:
    """kopf's credentials from the client's configuration (as kopf's own
    ``login_via_client`` reads them), with events about cluster-scoped
    objects posted in the controller's namespace."""
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        default_namespace=namespace,
    )


# -- the Kubernetes API (blocking client, called from threads) ------------------------


class KubeApi:
    """The few API calls the controller makes itself (kopf makes the rest),
    through the official client in worker threads."""

    def __init__(self, config: kubernetes.client.Configuration, namespace: str) -> None:
        self.namespace = namespace
        self._client = kubernetes.client.ApiClient(config)
        self._client.user_agent = USER_AGENT
        self._objects = kubernetes.client.CustomObjectsApi(self._client)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    async def patch_predictor_status(self, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch a Predictor's ``/status``; ``False`` if it is gone."""
        try:
            await asyncio.to_thread(
                self._objects.patch_namespaced_custom_object_status,
                *PREDICTORS[:2],
                self.namespace,
                PREDICTORS[2],
                name,
                {"status": dict(status)},
                _content_type="application/merge-patch+json",
            )
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    async def managed_deployments(self) -> dict[str, dict[str, Any]]:
        """The namespace's Deployments this controller manages, by name."""
        found = await asyncio.to_thread(
            self._objects.list_namespaced_custom_object,
            *DEPLOYMENTS[:2],
            self.namespace,
            DEPLOYMENTS[2],
            label_selector=f"{serving_runtimes.LABEL_MANAGED_BY}={serving_runtimes.MANAGED_BY}",
        )
        items = found.get("items", []) if isinstance(found, dict) else []
        return {str(d["metadata"]["name"]): d for d in items}

    async def create_deployment(self, manifest: Mapping[str, Any]) -> None:
        await asyncio.to_thread(
            self._objects.create_namespaced_custom_object,
            *DEPLOYMENTS[:2],
            self.namespace,
            DEPLOYMENTS[2],
            dict(manifest),
        )

    async def replace_deployment(
        self, manifest: Mapping[str, Any], current: Mapping[str, Any]
    ) -> None:
        """Replace ``current`` with ``manifest`` (409 if it changed meanwhile)."""
        body = copy.deepcopy(dict(manifest))
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await asyncio.to_thread(
            self._objects.replace_namespaced_custom_object,
            *DEPLOYMENTS[:2],
            self.namespace,
            DEPLOYMENTS[2],
            body["metadata"]["name"],
            body,
        )

    async def delete_deployment(self, name: str) -> None:
        with contextlib.suppress(kubernetes.client.exceptions.NotFoundException):
            await asyncio.to_thread(
                self._objects.delete_namespaced_custom_object,
                *DEPLOYMENTS[:2],
                self.namespace,
                DEPLOYMENTS[2],
                name,
            )


# -- status --------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


class StatusWriter:
    """Writes Predictors' status when their records in etcd change.

    It knows the controller's :class:`kube.predictor_status.Verdict` on each
    Predictor it manages; the placement-table listener marks a Predictor when
    its vmodel or one of its models changes; the writer task recomputes the
    marked ones and patches those whose status differs from what it last
    wrote. Writes are retried after an error; a Predictor that is gone is
    forgotten."""

    def __init__(
        self,
        kube: KubeApi,
        mirror: placement_table.PlacementTable,
        endpoints: predictor_status.Endpoints,
        failure_expiry_seconds: float,
        retry_seconds: float,
    ) -> None:
        self._kube = kube
        self._table = mirror
        self._endpoints = endpoints
        self._expiry_ms = int(failure_expiry_seconds * 1000)
        self._retry = retry_seconds
        self._verdicts: dict[str, predictor_status.Verdict] = {}
        self._written: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        """Status patches sent (for tests and logs)."""

    def verdict(self, name: str) -> predictor_status.Verdict | None:
        return self._verdicts.get(name)

    def set_verdict(self, name: str, verdict: predictor_status.Verdict) -> None:
        self._verdicts[name] = verdict
        self._mark(name)

    def forget(self, name: str) -> None:
        """Stop writing a Predictor's status (it is being deleted)."""
        self._verdicts.pop(name, None)
        self._written.pop(name, None)
        self._dirty.discard(name)

    def _mark(self, name: str) -> None:
        self._dirty.add(name)
        self._idle.clear()
        self._wake.set()

    def on_table_change(self, kind: str, record_id: str) -> None:
        """:class:`mesh.kv.placement_table.PlacementTable` listener."""
        if kind == records_store.VMODEL:
            if record_id in self._verdicts:
                self._mark(record_id)
        elif kind == records_store.MODEL:
            # A Predictor's models are all named "<predictor>__<hash>" (and a
            # Predictor's name has no "__"), so a model names its Predictor:
            # no scan, however many Predictors there are and however often
            # models change (their last-use times are written every few seconds).
            name = record_id.partition("__")[0]
            if name in self._verdicts:
                self._mark(name)

    def status(self, name: str) -> predictor_status.PredictorStatus | None:
        verdict = self._verdicts.get(name)
        if verdict is None:
            return None
        return predictor_status.predictor_status(
            verdict,
            self._table.vmodel(name),
            self._table.models(),
            self._endpoints,
            now_ms=_now_ms(),
            failure_expiry_ms=self._expiry_ms,
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="predictor-status-writer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            if not self._dirty:
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            names, self._dirty = sorted(self._dirty), set()
            for name in names:
                try:
                    await self._write(name)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("writing the status of predictor %s failed: %s", name, e)
                    self._dirty.add(name)
            if self._dirty and not self._wake.is_set():
                await asyncio.sleep(self._retry)

    async def _write(self, name: str) -> None:
        status = self.status(name)
        if status is None:
            return
        body = status.to_json()
        if self._written.get(name) == body:
            return
        if not await self._kube.patch_predictor_status(name, body):
            self.forget(name)
            return
        self.writes += 1
        if name in self._verdicts:
            self._written[name] = body


# -- one leadership term -------------------------------------------------------------


class Core:
    """What kopf's thread needs of the state on the controller's own event
    loop (the placement-table mirror and the status writer): reads are plain
    lookups, writes are handed over to that loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        mirror: placement_table.PlacementTable,
        writer: StatusWriter,
    ) -> None:
        self._loop = loop
        self._mirror = mirror
        self._writer = writer

    def vmodel(self, name: str) -> records.VModelRecord | None:
        return self._mirror.vmodel(name)

    def models(self) -> Mapping[str, records.ModelRecord]:
        return self._mirror.models()

    def verdict(self, name: str) -> predictor_status.Verdict | None:
        return self._writer.verdict(name)

    def set_verdict(self, name: str, verdict: predictor_status.Verdict) -> None:
        self._loop.call_soon_threadsafe(self._writer.set_verdict, name, verdict)

    def forget(self, name: str) -> None:
        self._loop.call_soon_threadsafe(self._writer.forget, name)


class Term:
    """kopf, for one leadership term, on the event loop of the thread that
    calls :meth:`main`. kopf treats every task of its loop as its own (it
    waits for them, then cancels them, when it stops), so that loop holds
    nothing else: etcd, the mirror and the status writer stay on the
    controller's loop, reached through :class:`Core`."""

    def __init__(
        self,
        config: ControllerSettings,
        kube_config: kubernetes.client.Configuration,
        core: Core,
        kube: KubeApi,
        stop_flag: threading.Event,
        ready_flag: threading.Event,
    ) -> None:
        self.config = config
        self.kube_config = kube_config
        self.core = core
        self.kube = kube
        self.stop_flag = stop_flag
        self.ready_flag = ready_flag
        self.error: BaseException | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._supported: dict[str, bool] = {}
        self._indexes: tuple[kopf.Index[str, Any], ...] = ()
        self._runtimes_wake: asyncio.Event | None = None

    def main(self) -> None:
        """Run the term until ``stop_flag`` is set (or kopf fails: :attr:`error`)."""
        try:
            asyncio.run(self._run())
        except BaseException as e:
            self.error = e
            log.exception("the controller's kopf loop failed")

    async def _run(self) -> None:
        cfg = self.config
        self.mesh = mesh_client.MeshClient(cfg.mesh_endpoint, timeout=cfg.mesh_timeout_seconds)
        self._runtimes_wake = asyncio.Event()
        syncer = asyncio.create_task(self._runtimes_loop(), name="runtime-sync")
        try:
            await kopf.operator(
                registry=self._registry(),
                settings=self._kopf_settings(),
                namespaces=[cfg.namespace],
                standalone=True,
                stop_flag=self.stop_flag,
                ready_flag=self.ready_flag,
            )
        finally:
            await _cancel(syncer)
            self.mesh.close()

    def _kopf_settings(self) -> kopf.OperatorSettings:
        s = kopf.OperatorSettings()
        s.peering.standalone = True
        s.scanning.disabled = True
        s.persistence.finalizer = FINALIZER
        s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=KOPF_PREFIX, key="last-handled-configuration"
        )
        s.posting.level = logging.INFO  # the events the handlers post, not kopf's logs
        s.posting.reporting_component = "meshserve-controller"
        s.posting.reporting_instance = self.config.instance_id
        s.watching.server_timeout = self.config.kopf_watch_seconds
        return s

    # -- kopf handlers ---------------------------------------------------------------

    def _registry(self) -> kopf.OperatorRegistry:
        reg = kopf.OperatorRegistry()
        cfg = self.config

        @kopf.on.login(registry=reg)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return connection_info(self.kube_config, cfg.namespace)

        @kopf.index(*SERVING_RUNTIMES, registry=reg, id="runtimes")
        def index_runtime(body: kopf.Body, **_: Any) -> dict[str, serving_runtimes.Runtime]:
            return _parsed_runtime(body)

        @kopf.index(*CLUSTER_SERVING_RUNTIMES, registry=reg, id="cluster_runtimes")
        def index_cluster_runtime(body: kopf.Body, **_: Any) -> dict[str, serving_runtimes.Runtime]:
            return _parsed_runtime(body)

        @kopf.index(*PREDICTORS, registry=reg, id="predictors")
        def index_predictor(body: kopf.Body, name: str, **_: Any) -> dict[str, dict[str, Any]]:
            return {name: copy.deepcopy(dict(body))}

        @kopf.on.resume(*PREDICTORS, registry=reg, id="register")
        @kopf.on.create(*PREDICTORS, registry=reg, id="register")
        @kopf.on.update(*PREDICTORS, registry=reg, id="register")
        async def register(body: kopf.Body, **kwargs: Any) -> None:
            self._remember(kwargs)
            verdict, loading = await self.reconcile(dict(body), self._visible())
            if verdict.failure is not None:
                kopf.warn(
                    body, reason=verdict.failure.reason.value, message=verdict.failure.message
                )
            elif loading:
                kopf.info(body, reason="Registered", message=f"Loading model {verdict.model_id}")

        @kopf.on.delete(*PREDICTORS, registry=reg, id="unregister")
        async def unregister(name: str, **_: Any) -> None:
            await self.unregister(name)

        @kopf.timer(
            *PREDICTORS,
            registry=reg,
            id="resync",
            interval=cfg.resync_seconds,
            initial_delay=cfg.resync_seconds,
        )
        async def resync(body: kopf.Body, name: str, meta: kopf.Meta, **kwargs: Any) -> None:
            self._remember(kwargs)
            if meta.get("deletionTimestamp") is None and self._stale(name):
                await self.reconcile(dict(body), self._visible())

        @kopf.on.event(*SERVING_RUNTIMES, registry=reg, id="servingruntime")
        @kopf.on.event(*CLUSTER_SERVING_RUNTIMES, registry=reg, id="clusterservingruntime")
        @kopf.on.event(
            *DEPLOYMENTS,
            registry=reg,
            id="deployment",
            labels={serving_runtimes.LABEL_MANAGED_BY: serving_runtimes.MANAGED_BY},
        )
        async def runtime_changed(**kwargs: Any) -> None:
            self._remember(kwargs)
            self._sync_runtimes_soon()

        return reg

    def _remember(self, kwargs: Mapping[str, Any]) -> None:
        """Keep kopf's (live) indexes, for work done outside a handler."""
        if not self._indexes:
            self._indexes = (
                kwargs["runtimes"],
                kwargs["cluster_runtimes"],
                kwargs["predictors"],
            )

    def _visible(self) -> dict[str, serving_runtimes.Runtime]:
        if not self._indexes:
            return {}
        namespaced, cluster, _ = self._indexes
        return serving_runtimes.visible_runtimes(_values(namespaced), _values(cluster))

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # -- Predictors ------------------------------------------------------------------

    async def reconcile(
        self, body: Mapping[str, Any], visible: Mapping[str, serving_runtimes.Runtime]
    ) -> tuple[predictor_status.Verdict, bool]:
        """Register a Predictor's spec (or record why it cannot be), and hand
        the verdict to the status writer. Returns the verdict, and whether a
        model was registered to load now. Raises :class:`kopf.TemporaryError`
        while the mesh cannot be reached."""
        name = str(body["metadata"]["name"])
        async with self._lock(name):
            return await self._reconcile(name, body, visible)

    def _failure(
        self, name: str, reason: predictor_status.FailureReason, message: str, model_id: str
    ) -> predictor_status.FailureInfo:
        """A failure dated now, or when the same failure was first seen (so a
        retry does not rewrite the status)."""
        before = self.core.verdict(name)
        old = before.failure if before is not None else None
        if old is not None and (old.reason, old.message, old.model_id) == (
            reason,
            message,
            model_id,
        ):
            return old
        return predictor_status.FailureInfo(reason, message, model_id, time_ms=_now_ms())

    async def _reconcile(
        self, name: str, body: Mapping[str, Any], visible: Mapping[str, serving_runtimes.Runtime]
    ) -> tuple[predictor_status.Verdict, bool]:
        reasons = predictor_status.FailureReason
        try:
            spec = predictor.parse(body)
        except errors.InvalidRequest as e:
            self._supported[name] = False
            failure = self._failure(name, reasons.INVALID_PREDICTOR_SPEC, e.message, "")
            return self._decided(name, predictor_status.Verdict(failure=failure)), False
        found = serving_runtimes.support(spec, visible)
        self._supported[name] = found.supported
        if not found.supported:
            assert found.reason is not None
            failure = self._failure(name, reasons(found.reason.value), found.message, spec.model_id)
            log.info("predictor %s cannot be served: %s", name, found.message)
            return self._decided(name, predictor_status.Verdict(spec.model_id, failure)), False
        previous = self.core.verdict(name)
        if previous is None or previous.model_id != spec.model_id or previous.invalid:
            self.core.set_verdict(name, predictor_status.Verdict(spec.model_id))
        load_now = predictor_status.wants_load(
            self.core.vmodel(name),
            spec.model_id,
            self.core.models(),
            now_ms=_now_ms(),
            failure_expiry_ms=int(self.config.failure_expiry_seconds * 1000),
        )
        try:
            await asyncio.to_thread(self.mesh.apply, spec, load_now)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS):
                failure = self._failure(
                    name, reasons.INVALID_PREDICTOR_SPEC, details, spec.model_id
                )
                log.warning("predictor %s was refused by the mesh: %s", name, details)
                return self._decided(name, predictor_status.Verdict(spec.model_id, failure)), False
            message = f"Waiting for the mesh at {self.config.mesh_endpoint}: {code.name}: {details}"
            failure = self._failure(name, reasons.RUNTIME_UNHEALTHY, message, spec.model_id)
            self.core.set_verdict(name, predictor_status.Verdict(spec.model_id, failure))
            raise kopf.TemporaryError(message, delay=self.config.retry_seconds) from None
        log.info(
            "predictor %s registered as model %s (load now: %s)", name, spec.model_id, load_now
        )
        return self._decided(name, predictor_status.Verdict(spec.model_id)), load_now

    def _decided(self, name: str, verdict: predictor_status.Verdict) -> predictor_status.Verdict:
        self.core.set_verdict(name, verdict)
        return verdict

    def _stale(self, name: str) -> bool:
        """Whether a Predictor's registration failed or is missing from etcd."""
        verdict = self.core.verdict(name)
        vmodel = self.core.vmodel(name)
        return (
            verdict is None
            or verdict.failure is not None
            or vmodel is None
            or vmodel.target_model != verdict.model_id
        )

    async def unregister(self, name: str) -> None:
        """Delete a Predictor's vmodel (the mesh deletes its auto-delete
        models with it). Raises :class:`kopf.TemporaryError` while the mesh
        cannot be reached."""
        async with self._lock(name):
            self.core.forget(name)
            self._supported.pop(name, None)
            if self.core.vmodel(name) is None:
                return
            try:
                await asyncio.to_thread(self.mesh.delete, name)
            except grpc.RpcError as e:
                message = (
                    f"cannot delete vmodel {name} through {self.config.mesh_endpoint}: "
                    f"{e.code().name}: {e.details()}"
                )
                raise kopf.TemporaryError(message, delay=self.config.retry_seconds) from None
            log.info("predictor %s unregistered", name)
        self._locks.pop(name, None)

    # -- runtimes --------------------------------------------------------------------

    def _sync_runtimes_soon(self) -> None:
        if self._runtimes_wake is not None:
            self._runtimes_wake.set()

    async def _runtimes_loop(self) -> None:
        assert self._runtimes_wake is not None
        while True:
            await self._runtimes_wake.wait()
            self._runtimes_wake.clear()
            try:
                await self._sync_runtimes()
            except Exception as e:
                log.warning("keeping the runtime Deployments failed (%s); retrying", e)
                await asyncio.sleep(self.config.retry_seconds)
                self._runtimes_wake.set()

    async def _sync_runtimes(self) -> None:
        """Make the namespace's runtime Deployments what the runtimes ask for,
        then look again at Predictors whose runtime support changed."""
        visible = self._visible()
        for rt in visible.values():
            if not rt.usable and rt.problem:
                log.warning("%s %s is not deployed: %s", rt.kind, rt.name, rt.problem)
        desired = serving_runtimes.desired_deployments(visible, self.config.deployment)
        actual = await self.kube.managed_deployments()
        for name, manifest in desired.items():
            current = actual.get(name)
            if current is None:
                try:
                    await self.kube.create_deployment(manifest)
                    log.info("created Deployment %s", name)
                except kubernetes.client.exceptions.ConflictException:
                    log.warning("a Deployment %s exists that this controller does not manage", name)
            elif not serving_runtimes.is_current(current, manifest):
                await self.kube.replace_deployment(manifest, current)
                log.info("updated Deployment %s", name)
        for name in actual.keys() - desired.keys():
            await self.kube.delete_deployment(name)
            log.info("deleted Deployment %s (its runtime is gone or unusable)", name)
        await self._recheck_predictors(visible)

    async def _recheck_predictors(self, visible: Mapping[str, serving_runtimes.Runtime]) -> None:
        if not self._indexes:
            return
        for name, body in _values_by_name(self._indexes[2]).items():
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                continue
            try:
                spec = predictor.parse(body)
            except errors.InvalidRequest:
                continue
            supported = serving_runtimes.support(spec, visible).supported
            if self._supported.get(name, supported) == supported:
                continue  # unchanged, or not reconciled yet (kopf will: create/resume)
            try:
                await self.reconcile(body, visible)
            except kopf.TemporaryError as e:
                log.info("predictor %s: %s (the resync timer retries)", name, e)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _parsed_runtime(body: kopf.Body) -> dict[str, serving_runtimes.Runtime]:
    try:
        rt = serving_runtimes.parse_runtime(dict(body))
    except errors.InvalidRequest as e:
        log.warning("ignoring %s %s: %s", body.get("kind"), body.metadata.name, e.message)
        return {}
    return {rt.name: rt}


def _values(index: kopf.Index[str, Any]) -> list[Any]:
    return list(_values_by_name(index).values())


def _values_by_name(index: kopf.Index[str, Any]) -> dict[str, Any]:
    """One value per key of a kopf index (a key names one object)."""
    out = {}
    for key, found in index.items():
        for value in found:
            out[key] = value
            break
    return out


# -- the controller: elections and terms ---------------------------------------------


async def _first(*aws: Coroutine[Any, Any, Any]) -> int:
    """Await several coroutines until one finishes; cancel the others and
    return the index of the one that finished."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(i for i, t in enumerate(tasks) if t in done)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Controller:
    """``meshserve controller``: mirrors the placement table, campaigns for
    leadership in etcd and, while leading, writes status and runs a :class:`Term`."""

    def __init__(
        self, config: ControllerSettings, kube_config: kubernetes.client.Configuration
    ) -> None:
        self.config = config
        self.kube_config = kube_config
        self.ready = threading.Event()
        """Set while the current term's kopf is up."""
        self.terms = 0
        """How many terms this controller has led."""
        self.leading = False
        self.writer: StatusWriter | None = None
        """The current term's status writer."""

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; raises if a term fails on its own."""
        cfg = self.config
        async with contextlib.AsyncExitStack() as stack:
            kv = await etcd_kv.EtcdKV.connect(cfg.kv.endpoints)
            stack.push_async_callback(kv.close)
            # A standby keeps its mirror warm too: it takes over with it.
            mirror = placement_table.PlacementTable(kv, cfg.kv.prefix)
            await mirror.start()
            stack.push_async_callback(mirror.stop)
            kube = KubeApi(self.kube_config, cfg.namespace)
            stack.callback(kube.close)
            elector = leader.Leader(kv, cfg.leader_key, cfg.instance_id, cfg.kv.lease_ttl_seconds)
            lost = asyncio.Event()

            def changed(leading: bool) -> None:
                self.leading = leading
                if not leading:
                    lost.set()

            elector.add_listener(changed)
            await elector.start()
            stack.push_async_callback(elector.stop)
            log.info("controller %s campaigning on %s", cfg.instance_id, cfg.leader_key)
            try:
                while not stop.is_set():
                    if await _first(elector.wait_leader(None), stop.wait()) == 1:
                        break
                    lost.clear()
                    if elector.is_leader:
                        await self._lead(mirror, kube, stop, lost)
            finally:
                self.leading = False

    async def _lead(
        self,
        mirror: placement_table.PlacementTable,
        kube: KubeApi,
        stop: asyncio.Event,
        lost: asyncio.Event,
    ) -> None:
        """One term: status writes here, kopf in a thread, until stopped,
        leadership is lost, or kopf fails."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        writer = self.writer = StatusWriter(
            kube,
            mirror,
            predictor_status.endpoints(cfg.service_name, cfg.namespace, cfg.grpc_port, HTTP_PORT),
            cfg.failure_expiry_seconds,
            cfg.retry_seconds,
        )
        await writer.start()
        mirror.add_listener(writer.on_table_change)
        ended = asyncio.Event()
        stop_flag = threading.Event()
        self.ready.clear()
        term = Term(cfg, self.kube_config, Core(loop, mirror, writer), kube, stop_flag, self.ready)

        def main() -> None:
            try:
                term.main()
            finally:
                loop.call_soon_threadsafe(ended.set)

        self.terms += 1
        log.info("controller %s leads (term %d)", cfg.instance_id, self.terms)
        thread = threading.Thread(target=main, name=f"controller-term-{self.terms}", daemon=True)
        thread.start()
        try:
            which = await _first(stop.wait(), lost.wait(), ended.wait())
        finally:
            stop_flag.set()
            await asyncio.to_thread(thread.join)
            self.ready.clear()
            mirror.remove_listener(writer.on_table_change)
            await writer.stop()
        if which == 1:
            log.warning("controller %s lost leadership; its term ended", cfg.instance_id)
        elif which == 2:
            raise errors.MeshError(f"the controller stopped on its own: {term.error!r}")
