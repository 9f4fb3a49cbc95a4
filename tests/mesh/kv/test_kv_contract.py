"""What :class:`mesh.kv.kv_store.KVStore` promises, checked on both stores:
the in-memory one the unit tests use and a real etcd (``integration``).

Every test here runs against both, so the fake claims nothing etcd does not
do: revisions, compare-and-set on the mod revision, ordered prefix watches
that resume from a revision and are lost after a compaction, leases whose
keys go with them (revoked or left to expire), unknown leases refused, and a
closed store that says so. Waits are on watch events, never on the clock;
etcd may split a watch's events over several batches, so events are
collected until the count expected.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import mesh.edges.etcd_process
from mesh.core import errors
from mesh.kv import etcd_kv, kv_store, memory_kv

WAIT = 30.0
"""Seconds to wait for an event that must come: generous, as a busy machine
is slow, not wrong (a lease of 1 s expires on etcd within about 2 s)."""

UNKNOWN_LEASE = 0x5EED_0000_0001
"""A lease id neither store granted."""

Watch = AsyncIterator[list[kv_store.WatchEvent]]


@dataclasses.dataclass(frozen=True)
class Store:
    """A store under test, with what is not a KVStore call: forgetting
    history, and an outage of the whole store (etcd stopped)."""

    kv: kv_store.KVStore
    compact: Callable[[int], Awaitable[None]]
    go_down: Callable[[], Awaitable[None]]
    come_back: Callable[[], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("etcd", marks=pytest.mark.integration)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def etcd_server_if_any(
    kind: str, request: pytest.FixtureRequest
) -> mesh.edges.etcd_process.EtcdServer | None:
    """A fresh etcd for this test (``etcd_server``); none for the memory store."""
    if kind != "etcd":
        return None
    server: mesh.edges.etcd_process.EtcdServer = request.getfixturevalue("etcd_server")
    return server


@pytest.fixture
async def store(
    etcd_server_if_any: mesh.edges.etcd_process.EtcdServer | None,
) -> AsyncIterator[Store]:
    server = etcd_server_if_any
    if server is None:
        mem = memory_kv.MemoryKV()

        async def forget(revision: int) -> None:
            mem.compact(revision)

        async def availability(up: bool) -> None:
            mem.available = up

        yield Store(mem, forget, lambda: availability(False), lambda: availability(True))
        await mem.close()
        return
    etcd = await etcd_kv.EtcdKV.connect([server.endpoint])
    try:
        yield Store(
            etcd,
            etcd.compact,
            lambda: asyncio.to_thread(server.stop),
            lambda: asyncio.to_thread(server.start),
        )
    finally:
        await etcd.close()


async def collect(watch: Watch, count: int) -> list[kv_store.WatchEvent]:
    """The watch's next ``count`` events, however they are batched."""
    events: list[kv_store.WatchEvent] = []
    async with asyncio.timeout(WAIT):
        while len(events) < count:
            events += await anext(watch)
    assert len(events) == count, events
    return events


def summary(events: list[kv_store.WatchEvent]) -> list[tuple[str, str, bytes]]:
    return [(e.kind.value, e.key, e.value) for e in events]


async def close(watch: Watch) -> None:
    aclose = getattr(watch, "aclose", None)
    if aclose is not None:
        await aclose()


async def revision(kv: kv_store.KVStore) -> int:
    return (await kv.list_prefix("\x7f-none")).revision


# --- revisions, reads and writes -----------------------------------------------


async def test_every_write_takes_the_next_store_revision(store: Store) -> None:
    kv = store.kv
    r1 = await kv.put("a", b"1")
    r2 = await kv.put("b", b"2")
    r3 = await kv.put("a", b"3")
    assert (r2, r3) == (r1 + 1, r1 + 2)
    assert await kv.get("a") == kv_store.KeyValue("a", b"3", r3)
    assert await kv.get("missing") is None
    assert await revision(kv) == r3


async def test_list_prefix_returns_only_that_prefix_in_key_order_at_one_revision(
    store: Store,
) -> None:
    kv = store.kv
    await kv.put("mm/vmodels/c", b"3")
    await kv.put("mm2/registry/b", b"2")
    last = await kv.put("mm/registry/a", b"1")
    snap = await kv.list_prefix("mm/")
    assert [(i.key, i.value) for i in snap.items] == [
        ("mm/registry/a", b"1"),
        ("mm/vmodels/c", b"3"),
    ]
    assert snap.revision == last
    assert (await kv.list_prefix("nothing/")).items == ()


async def test_compare_and_put_with_zero_creates_only_an_absent_key(store: Store) -> None:
    kv = store.kv
    created = await kv.compare_and_put("k", b"first", 0)
    assert created is not None
    assert await kv.compare_and_put("k", b"second", 0) is None
    assert await kv.get("k") == kv_store.KeyValue("k", b"first", created)
    assert await revision(kv) == created  # a lost compare writes nothing


async def test_compare_and_put_needs_the_current_mod_revision(store: Store) -> None:
    kv = store.kv
    old = await kv.put("k", b"v1")
    new = await kv.put("k", b"v2")
    assert await kv.compare_and_put("k", b"stale", old) is None
    written = await kv.compare_and_put("k", b"v3", new)
    assert written == new + 1
    assert await kv.get("k") == kv_store.KeyValue("k", b"v3", written)
    with pytest.raises(ValueError):
        await kv.compare_and_put("k", b"v", -1)


async def test_compare_and_delete_needs_the_current_mod_revision(store: Store) -> None:
    kv = store.kv
    rev = await kv.put("k", b"v")
    assert not await kv.compare_and_delete("k", rev - 1)
    assert not await kv.compare_and_delete("k", 0)
    assert await kv.compare_and_delete("k", rev)
    assert await kv.get("k") is None
    assert not await kv.compare_and_delete("k", rev)
    assert await revision(kv) == rev + 1


async def test_delete_says_whether_the_key_existed_and_deleting_nothing_writes_nothing(
    store: Store,
) -> None:
    kv = store.kv
    await kv.put("k", b"v")
    assert await kv.delete("k")
    gone = await revision(kv)
    assert not await kv.delete("k")
    assert await revision(kv) == gone


# --- watches --------------------------------------------------------------------


async def test_a_watch_delivers_puts_and_deletes_under_its_prefix_in_revision_order(
    store: Store,
) -> None:
    kv = store.kv
    start = await kv.put("unrelated", b"x") + 1
    watch = kv.watch_prefix("p/", start)
    r1 = await kv.put("p/a", b"1")
    await kv.put("q/a", b"elsewhere")
    r3 = await kv.put("p/b", b"2")
    assert await kv.delete("p/a")
    events = await collect(watch, 3)
    assert summary(events) == [("put", "p/a", b"1"), ("put", "p/b", b"2"), ("delete", "p/a", b"")]
    assert [e.mod_revision for e in events] == [r1, r3, r3 + 1]
    await close(watch)


async def test_a_watch_from_a_past_revision_replays_from_there_inclusive(store: Store) -> None:
    kv = store.kv
    r1 = await kv.put("p/a", b"1")
    r2 = await kv.put("p/a", b"2")
    r3 = await kv.put("p/b", b"3")
    everything = kv.watch_prefix("p/", r1)
    assert [e.mod_revision for e in await collect(everything, 3)] == [r1, r2, r3]
    from_r2 = kv.watch_prefix("p/", r2)
    assert summary(await collect(from_r2, 2)) == [("put", "p/a", b"2"), ("put", "p/b", b"3")]
    await close(everything)
    await close(from_r2)


async def test_a_watch_reopened_after_the_last_event_seen_misses_nothing_and_repeats_nothing(
    store: Store,
) -> None:
    kv = store.kv
    start = await kv.put("p/0", b"0")
    first = kv.watch_prefix("p/", start)
    seen = await collect(first, 1)
    await close(first)
    # Written while nobody watches.
    for i in range(1, 4):
        await kv.put(f"p/{i}", str(i).encode())
    resumed = kv.watch_prefix("p/", seen[-1].mod_revision + 1)
    assert [e.key for e in await collect(resumed, 3)] == ["p/1", "p/2", "p/3"]
    await kv.put("p/4", b"4")
    assert [e.key for e in await collect(resumed, 1)] == ["p/4"]
    await close(resumed)


async def test_a_watch_from_before_a_compaction_is_lost_and_one_from_it_is_not(
    store: Store,
) -> None:
    kv = store.kv
    r1 = await kv.put("p/a", b"1")
    r2 = await kv.put("p/a", b"2")
    await store.compact(r2)
    lost = kv.watch_prefix("p/", r1)
    with pytest.raises(kv_store.WatchLost, match="compacted"):
        await collect(lost, 1)
    kept = kv.watch_prefix("p/", r2)
    assert summary(await collect(kept, 1)) == [("put", "p/a", b"2")]
    await close(kept)


# --- leases ---------------------------------------------------------------------


async def test_revoking_a_lease_deletes_its_keys_in_one_revision(store: Store) -> None:
    kv = store.kv
    lease = await kv.grant_lease(60)
    await kv.put("inst/a", b"1", lease=lease)
    cas = await kv.compare_and_put("inst/b", b"2", 0, lease=lease)
    assert cas is not None
    kept = await kv.put("inst/keep", b"3")
    watch = kv.watch_prefix("inst/", kept + 1)
    assert await kv.keep_alive(lease)
    await kv.revoke_lease(lease)
    events = await collect(watch, 2)
    assert sorted(summary(events)) == [("delete", "inst/a", b""), ("delete", "inst/b", b"")]
    assert len({e.mod_revision for e in events}) == 1
    assert await kv.get("inst/keep") is not None
    assert not await kv.keep_alive(lease)
    await kv.revoke_lease(lease)  # revoking twice is harmless
    await close(watch)


async def test_a_lease_left_to_expire_takes_its_keys(store: Store) -> None:
    kv = store.kv
    lease = await kv.grant_lease(1)
    await kv.put("inst/a", b"1", lease=lease)
    last = await kv.put("inst/b", b"2", lease=lease)
    watch = kv.watch_prefix("inst/", last + 1)
    # Nothing calls the store meanwhile: the lease expires on its own.
    events = await collect(watch, 2)
    assert sorted(summary(events)) == [("delete", "inst/a", b""), ("delete", "inst/b", b"")]
    assert not await kv.keep_alive(lease)
    with pytest.raises(errors.Conflict, match="lease"):
        await kv.put("inst/c", b"3", lease=lease)
    await close(watch)


async def test_a_lease_kept_alive_outlives_a_twin_left_to_expire(store: Store) -> None:
    kv = store.kv
    kept = await kv.grant_lease(2)
    twin = await kv.grant_lease(2)  # granted after ``kept``: it cannot expire first
    await kv.put("inst/kept", b"1", lease=kept)
    last = await kv.put("inst/twin", b"2", lease=twin)
    watch = kv.watch_prefix("inst/", last + 1)
    twin_gone = asyncio.ensure_future(collect(watch, 1))
    while not twin_gone.done():
        assert await kv.keep_alive(kept)
        await asyncio.wait([twin_gone], timeout=0.2)  # renewing well within the TTL
    assert summary(twin_gone.result()) == [("delete", "inst/twin", b"")]
    assert await kv.get("inst/kept") is not None
    await kv.revoke_lease(kept)
    await close(watch)


async def test_a_lease_outlives_an_outage_of_the_store_longer_than_its_ttl(
    store: Store,
) -> None:
    kv = store.kv
    lease = await kv.grant_lease(3)
    rev = await kv.put("inst/a", b"1", lease=lease)
    await store.go_down()
    # The stimulus, not a wait for something: more than the TTL passes while
    # nobody can renew (sleeping longer only makes the point stronger).
    await asyncio.sleep(4)
    await store.come_back()
    # The store came back with every lease given a whole TTL again; a client
    # may need a few tries to reconnect.
    async with asyncio.timeout(WAIT):
        while True:
            try:
                assert await kv.keep_alive(lease)
                break
            except errors.StoreUnavailable:
                await asyncio.sleep(0.1)
    assert await kv.get("inst/a") == kv_store.KeyValue("inst/a", b"1", rev)


async def test_a_key_rewritten_without_its_lease_survives_the_lease(store: Store) -> None:
    kv = store.kv
    lease = await kv.grant_lease(60)
    await kv.put("a", b"1", lease=lease)
    await kv.put("a", b"2")
    await kv.revoke_lease(lease)
    item = await kv.get("a")
    assert item is not None and item.value == b"2"


async def test_an_unknown_lease_is_refused_and_never_renewed(store: Store) -> None:
    kv = store.kv
    with pytest.raises(errors.Conflict, match="lease"):
        await kv.put("a", b"1", lease=UNKNOWN_LEASE)
    with pytest.raises(errors.Conflict, match="lease"):
        await kv.compare_and_put("a", b"1", 0, lease=UNKNOWN_LEASE)
    assert await kv.get("a") is None
    rev = await kv.put("b", b"1")
    # A compare that fails writes nothing, so the lease is never looked at.
    assert await kv.compare_and_put("b", b"2", rev + 100, lease=UNKNOWN_LEASE) is None
    assert not await kv.keep_alive(UNKNOWN_LEASE)
    await kv.revoke_lease(UNKNOWN_LEASE)  # already gone, as asked


# --- a closed store ---------------------------------------------------------------


async def test_a_closed_store_raises_store_unavailable_even_under_a_watch(store: Store) -> None:
    kv = store.kv
    start = await kv.put("p/a", b"1")
    watch = kv.watch_prefix("p/", start)
    await collect(watch, 1)  # the watch is open and has delivered
    pending = asyncio.ensure_future(collect(watch, 1))
    await kv.close()
    with pytest.raises(errors.StoreUnavailable):
        await pending
    with pytest.raises(errors.StoreUnavailable):
        await kv.get("p/a")
