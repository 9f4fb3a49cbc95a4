"""What the controller does when a Predictor is created, changed, resumed or deleted.

A Predictor's spec is registered through a node's management API
(``setVModel`` with the Predictor's name as vmodel, owner ``predictor``, a
concrete model id that changes with the spec, auto-delete), exactly as
``meshserve predictor apply`` and ModelMesh Serving's controller do; the mesh
keeps the old model serving until the new one is loaded, then deletes it. A
spec no runtime can serve is not registered and gets ``InvalidSpec``; a
deletion waits (kopf's finalizer) until the vmodel, and with it its models,
is gone from etcd. Each outcome becomes the Predictor's
:class:`kube.predictor_status.Verdict`, which the status writer turns into
``status``. The one table from the mesh's errors to a Predictor's failure
reason is :data:`MESH_REFUSALS`, here at the edge where those errors arrive.

kopf calls these handlers on its own event loop (:mod:`kube.kopf_operator`);
they reach the placement table and the status writer through
:class:`kube.status_writer.StatusBridge`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import grpc
import kopf

from kube import mesh_client, predictor, predictor_status, runtime_selection, status_writer
from kube.controller_settings import ControllerSettings
from mesh.core import clock, errors

log = logging.getLogger(__name__)

_REASONS = predictor_status.FailureReason

MESH_REFUSALS: Mapping[grpc.StatusCode, predictor_status.FailureReason] = {
    grpc.StatusCode.INVALID_ARGUMENT: _REASONS.INVALID_PREDICTOR_SPEC,
    grpc.StatusCode.ALREADY_EXISTS: _REASONS.INVALID_PREDICTOR_SPEC,
}
"""The mesh's answers that refuse a spec, and the failure each one is. Any
other error means the mesh could not be reached or could not answer:
``RuntimeUnhealthy``, retried."""


class KopfIndexes:
    """kopf's live indexes of the runtimes and Predictors, kept from the
    first handler call for the work done outside a handler (the runtime sync)."""

    def __init__(self) -> None:
        self._indexes: tuple[kopf.Index[str, Any], ...] = ()

    def remember(self, kwargs: Mapping[str, Any]) -> None:
        if not self._indexes:
            self._indexes = (kwargs["runtimes"], kwargs["cluster_runtimes"], kwargs["predictors"])

    @property
    def known(self) -> bool:
        return bool(self._indexes)

    def visible(self) -> dict[str, runtime_selection.Runtime]:
        """The runtimes the namespace sees (:func:`kube.runtime_selection.visible_runtimes`)."""
        if not self._indexes:
            return {}
        namespaced, cluster, _ = self._indexes
        return runtime_selection.visible_runtimes(
            _values_by_name(namespaced).values(), _values_by_name(cluster).values()
        )

    def predictors(self) -> dict[str, dict[str, Any]]:
        """The namespace's Predictor documents, by name."""
        return _values_by_name(self._indexes[2]) if self._indexes else {}


def _values_by_name(index: kopf.Index[str, Any]) -> dict[str, Any]:
    """One value per key of a kopf index (a key names one object)."""
    out = {}
    for key, found in index.items():
        for value in found:
            out[key] = value
            break
    return out


class PredictorHandlers:
    """Registers Predictors with the mesh and unregisters them, one at a time
    per Predictor, recording a verdict on each."""

    def __init__(
        self,
        config: ControllerSettings,
        bridge: status_writer.StatusBridge,
        mesh: mesh_client.MeshClient,
    ) -> None:
        self.config = config
        self.bridge = bridge
        self.mesh = mesh
        self._locks: dict[str, asyncio.Lock] = {}
        self._supported: dict[str, bool] = {}

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def reconcile(
        self, body: Mapping[str, Any], visible: Mapping[str, runtime_selection.Runtime]
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
        before = self.bridge.verdict(name)
        old = before.failure if before is not None else None
        if old is not None and (old.reason, old.message, old.model_id) == (
            reason,
            message,
            model_id,
        ):
            return old
        return predictor_status.FailureInfo(reason, message, model_id, time_ms=clock.now_ms())

    async def _reconcile(
        self, name: str, body: Mapping[str, Any], visible: Mapping[str, runtime_selection.Runtime]
    ) -> tuple[predictor_status.Verdict, bool]:
        try:
            spec = predictor.parse(body)
        except errors.InvalidRequest as e:
            self._supported[name] = False
            failure = self._failure(name, _REASONS.INVALID_PREDICTOR_SPEC, e.message, "")
            return self._decided(name, predictor_status.Verdict(failure=failure)), False
        found = runtime_selection.support(spec, visible)
        self._supported[name] = found.supported
        if not found.supported:
            assert found.reason is not None
            failure = self._failure(name, found.reason, found.message, spec.model_id)
            log.info("predictor %s cannot be served: %s", name, found.message)
            return self._decided(name, predictor_status.Verdict(spec.model_id, failure)), False
        previous = self.bridge.verdict(name)
        if previous is None or previous.model_id != spec.model_id or previous.invalid:
            self.bridge.set_verdict(name, predictor_status.Verdict(spec.model_id))
        load_now = predictor_status.wants_load(
            self.bridge.vmodel(name),
            spec.model_id,
            self.bridge.models(),
            now_ms=clock.now_ms(),
            failure_expiry_ms=int(self.config.failure_expiry_seconds * 1000),
        )
        try:
            await asyncio.to_thread(self.mesh.apply, spec, load_now)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            refused = MESH_REFUSALS.get(code)
            if refused is not None:
                failure = self._failure(name, refused, details, spec.model_id)
                log.warning("predictor %s was refused by the mesh: %s", name, details)
                return self._decided(name, predictor_status.Verdict(spec.model_id, failure)), False
            message = f"Waiting for the mesh at {self.config.mesh_endpoint}: {code.name}: {details}"
            failure = self._failure(name, _REASONS.RUNTIME_UNHEALTHY, message, spec.model_id)
            self.bridge.set_verdict(name, predictor_status.Verdict(spec.model_id, failure))
            raise kopf.TemporaryError(message, delay=self.config.retry_seconds) from None
        log.info(
            "predictor %s registered as model %s (load now: %s)", name, spec.model_id, load_now
        )
        return self._decided(name, predictor_status.Verdict(spec.model_id)), load_now

    def _decided(self, name: str, verdict: predictor_status.Verdict) -> predictor_status.Verdict:
        self.bridge.set_verdict(name, verdict)
        return verdict

    def stale(self, name: str) -> bool:
        """Whether a Predictor's registration failed or is missing from etcd."""
        verdict = self.bridge.verdict(name)
        vmodel = self.bridge.vmodel(name)
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
            self.bridge.forget(name)
            self._supported.pop(name, None)
            if self.bridge.vmodel(name) is None:
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

    async def recheck(
        self,
        bodies: Mapping[str, Mapping[str, Any]],
        visible: Mapping[str, runtime_selection.Runtime],
    ) -> None:
        """Reconcile again the Predictors whose runtime support changed."""
        for name, body in bodies.items():
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                continue
            try:
                spec = predictor.parse(body)
            except errors.InvalidRequest:
                continue
            supported = runtime_selection.support(spec, visible).supported
            if self._supported.get(name, supported) == supported:
                continue  # unchanged, or not reconciled yet (kopf will: create/resume)
            try:
                await self.reconcile(body, visible)
            except kopf.TemporaryError as e:
                log.info("predictor %s: %s (the resync timer retries)", name, e)
