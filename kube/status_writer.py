"""Predictors' and InferenceServices' ``status``, written from etcd watch events
rather than by polling.

The controller mirrors the placement table
(:class:`mesh.kv.placement_table.PlacementTable`); a listener marks the
resources whose vmodel or models changed, and :class:`StatusWriter`
recomputes their status (:func:`kube.predictor_status.predictor_status`, a
pure function, in the kind's own shape) and patches ``/status`` only when it
differs from what it wrote last, so a busy placement table does not become a
busy API server. A vmodel counts as a resource's only when its kind owns it:
a Predictor and an InferenceService of one name never share a status.
The writer lives on the controller's event loop, next to the mirror; kopf's
handlers run on a loop of their own in another thread and reach both through
:class:`StatusBridge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from kube import api_client, inference_service, inference_service_status, predictor_status
from kube.model_resources import ResourceRef
from mesh.core import clock, records
from mesh.kv import placement_table, records_store

log = logging.getLogger(__name__)


class StatusWriter:
    """Writes resources' status when their records in etcd change.

    It knows the controller's :class:`kube.predictor_status.Verdict` on each
    resource it manages; the placement-table listener marks a resource when
    its vmodel or one of its models changes; the writer task recomputes the
    marked ones and patches those whose status differs from what it last
    wrote. Writes are retried after an error; a resource that is gone is
    forgotten."""

    def __init__(
        self,
        kube: api_client.KubeApi,
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
        self._verdicts: dict[ResourceRef, predictor_status.Verdict] = {}
        self._names: dict[str, set[ResourceRef]] = {}
        self._written: dict[ResourceRef, dict[str, Any]] = {}
        self._ready_since: dict[ResourceRef, tuple[bool, int]] = {}
        self._dirty: set[ResourceRef] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        """Status patches sent (for tests and logs)."""

    def verdict(self, ref: ResourceRef) -> predictor_status.Verdict | None:
        return self._verdicts.get(ref)

    def set_verdict(self, ref: ResourceRef, verdict: predictor_status.Verdict) -> None:
        self._verdicts[ref] = verdict
        self._names.setdefault(ref.name, set()).add(ref)
        self._mark(ref)

    def forget(self, ref: ResourceRef) -> None:
        """Stop writing a resource's status (it is being deleted)."""
        self._verdicts.pop(ref, None)
        self._written.pop(ref, None)
        self._ready_since.pop(ref, None)
        self._dirty.discard(ref)
        same_name = self._names.get(ref.name, set())
        same_name.discard(ref)
        if not same_name:
            self._names.pop(ref.name, None)
        for other in same_name:
            self._mark(other)  # the name may be free for it now

    def _mark(self, ref: ResourceRef) -> None:
        self._dirty.add(ref)
        self._idle.clear()
        self._wake.set()

    def on_table_change(self, kind: str, record_id: str) -> None:
        """:class:`mesh.kv.placement_table.PlacementTable` listener."""
        if kind == records_store.VMODEL:
            name = record_id
        elif kind == records_store.MODEL:
            # A resource's models are all named "<name>__<hash>" (and its
            # name has no "__"), so a model names its resource: no scan,
            # however many there are and however often models change (their
            # last-use times are written every few seconds).
            name = record_id.partition("__")[0]
        else:
            return
        for ref in self._names.get(name, ()):
            self._mark(ref)

    def status(self, ref: ResourceRef) -> predictor_status.PredictorStatus | None:
        verdict = self._verdicts.get(ref)
        if verdict is None:
            return None
        vmodel = self._table.vmodel(ref.name)
        if vmodel is not None and vmodel.owner and vmodel.owner != ref.owner:
            vmodel = None  # the name is held by the other kind: not this one's
        return predictor_status.predictor_status(
            verdict,
            vmodel,
            self._table.models(),
            self._endpoints,
            now_ms=clock.now_ms(),
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
            refs, self._dirty = sorted(self._dirty), set()
            for ref in refs:
                try:
                    await self._write(ref)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("writing the status of %s failed: %s", ref, e)
                    self._dirty.add(ref)
            if self._dirty and not self._wake.is_set():
                await asyncio.sleep(self._retry)

    async def _write(self, ref: ResourceRef) -> None:
        status = self.status(ref)
        if status is None:
            return
        body = self._body(ref, status)
        if self._written.get(ref) == body:
            return
        if not await self._kube.patch_status(ref.kind, ref.name, body):
            self.forget(ref)
            return
        self.writes += 1
        if ref in self._verdicts:
            self._written[ref] = body

    def _body(self, ref: ResourceRef, status: predictor_status.PredictorStatus) -> dict[str, Any]:
        """The status in the kind's shape; an InferenceService's conditions
        carry the time its readiness last changed."""
        if ref.kind != inference_service.KIND:
            return status.to_json()
        ready, since = self._ready_since.get(ref, (not status.available, 0))
        if ready != status.available:
            since = clock.now_ms()
            self._ready_since[ref] = (status.available, since)
        return inference_service_status.to_json(status, since)


class StatusBridge:
    """The status writer and the placement-table mirror as kopf's thread
    reaches them, across event loops: reads are plain lookups, writes are
    handed over to the controller's loop."""

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

    def verdict(self, ref: ResourceRef) -> predictor_status.Verdict | None:
        return self._writer.verdict(ref)

    def set_verdict(self, ref: ResourceRef, verdict: predictor_status.Verdict) -> None:
        self._loop.call_soon_threadsafe(self._writer.set_verdict, ref, verdict)

    def forget(self, ref: ResourceRef) -> None:
        self._loop.call_soon_threadsafe(self._writer.forget, ref)
