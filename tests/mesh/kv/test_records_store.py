"""The record store lays records out as DESIGN.md §4 says and writes them with
a compare-and-set loop that survives concurrent writers."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from mesh.core import errors, records
from mesh.kv import kv_store, memory_kv, records_store

IRIS = records.ModelRecord(model_type="sklearn", path="iris")
LOADED = records.CopyInfo(records.CopyState.LOADED, 1)


class RacingKV(memory_kv.MemoryKV):
    """A store where another writer changes the key just before each of our
    first ``races`` compare-and-sets."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races
        self.cas_calls = 0

    async def _race(self, key: str) -> None:
        self.cas_calls += 1
        if self.races > 0:
            self.races -= 1
            current = await self.get(key)
            rec = records.ModelRecord.from_json(current.value) if current else IRIS
            rival = dataclasses.replace(rec, size_bytes=rec.size_bytes + 100)
            await self.put(key, rival.to_json())

    async def compare_and_put(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int = 0
    ) -> int | None:
        await self._race(key)
        return await super().compare_and_put(key, value, expected_mod_revision, lease=lease)

    async def compare_and_delete(self, key: str, expected_mod_revision: int) -> bool:
        await self._race(key)
        return await super().compare_and_delete(key, expected_mod_revision)


def grow(rec: records.ModelRecord | None) -> records.ModelRecord | None:
    base = rec or IRIS
    return dataclasses.replace(base, size_bytes=base.size_bytes + 1)


def test_keys_follow_the_etcd_layout() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "mm")
    assert rs.model_key("m1") == "mm/registry/m1"
    assert rs.vmodel_key("v1") == "mm/vmodels/v1"
    assert rs.instance_key("i1") == "mm/instances/i1"
    assert records_store.split_key("mm", "mm/registry/a/b") == (records_store.MODEL, "a/b")
    assert records_store.split_key("mm", "mm/leader") is None
    assert records_store.split_key("mm", "mm2/registry/x") is None


def test_an_empty_id_is_refused() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "mm")
    with pytest.raises(errors.InvalidRequest):
        rs.model_key("")


async def test_get_returns_the_record_and_its_mod_revision() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "mm")
    assert await rs.get_model("iris") is None
    assert await rs.create_model("iris", IRIS)
    got = await rs.get_model("iris")
    assert got is not None
    rec, rev = got
    assert rec == IRIS
    item = await rs.kv.get("mm/registry/iris")
    assert item is not None and item.mod_revision == rev


async def test_create_model_refuses_an_existing_id() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "mm")
    assert await rs.create_model("iris", IRIS)
    assert not await rs.create_model("iris", dataclasses.replace(IRIS, path="other"))
    got = await rs.get_model("iris")
    assert got is not None and got[0].path == "iris"


async def test_update_creates_changes_and_returns_the_stored_record() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "mm")
    created = await rs.update_model("iris", grow)
    assert created is not None and created.size_bytes == 1
    changed = await rs.update_model("iris", lambda r: r and r.with_copy("node-a", LOADED))
    assert changed is not None and set(changed.copies) == {"node-a"}
    got = await rs.get_model("iris")
    assert got is not None and got[0] == changed


async def test_update_retries_when_a_concurrent_writer_wins_the_race() -> None:
    racing = RacingKV(races=2)
    rs = records_store.RecordStore(racing, "mm")
    await racing.put(rs.model_key("iris"), IRIS.to_json())
    result = await rs.update_model("iris", grow)
    assert racing.cas_calls == 3
    # Both rival writes (+100 each) and ours (+1) are in the record: none lost.
    assert result is not None and result.size_bytes == 201
    got = await rs.get_model("iris")
    assert got is not None and got[0].size_bytes == 201


async def test_update_gives_up_with_conflict_after_max_attempts() -> None:
    racing = RacingKV(races=100)
    rs = records_store.RecordStore(racing, "mm", max_attempts=4)
    await racing.put(rs.model_key("iris"), IRIS.to_json())
    with pytest.raises(errors.Conflict):
        await rs.update_model("iris", grow)
    assert racing.cas_calls == 4


async def test_returning_the_same_record_writes_nothing() -> None:
    mem = memory_kv.MemoryKV()
    rs = records_store.RecordStore(mem, "mm")
    await rs.create_model("iris", IRIS)
    before = mem.revision
    result = await rs.update_model("iris", lambda r: r)
    assert result == IRIS
    assert mem.revision == before
    assert await rs.update_model("absent", lambda r: r) is None
    assert mem.revision == before


async def test_returning_none_deletes_the_record() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "mm")
    await rs.create_model("iris", IRIS)
    assert await rs.update_model("iris", lambda r: None) is None
    assert await rs.get_model("iris") is None


async def test_a_delete_that_loses_a_race_sees_the_new_record_first() -> None:
    racing = RacingKV(races=1)
    rs = records_store.RecordStore(racing, "mm")
    await racing.put(rs.model_key("iris"), IRIS.to_json())
    seen: list[int] = []

    def delete_if_unsized(rec: records.ModelRecord | None) -> records.ModelRecord | None:
        assert rec is not None
        seen.append(rec.size_bytes)
        return None if rec.size_bytes == 0 else rec

    kept = await rs.update_model("iris", delete_if_unsized)
    assert seen == [0, 100]  # retried on the rival's record, which it keeps
    assert kept is not None and kept.size_bytes == 100


async def test_concurrent_updates_all_land() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "mm", max_attempts=50)

    async def one() -> None:
        await asyncio.sleep(0)
        await rs.update_model("iris", grow)

    await asyncio.gather(*(one() for _ in range(20)))
    got = await rs.get_model("iris")
    assert got is not None and got[0].size_bytes == 20


async def test_update_entry_returns_the_revision_written() -> None:
    mem = memory_kv.MemoryKV()
    rs = records_store.RecordStore(mem, "mm")
    rec, rev = await rs.update_model_entry("iris", grow)
    assert rec is not None and rev == mem.revision
    same, none_rev = await rs.update_model_entry("iris", lambda r: r)
    assert same == rec and none_rev == 0


async def test_vmodels_update_like_models() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "mm")
    v = records.VModelRecord(active_model="m1", target_model="m1", owner="predictor")
    assert await rs.create_vmodel("v", v)
    moved = await rs.update_vmodel(
        "v", lambda cur: cur and dataclasses.replace(cur, target_model="m2")
    )
    assert moved is not None and moved.transitioning
    got = await rs.get_vmodel("v")
    assert got is not None and got[0] == moved
    assert await rs.update_vmodel("v", lambda cur: None) is None
    assert await rs.get_vmodel("v") is None


async def test_instances_are_written_under_the_nodes_lease() -> None:
    mem = memory_kv.MemoryKV()
    rs = records_store.RecordStore(mem, "mm")
    lease = await mem.grant_lease(10)
    inst = records.InstanceRecord(endpoint="127.0.0.1:8033", capacity_bytes=1 << 30)
    rev = await rs.put_instance("node-a", inst, lease)
    assert await rs.get_instance("node-a") == (inst, rev)
    mem.expire_lease(lease)
    assert await rs.get_instance("node-a") is None
    await rs.put_instance("node-b", inst)
    assert await rs.delete_instance("node-b")
    assert not await rs.delete_instance("node-b")


async def test_a_malformed_stored_record_is_reported_not_overwritten() -> None:
    mem = memory_kv.MemoryKV()
    rs = records_store.RecordStore(mem, "mm")
    await mem.put("mm/registry/bad", b"{not json")
    with pytest.raises(errors.InvalidRequest):
        await rs.update_model("bad", grow)
    assert (await mem.get("mm/registry/bad")) == kv_store.KeyValue(
        "mm/registry/bad", b"{not json", mem.revision
    )


class ReadCountingKV(memory_kv.MemoryKV):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str) -> kv_store.KeyValue | None:
        self.reads += 1
        return await super().get(key)


async def test_a_current_known_record_saves_the_read_before_the_compare_and_set() -> None:
    kv_ = ReadCountingKV()
    rs = records_store.RecordStore(kv_, "t")
    await rs.create_model("m", IRIS)
    entry = await rs.get_model("m")
    assert entry is not None
    kv_.reads = 0
    out = await rs.update_model("m", lambda r: r and r.with_copy("n1", LOADED), known=entry)
    assert out is not None and "n1" in out.copies and kv_.reads == 0


async def test_a_stale_known_record_is_read_again_and_nothing_is_lost() -> None:
    rs = records_store.RecordStore(memory_kv.MemoryKV(), "t")
    await rs.create_model("m", IRIS)
    stale = await rs.get_model("m")
    assert stale is not None
    await rs.update_model("m", lambda r: r and r.with_copy("n2", LOADED))  # someone else
    out = await rs.update_model("m", lambda r: r and r.with_copy("n1", LOADED), known=stale)
    assert out is not None and set(out.copies) == {"n1", "n2"}
    # "No change" on a stale copy is checked against the store: here n2 must go.
    out = await rs.update_model("m", lambda r: r and r.without_copy("n2"), known=stale)
    assert out is not None and set(out.copies) == {"n1"}
