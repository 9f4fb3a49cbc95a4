"""The placement table mirrors every record under the prefix, survives lost
and broken watches by re-listing, never lets one bad value stop it, and
catches up on request with a record the store already holds.

Every wait is on the mirror's own condition (:meth:`wait_until`, with no
timeout: a test that never gets there is ended by pytest's timeout), never
on a sleep or a window of wall-clock time."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest

from mesh.core import errors, records
from mesh.kv import kv_store, memory_kv, placement_table, records_store

IRIS = records.ModelRecord(model_type="sklearn", path="iris")
NODE = records.InstanceRecord(endpoint="127.0.0.1:8033", capacity_bytes=1 << 30)
ALIAS = records.VModelRecord(active_model="iris", target_model="iris")


class RefusingKV(memory_kv.MemoryKV):
    """The in-memory KV, telling when it refused a listing (the store down)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused_listing = asyncio.Event()

    async def list_prefix(self, prefix: str) -> kv_store.Snapshot:
        try:
            return await super().list_prefix(prefix)
        except errors.StoreUnavailable:
            self.refused_listing.set()
            raise


@pytest.fixture
def mem() -> RefusingKV:
    return RefusingKV()


@pytest.fixture
def rs(mem: memory_kv.MemoryKV) -> records_store.RecordStore:
    return records_store.RecordStore(mem, "mm")


@pytest.fixture
async def placement(mem: memory_kv.MemoryKV) -> AsyncIterator[placement_table.PlacementTable]:
    t = placement_table.PlacementTable(mem, "mm", retry_delay=0.01)
    await t.start()
    try:
        yield t
    finally:
        await t.stop()


async def test_start_applies_what_is_already_stored(
    mem: memory_kv.MemoryKV, rs: records_store.RecordStore
) -> None:
    await rs.create_model("iris", IRIS)
    await rs.create_vmodel("alias", ALIAS)
    await rs.put_instance("node-a", NODE)
    await mem.put("elsewhere/registry/x", IRIS.to_json())
    t = placement_table.PlacementTable(mem, "mm")
    await t.start()
    try:
        assert t.model("iris") == IRIS
        assert t.vmodel("alias") == ALIAS
        assert t.instance("node-a") == NODE
        assert dict(t.models()) == {"iris": IRIS}
        assert t.revision == mem.revision
        entry = t.model_entry("iris")
        got = await rs.get_model("iris")
        assert entry == got
    finally:
        await t.stop()


async def test_mirrors_puts_and_deletes(
    placement: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    rev = await rs.put_instance("node-a", NODE)
    assert await placement.wait_for_revision(rev, None)
    assert placement.instance("node-a") == NODE
    assert placement.instance_entry("node-a") == (NODE, rev)

    await rs.create_model("iris", IRIS)
    assert await placement.wait_until(lambda: placement.model("iris") == IRIS, None)
    await rs.update_model("iris", lambda r: None)
    assert await placement.wait_until(lambda: placement.model("iris") is None, None)
    assert "iris" not in placement.models()
    assert placement.model_entry("iris") is None


async def test_listeners_hear_each_applied_change(
    placement: placement_table.PlacementTable,
    rs: records_store.RecordStore,
    mem: memory_kv.MemoryKV,
) -> None:
    heard: list[tuple[str, str]] = []
    placement.add_listener(lambda kind, rid: heard.append((kind, rid)))
    await rs.create_model("iris", IRIS)
    await rs.create_vmodel("alias", ALIAS)
    await mem.put("mm/leader", b"node-a")  # not a record: ignored
    rev = await rs.put_instance("node-a", NODE)
    assert await placement.wait_for_revision(rev, None)
    assert heard == [("model", "iris"), ("vmodel", "alias"), ("instance", "node-a")]


async def test_a_failing_listener_does_not_stop_the_mirror(
    placement: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    def broken(kind: str, rid: str) -> None:
        raise RuntimeError("listener bug")

    placement.add_listener(broken)
    await rs.create_model("iris", IRIS)
    rev = await rs.put_instance("node-a", NODE)
    assert await placement.wait_for_revision(rev, None)
    assert placement.model("iris") == IRIS


async def test_a_malformed_value_is_logged_and_left_out(
    placement: placement_table.PlacementTable,
    rs: records_store.RecordStore,
    mem: memory_kv.MemoryKV,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await rs.create_model("bad", IRIS)
    with caplog.at_level(logging.WARNING, logger="mesh.kv.placement_table"):
        await mem.put("mm/registry/bad", b"{not json")
        await mem.put("mm/instances/node-x", b'{"endpoint": "h:1"}')  # no capacity
        assert await rs.create_model("good", IRIS)
        assert await placement.wait_until(lambda: placement.model("good") == IRIS, None)
    assert placement.model("bad") is None
    assert placement.instance("node-x") is None
    assert "mm/registry/bad" not in caplog.text  # logged by folder/id:
    assert "registry/bad" in caplog.text
    assert "instances/node-x" in caplog.text
    # A later valid value is mirrored again.
    await mem.put("mm/registry/bad", IRIS.to_json())
    assert await placement.wait_until(lambda: placement.model("bad") == IRIS, None)


async def test_relists_after_watch_lost_without_losing_records(
    placement: placement_table.PlacementTable,
    rs: records_store.RecordStore,
    mem: memory_kv.MemoryKV,
) -> None:
    await rs.create_model("kept", IRIS)
    await rs.create_model("gone", IRIS)
    await rs.put_instance("node-a", NODE)
    assert await placement.wait_until(lambda: len(placement.models()) == 2, None)
    heard: list[tuple[str, str]] = []
    placement.add_listener(lambda kind, rid: heard.append((kind, rid)))
    # The memory store never yields between these calls, so the table's watch
    # falls behind, and the compaction forgets the history it needs.
    changed = dataclasses.replace(IRIS, path="moved")
    await rs.update_model("kept", lambda r: changed)
    await rs.update_model("gone", lambda r: None)
    await rs.create_model("new", IRIS)
    mem.compact(mem.revision)
    assert await placement.wait_until(lambda: placement.relists == 1, None)
    assert dict(placement.models()) == {"kept": changed, "new": IRIS}
    assert placement.instance("node-a") == NODE
    assert placement.revision == mem.revision
    assert sorted(heard) == [("model", "gone"), ("model", "kept"), ("model", "new")]
    # And it keeps watching after the re-list.
    await rs.create_model("later", IRIS)
    assert await placement.wait_for_revision(mem.revision, None)
    assert placement.model("later") == IRIS


async def test_relists_after_the_watch_stream_breaks(
    placement: placement_table.PlacementTable,
    rs: records_store.RecordStore,
    mem: RefusingKV,
) -> None:
    await rs.create_model("iris", IRIS)
    assert await placement.wait_until(lambda: placement.model("iris") is not None, None)
    mem.available = False
    mem.break_watches()
    await mem.refused_listing.wait()  # re-listing fails while the store is down
    assert placement.relists == 0
    assert placement.model("iris") == IRIS  # the mirror still serves reads
    mem.available = True
    await rs.create_model("after", IRIS)
    assert await placement.wait_until(lambda: placement.model("after") is not None, None)
    assert placement.relists == 1
    assert placement.model("iris") == IRIS


async def test_lease_expiry_removes_the_instance(
    placement: placement_table.PlacementTable,
    rs: records_store.RecordStore,
    mem: memory_kv.MemoryKV,
) -> None:
    lease = await mem.grant_lease(10)
    await rs.put_instance("node-a", NODE, lease)
    assert await placement.wait_until(lambda: placement.instance("node-a") is not None, None)
    mem.expire_lease(lease)
    assert await placement.wait_until(lambda: placement.instance("node-a") is None, None)


async def test_wait_until_times_out_with_false(placement: placement_table.PlacementTable) -> None:
    assert not await placement.wait_until(lambda: placement.model("never") is not None, 0.05)
    assert not await placement.wait_for_revision(placement.revision + 100, 0.05)
    assert await placement.wait_for_revision(placement.revision, 0.0)


async def test_wait_until_rechecks_after_each_change(
    placement: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    checks = 0
    checked = asyncio.Event()

    def three_models() -> bool:
        nonlocal checks
        checks += 1
        checked.set()
        return len(placement.models()) >= 3

    waiter = asyncio.create_task(placement.wait_until(three_models, None))
    await checked.wait()  # checked once at once
    for i in range(3):
        checked.clear()
        await rs.create_model(f"m{i}", IRIS)
        await checked.wait()  # and once after each change
    assert await waiter
    assert checks == 4


async def test_start_fails_when_the_store_is_down(mem: memory_kv.MemoryKV) -> None:
    mem.available = False
    t = placement_table.PlacementTable(mem, "mm")
    with pytest.raises(Exception, match="unavailable"):
        await t.start()


async def test_the_stream_is_closed_when_the_table_stops(mem: memory_kv.MemoryKV) -> None:
    t = placement_table.PlacementTable(mem, "mm")
    await t.start()
    rev = await mem.put("mm/registry/w", IRIS.to_json())
    assert await t.wait_for_revision(rev, None)  # the watch is open
    await t.stop()
    await mem.put("mm/registry/x", IRIS.to_json())
    assert t.model("x") is None
    assert mem.open_watches == 0


async def test_catch_up_waits_until_the_mirror_shows_what_the_store_holds(
    placement: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    # The memory store does not yield in a write: the watch has not run yet.
    await rs.create_model("iris", IRIS)
    assert placement.model("iris") is None
    assert await placement.catch_up("iris", (records_store.MODEL,))
    assert placement.model("iris") == IRIS


async def test_catch_up_looks_for_each_kind_in_turn(
    placement: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    await rs.create_model("iris", IRIS)
    await rs.create_vmodel("alias", ALIAS)
    kinds = (records_store.VMODEL, records_store.MODEL)
    assert await placement.catch_up("iris", kinds)
    assert await placement.catch_up("alias", kinds)
    assert placement.model("iris") == IRIS and placement.vmodel("alias") == ALIAS


async def test_catch_up_does_not_wait_for_a_record_the_store_lacks(
    placement: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    await rs.create_model("iris", IRIS)
    assert not await placement.catch_up("iris", (records_store.VMODEL,), timeout=None)
    assert not await placement.catch_up("never", (records_store.MODEL,), timeout=None)
    with pytest.raises(errors.InvalidRequest, match="empty model id"):
        await placement.catch_up("", (records_store.MODEL,))


async def test_catch_up_gives_up_when_the_mirror_cannot_follow(
    placement: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    await placement.stop()  # the mirror no longer applies changes
    await rs.create_model("iris", IRIS)
    assert not await placement.catch_up("iris", (records_store.MODEL,), timeout=0.0)
    assert placement.model("iris") is None
