"""The node's model cache: load on first use, evict the least popular per byte.

This is where a request for a model that is not here turns into a pull and a
load, and where a full node makes room. The rules are pure functions (what
to evict: :mod:`mesh.core.eviction`; whether to load at all:
:mod:`mesh.core.load_claims`); the copies, their pins and counters are
:mod:`mesh.node.local_copies`; the etcd writes that keep every copy's state
truthful (LOADING, LOADED, failed, gone) are :mod:`mesh.node.copy_records`;
what becomes of its files, :mod:`mesh.node.model_files`; evicting to make
room, :mod:`mesh.node.room_maker`. This module makes the decisions and
carries them out; :mod:`mesh.node.load_steps` times them.

Concurrency, all on one event loop:

* A copy's entry is created before the first ``await`` of its load, so every
  request for a model that is loading waits on the same future: one load per
  model per node.
* Planning room and reserving the new model's bytes happen under one lock;
  the slow part (pull, runtime load) runs outside it. The pull, and the
  room for a model whose size is known, are made while the claim is in
  flight; only the runtime's load waits for the claim.
* A model that is loading, serving a request, or has requests waiting for it
  is pinned: never evicted.
* A load takes room only once room was made for it (``reserved``): loads
  that find the room held by pinned models wait for some to be unpinned
  (up to ``MESHSERVE_LOAD_TIMEOUT``) instead of failing, so a burst of cold
  requests larger than the node queues rather than marks models failed.
* A load runs in its own task, so a caller whose deadline expires does not
  cancel a load other callers wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mesh.core import (
    clock,
    errors,
    interfaces,
    load_claims,
    load_outcomes,
    placement,
    records,
    settings,
    sizes,
)
from mesh.kv import placement_table, records_store
from mesh.node import (
    copy_records,
    load_steps,
    local_copies,
    metrics,
    model_files,
    room_maker,
)

log = logging.getLogger(__name__)

_Callback = Callable[[], None]
_Coroutine = Coroutine[Any, Any, None]

UNLOAD_WAIT_SECONDS = 30.0
"""How long an unload waits for the copy's requests in flight to finish."""


class CacheManager(local_copies.CopyReports):
    """Holds this node's copies and keeps their records in etcd."""

    def __init__(
        self,
        config: settings.Settings,
        record_store: records_store.RecordStore,
        placement: placement_table.PlacementTable,
        runtime: interfaces.RuntimeAdapter,
        puller: interfaces.ModelPuller,
        node_metrics: metrics.Metrics | None = None,
    ) -> None:
        self.instance_id = config.node.instance_id
        self.metrics = node_metrics or metrics.Metrics()
        self._cache = config.cache
        self._table = placement
        self._runtime = runtime
        self._puller = puller
        self._copies = local_copies.LocalCopies(
            config.cache.eviction, config.cache.popularity_half_life_seconds
        )
        self._records = copy_records.CopyRecordWriter(
            self.instance_id, record_store, placement, config.cache.last_used_write_interval_seconds
        )
        self._files = model_files.ModelFiles(puller, placement)
        self._tasks: set[asyncio.Task[None]] = set()
        self._room_freed = local_copies.ChangeSignal()
        """Fired whenever a copy may have become evictable or gone (loads
        waiting for room, and unloads waiting for requests, look again)."""
        self._room = room_maker.RoomMaker(
            self._copies, config.cache, self._room_freed, self._is_extra_copy, self._evict_task
        )
        self._changed_callbacks: list[_Callback] = []
        self.draining = False
        """Set when the node shuts down: no new loads are taken."""
        self.sizes = sizes.SizeModel(
            config.cache.size_multiplier, config.cache.min_model_size_bytes
        )
        """Per-type size averages learned from this node's loads."""
        self.loads_claimed = 0
        """Loads this node claimed in etcd and started (for tests and metrics)."""

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Forget copies a previous run of this node left in etcd (the
        runtime starts empty), and watch for unregistrations."""
        await self._records.withdraw_left_over()
        self._table.add_listener(self._on_table_change)
        self._records.start_flushing(self._copies.last_used, self._changed)

    async def stop(self) -> None:
        """Stop background work and withdraw this node's copies from etcd."""
        self._records.stop_flushing()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for model_id in self._copies.model_ids():
            with contextlib.suppress(errors.MeshError):
                await self._records.withdraw(model_id)
        self._copies.clear()

    def add_change_callback(self, callback: _Callback) -> None:
        """Call ``callback()`` whenever what this node holds changes."""
        self._changed_callbacks.append(callback)

    @property
    def capacity_bytes(self) -> int:
        return self._cache.capacity_bytes

    # -- the request path ------------------------------------------------------

    def serving(
        self, model_id: str, timeout: float | None, ignore: frozenset[str] = frozenset()
    ) -> local_copies.ServingCopy:
        """``async with`` this to hold a ready copy of ``model_id`` for the
        duration of the block: load it first if needed, and keep it from
        eviction meanwhile.

        A load here is claimed in etcd first: if another live node (not in
        ``ignore``) already holds or loads the model, entering raises
        :class:`mesh.core.errors.Reroute` instead, so one load happens cluster-wide.
        """
        return local_copies.ServingCopy(self, self._copies, model_id, timeout, ignore)

    async def copy_for_request(
        self, model_id: str, timeout: float | None, ignore: frozenset[str]
    ) -> local_copies.LocalCopy:
        """A ready copy for a request that found none here (the slow path of
        :class:`mesh.node.local_copies.ServingCopy`)."""
        t0 = time.monotonic()
        c = await self._ready_copy(model_id, timeout, ignore=ignore)
        self.metrics.waited_for_load(model_id, (time.monotonic() - t0) * 1000)
        return c

    def release(self, copy: local_copies.LocalCopy) -> None:
        """A request on ``copy`` is done: release it and count the use."""
        if self._copies.served(copy):
            self._room_freed.fire()
        self._records.touched(copy.model_id)

    async def ensure_loaded(
        self, model_id: str, timeout: float | None = None, *, extra_copy: bool = False
    ) -> None:
        """Load ``model_id`` here if it is not (no request needed); with
        ``extra_copy``, even if another node holds it too. Returns once the
        copy is recorded in etcd."""
        c = await self._ready_copy(model_id, timeout, extra_copy=extra_copy)
        if c.recording is not None:
            await asyncio.shield(c.recording)

    def load_soon(self, model_id: str, *, extra_copy: bool = False) -> None:
        """Start loading ``model_id`` here in the background (errors are logged
        and recorded, not raised)."""

        async def load() -> None:
            try:
                await self._ready_copy(model_id, None, extra_copy=extra_copy)
            except errors.MeshError as e:
                log.info("background load of %s: %s", model_id, e.message)

        self._spawn(load())

    def forget(self, model_id: str) -> None:
        """The runtime says it does not hold this model (restarted, or unloaded
        behind our back): drop the copy so the next request loads it again."""
        c = self._copies.get(model_id)
        if c is not None and c.phase is local_copies.CopyPhase.LOADED and c.in_flight == 0:
            self._spawn(self._unload(model_id, "the runtime no longer holds it"))

    async def _ready_copy(
        self,
        model_id: str,
        timeout: float | None,
        *,
        extra_copy: bool = False,
        ignore: frozenset[str] = frozenset(),
    ) -> local_copies.LocalCopy:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        c = self._copies.get(model_id)
        while c is None or c.phase is local_copies.CopyPhase.UNLOADING:
            if c is None:
                c = self._begin_load(model_id, extra_copy, ignore)
                break
            # Wait for the unload to finish, then look again: another request
            # waiting with this one may have started the new load already.
            await c.wait(left(), "being unloaded")
            c = self._copies.get(model_id)
        if c.phase is local_copies.CopyPhase.LOADING:
            c.waiting += 1
            try:
                await c.wait(left(), "still loading")
            finally:
                c.waiting -= 1
        return c

    def _begin_load(
        self, model_id: str, extra_copy: bool, ignore: frozenset[str]
    ) -> local_copies.LocalCopy:
        rec = self._table.model(model_id)
        if rec is None:
            raise errors.ModelNotFound(model_id)
        if self.draining:
            raise errors.Reroute(f"node {self.instance_id} is shutting down")
        failure = records.recent_failures(
            rec, clock.now_ms(), int(self._cache.failure_expiry_seconds * 1000)
        ).get(self.instance_id)
        if failure is not None:
            raise errors.ModelLoadFailed(model_id, failure.message)
        size = max(rec.size_bytes, self._cache.min_model_size_bytes)
        c = local_copies.LocalCopy.loading(
            model_id, rec, size, extra_copy=extra_copy, ignore=ignore
        )
        self._copies.add(c)
        self._spawn(self._load(c))
        return c

    # -- loading and unloading -------------------------------------------------

    async def _load(self, c: local_copies.LocalCopy) -> None:
        model_id = c.model_id
        steps = load_steps.LoadSteps()
        # The pull, and making room for a model of known size, run beside
        # the claim: the claim must settle before the runtime loads (one load
        # cluster-wide), not before the files come or the room is made.
        pull = asyncio.create_task(self._puller.pull(model_id, c.source))
        room = self._spawn(self._room.make_room(c)) if c.source.size_bytes > 0 else None
        try:
            await self._claim(c, pull)
            steps.mark("claim")
            path = await pull
            steps.mark("pull")
            if room is None:  # never measured: predict its size from its type
                c.size_bytes = self.sizes.predict(c.source.model_type, _folder_bytes(path))
                room = self._spawn(self._room.make_room(c))
            await room
            steps.mark("room")
            async with asyncio.timeout(self._cache.load_timeout_seconds):
                measured = await self._runtime.load(model_id, c.source.model_type, path)
            steps.mark("load")
        except (Exception, asyncio.CancelledError) as e:
            if room is not None and not room.done():
                room.cancel()  # an eviction it began runs to its end (room_maker)
                await asyncio.gather(room, return_exceptions=True)
            await self._load_failed(c, e)
            return
        c.size_bytes = max(measured, self._cache.min_model_size_bytes)
        self.sizes = self.sizes.learned(c.source.model_type, c.size_bytes)
        self.metrics.loaded(model_id, steps.total_ms(), c.size_bytes)
        await self._loaded(c, steps)

    async def _claim(self, c: local_copies.LocalCopy, pull: asyncio.Task[pathlib.Path]) -> None:
        """Claim the load in etcd; if that fails, stop the pull beside it."""
        try:
            await self._records.claim(
                load_claims.LoadClaim(c.model_id, self.instance_id, c.extra_copy, c.ignore)
            )
        except BaseException:
            await self._files.abandon(c.model_id, c.source, pull)
            raise
        self.loads_claimed += 1
        self._changed()  # other nodes see the load (and its bytes) coming

    async def _loaded(self, c: local_copies.LocalCopy, steps: load_steps.LoadSteps) -> None:
        """Tell the copy's waiters, record it (their answers wait for that,
        not their inferences), and undo what changed while it loaded."""
        model_id = c.model_id
        rec: records.ModelRecord | None = c.source
        recording = c.recording = asyncio.get_running_loop().create_future()
        c.phase = local_copies.CopyPhase.LOADED
        c.ready.set_result(None)
        try:
            rec = await self._records.loaded(model_id, c.size_bytes)
        except errors.MeshError as e:
            log.warning("model %s loaded but its record could not be written: %s", model_id, e)
        finally:
            c.recording = None
            recording.set_result(None)
        steps.mark("record")
        self.metrics.load_steps(steps.ms)
        log.info(
            "model %s loaded in %.1f ms (%s), %d bytes",
            model_id,
            steps.total_ms(),
            steps.summary(),
            c.size_bytes,
        )
        self._room_freed.fire()
        self._changed()
        if rec is None or not rec.same_source(c.source):
            # Unregistered or redefined while loading: this copy is stale.
            self._spawn(self._unload(model_id, "unregistered or changed while loading"))
            return
        if self._copies.held_bytes() > self.capacity_bytes:
            # Measured bigger than predicted: make room after the fact.
            self._spawn(self._room.shrink())

    async def _load_failed(self, c: local_copies.LocalCopy, e: BaseException) -> None:
        model_id = c.model_id
        if isinstance(e, errors.Reroute):  # nothing was loaded or recorded here
            log.debug("model %s not loaded here: %s", model_id, e.message)
            self._drop(c, e)
            return
        failed = load_outcomes.failed_load(
            e, model_id, self.instance_id, self._cache.load_timeout_seconds
        )
        if failed.unexpected:
            log.error("unexpected error loading model %s", model_id, exc_info=e)
        log.warning("model %s failed to load: %s", model_id, failed.message)
        self.metrics.load_failed(model_id)
        with contextlib.suppress(Exception):
            await self._runtime.unload(model_id)
        with contextlib.suppress(Exception):
            await self._puller.remove(model_id)
        # Record the failure before anyone hears of it, so the status they
        # read next says LOADING_FAILED with the runtime's message.
        with contextlib.suppress(errors.MeshError):
            # The model's fault is recorded; the node's is not.
            if failed.blamed:
                await self._records.failed(model_id, failed.message)
            else:
                await self._records.withdraw(model_id)
        self._drop(c, failed.error)

    def _drop(self, c: local_copies.LocalCopy, err: BaseException) -> None:
        """Forget a copy whose load ended without a model, telling its waiters."""
        self._copies.discard(c)
        if not c.ready.done():
            c.ready.set_exception(err)
            c.ready.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self._room_freed.fire()
        self._changed()

    async def _evict(self, model_id: str, reason: str) -> None:
        c = self._copies.get(model_id)
        if c is not None:
            self.metrics.evicted_model(model_id, (time.time() - c.last_used) * 1000)
        await self._unload(model_id, reason, settle_later=True)

    def victim_rank(self) -> float | None:
        """How dear the copy evicted first here would be (placement's rank)."""
        return self._copies.victim_rank(self._is_extra_copy)

    def _is_extra_copy(self, model_id: str) -> bool:
        rec = self._table.model(model_id)
        return rec is not None and placement.is_extra_copy(
            rec, self._table.instances(), self.instance_id
        )

    async def unload(self, model_id: str, reason: str) -> None:
        """Unload the copy here, if any (waits for in-flight requests)."""
        await self._unload(model_id, reason)

    async def _unload(self, model_id: str, reason: str, *, settle_later: bool = False) -> None:
        """Unload the copy from the runtime, then :meth:`_settle` it (with
        ``settle_later``, after returning: a load waits for the memory only)."""
        c = self._copies.get(model_id)
        if c is not None and c.recording is not None:  # its LOADED write must land first
            await asyncio.shield(c.recording)
            c = self._copies.get(model_id)
        if c is None or c.phase is not local_copies.CopyPhase.LOADED:
            return
        c.phase = local_copies.CopyPhase.UNLOADING
        c.ready = asyncio.get_running_loop().create_future()
        ok = False
        try:
            await local_copies.until_idle(c, self._room_freed, UNLOAD_WAIT_SECONDS)
            log.info("unloading model %s: %s", model_id, reason)
            t0 = time.monotonic()
            try:
                await self._runtime.unload(model_id)
                ok = c.released = True
            except errors.MeshError as e:
                log.warning("runtime could not unload %s: %s", model_id, e)
            self.metrics.unloaded(model_id, (time.monotonic() - t0) * 1000, ok)
        except BaseException:
            self._forget_copy(c)
            raise
        if settle_later:
            self._spawn(self._settle(c, ok))
        else:
            await self._settle(c, ok)

    async def _settle(self, c: local_copies.LocalCopy, ok: bool) -> None:
        """Keep or delete an unloaded copy's files and withdraw it from etcd
        before forgetting it (so this write cannot erase a next load's claim)."""
        try:
            kept = await self._files.retire(c.model_id, c.source, keep=ok)
            with contextlib.suppress(errors.MeshError):
                await self._records.withdraw(c.model_id, on_disk=kept)
        finally:
            self._forget_copy(c)

    def _forget_copy(self, c: local_copies.LocalCopy) -> None:
        self._copies.discard(c)
        c.ready.set_result(None)
        self._room_freed.fire()
        self._changed()

    def dropped_from_disk(self, model_id: str) -> None:
        if self._copies.get(model_id) is None:  # the disk tier dropped its files
            self._spawn(self._records.off_disk(model_id))

    # -- the placement table ------------------------------------------------------

    def _on_table_change(self, kind: str, model_id: str) -> None:
        if kind != "model":
            return
        rec = self._table.model(model_id)
        if rec is None:
            self._copies.forget_popularity(model_id)
        c = self._copies.get(model_id)
        if c is None or c.phase is not local_copies.CopyPhase.LOADED:
            return
        if rec is None:
            self._spawn(self._unload(model_id, "unregistered"))
        elif not rec.same_source(c.source):
            self._spawn(self._unload(model_id, "its definition changed"))

    def _changed(self) -> None:
        for cb in self._changed_callbacks:
            cb()

    def _spawn(self, coro: _Coroutine) -> asyncio.Task[None]:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _evict_task(self, model_id: str, reason: str) -> asyncio.Task[None]:
        """An eviction in a task of its own, which :meth:`stop` waits for."""
        return self._spawn(self._evict(model_id, reason))


def _folder_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
