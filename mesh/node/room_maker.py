"""Making room in a full node: which copies go so that a load fits.

A load on a full node first evicts; the rule of what goes is pure
(:mod:`mesh.core.eviction`), and this module carries it out for the cache
manager (:mod:`mesh.node.cache_manager`): planning and reserving the new
copy's bytes happen under one lock, each eviction runs to its end even if the
load that asked for it is cancelled (a half-done unload would leave the
runtime and the records disagreeing), and a load that finds the room held by
pinned copies (in use, loading, or awaited) waits for one to be unpinned, up
to the load timeout, instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from mesh.core import errors, eviction, settings
from mesh.node import local_copies

log = logging.getLogger(__name__)

Evict = Callable[[str, str], Awaitable[None]]
"""``evict(model_id, reason)``: unload one copy to free its room."""


class RoomMaker:
    """Evicts copies of ``copies`` so that loads fit in the node's capacity."""

    def __init__(
        self,
        copies: local_copies.LocalCopies,
        cache: settings.CacheSettings,
        freed: local_copies.ChangeSignal,
        is_extra_copy: Callable[[str], bool],
        evict: Evict,
    ) -> None:
        self._copies = copies
        self._cache = cache
        self._freed = freed
        self._is_extra_copy = is_extra_copy
        self._evict = evict
        self._lock = asyncio.Lock()

    async def make_room(self, c: local_copies.LocalCopy) -> None:
        """Evict copies in :func:`mesh.core.eviction.eviction_order` until ``c`` fits,
        then reserve its room. While pinned copies hold the room, wait for
        one to be unpinned, up to the load timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cache.load_timeout_seconds
        while True:
            freed = self._freed.armed()
            async with self._lock:
                victims = self._plan(c, loop.time() >= deadline)
                if victims is not None:
                    c.reserved = True
                    for victim in victims:
                        log.info("evicting model %s to make room for %s", victim, c.model_id)
                        # Shielded: a cancelled load still lets an unload end.
                        await asyncio.shield(
                            self._evict(victim, f"evicted to make room for {c.model_id}")
                        )
                    return
            log.info("model %s waits for room: models in use or loading hold it", c.model_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed.wait(), deadline - loop.time())

    def _plan(self, c: local_copies.LocalCopy, late: bool) -> tuple[str, ...] | None:
        """The copies to evict for ``c`` now; ``None`` while pinned copies
        hold the room (raises :class:`mesh.core.errors.NoRoomNow` once
        ``late``, or at once when only recently used copies hold it)."""
        others = [
            self._copies.entry(x, self._is_extra_copy(x.model_id))
            for x in self._copies.held()
            if x is not c
        ]
        guarded = eviction.churn_guarded(others, self._cache.churn_threshold_seconds, time.time())
        capacity = self._cache.capacity_bytes
        try:
            return tuple(eviction.plan_room(guarded, capacity, c.size_bytes).evict)
        except errors.NoRoomNow:
            if guarded is not others and eviction.fits(others, capacity, c.size_bytes):
                # Room is held by recently used models, not busy ones:
                # refuse now rather than thrash (or wait on a clock).
                raise errors.NoRoomNow(
                    f"model {c.model_id!r} would evict models used within the last "
                    f"{self._cache.churn_threshold_seconds:g} s "
                    "(MESHSERVE_CHURN_THRESHOLD)"
                ) from None
            if late:
                raise
            return None

    async def shrink(self) -> None:
        """Evict until what the copies hold fits the capacity again (a copy
        measured bigger than predicted)."""
        async with self._lock:
            entries = [self._copies.entry(x) for x in self._copies.held()]
            if eviction.used_bytes(entries) <= self._cache.capacity_bytes:
                return
            with contextlib.suppress(errors.InsufficientCapacity):
                plan = eviction.plan_room(entries, self._cache.capacity_bytes, 0)
                for victim in plan.evict:
                    await asyncio.shield(self._evict(victim, "the node is over capacity"))
