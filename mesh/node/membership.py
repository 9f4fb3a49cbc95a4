"""This node's presence in the mesh: its instance record, under a lease.

The record (``<prefix>/instances/<id>``) tells every node this one's endpoint,
capacity, use and load. It is put under a lease kept alive in the background,
so it vanishes on its own when the node dies; it is republished when the node
asks (after a load or an eviction: changes within ``coalesce_seconds`` make
one write, which also keeps that write off the first request a fresh copy
serves), every few seconds if it changed (request rates move), and once a
minute regardless, which also re-creates it if its key was lost while the
lease lived (a lost lease re-registers at once). A record that did not
change is not rewritten more often than that: every write reaches every
node's watch, so rewrites of idle nodes grow as nodes² (100 simulated nodes
rewriting every 5 s made ~2,000 watch events a second at rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from mesh.core import errors, records
from mesh.kv import records_store

log = logging.getLogger(__name__)


class Membership:
    """Publishes ``snapshot()`` as this node's instance record."""

    def __init__(
        self,
        record_store: records_store.RecordStore,
        instance_id: str,
        snapshot: Callable[[], records.InstanceRecord],
        lease_ttl_seconds: int,
        republish_seconds: float = 5.0,
        coalesce_seconds: float = 0.05,
        refresh_seconds: float = 60.0,
    ) -> None:
        self._store = record_store
        self._instance_id = instance_id
        self._snapshot = snapshot
        self._ttl = lease_ttl_seconds
        self._republish = republish_seconds
        self._coalesce = coalesce_seconds
        self._refresh = refresh_seconds
        self._lease = 0
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last: records.InstanceRecord | None = None

    async def start(self) -> None:
        """Publish the first record (raises if etcd is unreachable) and keep it."""
        self._lease = await self._store.kv.grant_lease(self._ttl)
        await self._publish()
        self._task = asyncio.create_task(self._run(), name="membership")

    def changed(self) -> None:
        """Ask for the record to be republished soon."""
        self._dirty.set()

    async def stop(self) -> None:
        """Withdraw the record now (the lease is revoked)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(errors.StoreUnavailable):
            await self._store.kv.revoke_lease(self._lease)

    async def publish_now(self) -> None:
        await self._publish(force=True)

    async def _publish(self, force: bool = False) -> None:
        rec = self._snapshot()
        if force or rec != self._last:
            await self._store.put_instance(self._instance_id, rec, self._lease)
            self._last = rec

    async def _run(self) -> None:
        keepalive_every = max(1.0, self._ttl / 3)
        loop = asyncio.get_running_loop()
        next_keepalive = loop.time() + keepalive_every
        next_republish = loop.time() + self._republish
        next_refresh = loop.time() + self._refresh
        while True:
            timeout = max(0.0, min(next_keepalive, next_republish) - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout)
                await asyncio.sleep(self._coalesce)
            self._dirty.clear()
            try:
                now = loop.time()
                if now >= next_keepalive:
                    next_keepalive = now + keepalive_every
                    if not await self._store.kv.keep_alive(self._lease):
                        log.warning(
                            "lease of instance %s expired; re-registering", self._instance_id
                        )
                        self._lease = await self._store.kv.grant_lease(self._ttl)
                        await self._publish(force=True)
                        continue
                if now >= next_republish:
                    next_republish = now + self._republish
                force = now >= next_refresh
                if force:
                    next_refresh = now + self._refresh
                await self._publish(force=force)
            except errors.MeshError as e:
                log.warning("could not publish instance %s: %s", self._instance_id, e)
                await asyncio.sleep(1.0)
