"""The KV store interface the mesh is written against.

etcd is the production store (:mod:`mesh.kv.etcd_kv`); :mod:`mesh.kv.memory_kv` is
an in-process one with the same semantics, the seam that lets placement-table
and cache-manager logic be tested without a server. Keys are ``str``, values
``bytes``; every stored value carries its ``mod_revision`` (the store-wide
revision of its last write), which is what compare-and-set compares.

Watches deliver batches of events in revision order. When the store cannot
resume a watch where it left off (history compacted), the iterator raises
:class:`WatchLost`, and the watcher re-lists and starts again from the list's
revision: the mirror is then exact again, nothing is lost.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class KeyValue:
    """A stored key, its value and the revision of its last write."""

    key: str
    value: bytes
    mod_revision: int


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Every key under a prefix, as of store revision ``revision``."""

    items: tuple[KeyValue, ...]
    revision: int


class EventKind(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    """One change: for ``DELETE`` the value is empty."""

    kind: EventKind
    key: str
    value: bytes
    mod_revision: int


class WatchLost(Exception):
    """The watch cannot continue from the requested revision: re-list."""


class KVStore(Protocol):
    """What the mesh needs of a KV store. Every method may raise
    :class:`mesh.core.errors.StoreUnavailable` when the store cannot be reached."""

    async def get(self, key: str) -> KeyValue | None:
        """The key's value, or ``None`` if absent."""
        ...

    async def list_prefix(self, prefix: str) -> Snapshot:
        """Every key starting with ``prefix``, at one revision."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write unconditionally; returns the new mod revision."""
        ...

    async def compare_and_put(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int = 0
    ) -> int | None:
        """Write only if the key's mod revision is ``expected_mod_revision``
        (0: only if the key is absent). Returns the new mod revision, or
        ``None`` if the comparison failed and nothing was written."""
        ...

    async def compare_and_delete(self, key: str, expected_mod_revision: int) -> bool:
        """Delete only if the key's mod revision matches; ``True`` if deleted."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete unconditionally; ``True`` if the key existed."""
        ...

    def watch_prefix(self, prefix: str, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Changes under ``prefix`` from ``start_revision`` on (inclusive),
        in batches. Survives store restarts by itself; raises
        :class:`WatchLost` when it cannot resume without a gap."""
        ...

    async def grant_lease(self, ttl_seconds: int) -> int:
        """A new lease id; keys put with it vanish ``ttl_seconds`` after the
        last keep-alive."""
        ...

    async def keep_alive(self, lease: int) -> bool:
        """Refresh a lease once; ``False`` if it has already expired."""
        ...

    async def revoke_lease(self, lease: int) -> None:
        """End a lease now, deleting its keys."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...
