"""The in-memory KV store's test hooks behave like the etcd events they stand
for: a clock that expires leases, an outage during which no lease expires,
a compaction that loses a watch left behind, and broken watch streams.

What it shares with etcd (the KVStore contract) is checked on both stores in
``test_kv_contract.py``."""

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
    return await asyncio.wait_for(anext(it), 10.0)


def summary(events: list[kv_store.WatchEvent]) -> list[tuple[str, str, bytes]]:
    return [(e.kind.value, e.key, e.value) for e in events]


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
    assert sorted(summary(events)) == [("delete", "inst/a", b""), ("delete", "inst/b", b"")]
    assert len({e.mod_revision for e in events}) == 1
    assert not await store.keep_alive(lease)


async def test_no_lease_expires_while_the_store_is_down_and_each_gets_a_whole_ttl_back() -> None:
    clock = FakeClock()
    store = memory_kv.MemoryKV(clock=clock)
    lease = await store.grant_lease(10)
    await store.put("inst/a", b"1", lease=lease)
    store.available = False
    clock.now += 60
    store.expire_due()  # nobody counts while the store is down
    store.available = True
    clock.now += 9
    assert await store.get("inst/a") is not None
    clock.now += 1
    assert await store.get("inst/a") is None


async def test_expire_lease_ends_a_lease_now_and_ignores_an_unknown_one() -> None:
    store = memory_kv.MemoryKV()
    lease = await store.grant_lease(60)
    await store.put("b", b"1", lease=lease)
    store.expire_lease(lease)
    assert await store.get("b") is None
    assert store.leases() == {}
    store.expire_lease(lease)


async def test_a_watch_left_behind_by_a_compaction_is_lost() -> None:
    store = memory_kv.MemoryKV()
    watch = store.watch_prefix("p/", store.revision + 1)
    first = await store.put("p/a", b"1")
    assert summary(await next_batch(watch)) == [("put", "p/a", b"1")]
    # The watch has not asked for more: it lags behind these writes.
    await store.put("q/x", b"1")
    last = await store.put("q/y", b"1")
    store.compact(last)
    assert first < last
    with pytest.raises(kv_store.WatchLost):
        await next_batch(watch)


async def test_broken_watches_raise_the_given_error() -> None:
    store = memory_kv.MemoryKV()
    watch = store.watch_prefix("p/", store.revision + 1)
    await store.put("p/a", b"1")
    await next_batch(watch)  # the watch is open
    assert store.open_watches == 1
    store.break_watches(errors.StoreUnavailable("cut"))
    with pytest.raises(errors.StoreUnavailable, match="cut"):
        await next_batch(watch)
    assert store.open_watches == 0


async def test_an_unavailable_store_raises_store_unavailable() -> None:
    store = memory_kv.MemoryKV()
    store.available = False
    with pytest.raises(errors.StoreUnavailable):
        await store.get("k")
    with pytest.raises(errors.StoreUnavailable):
        await store.put("k", b"v")
    store.available = True
    await store.put("k", b"v")
