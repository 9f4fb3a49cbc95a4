"""kopf, for one leadership term: which Kubernetes events call which handler.

The controller's handlers (:mod:`kube.predictor_handlers`,
:mod:`kube.runtime_sync`) run under kopf, which watches the Predictors,
InferenceServices, ServingRuntimes, ClusterServingRuntimes and managed
Deployments of the namespace. Of the InferenceServices it sees only those
annotated ``serving.kserve.io/deploymentMode: ModelMesh``, so KServe's own
controller keeps the rest (kopf's filter: no finalizer, no annotation, no
status is ever written on them). kopf treats every task of its event loop as its own (when it
stops it waits for them, then cancels them), so it gets a loop of its own in
a thread, holding nothing else: etcd, the placement-table mirror and the
status writer stay on the controller's loop and are reached through
:class:`kube.status_writer.StatusBridge`.

kopf keeps its bookkeeping in ``meshserve.io/`` annotations, never in
``status`` (which belongs to ModelMesh Serving's schema), runs standalone
(no peering objects: :mod:`kube.leadership` elects the one replica that
acts) and with resource and namespace scanning off: it serves the
controller's own namespace, which is all its RBAC allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
from typing import Any

import kopf
import kubernetes

from kube import (
    api_client,
    inference_service,
    mesh_client,
    model_resources,
    predictor_handlers,
    runtime_deployment,
    runtime_selection,
    runtime_sync,
    status_writer,
)
from kube.api_client import (
    CLUSTER_SERVING_RUNTIMES,
    DEPLOYMENTS,
    INFERENCE_SERVICES,
    PREDICTORS,
    SERVING_RUNTIMES,
)
from kube.controller_settings import ControllerSettings
from mesh.core import errors

log = logging.getLogger(__name__)

FINALIZER = "meshserve.io/controller"
"""Held by every Predictor and served InferenceService until its vmodel is
deleted from the mesh."""
MODELMESH_ONLY = {inference_service.DEPLOYMENT_MODE: inference_service.MODELMESH_MODE}
"""kopf's filter: the InferenceServices that are the mesh's to serve."""
MODEL_RESOURCES: tuple[tuple[tuple[str, str, str], dict[str, str] | None], ...] = (
    (PREDICTORS, None),
    (INFERENCE_SERVICES, MODELMESH_ONLY),
)
"""Each resource that names a model, and the annotations it must carry."""
KOPF_PREFIX = "meshserve.io"
"""Prefix of kopf's bookkeeping annotations."""


class KopfOperator:
    """kopf for one leadership term, on the event loop of the thread that
    calls :meth:`main`, until ``stop_flag`` is set or kopf fails."""

    def __init__(
        self,
        config: ControllerSettings,
        kube_config: kubernetes.client.Configuration,
        bridge: status_writer.StatusBridge,
        kube: api_client.KubeApi,
        stop_flag: threading.Event,
        ready_flag: threading.Event,
    ) -> None:
        self.config = config
        self.kube_config = kube_config
        self.bridge = bridge
        self.kube = kube
        self.stop_flag = stop_flag
        self.ready_flag = ready_flag
        self.error: BaseException | None = None
        """Why kopf stopped on its own, if it did."""

    def main(self) -> None:
        """Run kopf until ``stop_flag`` is set (or it fails: :attr:`error`)."""
        try:
            asyncio.run(self._run())
        except BaseException as e:
            self.error = e
            log.exception("the controller's kopf loop failed")

    async def _run(self) -> None:
        cfg = self.config
        mesh = mesh_client.MeshClient(cfg.mesh_endpoint, timeout=cfg.mesh_timeout_seconds)
        indexes = predictor_handlers.KopfIndexes()
        handlers = predictor_handlers.PredictorHandlers(cfg, self.bridge, mesh)
        sync = runtime_sync.RuntimeSync(cfg, self.kube, indexes, handlers)
        syncer = asyncio.create_task(sync.run(), name="runtime-sync")
        try:
            await kopf.operator(
                registry=self._registry(indexes, handlers, sync),
                settings=self._kopf_settings(),
                namespaces=[cfg.namespace],
                standalone=True,
                stop_flag=self.stop_flag,
                ready_flag=self.ready_flag,
            )
        finally:
            syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await syncer
            mesh.close()

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

    def _registry(
        self,
        indexes: predictor_handlers.KopfIndexes,
        handlers: predictor_handlers.PredictorHandlers,
        sync: runtime_sync.RuntimeSync,
    ) -> kopf.OperatorRegistry:
        reg = kopf.OperatorRegistry()
        cfg = self.config

        @kopf.on.login(registry=reg)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return api_client.connection_info(self.kube_config, cfg.namespace)

        _register_indexes(reg)
        _register_predictor_handlers(reg, cfg, indexes, handlers, sync)
        _register_runtime_events(reg, indexes, sync)
        return reg


def _register_indexes(reg: kopf.OperatorRegistry) -> None:
    @kopf.index(*SERVING_RUNTIMES, registry=reg, id="runtimes")
    def index_runtime(body: kopf.Body, **_: Any) -> dict[str, runtime_selection.Runtime]:
        return _parsed_runtime(body)

    @kopf.index(*CLUSTER_SERVING_RUNTIMES, registry=reg, id="cluster_runtimes")
    def index_cluster_runtime(body: kopf.Body, **_: Any) -> dict[str, runtime_selection.Runtime]:
        return _parsed_runtime(body)

    @kopf.index(*PREDICTORS, registry=reg, id="predictors")
    @kopf.index(
        *INFERENCE_SERVICES, registry=reg, id="inference_services", annotations=MODELMESH_ONLY
    )
    def index_resource(body: kopf.Body, name: str, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: copy.deepcopy(dict(body))}


def _register_predictor_handlers(
    reg: kopf.OperatorRegistry,
    cfg: ControllerSettings,
    indexes: predictor_handlers.KopfIndexes,
    handlers: predictor_handlers.PredictorHandlers,
    sync: runtime_sync.RuntimeSync,
) -> None:
    for resource, required in MODEL_RESOURCES:
        _register_model_resource(reg, cfg, indexes, handlers, sync, resource, required)


def _register_model_resource(
    reg: kopf.OperatorRegistry,
    cfg: ControllerSettings,
    indexes: predictor_handlers.KopfIndexes,
    handlers: predictor_handlers.PredictorHandlers,
    sync: runtime_sync.RuntimeSync,
    resource: tuple[str, str, str],
    annotations: dict[str, str] | None,
) -> None:
    """The handlers of one kind that names a model (``annotations``: the
    filter its objects must pass). Each change also wakes the runtime sync:
    a runtime scaled to zero comes back when a resource needs it."""
    only: dict[str, Any] = {"annotations": annotations} if annotations else {}

    @kopf.on.resume(*resource, registry=reg, id="register", **only)
    @kopf.on.create(*resource, registry=reg, id="register", **only)
    @kopf.on.update(*resource, registry=reg, id="register", **only)
    async def register(body: kopf.Body, **kwargs: Any) -> None:
        indexes.remember(kwargs)
        sync.soon()
        verdict, loading = await handlers.reconcile(dict(body), indexes.visible())
        if verdict.failure is not None:
            kopf.warn(body, reason=verdict.failure.reason.value, message=verdict.failure.message)
        elif loading:
            kopf.info(body, reason="Registered", message=f"Loading model {verdict.model_id}")

    @kopf.on.delete(*resource, registry=reg, id="unregister", **only)
    async def unregister(body: kopf.Body, **_: Any) -> None:
        await handlers.unregister(model_resources.ref_of(body))
        sync.soon()

    @kopf.timer(
        *resource,
        registry=reg,
        id="resync",
        interval=cfg.resync_seconds,
        initial_delay=cfg.resync_seconds,
        **only,
    )
    async def resync(body: kopf.Body, meta: kopf.Meta, **kwargs: Any) -> None:
        indexes.remember(kwargs)
        if meta.get("deletionTimestamp") is None and handlers.stale(model_resources.ref_of(body)):
            await handlers.reconcile(dict(body), indexes.visible())


def _register_runtime_events(
    reg: kopf.OperatorRegistry,
    indexes: predictor_handlers.KopfIndexes,
    sync: runtime_sync.RuntimeSync,
) -> None:
    @kopf.on.event(*SERVING_RUNTIMES, registry=reg, id="servingruntime")
    @kopf.on.event(*CLUSTER_SERVING_RUNTIMES, registry=reg, id="clusterservingruntime")
    @kopf.on.event(
        *DEPLOYMENTS,
        registry=reg,
        id="deployment",
        labels={runtime_deployment.LABEL_MANAGED_BY: runtime_deployment.MANAGED_BY},
    )
    async def runtime_changed(**kwargs: Any) -> None:
        indexes.remember(kwargs)
        sync.soon()


def _parsed_runtime(body: kopf.Body) -> dict[str, runtime_selection.Runtime]:
    try:
        rt = runtime_selection.parse_runtime(dict(body))
    except errors.InvalidRequest as e:
        log.warning("ignoring %s %s: %s", body.get("kind"), body.metadata.name, e.message)
        return {}
    return {rt.name: rt}
