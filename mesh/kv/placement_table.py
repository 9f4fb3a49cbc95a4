"""The node's in-memory mirror of the placement table.

The request path must never wait on etcd for a cache hit (DESIGN.md §1), so
every node keeps every record under the prefix in memory: :class:`PlacementTable`
lists the prefix once, then applies a watch from the listing's revision on.
Reads (:meth:`PlacementTable.model` and friends) are plain dict lookups.

The mirror is exact at :attr:`PlacementTable.revision`. When the watch cannot
continue (:class:`mesh.kv.kv_store.WatchLost` after a compaction, or any other break),
the table re-lists and diffs the listing against the mirror, so deleted keys
disappear and nothing is lost; it keeps retrying while the store is down.
A record that does not parse is logged and left out of the mirror; it never
stops the mirror. Writers that need to read their own write wait with
:meth:`PlacementTable.wait_for_revision` for the revision their
compare-and-set returned. A reader that misses a record which may have been
written a moment ago elsewhere (a model registered through another node)
asks :meth:`PlacementTable.catch_up`: the table reads that one key from the
store and waits, briefly, until the mirror has applied it. Only the table
reads the store; the data plane reads the mirror.

Takes any :class:`mesh.kv.kv_store.KVStore`; imports no etcd or gRPC library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections.abc import Callable, Mapping, Sequence

from mesh.core import errors, records
from mesh.kv import kv_store, records_store

_log = logging.getLogger(__name__)

CATCH_UP_SECONDS = 2.0
"""How long :meth:`PlacementTable.catch_up` waits for the mirror to apply a
record the store already holds."""

Listener = Callable[[str, str], None]
"""Called with ``(kind, id)`` — kind one of ``model``, ``vmodel``,
``instance`` — after a change to that record is applied."""


class PlacementTable:
    """Every model, vmodel and instance record under ``prefix``, kept current."""

    def __init__(
        self,
        store_: kv_store.KVStore,
        prefix: str,
        *,
        retry_delay: float = 0.1,
        max_retry_delay: float = 2.0,
    ) -> None:
        self.kv = store_
        self.prefix = prefix.strip("/")
        self._keys = records_store.RecordStore(store_, self.prefix)
        """The key layout of the records (for :meth:`catch_up`'s one read)."""
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._models: dict[str, records.ModelRecord] = {}
        self._vmodels: dict[str, records.VModelRecord] = {}
        self._instances: dict[str, records.InstanceRecord] = {}
        self._revs: dict[tuple[str, str], int] = {}
        self._revision = 0
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.relists = 0
        """How many times the mirror was rebuilt from a listing after start."""

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """List the prefix, apply it, and keep watching in the background.
        Returns once the first listing is applied; raises
        :class:`mesh.core.errors.StoreUnavailable` if the store cannot be listed."""
        if self._task is not None:
            return
        snapshot = await self.kv.list_prefix(self._watch_prefix)
        self._apply_snapshot(snapshot)
        self._task = asyncio.create_task(
            self._run(snapshot.revision + 1), name=f"placement-table-{self.prefix}"
        )

    async def stop(self) -> None:
        """Stop watching (the mirror keeps its last state)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def _watch_prefix(self) -> str:
        return f"{self.prefix}/"

    # --- reads ------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The store revision the mirror is exact at."""
        return self._revision

    def model(self, model_id: str) -> records.ModelRecord | None:
        return self._models.get(model_id)

    def model_entry(self, model_id: str) -> tuple[records.ModelRecord, int] | None:
        """The model's record and the mod revision it was written at."""
        record = self._models.get(model_id)
        return None if record is None else (record, self._revs[(records_store.MODEL, model_id)])

    def vmodel(self, vmodel_id: str) -> records.VModelRecord | None:
        return self._vmodels.get(vmodel_id)

    def vmodel_entry(self, vmodel_id: str) -> tuple[records.VModelRecord, int] | None:
        record = self._vmodels.get(vmodel_id)
        return None if record is None else (record, self._revs[(records_store.VMODEL, vmodel_id)])

    def instance(self, instance_id: str) -> records.InstanceRecord | None:
        return self._instances.get(instance_id)

    def instance_entry(self, instance_id: str) -> tuple[records.InstanceRecord, int] | None:
        record = self._instances.get(instance_id)
        return (
            None if record is None else (record, self._revs[(records_store.INSTANCE, instance_id)])
        )

    def models(self) -> Mapping[str, records.ModelRecord]:
        """A live read-only view of every model (copy it before iterating
        across an ``await``: the mirror changes between awaits)."""
        return types.MappingProxyType(self._models)

    def vmodels(self) -> Mapping[str, records.VModelRecord]:
        """A live read-only view of every vmodel."""
        return types.MappingProxyType(self._vmodels)

    def instances(self) -> Mapping[str, records.InstanceRecord]:
        """A live read-only view of every instance."""
        return types.MappingProxyType(self._instances)

    # --- waiting ----------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(kind, id)`` after each applied change. Listeners
        run inside the watch loop: keep them short and non-blocking."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float | None,
    ) -> bool:
        """Wait until ``predicate()`` is true, checking it after each applied
        change; ``False`` if ``timeout`` seconds pass first."""
        if predicate():
            return True
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self._changed.wait()
                    if predicate():
                        return True
        except TimeoutError:
            return predicate()

    async def wait_for_revision(
        self,
        revision: int,
        timeout: float | None,
    ) -> bool:
        """Wait until the mirror has applied ``revision`` (a revision written
        under the prefix, e.g. one a compare-and-set returned)."""
        return await self.wait_until(lambda: self._revision >= revision, timeout)

    async def catch_up(
        self,
        record_id: str,
        kinds: Sequence[str],
        timeout: float | None = CATCH_UP_SECONDS,
    ) -> bool:
        """Wait (briefly) for the mirror to show a record the store already
        has: the first of ``kinds`` (``model``, ``vmodel``, ``instance``)
        stored under ``record_id``. ``False`` at once if the store has none
        of them, or after ``timeout`` if the mirror has not applied it yet.
        Raises :class:`mesh.core.errors.StoreUnavailable` if the store cannot
        be read, :class:`mesh.core.errors.InvalidRequest` for an empty id."""
        for kind in kinds:
            item = await self.kv.get(self._keys.key(kind, record_id))
            if item is not None:
                return await self.wait_for_revision(item.mod_revision, timeout)
        return False

    # --- applying changes -------------------------------------------------

    def _signal(self, changed: list[tuple[str, str]]) -> None:
        for kind, record_id in changed:
            for listener in list(self._listeners):
                try:
                    listener(kind, record_id)
                except Exception:
                    _log.exception("placement table listener %r failed", listener)
        self._changed.set()
        self._changed = asyncio.Event()

    def _put(self, kind: str, record_id: str, value: bytes, mod_revision: int) -> bool:
        """Mirror one stored value; ``True`` if the mirror changed."""
        try:
            record = records_store.parse(kind, value)
        except errors.InvalidRequest as e:
            _log.warning(
                "placement table: %s/%s at revision %d is not a valid %s record, "
                "left out of the mirror: %s",
                records_store.KIND_FOLDERS[kind],
                record_id,
                mod_revision,
                kind,
                e.message,
            )
            return self._remove(kind, record_id)
        if isinstance(record, records.ModelRecord):
            self._models[record_id] = record
        elif isinstance(record, records.VModelRecord):
            self._vmodels[record_id] = record
        else:
            self._instances[record_id] = record
        self._revs[(kind, record_id)] = mod_revision
        return True

    def _remove(self, kind: str, record_id: str) -> bool:
        if self._revs.pop((kind, record_id), None) is None:
            return False
        if kind == records_store.MODEL:
            self._models.pop(record_id, None)
        elif kind == records_store.VMODEL:
            self._vmodels.pop(record_id, None)
        else:
            self._instances.pop(record_id, None)
        return True

    def _apply_events(self, batch: list[kv_store.WatchEvent]) -> None:
        changed: list[tuple[str, str]] = []
        for event in batch:
            where = records_store.split_key(self.prefix, event.key)
            if where is None:
                continue
            kind, record_id = where
            if event.kind is kv_store.EventKind.PUT:
                touched = self._put(kind, record_id, event.value, event.mod_revision)
            else:
                touched = self._remove(kind, record_id)
            if touched:
                changed.append(where)
        if batch:
            self._revision = max(self._revision, batch[-1].mod_revision)
        self._signal(changed)

    def _apply_snapshot(self, snapshot: kv_store.Snapshot) -> None:
        """Make the mirror equal to ``snapshot``, touching only what differs."""
        changed: list[tuple[str, str]] = []
        present: set[tuple[str, str]] = set()
        for item in snapshot.items:
            where = records_store.split_key(self.prefix, item.key)
            if where is None:
                continue
            present.add(where)
            if self._revs.get(where) == item.mod_revision:
                continue
            kind, record_id = where
            if self._put(kind, record_id, item.value, item.mod_revision):
                changed.append(where)
        for where in [w for w in self._revs if w not in present]:
            self._remove(*where)
            changed.append(where)
        self._revision = snapshot.revision
        self._signal(changed)

    # --- the watch loop ---------------------------------------------------

    async def _run(self, next_revision: int) -> None:
        delay = self.retry_delay
        while True:
            lost = False
            batches = self.kv.watch_prefix(self._watch_prefix, next_revision)
            try:
                try:
                    async for batch in batches:
                        self._apply_events(batch)
                        if batch:
                            next_revision = batch[-1].mod_revision + 1
                        delay = self.retry_delay
                finally:
                    # Close the store's stream now, not when the GC finds it.
                    aclose = getattr(batches, "aclose", None)
                    if aclose is not None:
                        await aclose()
                _log.warning("placement table: the watch on %r ended; re-listing", self.prefix)
            except kv_store.WatchLost as e:
                lost = True
                _log.warning("placement table: watch lost (%s); re-listing", e)
            except errors.StoreUnavailable as e:
                _log.warning("placement table: watch broke (%s); re-listing", e.message)
            except Exception:
                _log.exception("placement table: watch failed; re-listing")
            if not lost or delay > self.retry_delay:
                # Not a plain compaction, or failing again at once: back off.
                await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)
            snapshot = await self._relist()
            self._apply_snapshot(snapshot)
            self.relists += 1
            _log.info(
                "placement table: re-listed %d keys at revision %d",
                len(snapshot.items),
                snapshot.revision,
            )
            next_revision = snapshot.revision + 1

    async def _relist(self) -> kv_store.Snapshot:
        delay = self.retry_delay
        while True:
            try:
                return await self.kv.list_prefix(self._watch_prefix)
            except errors.StoreUnavailable as e:
                _log.warning(
                    "placement table: cannot list %r (%s); retrying in %.1f s",
                    self.prefix,
                    e.message,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)
