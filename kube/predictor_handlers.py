"""What the controller does when a Predictor or an InferenceService is created,
changed, resumed or deleted.

Both kinds are handled alike, keyed by :class:`kube.model_resources.ResourceRef`
(an InferenceService is read into the same spec: :mod:`kube.inference_service`).
A spec is registered through a node's management API (``setVModel`` with the
resource's name as vmodel, owned by its kind, a concrete model id that changes
with the spec, auto-delete), exactly as ``meshserve predictor apply`` and
ModelMesh Serving's controller do. A Predictor and an InferenceService of one
name are one vmodel: the first registered holds it, the other is refused by
the mesh and says so in its status (``InvalidSpec``) until the name is free,
and deleting it leaves the holder alone. The mesh
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

from kube import mesh_client, model_resources, predictor_status, runtime_selection, status_writer
from kube.controller_settings import ControllerSettings
from kube.model_resources import ResourceRef
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
    """kopf's live indexes of the runtimes, Predictors and InferenceServices,
    kept from the first handler call for the work done outside a handler (the
    runtime sync)."""

    def __init__(self) -> None:
        self._indexes: tuple[kopf.Index[str, Any], ...] = ()

    def remember(self, kwargs: Mapping[str, Any]) -> None:
        if not self._indexes:
            self._indexes = (
                kwargs["runtimes"],
                kwargs["cluster_runtimes"],
                kwargs["predictors"],
                kwargs["inference_services"],
            )

    @property
    def known(self) -> bool:
        return bool(self._indexes)

    def visible(self) -> dict[str, runtime_selection.Runtime]:
        """The runtimes the namespace sees (:func:`kube.runtime_selection.visible_runtimes`)."""
        if not self._indexes:
            return {}
        namespaced, cluster = self._indexes[:2]
        return runtime_selection.visible_runtimes(
            _values_by_name(namespaced).values(), _values_by_name(cluster).values()
        )

    def resources(self) -> dict[ResourceRef, dict[str, Any]]:
        """The namespace's Predictor and (ModelMesh-mode) InferenceService
        documents, by ref."""
        out: dict[ResourceRef, dict[str, Any]] = {}
        for index in self._indexes[2:]:
            for body in _values_by_name(index).values():
                out[model_resources.ref_of(body)] = body
        return out


def _values_by_name(index: kopf.Index[str, Any]) -> dict[str, Any]:
    """One value per key of a kopf index (a key names one object)."""
    out = {}
    for key, found in index.items():
        for value in found:
            out[key] = value
            break
    return out


class PredictorHandlers:
    """Registers Predictors and InferenceServices with the mesh and
    unregisters them, one at a time per resource, recording a verdict on each."""

    def __init__(
        self,
        config: ControllerSettings,
        bridge: status_writer.StatusBridge,
        mesh: mesh_client.MeshClient,
    ) -> None:
        self.config = config
        self.bridge = bridge
        self.mesh = mesh
        self._locks: dict[ResourceRef, asyncio.Lock] = {}
        self._supported: dict[ResourceRef, bool] = {}

    def _lock(self, ref: ResourceRef) -> asyncio.Lock:
        return self._locks.setdefault(ref, asyncio.Lock())

    async def reconcile(
        self, body: Mapping[str, Any], visible: Mapping[str, runtime_selection.Runtime]
    ) -> tuple[predictor_status.Verdict, bool]:
        """Register a resource's spec (or record why it cannot be), and hand
        the verdict to the status writer. Returns the verdict, and whether a
        model was registered to load now. Raises :class:`kopf.TemporaryError`
        while the mesh cannot be reached."""
        ref = model_resources.ref_of(body)
        async with self._lock(ref):
            return await self._reconcile(ref, body, visible)

    def _failure(
        self, ref: ResourceRef, reason: predictor_status.FailureReason, message: str, model_id: str
    ) -> predictor_status.FailureInfo:
        """A failure dated now, or when the same failure was first seen (so a
        retry does not rewrite the status)."""
        before = self.bridge.verdict(ref)
        old = before.failure if before is not None else None
        if old is not None and (old.reason, old.message, old.model_id) == (
            reason,
            message,
            model_id,
        ):
            return old
        return predictor_status.FailureInfo(reason, message, model_id, time_ms=clock.now_ms())

    async def _reconcile(
        self,
        ref: ResourceRef,
        body: Mapping[str, Any],
        visible: Mapping[str, runtime_selection.Runtime],
    ) -> tuple[predictor_status.Verdict, bool]:
        try:
            spec = model_resources.parse(body)
        except errors.InvalidRequest as e:
            self._supported[ref] = False
            failure = self._failure(ref, _REASONS.INVALID_PREDICTOR_SPEC, e.message, "")
            return self._decided(ref, predictor_status.Verdict(failure=failure)), False
        found = runtime_selection.support(spec, visible)
        self._supported[ref] = found.supported
        if not found.supported:
            assert found.reason is not None
            failure = self._failure(ref, found.reason, found.message, spec.model_id)
            log.info("%s cannot be served: %s", ref, found.message)
            return self._decided(ref, predictor_status.Verdict(spec.model_id, failure)), False
        previous = self.bridge.verdict(ref)
        if previous is None or previous.model_id != spec.model_id or previous.invalid:
            self.bridge.set_verdict(ref, predictor_status.Verdict(spec.model_id))
        load_now = predictor_status.wants_load(
            self.bridge.vmodel(ref.name),
            spec.model_id,
            self.bridge.models(),
            now_ms=clock.now_ms(),
            failure_expiry_ms=int(self.config.failure_expiry_seconds * 1000),
        )
        try:
            await asyncio.to_thread(self.mesh.apply, spec, load_now)
        except grpc.RpcError as e:
            return self._refused(ref, spec.model_id, e)
        log.info("%s registered as model %s (load now: %s)", ref, spec.model_id, load_now)
        return self._decided(ref, predictor_status.Verdict(spec.model_id)), load_now

    def _refused(
        self, ref: ResourceRef, model_id: str, e: grpc.RpcError
    ) -> tuple[predictor_status.Verdict, bool]:
        """The verdict on a registration the mesh did not take: a refusal of
        the spec, or (raised as :class:`kopf.TemporaryError`) an unreachable mesh."""
        code, details = e.code(), e.details()
        refused = MESH_REFUSALS.get(code)
        if refused is not None:
            if code is grpc.StatusCode.ALREADY_EXISTS:
                details = self._name_taken(ref, details)
            failure = self._failure(ref, refused, details, model_id)
            log.warning("%s was refused by the mesh: %s", ref, details)
            return self._decided(ref, predictor_status.Verdict(model_id, failure)), False
        message = f"Waiting for the mesh at {self.config.mesh_endpoint}: {code.name}: {details}"
        failure = self._failure(ref, _REASONS.RUNTIME_UNHEALTHY, message, model_id)
        self.bridge.set_verdict(ref, predictor_status.Verdict(model_id, failure))
        raise kopf.TemporaryError(message, delay=self.config.retry_seconds) from None

    def _name_taken(self, ref: ResourceRef, details: str) -> str:
        """The mesh's "owned by another" refusal, said in the user's words."""
        vmodel = self.bridge.vmodel(ref.name)
        holder = model_resources.kind_of_owner(vmodel.owner) if vmodel is not None else ""
        if not holder or holder == ref.kind:
            return details
        return (
            f"the name {ref.name!r} is served by the {holder} {ref.name!r}: a Predictor and an "
            f"InferenceService of one name are one model name, and the first registered "
            f"keeps it. Delete one of them; this {ref.kind} is registered once the name is free"
        )

    def _decided(
        self, ref: ResourceRef, verdict: predictor_status.Verdict
    ) -> predictor_status.Verdict:
        self.bridge.set_verdict(ref, verdict)
        return verdict

    def stale(self, ref: ResourceRef) -> bool:
        """Whether a resource's registration failed or is missing from etcd."""
        verdict = self.bridge.verdict(ref)
        vmodel = self.bridge.vmodel(ref.name)
        return (
            verdict is None
            or verdict.failure is not None
            or vmodel is None
            or vmodel.target_model != verdict.model_id
        )

    async def unregister(self, ref: ResourceRef) -> None:
        """Delete a resource's vmodel, if its kind holds it (the mesh deletes
        its auto-delete models with it). Raises :class:`kopf.TemporaryError`
        while the mesh cannot be reached."""
        async with self._lock(ref):
            self.bridge.forget(ref)
            self._supported.pop(ref, None)
            vmodel = self.bridge.vmodel(ref.name)
            if vmodel is None or (vmodel.owner and vmodel.owner != ref.owner):
                return
            try:
                await asyncio.to_thread(self.mesh.delete, ref.name, ref.owner)
            except grpc.RpcError as e:
                message = (
                    f"cannot delete vmodel {ref.name} through {self.config.mesh_endpoint}: "
                    f"{e.code().name}: {e.details()}"
                )
                raise kopf.TemporaryError(message, delay=self.config.retry_seconds) from None
            log.info("%s unregistered", ref)
        self._locks.pop(ref, None)

    async def recheck(
        self,
        bodies: Mapping[ResourceRef, Mapping[str, Any]],
        visible: Mapping[str, runtime_selection.Runtime],
    ) -> None:
        """Reconcile again the resources whose runtime support changed."""
        for ref, body in bodies.items():
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                continue
            try:
                spec = model_resources.parse(body)
            except errors.InvalidRequest:
                continue
            supported = runtime_selection.support(spec, visible).supported
            if self._supported.get(ref, supported) == supported:
                continue  # unchanged, or not reconciled yet (kopf will: create/resume)
            try:
                await self.reconcile(body, visible)
            except kopf.TemporaryError as e:
                log.info("%s: %s (the resync timer retries)", ref, e)
