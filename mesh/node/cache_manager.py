"""The node's model cache: load on first use, evict the least popular per byte.

This is where a request for a model that is not here turns into a pull and a
load, and where a full node makes room. The rules (what to evict) are the
pure functions of :mod:`mesh.core.eviction`; this module carries them out and keeps
etcd truthful: every copy's state change (LOADING, LOADED, failed, gone) is
written to the model's record with a compare-and-set, so ``getModelStatus``
and ``meshserve models`` show what is really loaded.

Concurrency, all on one event loop:

* A copy's entry is created before the first ``await`` of its load, so every
  request for a model that is loading waits on the same future: one load per
  model per node.
* Planning room and reserving the new model's bytes happen under one lock;
  the slow part (pull, runtime load) runs outside it.
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
import collections
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mesh.core import errors, eviction, interfaces, placement, records, settings, sizes
from mesh.kv import placement_table, records_store
from mesh.node import metrics

log = logging.getLogger(__name__)

_Callback = Callable[[], None]
_Change = Callable[[records.ModelRecord], records.ModelRecord]
_Coroutine = Coroutine[Any, Any, None]


class _State(enum.Enum):
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"


@dataclasses.dataclass
class _Copy:
    """A model held (or being loaded) here. Mutable, owned by the manager."""

    model_id: str
    source: records.ModelRecord
    size_bytes: int
    state: _State
    ready: asyncio.Future[None]
    last_used: float
    extra_copy: bool = False
    """Loaded on purpose beside another node's copy (for load, or a minimum)."""
    ignore: frozenset[str] = frozenset()
    """Instances whose copies the claim disregards (the router found them dead)."""
    in_flight: int = 0
    waiting: int = 0
    """Requests waiting for this copy's load to finish."""
    reserved: bool = False
    """Room was made for it: it counts toward the node's used bytes (a copy
    still pulling, or waiting for room, takes none)."""
    recent: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    """When requests were served, over the last minute."""

    def rpm(self, now: float) -> int:
        while self.recent and self.recent[0] < now - 60:
            self.recent.popleft()
        return len(self.recent)

    def entry(self, extra: bool = False, popularity: float = eviction.UNKNOWN) -> eviction.Entry:
        return eviction.Entry(
            self.model_id,
            self.size_bytes,
            self.last_used,
            pinned=self.state is not _State.LOADED or self.in_flight > 0 or self.waiting > 0,
            extra=extra,
            popularity=popularity,
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


class CacheManager:
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
        self._store = record_store
        self._table = placement
        self._runtime = runtime
        self._puller = puller
        self._copies: dict[str, _Copy] = {}
        self._room = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._touched: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._requests: collections.deque[float] = collections.deque()
        self._room_freed = asyncio.Event()
        """Set whenever a copy may have become evictable or gone (loads
        waiting for room look again)."""
        self._popularity: dict[str, float] = {}
        """Each model's popularity here (:func:`mesh.core.eviction.bumped`), kept
        after an eviction and dropped when the model is unregistered."""
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
        for model_id, rec in list(self._table.models().items()):
            if self.instance_id in rec.copies:
                await self._record(model_id, lambda r: r.without_copy(self.instance_id))
        self._table.add_listener(self._on_table_change)
        self._flusher = asyncio.create_task(self._flush_last_used(), name="last-used")

    async def stop(self) -> None:
        """Stop background work and withdraw this node's copies from etcd."""
        if self._flusher:
            self._flusher.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for model_id in list(self._copies):
            with contextlib.suppress(errors.MeshError):
                await self._record(model_id, lambda r: r.without_copy(self.instance_id))
        self._copies.clear()

    def add_change_callback(self, callback: _Callback) -> None:
        """Call ``callback()`` whenever what this node holds changes."""
        self._changed_callbacks.append(callback)

    # -- what the node reports ----------------------------------------------

    @property
    def capacity_bytes(self) -> int:
        return self._cache.capacity_bytes

    def _held(self) -> list[_Copy]:
        """Copies that take room: all but loads not yet given any."""
        return [c for c in self._copies.values() if c.state is not _State.LOADING or c.reserved]

    def used_bytes(self) -> int:
        """Bytes of every copy here, loads still waiting for room included
        (what other nodes should count on this node for placement)."""
        return eviction.used_bytes(c.entry() for c in self._copies.values())

    def model_count(self) -> int:
        return len(self._copies)

    def loading_count(self) -> int:
        return sum(1 for c in self._copies.values() if c.state is _State.LOADING)

    def lru_time_ms(self) -> int:
        return int(eviction.lru_time(c.entry() for c in self._copies.values()) * 1000)

    def requests_per_minute(self) -> int:
        cutoff = time.time() - 60
        while self._requests and self._requests[0] < cutoff:
            self._requests.popleft()
        return len(self._requests)

    def holds(self, model_id: str) -> bool:
        """Whether a ready copy of the model is here."""
        c = self._copies.get(model_id)
        return c is not None and c.state is _State.LOADED

    def has_copy(self, model_id: str) -> bool:
        """Whether a copy is here, ready or loading."""
        c = self._copies.get(model_id)
        return c is not None and c.state is not _State.UNLOADING

    def model_rpm(self) -> dict[str, int]:
        """Requests per minute served by each ready copy here."""
        now = time.time()
        return {m: c.rpm(now) for m, c in self._copies.items() if c.state is _State.LOADED}

    def recently_used(self, within_seconds: float) -> list[str]:
        """Ready models used within the window, most recent first."""
        cutoff = time.time() - within_seconds
        used = [
            c for c in self._copies.values() if c.state is _State.LOADED and c.last_used >= cutoff
        ]
        return [c.model_id for c in sorted(used, key=lambda c: c.last_used, reverse=True)]

    # -- the request path ------------------------------------------------------

    def serving(
        self, model_id: str, timeout: float | None, ignore: frozenset[str] = frozenset()
    ) -> _Serving:
        """``async with`` this to hold a ready copy of ``model_id`` for the
        duration of the block: load it first if needed, and keep it from
        eviction meanwhile.

        A load here is claimed in etcd first: if another live node (not in
        ``ignore``) already holds or loads the model, entering raises
        :class:`mesh.core.errors.Reroute` instead, so one load happens cluster-wide.
        """
        return _Serving(self, model_id, timeout, ignore)

    def _served(self, copy: _Copy) -> None:
        """A request on ``copy`` is done: release it and count the use."""
        copy.in_flight -= 1
        if copy.in_flight == 0:
            self._room_freed.set()
        now = time.time()
        copy.last_used = now
        copy.recent.append(now)
        self._requests.append(now)
        self._touched.add(copy.model_id)
        if self._cache.eviction == "popularity":
            self._popularity[copy.model_id] = eviction.bumped(
                self._popularity.get(copy.model_id, eviction.UNKNOWN),
                now,
                self._cache.popularity_half_life_seconds,
            )

    async def ensure_loaded(
        self, model_id: str, timeout: float | None = None, *, extra_copy: bool = False
    ) -> None:
        """Load ``model_id`` here if it is not (no request needed); with
        ``extra_copy``, even if another node holds it too."""
        await self._ready_copy(model_id, timeout, extra_copy=extra_copy)

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
        if c is not None and c.state is _State.LOADED and c.in_flight == 0:
            self._spawn(self._unload(model_id, "the runtime no longer holds it"))

    async def _ready_copy(
        self,
        model_id: str,
        timeout: float | None,
        *,
        extra_copy: bool = False,
        ignore: frozenset[str] = frozenset(),
    ) -> _Copy:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        c = self._copies.get(model_id)
        while c is None or c.state is _State.UNLOADING:
            if c is None:
                c = self._begin_load(model_id, extra_copy, ignore)
                break
            # Wait for the unload to finish, then look again: another request
            # waiting with this one may have started the new load already.
            await _ready(c, left(), "being unloaded")
            c = self._copies.get(model_id)
        if c.state is _State.LOADING:
            c.waiting += 1
            try:
                await _ready(c, left(), "still loading")
            finally:
                c.waiting -= 1
        return c

    def _begin_load(self, model_id: str, extra_copy: bool, ignore: frozenset[str]) -> _Copy:
        rec = self._table.model(model_id)
        if rec is None:
            raise errors.ModelNotFound(model_id)
        if self.draining:
            raise errors.Reroute(f"node {self.instance_id} is shutting down")
        failure = records.recent_failures(
            rec, _now_ms(), int(self._cache.failure_expiry_seconds * 1000)
        ).get(self.instance_id)
        if failure is not None:
            raise errors.ModelLoadFailed(model_id, failure.message)
        loop = asyncio.get_running_loop()
        c = _Copy(
            model_id=model_id,
            source=rec,
            size_bytes=max(rec.size_bytes, self._cache.min_model_size_bytes),
            state=_State.LOADING,
            ready=loop.create_future(),
            last_used=time.time(),
            extra_copy=extra_copy,
            ignore=ignore,
        )
        self._copies[model_id] = c
        self._spawn(self._load(c))
        return c

    # -- loading and unloading -------------------------------------------------

    async def _load(self, c: _Copy) -> None:
        model_id = c.model_id
        t0 = time.monotonic()
        try:
            await self._record(model_id, lambda r: self._claim(c, r))
            self.loads_claimed += 1
            self._changed()  # other nodes see the load (and its bytes) coming
            path = await self._puller.pull(model_id, c.source)
            disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if c.source.size_bytes <= 0:  # never measured: predict from its type
                c.size_bytes = self.sizes.predict(c.source.model_type, disk)
            await self._make_room(c)
            async with asyncio.timeout(self._cache.load_timeout_seconds):
                measured = await self._runtime.load(model_id, c.source.model_type, path)
        except (Exception, asyncio.CancelledError) as e:
            await self._load_failed(c, e)
            return
        c.size_bytes = max(measured, self._cache.min_model_size_bytes)
        self.sizes = self.sizes.learned(c.source.model_type, c.size_bytes)
        self.metrics.loaded(model_id, (time.monotonic() - t0) * 1000, c.size_bytes)
        log.info(
            "model %s loaded in %.0f ms, %d bytes",
            model_id,
            (time.monotonic() - t0) * 1000,
            c.size_bytes,
        )
        size = c.size_bytes
        rec: records.ModelRecord | None = c.source
        try:
            # Recorded before anyone is told, so a status read next says LOADED.
            rec = await self._record(
                model_id,
                lambda r: dataclasses.replace(
                    r.with_copy(
                        self.instance_id, records.CopyInfo(records.CopyState.LOADED, _now_ms())
                    ),
                    size_bytes=size,
                ),
            )
        except errors.MeshError as e:
            log.warning("model %s loaded but its record could not be written: %s", model_id, e)
        c.state = _State.LOADED
        c.ready.set_result(None)
        self._room_freed.set()
        self._changed()
        if rec is None or not rec.same_source(c.source):
            # Unregistered or redefined while loading: this copy is stale.
            self._spawn(self._unload(model_id, "unregistered or changed while loading"))
            return
        if eviction.used_bytes(x.entry() for x in self._held()) > self.capacity_bytes:
            # Measured bigger than predicted: make room after the fact.
            self._spawn(self._shrink())

    def _claim(self, c: _Copy, r: records.ModelRecord) -> records.ModelRecord:
        """The record with this node's copy LOADING, unless another live node
        holds or loads the model (one load cluster-wide), or enough copies
        exist for an extra one."""
        live = {i: x for i, x in self._table.instances().items() if i not in c.ignore}
        others = [i for i in placement.live_copies(r, live) if i != self.instance_id]
        if others and not c.extra_copy:
            raise errors.Reroute(f"model {c.model_id!r} is already on {others[0]}")
        if c.extra_copy and r.max_copies and len(others) >= r.max_copies:
            raise errors.Reroute(f"model {c.model_id!r} already has {len(others)} copies")
        return r.with_copy(self.instance_id, records.CopyInfo(records.CopyState.LOADING, _now_ms()))

    async def _load_failed(self, c: _Copy, e: BaseException) -> None:
        model_id = c.model_id
        if isinstance(e, errors.Reroute):  # nothing was loaded or recorded here
            log.debug("model %s not loaded here: %s", model_id, e.message)
            self._drop(c, e)
            return
        if isinstance(e, errors.MeshError):
            err: errors.MeshError = e
        elif isinstance(e, TimeoutError):
            err = errors.ModelLoadFailed(
                model_id, f"load took longer than {self._cache.load_timeout_seconds:g} s"
            )
        elif isinstance(e, asyncio.CancelledError):
            err = errors.RuntimeUnavailable(f"node {self.instance_id} stopped loading {model_id!r}")
        else:
            log.exception("unexpected error loading model %s", model_id)
            err = errors.ModelLoadFailed(model_id, f"{type(e).__name__}: {e}")
        message = err.reason if isinstance(err, errors.ModelLoadFailed) else err.message
        # The model's fault (it failed, or is larger than the node) is
        # recorded; the node's (stopping, room held by others) is not.
        blamed = isinstance(err, errors.ModelLoadFailed) or (
            isinstance(err, errors.InsufficientCapacity) and not isinstance(err, errors.NoRoomNow)
        )
        log.warning("model %s failed to load: %s", model_id, message)
        self.metrics.load_failed(model_id)
        with contextlib.suppress(Exception):
            await self._runtime.unload(model_id)
        with contextlib.suppress(Exception):
            await self._puller.remove(model_id)
        # Record the failure before anyone hears of it, so the status they
        # read next says LOADING_FAILED with the runtime's message.
        with contextlib.suppress(errors.MeshError):
            if blamed:
                failure = records.FailureInfo(_now_ms(), message)
                await self._record(model_id, lambda r: r.with_failure(self.instance_id, failure))
            else:
                await self._record(model_id, lambda r: r.without_copy(self.instance_id))
        self._drop(c, err)

    def _drop(self, c: _Copy, err: BaseException) -> None:
        """Forget a copy whose load ended without a model, telling its waiters."""
        if self._copies.get(c.model_id) is c:
            del self._copies[c.model_id]
        if not c.ready.done():
            c.ready.set_exception(err)
            c.ready.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self._room_freed.set()
        self._changed()

    def _entry(self, c: _Copy, extra: bool = False) -> eviction.Entry:
        return c.entry(extra, self._popularity.get(c.model_id, eviction.UNKNOWN))

    async def _make_room(self, c: _Copy) -> None:
        """Evict copies in :func:`mesh.core.eviction.eviction_order` until ``c`` fits,
        then reserve its room. While pinned copies hold the room, wait for
        one to be unpinned, up to the load timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cache.load_timeout_seconds
        while True:
            self._room_freed.clear()
            async with self._room:
                others = [
                    self._entry(x, self._is_extra(x.model_id)) for x in self._held() if x is not c
                ]
                guarded = self._churn_guard(others)
                try:
                    plan = eviction.plan_room(guarded, self.capacity_bytes, c.size_bytes)
                except errors.NoRoomNow:
                    if guarded is not others and self._fits(others, c):
                        # Room is held by recently used models, not busy ones:
                        # refuse now rather than thrash (or wait on a clock).
                        raise errors.NoRoomNow(
                            f"model {c.model_id!r} would evict models used within the last "
                            f"{self._cache.churn_threshold_seconds:g} s "
                            "(MESHSERVE_CHURN_THRESHOLD)"
                        ) from None
                    if loop.time() >= deadline:
                        raise
                else:
                    c.reserved = True
                    for victim in plan.evict:
                        log.info("evicting model %s to make room for %s", victim, c.model_id)
                        await self._evict(victim, f"evicted to make room for {c.model_id}")
                    return
            log.info("model %s waits for room: models in use or loading hold it", c.model_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room_freed.wait(), deadline - loop.time())

    def _fits(self, entries: list[eviction.Entry], c: _Copy) -> bool:
        try:
            eviction.plan_room(entries, self.capacity_bytes, c.size_bytes)
        except errors.InsufficientCapacity:
            return False
        return True

    def _churn_guard(self, entries: list[eviction.Entry]) -> list[eviction.Entry]:
        """Entries used within the churn threshold count as pinned."""
        threshold = self._cache.churn_threshold_seconds
        if threshold <= 0:
            return entries
        recent = time.time() - threshold
        return [dataclasses.replace(e, pinned=True) if e.last_used > recent else e for e in entries]

    async def _evict(self, model_id: str, reason: str) -> None:
        c = self._copies.get(model_id)
        if c is not None:
            self.metrics.evicted_model(model_id, (time.time() - c.last_used) * 1000)
        await self._unload(model_id, reason)

    def _is_extra(self, model_id: str) -> bool:
        """Whether another live node holds a ready copy, beyond the minimum."""
        rec = self._table.model(model_id)
        if rec is None:
            return False
        ready = placement.live_copies(rec, self._table.instances(), records.CopyState.LOADED)
        return len([i for i in ready if i != self.instance_id]) >= max(1, rec.min_copies)

    async def _shrink(self) -> None:
        async with self._room:
            entries = [self._entry(x) for x in self._held()]
            excess = eviction.used_bytes(entries) - self.capacity_bytes
            if excess <= 0:
                return
            with contextlib.suppress(errors.InsufficientCapacity):
                plan = eviction.plan_room(entries, self.capacity_bytes, 0)
                for victim in plan.evict:
                    await self._evict(victim, "the node is over capacity")

    async def unload(self, model_id: str, reason: str) -> None:
        """Unload the copy here, if any (waits for in-flight requests)."""
        await self._unload(model_id, reason)

    async def _unload(self, model_id: str, reason: str) -> None:
        c = self._copies.get(model_id)
        if c is None or c.state is not _State.LOADED:
            return
        c.state = _State.UNLOADING
        c.ready = asyncio.get_running_loop().create_future()
        try:
            for _ in range(300):  # in-flight requests finish first (bounded: 30 s)
                if c.in_flight == 0:
                    break
                await asyncio.sleep(0.1)
            log.info("unloading model %s: %s", model_id, reason)
            t0 = time.monotonic()
            try:
                await self._runtime.unload(model_id)
                ok = True
            except errors.MeshError as e:
                log.warning("runtime could not unload %s: %s", model_id, e)
                ok = False
            self.metrics.unloaded(model_id, (time.monotonic() - t0) * 1000, ok)
            with contextlib.suppress(Exception):
                await self._puller.remove(model_id)
            # Recorded before a waiting request may load the model again, so
            # this write cannot erase the next load's claim.
            with contextlib.suppress(errors.MeshError):
                await self._record(model_id, lambda r: r.without_copy(self.instance_id))
        finally:
            if self._copies.get(model_id) is c:
                del self._copies[model_id]
            c.ready.set_result(None)
            self._room_freed.set()
            self._changed()

    # -- etcd bookkeeping --------------------------------------------------------

    async def _record(self, model_id: str, change: _Change) -> records.ModelRecord | None:
        """Apply ``change`` to the model's record if it still exists (an
        unregistered model stays unregistered), and wait until this node's
        mirror shows it, so a status read after this call sees the change."""
        rec = await self._store.update_model(
            model_id, lambda r: r if r is None else change(r), self._table.model_entry(model_id)
        )
        await self._table.wait_until(lambda: self._table.model(model_id) == rec, 5.0)
        return rec

    def _on_table_change(self, kind: str, model_id: str) -> None:
        if kind != "model":
            return
        rec = self._table.model(model_id)
        if rec is None:
            self._popularity.pop(model_id, None)
        c = self._copies.get(model_id)
        if c is None or c.state is not _State.LOADED:
            return
        if rec is None:
            self._spawn(self._unload(model_id, "unregistered"))
        elif not rec.same_source(c.source):
            self._spawn(self._unload(model_id, "its definition changed"))

    async def _flush_last_used(self) -> None:
        """Write models' last-used times to etcd now and then, off the
        request path."""
        while True:
            await asyncio.sleep(self._cache.last_used_write_interval_seconds)
            touched, self._touched = self._touched, set()
            for model_id in touched:
                c = self._copies.get(model_id)
                if c is None:
                    continue
                used_ms = int(c.last_used * 1000)
                try:
                    await self._record(
                        model_id,
                        lambda r, t=used_ms: (  # type: ignore[misc]
                            r if r.last_used_ms >= t else dataclasses.replace(r, last_used_ms=t)
                        ),
                    )
                except errors.MeshError as e:
                    log.debug("last-used of %s not written: %s", model_id, e)
            if touched:
                self._changed()

    def _changed(self) -> None:
        for cb in self._changed_callbacks:
            cb()

    def _spawn(self, coro: _Coroutine) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)


async def _ready(c: _Copy, timeout: float | None, doing: str) -> None:
    """Wait for ``c``'s load or unload to end (its outcome raised), within
    ``timeout``; the wait is shielded: a caller that gives up ends no load."""
    try:
        await asyncio.wait_for(asyncio.shield(c.ready), timeout)
    except TimeoutError:
        raise errors.DeadlineExceeded(
            f"model {c.model_id!r} is {doing}; the request's deadline ran out"
        ) from None


class _Serving:
    """What :meth:`CacheManager.serving` returns. A plain class, not a
    generator-based context manager: every request enters one, and a copy
    that is loaded is taken without awaiting anything."""

    __slots__ = ("_copy", "_ignore", "_manager", "_model_id", "_timeout")

    def __init__(
        self,
        manager: CacheManager,
        model_id: str,
        timeout: float | None,
        ignore: frozenset[str],
    ) -> None:
        self._manager = manager
        self._model_id = model_id
        self._timeout = timeout
        self._ignore = ignore
        self._copy: _Copy | None = None

    async def __aenter__(self) -> None:
        m = self._manager
        c = m._copies.get(self._model_id)
        if c is None or c.state is not _State.LOADED:
            t0 = time.monotonic()
            c = await m._ready_copy(self._model_id, self._timeout, ignore=self._ignore)
            m.metrics.waited_for_load(self._model_id, (time.monotonic() - t0) * 1000)
        c.in_flight += 1
        self._copy = c

    async def __aexit__(self, *exc_info: object) -> None:
        if self._copy is not None:
            self._manager._served(self._copy)
            self._copy = None
