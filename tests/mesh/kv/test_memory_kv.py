"""The in-memory KV store keeps etcd's contract: revisions, compare-and-set on
the mod revision, ordered prefix watches that resume from a revision, lost
watches after a compaction, and leases that take their keys with them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mesh.core import errors
from mesh.kv import kv_store, memory_kv


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def next_batch(it: AsyncIterator[list[kv_store.WatchEvent]]) -> list[kv_store.WatchEvent]:
    return await asyncio.wait_for(anext(it), 1.0)


def summary(events: list[kv_store.WatchEvent]) -> list[tuple[str, str, bytes]]:
    return [(e.kind.value, e.key, e.value) for e in events]


async def test_every_write_gets_the_next_store_revision() -> None:
    store = memory_kv.MemoryKV()
    r1 = await store.put("a", b"1")
    r2 = await store.put("b", b"2")
    assert r2 == r1 + 1
    item = await store.get("a")
    assert item == kv_store.KeyValue("a", b"1", r1)
    assert await store.get("missing") is None


async def test_compare_and_put_with_zero_creates_only_an_absent_key() -> None:
    store = memory_kv.MemoryKV()
    rev = await store.compare_and_put("k", b"first", 0)
    assert rev is not None
    assert await store.compare_and_put("k", b"second", 0) is None
    assert (await store.get("k")) == kv_store.KeyValue("k", b"first", rev)


async def test_compare_and_put_refuses_a_stale_mod_revision() -> None:
    store = memory_kv.MemoryKV()
    old = await store.put("k", b"v1")
    new = await store.put("k", b"v2")
    assert await store.compare_and_put("k", b"lost", old) is None
    written = await store.compare_and_put("k", b"v3", new)
    assert written is not None and written > new
    assert (await store.get("k")) == kv_store.KeyValue("k", b"v3", written)


async def test_compare_and_delete_needs_the_current_mod_revision() -> None:
    store = memory_kv.MemoryKV()
    rev = await store.put("k", b"v")
    assert not await store.compare_and_delete("k", rev - 1)
    assert await store.compare_and_delete("k", rev)
    assert await store.get("k") is None
    assert not await store.compare_and_delete("k", 0)


async def test_delete_reports_whether_the_key_existed() -> None:
    store = memory_kv.MemoryKV()
    await store.put("k", b"v")
    assert await store.delete("k")
    assert not await store.delete("k")


async def test_list_prefix_returns_only_that_prefix_at_the_current_revision() -> None:
    store = memory_kv.MemoryKV()
    await store.put("mm/registry/a", b"1")
    await store.put("mm2/registry/b", b"2")
    last = await store.put("mm/vmodels/c", b"3")
    snap = await store.list_prefix("mm/")
    assert [i.key for i in snap.items] == ["mm/registry/a", "mm/vmodels/c"]
    assert snap.revision == last


async def test_watch_delivers_puts_and_deletes_in_revision_order() -> None:
    store = memory_kv.MemoryKV()
    start = store.revision + 1
    watch = store.watch_prefix("p/", start)
    await store.put("p/a", b"1")
    await store.put("other", b"x")
    await store.put("p/b", b"2")
    await store.delete("p/a")
    events = await next_batch(watch)
    assert summary(events) == [("put", "p/a", b"1"), ("put", "p/b", b"2"), ("delete", "p/a", b"")]
    revisions = [e.mod_revision for e in events]
    assert revisions == sorted(revisions)
    await store.put("p/c", b"3")
    assert summary(await next_batch(watch)) == [("put", "p/c", b"3")]


async def test_watch_resumes_from_a_past_revision_by_replaying_history() -> None:
    store = memory_kv.MemoryKV()
    r1 = await store.put("p/a", b"1")
    r2 = await store.put("p/a", b"2")
    await store.put("p/b", b"3")
    events = await next_batch(store.watch_prefix("p/", r2))
    assert events[0].mod_revision == r2
    assert summary(events) == [("put", "p/a", b"2"), ("put", "p/b", b"3")]
    everything = await next_batch(store.watch_prefix("p/", r1))
    assert len(everything) == 3


async def test_watch_from_before_a_compaction_is_lost() -> None:
    store = memory_kv.MemoryKV()
    r1 = await store.put("p/a", b"1")
    r2 = await store.put("p/a", b"2")
    store.compact(r2)
    with pytest.raises(kv_store.WatchLost):
        await next_batch(store.watch_prefix("p/", r1))
    events = await next_batch(store.watch_prefix("p/", r2))
    assert summary(events) == [("put", "p/a", b"2")]


async def test_a_watch_left_behind_by_a_compaction_is_lost() -> None:
    store = memory_kv.MemoryKV()
    watch = store.watch_prefix("p/", store.revision + 1)
    first = await store.put("p/a", b"1")
    assert summary(await next_batch(watch)) == [("put", "p/a", b"1")]
    await store.put("q/x", b"1")
    last = await store.put("q/y", b"1")
    store.compact(last)
    assert first < last
    with pytest.raises(kv_store.WatchLost):
        await next_batch(watch)


async def test_broken_watches_raise_the_given_error() -> None:
    store = memory_kv.MemoryKV()
    watch = store.watch_prefix("p/", 0)
    pending = asyncio.ensure_future(next_batch(watch))
    await asyncio.sleep(0.01)  # the watch is open and waiting
    store.break_watches()
    with pytest.raises(errors.StoreUnavailable):
        await pending


async def test_an_unavailable_store_raises_store_unavailable() -> None:
    store = memory_kv.MemoryKV()
    store.available = False
    with pytest.raises(errors.StoreUnavailable):
        await store.get("k")
    with pytest.raises(errors.StoreUnavailable):
        await store.put("k", b"v")


async def test_a_lease_expiring_by_the_clock_deletes_its_keys_in_one_revision() -> None:
    clock = FakeClock()
    store = memory_kv.MemoryKV(clock=clock)
    lease = await store.grant_lease(10)
    await store.put("inst/a", b"1", lease=lease)
    await store.put("inst/b", b"2", lease=lease)
    await store.put("inst/keep", b"3")
    watch = store.watch_prefix("inst/", store.revision + 1)
    clock.now += 9
    assert await store.keep_alive(lease)
    clock.now += 9
    assert await store.get("inst/a") is not None  # the keep-alive moved expiry
    clock.now += 2
    assert await store.get("inst/a") is None
    assert await store.get("inst/b") is None
    assert await store.get("inst/keep") is not None
    events = await next_batch(watch)
    assert {(e.kind, e.key) for e in events} == {
        (kv_store.EventKind.DELETE, "inst/a"),
        (kv_store.EventKind.DELETE, "inst/b"),
    }
    assert len({e.mod_revision for e in events}) == 1
    assert not await store.keep_alive(lease)


async def test_revoking_or_expiring_a_lease_deletes_its_keys() -> None:
    store = memory_kv.MemoryKV()
    lease = await store.grant_lease(60)
    await store.put("a", b"1", lease=lease)
    await store.revoke_lease(lease)
    assert await store.get("a") is None
    await store.revoke_lease(lease)  # a second revoke is harmless

    other = await store.grant_lease(60)
    await store.put("b", b"1", lease=other)
    store.expire_lease(other)
    assert await store.get("b") is None


async def test_a_key_rewritten_without_its_lease_survives_the_lease() -> None:
    store = memory_kv.MemoryKV()
    lease = await store.grant_lease(60)
    await store.put("a", b"1", lease=lease)
    await store.put("a", b"2")
    await store.revoke_lease(lease)
    item = await store.get("a")
    assert item is not None and item.value == b"2"


async def test_writing_with_an_unknown_lease_is_refused() -> None:
    store = memory_kv.MemoryKV()
    with pytest.raises(errors.Conflict):
        await store.put("a", b"1", lease=12345)
    assert await store.get("a") is None


async def test_a_lease_expires_on_time_with_the_real_clock() -> None:
    store = memory_kv.MemoryKV()
    lease = await store.grant_lease(1)
    await store.put("a", b"1", lease=lease)
    watch = store.watch_prefix("a", store.revision + 1)
    events = await asyncio.wait_for(anext(watch), 3.0)  # no call to the store needed
    assert summary(events) == [("delete", "a", b"")]
