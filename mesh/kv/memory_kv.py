"""An in-process :class:`mesh.kv.kv_store.KVStore` with etcd's semantics, for tests.

Higher layers (the placement table, the record store, the cache manager) are
unit-tested against this store instead of a server. It behaves like a
single-node etcd where it matters to them:

- one store-wide revision, starting at 1 and bumped by every write; each key
  remembers the revision of its last write (its mod revision);
- compare-and-set on the mod revision (0: the key must be absent);
- prefix watches from any revision still in the kept history, delivered in
  revision order; a watch asked to start before the history kept (after
  :meth:`MemoryKV.compact`) raises :class:`mesh.kv.kv_store.WatchLost`, as etcd does;
- leases whose keys vanish (one revision, one delete event per key) when the
  lease expires by the clock (injectable), is revoked, or is ended by
  :meth:`MemoryKV.expire_lease`.

Test hooks: :meth:`compact`, :meth:`expire_lease`, :meth:`expire_due`,
:meth:`break_watches` (every open watch raises the given error, as when a
stream breaks) and :attr:`available` (when false every call raises
:class:`mesh.core.errors.StoreUnavailable`, as when etcd is down: as etcd
does, no lease expires meanwhile, and every lease gets a whole TTL again
when the store comes back).

It claims no more than etcd: ``tests/mesh/kv/test_kv_contract.py`` runs the
same tests on both. Where it is harsher, that is on purpose: a watch here
falls behind whenever its consumer has not asked for the next batch, so a
compaction can lose a watch that is already open (etcd loses only a watch
that lags behind, a slow one); and a lease expires exactly a TTL after its
last renewal (etcd may grant more than asked, and checks expiries only
twice a second).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable

from mesh.core import errors
from mesh.kv import kv_store


@dataclasses.dataclass
class _Entry:
    value: bytes
    mod_revision: int
    lease: int


@dataclasses.dataclass
class _Lease:
    ttl: float
    expires_at: float
    keys: set[str] = dataclasses.field(default_factory=set)


class MemoryKV:
    """A KV store in a dict, with revisions, history, watches and leases."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        self._revision = 1  # etcd's revision of an empty store
        self._history: list[kv_store.WatchEvent] = []  # in revision order
        self._compacted = 0  # revisions <= this are no longer in the history
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(7587_0000_0001)
        self._changed = asyncio.Event()
        self._watches: dict[int, BaseException | None] = {}  # open watch → pending failure
        self._watch_ids = itertools.count(1)
        self._available = True
        self.closed = False

    # --- introspection for tests -----------------------------------------

    @property
    def available(self) -> bool:
        """When false, every call raises StoreUnavailable (etcd is down)."""
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        if value and not self._available:
            # etcd's new leader extends every lease to a whole TTL.
            now = self._clock()
            for lease in self._leases.values():
                lease.expires_at = max(lease.expires_at, now + lease.ttl)
                self._schedule_expiry(lease.ttl)
        self._available = value

    @property
    def revision(self) -> int:
        """The store's current revision."""
        return self._revision

    @property
    def open_watches(self) -> int:
        """How many watches are open (started and not yet closed)."""
        return len(self._watches)

    def leases(self) -> dict[int, set[str]]:
        """Live lease id → the keys attached to it."""
        return {i: set(lease.keys) for i, lease in self._leases.items()}

    # --- plumbing ---------------------------------------------------------

    def _check(self) -> None:
        if not self._available or self.closed:
            raise errors.StoreUnavailable("memory store is unavailable")
        self.expire_due()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _write(self, key: str, value: bytes, lease: int) -> int:
        if lease and lease not in self._leases:
            raise errors.Conflict(f"memory store: put {key!r}: lease {lease} not found")
        self._revision += 1
        old = self._data.get(key)
        if old is not None and old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)
        self._data[key] = _Entry(value, self._revision, lease)
        if lease:
            self._leases[lease].keys.add(key)
        self._history.append(
            kv_store.WatchEvent(kv_store.EventKind.PUT, key, value, self._revision)
        )
        self._notify()
        return self._revision

    def _remove(self, keys: list[str]) -> None:
        """Delete existing ``keys`` in one revision."""
        if not keys:
            return
        self._revision += 1
        for key in keys:
            entry = self._data.pop(key)
            if entry.lease and entry.lease in self._leases:
                self._leases[entry.lease].keys.discard(key)
            self._history.append(
                kv_store.WatchEvent(kv_store.EventKind.DELETE, key, b"", self._revision)
            )
        self._notify()

    # --- KVStore ----------------------------------------------------------

    async def get(self, key: str) -> kv_store.KeyValue | None:
        self._check()
        entry = self._data.get(key)
        return None if entry is None else kv_store.KeyValue(key, entry.value, entry.mod_revision)

    async def list_prefix(self, prefix: str) -> kv_store.Snapshot:
        self._check()
        items = tuple(
            kv_store.KeyValue(k, e.value, e.mod_revision)
            for k, e in sorted(self._data.items())
            if k.startswith(prefix)
        )
        return kv_store.Snapshot(items, self._revision)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self._check()
        return self._write(key, value, lease)

    def _mod_revision(self, key: str, expected: int) -> int:
        if expected < 0:
            raise ValueError(f"expected_mod_revision must be >= 0, not {expected}")
        entry = self._data.get(key)
        return 0 if entry is None else entry.mod_revision

    async def compare_and_put(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int = 0
    ) -> int | None:
        self._check()
        if self._mod_revision(key, expected_mod_revision) != expected_mod_revision:
            return None
        return self._write(key, value, lease)

    async def compare_and_delete(self, key: str, expected_mod_revision: int) -> bool:
        self._check()
        if self._mod_revision(key, expected_mod_revision) != expected_mod_revision:
            return False
        if key not in self._data:
            return False
        self._remove([key])
        return True

    async def delete(self, key: str) -> bool:
        self._check()
        if key not in self._data:
            return False
        self._remove([key])
        return True

    async def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[list[kv_store.WatchEvent]]:
        """Changes under ``prefix`` from ``start_revision`` (0: from now on)."""
        self._check()
        watch_id = next(self._watch_ids)
        self._watches[watch_id] = None
        next_rev = start_revision if start_revision > 0 else self._revision + 1
        try:
            while True:
                failure = self._watches[watch_id]
                if failure is not None:
                    raise failure
                if self.closed:
                    raise errors.StoreUnavailable("memory store closed under a watch")
                if next_rev <= self._compacted:
                    raise kv_store.WatchLost(
                        f"memory store: watch {prefix!r} from revision {next_rev}: "
                        f"history compacted up to {self._compacted + 1}"
                    )
                start = bisect.bisect_left(self._history, next_rev, key=lambda e: e.mod_revision)
                batch = [e for e in self._history[start:] if e.key.startswith(prefix)]
                next_rev = max(next_rev, self._revision + 1)
                if batch:
                    yield batch
                else:
                    await self._changed.wait()
        finally:
            del self._watches[watch_id]

    async def grant_lease(self, ttl_seconds: int) -> int:
        self._check()
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(ttl_seconds, self._clock() + ttl_seconds)
        self._schedule_expiry(ttl_seconds)
        return lease_id

    async def keep_alive(self, lease: int) -> bool:
        self._check()
        entry = self._leases.get(lease)
        if entry is None:
            return False
        entry.expires_at = self._clock() + entry.ttl
        self._schedule_expiry(entry.ttl)
        return True

    async def revoke_lease(self, lease: int) -> None:
        self._check()
        self.expire_lease(lease)

    async def close(self) -> None:
        self.closed = True
        self._notify()

    # --- test hooks -------------------------------------------------------

    def expire_lease(self, lease: int) -> None:
        """End ``lease`` now, deleting its keys (no-op for an unknown lease)."""
        entry = self._leases.pop(lease, None)
        if entry is not None:
            self._remove(sorted(k for k in entry.keys if k in self._data))

    def expire_due(self) -> None:
        """Expire every lease whose time has passed by the clock (none while
        the store is down: nobody there counts)."""
        if not self._available:
            return
        now = self._clock()
        for lease_id in [i for i, e in self._leases.items() if e.expires_at <= now]:
            self.expire_lease(lease_id)

    def compact(self, revision: int) -> None:
        """Forget the history up to ``revision`` (exclusive, as etcd keeps the
        compacted revision itself readable): watches that need older
        revisions raise :class:`mesh.kv.kv_store.WatchLost`."""
        revision = min(revision, self._revision)
        self._compacted = max(self._compacted, revision - 1)
        start = bisect.bisect_right(self._history, self._compacted, key=lambda e: e.mod_revision)
        del self._history[:start]
        self._notify()

    def break_watches(self, error: BaseException | None = None) -> None:
        """Make every open watch raise ``error`` (default: StoreUnavailable),
        as when the stream to etcd breaks."""
        for watch_id in self._watches:
            self._watches[watch_id] = error or errors.StoreUnavailable(
                "memory store: watch stream broken"
            )
        self._notify()

    def _schedule_expiry(self, ttl: float) -> None:
        """With the real clock, expire on time even if nobody calls the store."""
        if self._clock is not time.monotonic:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(ttl + 0.01, self.expire_due)
