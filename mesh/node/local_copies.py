"""The copies of models this node holds, their pins and request counters.

The cache manager (:mod:`mesh.node.cache_manager`) decides what to load and
evict; this module is what it decides over: each copy's phase (loading,
loaded, unloading), what pins it (a load, requests in flight, requests
waiting for its load), when it was used and how often, and the
``async with`` that a request holds a copy by. All of it lives on one event
loop and is changed only by the manager and the requests it serves.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import time
from collections.abc import Callable
from typing import Protocol

from mesh.core import errors, eviction, records


class CopyPhase(enum.Enum):
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"


class RecentRequests:
    """When requests were served, over the last minute."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float) -> None:
        self._times.append(now)

    def per_minute(self, now: float) -> int:
        """Requests within the minute before ``now`` (older ones are dropped)."""
        while self._times and self._times[0] < now - 60:
            self._times.popleft()
        return len(self._times)


@dataclasses.dataclass
class LocalCopy:
    """A model held (or being loaded) here. Mutable, owned by the manager."""

    model_id: str
    source: records.ModelRecord
    size_bytes: int
    phase: CopyPhase
    ready: asyncio.Future[None]
    """Ends when the current load or unload ends (with the load's error)."""
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
    released: bool = False
    """The runtime unloaded it: its memory is free (and may already be
    another load's), while its files and record are still being settled."""
    recent: RecentRequests = dataclasses.field(default_factory=RecentRequests)
    recording: asyncio.Future[None] | None = None
    """The write that records the loaded copy in etcd, while it is in
    flight: the first requests run beside it and answer once it ends (so a
    status read after an answer says LOADED), and the copy is not unloaded
    before it ends."""

    @classmethod
    def loading(
        cls,
        model_id: str,
        source: records.ModelRecord,
        size_bytes: int,
        *,
        extra_copy: bool = False,
        ignore: frozenset[str] = frozenset(),
    ) -> LocalCopy:
        """A copy whose load starts now (on the running event loop)."""
        return cls(
            model_id=model_id,
            source=source,
            size_bytes=size_bytes,
            phase=CopyPhase.LOADING,
            ready=asyncio.get_running_loop().create_future(),
            last_used=time.time(),
            extra_copy=extra_copy,
            ignore=ignore,
        )

    def rpm(self, now: float) -> int:
        return self.recent.per_minute(now)

    def entry(self, extra: bool = False, popularity: float = eviction.UNKNOWN) -> eviction.Entry:
        """This copy as the eviction rules see it: pinned while it loads,
        unloads, serves, or has requests waiting for it."""
        return eviction.Entry(
            self.model_id,
            self.size_bytes,
            self.last_used,
            pinned=self.phase is not CopyPhase.LOADED
            or self.in_flight > 0
            or self.waiting > 0
            or self.recording is not None,
            extra=extra,
            popularity=popularity,
        )

    async def wait(self, timeout: float | None, doing: str) -> None:
        """Wait for this copy's load or unload to end (its outcome raised),
        within ``timeout``; the wait is shielded: a caller that gives up ends
        no load."""
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), timeout)
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"model {self.model_id!r} is {doing}; the request's deadline ran out"
            ) from None


class ChangeSignal:
    """A wake-up for everyone waiting when something changed, that no waiter
    can miss: take :meth:`armed` *before* checking your condition, then wait
    on it; any :meth:`fire` after that sets it for good. (A shared event that
    waiters clear could be cleared by one between another's check and wait,
    which would then sleep through the change.)"""

    __slots__ = ("_event", "_taken")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._taken = False

    def armed(self) -> asyncio.Event:
        """The event the next :meth:`fire` sets."""
        self._taken = True
        return self._event

    def fire(self) -> None:
        # Nobody took the event since the last fire, so nobody can be waiting
        # on it: keep it (every request's release fires; most find no waiter).
        if self._taken:
            self._event.set()
            self._event = asyncio.Event()
            self._taken = False


async def until_idle(copy: LocalCopy, released: ChangeSignal, timeout: float) -> None:
    """Wait until no request is in flight on ``copy``, for at most
    ``timeout`` seconds; ``released`` fires whenever a copy's last request
    ends (the cache manager's room-freed signal)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        fired = released.armed()
        if copy.in_flight == 0 or loop.time() >= deadline:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fired.wait(), deadline - loop.time())


class LocalCopies:
    """This node's copies by model id, with the node's request counters and
    each model's popularity (:func:`mesh.core.eviction.bumped`)."""

    def __init__(self, eviction_policy: str, popularity_half_life_seconds: float) -> None:
        self._by_model: dict[str, LocalCopy] = {}
        self._requests = RecentRequests()
        self._count_popularity = eviction_policy == "popularity"
        self._half_life = popularity_half_life_seconds
        self._popularity: dict[str, float] = {}
        """Kept after an eviction; dropped when the model is unregistered."""

    def get(self, model_id: str) -> LocalCopy | None:
        return self._by_model.get(model_id)

    def add(self, copy: LocalCopy) -> None:
        self._by_model[copy.model_id] = copy

    def discard(self, copy: LocalCopy) -> None:
        """Forget ``copy``, unless another copy of its model replaced it."""
        if self._by_model.get(copy.model_id) is copy:
            del self._by_model[copy.model_id]

    def last_used(self, model_id: str) -> float | None:
        """When the model's copy here was last used (``None``: no copy here)."""
        c = self._by_model.get(model_id)
        return None if c is None else c.last_used

    def model_ids(self) -> list[str]:
        return list(self._by_model)

    def clear(self) -> None:
        self._by_model.clear()

    def forget_popularity(self, model_id: str) -> None:
        self._popularity.pop(model_id, None)

    # -- the request counters -----------------------------------------------

    def served(self, copy: LocalCopy) -> bool:
        """A request on ``copy`` is done: release it and count the use;
        whether that was the copy's last request in flight (it may be evicted)."""
        copy.in_flight -= 1
        now = time.time()
        copy.last_used = now
        copy.recent.add(now)
        self._requests.add(now)
        if self._count_popularity:
            self._popularity[copy.model_id] = eviction.bumped(
                self._popularity.get(copy.model_id, eviction.UNKNOWN), now, self._half_life
            )
        return copy.in_flight == 0

    def requests_per_minute(self) -> int:
        return self._requests.per_minute(time.time())

    def model_rpm(self) -> dict[str, int]:
        """Requests per minute served by each ready copy here."""
        now = time.time()
        return {m: c.rpm(now) for m, c in self._by_model.items() if c.phase is CopyPhase.LOADED}

    # -- what the node holds ---------------------------------------------------

    def entry(self, copy: LocalCopy, extra: bool = False) -> eviction.Entry:
        popularity = self._popularity.get(copy.model_id, eviction.UNKNOWN)
        now = time.time()
        return copy.entry(extra, eviction.current(popularity, copy.last_used, now, self._half_life))

    def held(self) -> list[LocalCopy]:
        """Copies that take room: all but loads not yet given any, and
        copies the runtime has released (their bytes may already be reserved
        by the load they were evicted for; counted twice, the node looked
        over capacity and evicted one model more)."""
        return [
            c
            for c in self._by_model.values()
            if (c.phase is not CopyPhase.LOADING or c.reserved) and not c.released
        ]

    def used_bytes(self) -> int:
        """Bytes of every copy here, loads still waiting for room included
        (what other nodes should count on this node for placement)."""
        return eviction.used_bytes(c.entry() for c in self._by_model.values() if not c.released)

    def held_bytes(self) -> int:
        """Bytes of the copies that took room (:meth:`held`)."""
        return eviction.used_bytes(c.entry() for c in self.held())

    def model_count(self) -> int:
        return len(self._by_model)

    def loading_count(self) -> int:
        return sum(1 for c in self._by_model.values() if c.phase is CopyPhase.LOADING)

    def lru_time_ms(self) -> int:
        return int(eviction.lru_time(c.entry() for c in self.held()) * 1000)

    def victim_rank(self, is_extra: Callable[[str], bool]) -> float | None:
        """:func:`mesh.core.eviction.victim_rank` of the copy that would be
        evicted first here now (``None``: none may be), to 0.01 (so that
        the instance record is not rewritten for every request)."""
        victim = eviction.first_victim(self.entry(c, is_extra(c.model_id)) for c in self.held())
        return None if victim is None else round(eviction.victim_rank(victim), 2)

    def holds(self, model_id: str) -> bool:
        """Whether a ready copy of the model is here."""
        c = self._by_model.get(model_id)
        return c is not None and c.phase is CopyPhase.LOADED

    def has_copy(self, model_id: str) -> bool:
        """Whether a copy is here, ready or loading."""
        c = self._by_model.get(model_id)
        return c is not None and c.phase is not CopyPhase.UNLOADING

    def recently_used(self, within_seconds: float) -> list[str]:
        """Ready models used within the window, most recent first."""
        cutoff = time.time() - within_seconds
        used = [
            c
            for c in self._by_model.values()
            if c.phase is CopyPhase.LOADED and c.last_used >= cutoff
        ]
        return [c.model_id for c in sorted(used, key=lambda c: c.last_used, reverse=True)]


class CopyReports:
    """What a node reports of its copies (the cache manager's read-only
    half, over its :class:`LocalCopies`)."""

    _copies: LocalCopies

    def used_bytes(self) -> int:
        """Bytes of every copy here, loads still waiting for room included
        (what other nodes should count on this node for placement)."""
        return self._copies.used_bytes()

    def model_count(self) -> int:
        return self._copies.model_count()

    def loading_count(self) -> int:
        return self._copies.loading_count()

    def lru_time_ms(self) -> int:
        return self._copies.lru_time_ms()

    def requests_per_minute(self) -> int:
        return self._copies.requests_per_minute()

    def holds(self, model_id: str) -> bool:
        """Whether a ready copy of the model is here."""
        return self._copies.holds(model_id)

    def has_copy(self, model_id: str) -> bool:
        """Whether a copy is here, ready or loading."""
        return self._copies.has_copy(model_id)

    def model_rpm(self) -> dict[str, int]:
        """Requests per minute served by each ready copy here."""
        return self._copies.model_rpm()

    def recently_used(self, within_seconds: float) -> list[str]:
        """Ready models used within the window, most recent first."""
        return self._copies.recently_used(within_seconds)


class CopyLender(Protocol):
    """What :class:`ServingCopy` borrows a copy from (the cache manager)."""

    async def copy_for_request(
        self, model_id: str, timeout: float | None, ignore: frozenset[str]
    ) -> LocalCopy:
        """A ready copy of ``model_id``, loaded first if need be."""
        ...

    def release(self, copy: LocalCopy) -> None:
        """A request on ``copy`` is done."""
        ...


class ServingCopy:
    """What :meth:`mesh.node.cache_manager.CacheManager.serving` returns: a
    ready copy held for the duration of an ``async with`` block. A plain
    class, not a generator-based context manager: every request enters one,
    and a copy that is loaded is taken without awaiting anything."""

    __slots__ = ("_copies", "_copy", "_ignore", "_lender", "_model_id", "_timeout")

    def __init__(
        self,
        lender: CopyLender,
        copies: LocalCopies,
        model_id: str,
        timeout: float | None,
        ignore: frozenset[str],
    ) -> None:
        self._lender = lender
        self._copies = copies
        self._model_id = model_id
        self._timeout = timeout
        self._ignore = ignore
        self._copy: LocalCopy | None = None

    async def __aenter__(self) -> None:
        c = self._copies.get(self._model_id)
        if c is None or c.phase is not CopyPhase.LOADED:
            c = await self._lender.copy_for_request(self._model_id, self._timeout, self._ignore)
        c.in_flight += 1
        self._copy = c

    async def __aexit__(self, *exc_info: object) -> None:
        c, self._copy = self._copy, None
        if c is None:
            return
        try:
            if c.recording is not None:  # a first request answers once the copy is recorded
                await asyncio.shield(c.recording)
        finally:
            self._lender.release(c)
