"""Typed access to the mesh's records in a KV store.

Everything that writes placement goes through :class:`RecordStore`: it owns
the key layout of DESIGN.md §4 and the compare-and-set loop that makes racing
writers safe. A writer never builds a record from a stale read and stores it
blindly; it hands :meth:`RecordStore.update_model` a function from the current
record to the next one, and the store re-reads and re-applies it whenever
another writer got in first (the key's mod revision changed).

Works over any :class:`mesh.kv.kv_store.KVStore` (etcd in production, the in-memory
store in unit tests); imports no etcd or gRPC library.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from mesh.core import errors, records
from mesh.kv import kv_store

_log = logging.getLogger(__name__)

MODEL = "model"
VMODEL = "vmodel"
INSTANCE = "instance"

KIND_FOLDERS: dict[str, str] = {MODEL: "registry", VMODEL: "vmodels", INSTANCE: "instances"}
"""Record kind → its folder under the prefix."""


_R = TypeVar("_R", records.ModelRecord, records.VModelRecord, records.InstanceRecord)

Record = records.ModelRecord | records.VModelRecord | records.InstanceRecord


def split_key(prefix: str, key: str) -> tuple[str, str] | None:
    """``(kind, id)`` of a record key under ``prefix``, or ``None`` for any
    other key (the leader key, foreign keys)."""
    rest = key.removeprefix(f"{prefix}/")
    if rest == key:
        return None
    folder, sep, record_id = rest.partition("/")
    if not sep or not record_id:
        return None
    for kind, name in KIND_FOLDERS.items():
        if name == folder:
            return kind, record_id
    return None


def parse(kind: str, value: bytes) -> Record:
    """The record of ``kind`` in ``value``; :class:`mesh.core.errors.InvalidRequest`
    if the value is malformed."""
    if kind == MODEL:
        return records.ModelRecord.from_json(value)
    if kind == VMODEL:
        return records.VModelRecord.from_json(value)
    if kind == INSTANCE:
        return records.InstanceRecord.from_json(value)
    raise ValueError(f"unknown record kind {kind!r}")


class RecordStore:
    """The three record kinds of DESIGN.md §4 under one key prefix.

    ``max_attempts`` bounds the compare-and-set loops: past it, a writer that
    keeps losing races gets :class:`mesh.core.errors.Conflict`.
    """

    def __init__(self, store: kv_store.KVStore, prefix: str, *, max_attempts: int = 16) -> None:
        self.kv = store
        self.prefix = prefix.strip("/")
        self.max_attempts = max_attempts

    # --- keys -------------------------------------------------------------

    def folder(self, kind: str) -> str:
        """``<prefix>/<folder>/``: every key of one kind starts with it."""
        return f"{self.prefix}/{KIND_FOLDERS[kind]}/"

    def key(self, kind: str, record_id: str) -> str:
        if not record_id:
            raise errors.InvalidRequest(f"empty {kind} id")
        return self.folder(kind) + record_id

    def model_key(self, model_id: str) -> str:
        return self.key(MODEL, model_id)

    def vmodel_key(self, vmodel_id: str) -> str:
        return self.key(VMODEL, vmodel_id)

    def instance_key(self, instance_id: str) -> str:
        return self.key(INSTANCE, instance_id)

    # --- reads ------------------------------------------------------------

    async def get_model(self, model_id: str) -> tuple[records.ModelRecord, int] | None:
        """The model's record and its mod revision, or ``None``."""
        item = await self.kv.get(self.model_key(model_id))
        return (
            None if item is None else (records.ModelRecord.from_json(item.value), item.mod_revision)
        )

    async def get_vmodel(self, vmodel_id: str) -> tuple[records.VModelRecord, int] | None:
        item = await self.kv.get(self.vmodel_key(vmodel_id))
        return (
            None
            if item is None
            else (records.VModelRecord.from_json(item.value), item.mod_revision)
        )

    async def get_instance(self, instance_id: str) -> tuple[records.InstanceRecord, int] | None:
        item = await self.kv.get(self.instance_key(instance_id))
        return (
            None
            if item is None
            else (records.InstanceRecord.from_json(item.value), item.mod_revision)
        )

    # --- writes -----------------------------------------------------------

    async def create_model(self, model_id: str, record: records.ModelRecord) -> bool:
        """Store ``record`` only if no model has this id; ``True`` if stored."""
        rev = await self.kv.compare_and_put(self.model_key(model_id), record.to_json(), 0)
        return rev is not None

    async def create_vmodel(self, vmodel_id: str, record: records.VModelRecord) -> bool:
        """Store ``record`` only if no vmodel has this id; ``True`` if stored."""
        rev = await self.kv.compare_and_put(self.vmodel_key(vmodel_id), record.to_json(), 0)
        return rev is not None

    async def update_model(
        self,
        model_id: str,
        fn: Callable[[records.ModelRecord | None], records.ModelRecord | None],
        known: tuple[records.ModelRecord, int] | None = None,
    ) -> records.ModelRecord | None:
        """Compare-and-set ``fn(current)`` (see :meth:`_update`). ``known``,
        the record and mod revision a mirror holds, saves the first read when
        it is current (the compare-and-set checks that it is)."""
        record, _ = await self._update_entry(
            self.model_key(model_id), records.ModelRecord.from_json, fn, known
        )
        return record

    async def update_vmodel(
        self,
        vmodel_id: str,
        fn: Callable[[records.VModelRecord | None], records.VModelRecord | None],
    ) -> records.VModelRecord | None:
        """Compare-and-set ``fn(current)`` (see :meth:`_update`)."""
        return await self._update(self.vmodel_key(vmodel_id), records.VModelRecord.from_json, fn)

    async def update_model_entry(
        self,
        model_id: str,
        fn: Callable[[records.ModelRecord | None], records.ModelRecord | None],
    ) -> tuple[records.ModelRecord | None, int]:
        """:meth:`update_model`, also returning the store revision to wait
        for in a mirror (0 when nothing was written)."""
        return await self._update_entry(self.model_key(model_id), records.ModelRecord.from_json, fn)

    async def update_vmodel_entry(
        self,
        vmodel_id: str,
        fn: Callable[[records.VModelRecord | None], records.VModelRecord | None],
    ) -> tuple[records.VModelRecord | None, int]:
        """:meth:`update_vmodel`, also returning the revision written (or 0)."""
        return await self._update_entry(
            self.vmodel_key(vmodel_id), records.VModelRecord.from_json, fn
        )

    async def _update(
        self, key: str, load: Callable[[bytes], _R], fn: Callable[[_R | None], _R | None]
    ) -> _R | None:
        """Read the record at ``key``, call ``fn`` on it (``None`` if absent)
        and store the result if nobody wrote the key meanwhile; otherwise
        read again and retry, up to ``max_attempts`` times, then raise
        :class:`mesh.core.errors.Conflict`.

        ``fn`` returns the new record, ``None`` to delete the key, or the very
        record it was given to mean "no change" (nothing is written). It may be
        called several times, so it must not have side effects. Returns the
        record stored at the end (``None``: absent). A stored value that is not
        a valid record raises :class:`mesh.core.errors.InvalidRequest` rather than
        being overwritten."""
        record, _ = await self._update_entry(key, load, fn)
        return record

    async def _update_entry(
        self,
        key: str,
        load: Callable[[bytes], _R],
        fn: Callable[[_R | None], _R | None],
        known: tuple[_R, int] | None = None,
    ) -> tuple[_R | None, int]:
        for _ in range(self.max_attempts):
            current: _R | None
            if known is not None:  # first attempt from the mirror's copy
                current, expected = known
                known = None
                new = fn(current)
                if new is current:
                    continue  # "no change" is only trusted on a fresh read
            else:
                item = await self.kv.get(key)
                current = None if item is None else load(item.value)
                expected = 0 if item is None else item.mod_revision
                new = fn(current)
                if new is current:
                    return current, 0
            if new is None:
                if await self.kv.compare_and_delete(key, expected):
                    return None, 0
                continue
            rev = await self.kv.compare_and_put(key, new.to_json(), expected)
            if rev is not None:
                return new, rev
            _log.debug("compare-and-set on %s lost a race; retrying", key)
        raise errors.Conflict(
            f"{key}: gave up after {self.max_attempts} compare-and-set attempts "
            "lost to concurrent writers"
        )

    async def delete_model(self, model_id: str) -> bool:
        """Delete the model's record unconditionally; ``True`` if it existed."""
        return await self.kv.delete(self.model_key(model_id))

    async def delete_vmodel(self, vmodel_id: str) -> bool:
        """Delete the vmodel's record unconditionally; ``True`` if it existed."""
        return await self.kv.delete(self.vmodel_key(vmodel_id))

    async def put_instance(
        self, instance_id: str, record: records.InstanceRecord, lease: int = 0
    ) -> int:
        """Write this node's record (each node writes only its own, so no
        compare-and-set), under ``lease`` so it vanishes when the node dies.
        Returns the new mod revision."""
        return await self.kv.put(self.instance_key(instance_id), record.to_json(), lease=lease)

    async def delete_instance(self, instance_id: str) -> bool:
        """Delete a node's record; ``True`` if it existed."""
        return await self.kv.delete(self.instance_key(instance_id))
