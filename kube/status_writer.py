"""Predictors' ``status``, written from etcd watch events rather than by polling.

The controller mirrors the placement table
(:class:`mesh.kv.placement_table.PlacementTable`); a listener marks the
Predictors whose vmodel or models changed, and :class:`StatusWriter`
recomputes their status (:func:`kube.predictor_status.predictor_status`, a
pure function) and patches ``/status`` only when it differs from what it
wrote last, so a busy placement table does not become a busy API server.
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

from kube import api_client, predictor_status
from mesh.core import clock, records
from mesh.kv import placement_table, records_store

log = logging.getLogger(__name__)


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

    def verdict(self, name: str) -> predictor_status.Verdict | None:
        return self._writer.verdict(name)

    def set_verdict(self, name: str, verdict: predictor_status.Verdict) -> None:
        self._loop.call_soon_threadsafe(self._writer.set_verdict, name, verdict)

    def forget(self, name: str) -> None:
        self._loop.call_soon_threadsafe(self._writer.forget, name)
