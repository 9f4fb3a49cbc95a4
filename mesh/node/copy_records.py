"""The etcd writes of this node's copies: claims, LOADED, failures, last use.

Every change of a copy's state (LOADING, LOADED, failed, gone) is written to
the model's record with a compare-and-set, so ``getModelStatus`` and
``meshserve models`` show what is really loaded, and one load happens
cluster-wide (the claim, :mod:`mesh.core.load_claims`). Each write then waits
until this node's mirror shows it, so a status read next sees the change.
Last-used times are written now and then, off the request path.

The cache manager (:mod:`mesh.node.cache_manager`) decides when to write;
this module only writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from mesh.core import clock, errors, load_claims, records
from mesh.kv import placement_table, records_store

log = logging.getLogger(__name__)

_Change = Callable[[records.ModelRecord], records.ModelRecord]

MIRROR_WAIT_SECONDS = 5.0
"""How long a write waits for this node's mirror to show it."""


class CopyRecordWriter:
    """Writes one node's copies into the models' records in etcd."""

    def __init__(
        self,
        instance_id: str,
        record_store: records_store.RecordStore,
        mirror: placement_table.PlacementTable,
        last_used_write_interval_seconds: float,
    ) -> None:
        self.instance_id = instance_id
        self._store = record_store
        self._table = mirror
        self._interval = last_used_write_interval_seconds
        self._touched: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None

    async def record(
        self, model_id: str, change: _Change, *, mirrored: bool = True
    ) -> records.ModelRecord | None:
        """Apply ``change`` to the model's record if it still exists (an
        unregistered model stays unregistered), and (``mirrored``) wait until
        this node's mirror shows it, so a status read after this call sees
        the change."""
        rec = await self._store.update_model(
            model_id, lambda r: r if r is None else change(r), self._table.model_entry(model_id)
        )
        if mirrored:
            await self._table.wait_until(
                lambda: self._table.model(model_id) == rec, MIRROR_WAIT_SECONDS
            )
        return rec

    async def withdraw(self, model_id: str, on_disk: bool = False) -> records.ModelRecord | None:
        """No copy of the model here any more; ``on_disk``: its files stay in
        this node's disk tier."""
        return await self.record(
            model_id,
            lambda r: r.without_copy(self.instance_id).with_disk_copy(self.instance_id, on_disk),
        )

    async def off_disk(self, model_id: str) -> None:
        """This node's disk tier no longer holds the model's files."""
        try:
            await self.record(
                model_id, lambda r: r.with_disk_copy(self.instance_id, False), mirrored=False
            )
        except errors.MeshError as e:
            log.debug("disk copy of %s not withdrawn: %s", model_id, e)

    async def withdraw_left_over(self) -> None:
        """Withdraw the copies a previous run of this node left in etcd (the
        runtime starts empty)."""
        for model_id, rec in list(self._table.models().items()):
            if self.instance_id in rec.copies:
                await self.withdraw(model_id)

    async def claim(self, claim: load_claims.LoadClaim) -> None:
        """Record this node's copy LOADING, or raise
        :class:`mesh.core.errors.Reroute` (:func:`mesh.core.load_claims.claimed`).
        The compare-and-set settles the claim; the pull need not wait for this
        node's mirror to show it (the LOADED write that ends the load does)."""
        await self.record(
            claim.model_id,
            lambda r: load_claims.claimed(claim, r, self._table.instances(), clock.now_ms()),
            mirrored=False,
        )

    async def loaded(self, model_id: str, size_bytes: int) -> records.ModelRecord | None:
        """Record this node's copy LOADED, and the size it measured."""
        return await self.record(
            model_id,
            lambda r: dataclasses.replace(
                r.with_copy(
                    self.instance_id, records.CopyInfo(records.CopyState.LOADED, clock.now_ms())
                ),
                size_bytes=size_bytes,
            ),
        )

    async def failed(self, model_id: str, message: str) -> None:
        """Record that the model failed to load here (and no copy is here)."""
        failure = records.FailureInfo(clock.now_ms(), message)
        await self.record(
            model_id,
            lambda r: r.with_failure(self.instance_id, failure).with_disk_copy(
                self.instance_id, False
            ),
        )

    # -- last-used times -------------------------------------------------------

    def touched(self, model_id: str) -> None:
        """The model served a request here: its last use is written soon."""
        self._touched.add(model_id)

    def start_flushing(
        self, last_used: Callable[[str], float | None], flushed: Callable[[], None]
    ) -> None:
        """Write touched models' last-used times (``last_used(model_id)``, in
        seconds; ``None``: no copy here any more) every interval, calling
        ``flushed()`` after a round that had any."""
        self._flusher = asyncio.create_task(
            self._flush_last_used(last_used, flushed), name="last-used"
        )

    def stop_flushing(self) -> None:
        if self._flusher:
            self._flusher.cancel()

    async def _flush_last_used(
        self, last_used: Callable[[str], float | None], flushed: Callable[[], None]
    ) -> None:
        while True:
            await asyncio.sleep(self._interval)
            touched, self._touched = self._touched, set()
            for model_id in touched:
                used = last_used(model_id)
                if used is None:
                    continue
                used_ms = int(used * 1000)
                try:
                    await self.record(
                        model_id,
                        lambda r, t=used_ms: (  # type: ignore[misc]
                            r if r.last_used_ms >= t else dataclasses.replace(r, last_used_ms=t)
                        ),
                    )
                except errors.MeshError as e:
                    log.debug("last-used of %s not written: %s", model_id, e)
            if touched:
                flushed()
