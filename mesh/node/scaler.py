"""More copies where they are needed.

Every few seconds each node looks at the request rate of the copies it
holds: a copy busier than ``scaling.scale_up_rpm`` gets a sibling on another
node (placement picks it), up to the model's ``max_copies``. The leader also
tops up models registered with ``min_copies``, so they stay loaded without
traffic. The decisions are :func:`mesh.core.placement.wants_extra_copy` and
:func:`mesh.core.placement.missing_copies`; this module only schedules them and
asks the chosen node (:meth:`mesh.edges.peers.Peers.ensure_local`).

Extra copies are removed the other way: when a node needs room, extra copies
are evicted before anything else (:mod:`mesh.core.eviction`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mesh.core import clock, errors, interfaces, placement, records, settings
from mesh.kv import placement_table
from mesh.node import cache_manager

log = logging.getLogger(__name__)

COOLDOWN_SECONDS = 30.0
"""After asking for a copy of a model, wait this long before asking again."""


class Scaler:
    """Adds copies for load (any node) and for minimums (the leader)."""

    def __init__(
        self,
        config: settings.Settings,
        mirror: placement_table.PlacementTable,
        manager: cache_manager.CacheManager,
        peer_channels: interfaces.PeerLoader,
        is_leader: Callable[[], bool],
    ) -> None:
        self._scaling = config.scaling
        self._cache = config.cache
        self._self = config.node.instance_id
        self._table = mirror
        self._manager = manager
        self._peers = peer_channels
        self._is_leader = is_leader
        self._asked: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scaler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._scaling.check_interval_seconds)
            try:
                await self.check()
            except Exception:
                log.exception("scaling check failed")

    async def check(self) -> None:
        """One round: copies for busy models, then minimums if leading."""
        instances = self._table.instances()
        for model_id, rpm in self._manager.model_rpm().items():
            rec = self._table.model(model_id)
            if rec is None:
                continue
            labels = placement.required_labels(rec.model_type, rec.runtime)
            copies = placement.live_copies(rec, instances)
            able = len(placement.eligible(instances, labels))
            if placement.wants_extra_copy(
                rpm, self._scaling.scale_up_rpm, len(copies), rec.max_copies, able
            ):
                now = time.monotonic()
                if now - self._asked.get(model_id, -COOLDOWN_SECONDS) >= COOLDOWN_SECONDS:
                    log.info("model %s serves %d rpm here: adding a copy", model_id, rpm)
                    self._asked[model_id] = now
                    await self._add_copy(model_id, rec, set())
        if not self._is_leader():
            return
        # Loading copies count towards the minimum, so a model is not asked
        # for twice while its copies load.
        for model_id, rec in list(self._table.models().items()):
            chosen: set[str] = set()
            for _ in range(placement.missing_copies(rec, instances)):
                target = await self._add_copy(model_id, rec, chosen)
                if target is None:
                    break
                chosen.add(target)

    async def _add_copy(
        self, model_id: str, rec: records.ModelRecord, avoid: set[str]
    ) -> str | None:
        """Ask the node placement picks (not one in ``avoid``) for a copy;
        the node asked, or ``None``."""
        instances = self._table.instances()
        now_ms = clock.now_ms()
        failed = records.recent_failures(
            rec, now_ms, int(self._cache.failure_expiry_seconds * 1000)
        )
        target = placement.choose_node(
            instances,
            max(rec.size_bytes, self._cache.min_model_size_bytes),
            model_id=model_id,
            labels=placement.required_labels(rec.model_type, rec.runtime),
            avoid=set(rec.copies) | set(failed) | avoid,
            now_ms=now_ms,
            churn_threshold_ms=int(self._cache.churn_threshold_seconds * 1000),
        )
        if target is None:
            return None
        if target == self._self:
            self._manager.load_soon(model_id, extra_copy=True)
            return target
        try:
            await self._peers.ensure_local(
                instances[target].endpoint, model_id, extra_copy=True, sync=False, timeout=10
            )
        except errors.MeshError as e:
            log.info("could not add a copy of %s on %s: %s", model_id, target, e.message)
            return None
        return target
