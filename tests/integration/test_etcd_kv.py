"""The etcd store against a real etcd: compare-and-set on the mod revision,
ordered watches that live through an etcd restart, lost watches after a
compaction, leases, and bounded failures when etcd is down."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import mesh.edges.etcd_process
import mesh.kv.etcd_kv
from mesh.core import errors, records
from mesh.kv import kv_store, placement_table, records_store

pytestmark = pytest.mark.integration

IRIS = records.ModelRecord(model_type="sklearn", path="iris")
NODE = records.InstanceRecord(endpoint="127.0.0.1:8033", capacity_bytes=1 << 30)


async def next_batch(
    it: AsyncIterator[list[kv_store.WatchEvent]], wait: float = 5.0
) -> list[kv_store.WatchEvent]:
    return await asyncio.wait_for(anext(it), wait)


def summary(events: list[kv_store.WatchEvent]) -> list[tuple[str, str, bytes]]:
    return [(e.kind.value, e.key, e.value) for e in events]


async def test_compare_and_put_compares_the_mod_revision(etcd_kv: mesh.kv.etcd_kv.EtcdKV) -> None:
    created = await etcd_kv.compare_and_put("k", b"v1", 0)
    assert created is not None
    assert await etcd_kv.compare_and_put("k", b"again", 0) is None  # 0: only if absent
    second = await etcd_kv.put("k", b"v2")
    assert await etcd_kv.compare_and_put("k", b"stale", created) is None
    third = await etcd_kv.compare_and_put("k", b"v3", second)
    assert third is not None and third > second
    assert await etcd_kv.get("k") == kv_store.KeyValue("k", b"v3", third)


async def test_compare_and_delete_compares_the_mod_revision(
    etcd_kv: mesh.kv.etcd_kv.EtcdKV,
) -> None:
    rev = await etcd_kv.put("k", b"v")
    assert not await etcd_kv.compare_and_delete("k", rev - 1)
    assert not await etcd_kv.compare_and_delete("k", 0)
    assert await etcd_kv.compare_and_delete("k", rev)
    assert await etcd_kv.get("k") is None
    assert not await etcd_kv.delete("k")


async def test_list_prefix_reads_every_page_at_one_revision(
    etcd_server: mesh.edges.etcd_process.EtcdServer,
) -> None:
    small = mesh.kv.etcd_kv.EtcdKV([etcd_server.endpoint], page_size=3)
    await small.open()
    try:
        for i in range(10):
            await small.put(f"mm/registry/m{i:02d}", b"x")
        await small.put("mm0", b"not under the prefix")
        snap = await small.list_prefix("mm/")
        assert [i.key for i in snap.items] == [f"mm/registry/m{i:02d}" for i in range(10)]
        assert snap.revision == (await small.put("other", b"x")) - 1
    finally:
        await small.close()


async def test_watch_delivers_puts_and_deletes_in_order(etcd_kv: mesh.kv.etcd_kv.EtcdKV) -> None:
    start = await etcd_kv.put("unrelated", b"x") + 1
    watch = etcd_kv.watch_prefix("p/", start)
    first = asyncio.ensure_future(next_batch(watch))
    await etcd_kv.put("p/a", b"1")
    await etcd_kv.put("q/a", b"elsewhere")
    await etcd_kv.put("p/b", b"2")
    await etcd_kv.delete("p/a")
    events = await first
    while len(events) < 3:
        events += await next_batch(watch)
    assert summary(events) == [("put", "p/a", b"1"), ("put", "p/b", b"2"), ("delete", "p/a", b"")]
    revisions = [e.mod_revision for e in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3
    await watch.aclose()  # type: ignore[attr-defined]


async def test_watch_replays_history_from_a_past_revision(etcd_kv: mesh.kv.etcd_kv.EtcdKV) -> None:
    r1 = await etcd_kv.put("p/a", b"1")
    await etcd_kv.put("p/a", b"2")
    watch = etcd_kv.watch_prefix("p/", r1)
    events = await next_batch(watch)
    assert summary(events) == [("put", "p/a", b"1"), ("put", "p/a", b"2")]
    await watch.aclose()  # type: ignore[attr-defined]


async def test_a_watch_from_a_compacted_revision_is_lost(etcd_kv: mesh.kv.etcd_kv.EtcdKV) -> None:
    r1 = await etcd_kv.put("p/a", b"1")
    r2 = await etcd_kv.put("p/a", b"2")
    await etcd_kv.compact(r2)
    watch = etcd_kv.watch_prefix("p/", r1)
    with pytest.raises(kv_store.WatchLost, match="compacted"):
        await next_batch(watch)


async def test_a_watch_resumes_after_an_etcd_restart_without_gaps(
    etcd_server: mesh.edges.etcd_process.EtcdServer, etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> None:
    start = await etcd_kv.put("p/before", b"1")
    watch = etcd_kv.watch_prefix("p/", start)
    assert summary(await next_batch(watch)) == [("put", "p/before", b"1")]
    pending = asyncio.ensure_future(next_batch(watch, wait=20.0))
    await asyncio.to_thread(etcd_server.restart)
    # A second client writes at once, before the watch has reconnected.
    writer = await mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint])
    try:
        await writer.put("p/after-1", b"2")
        await writer.put("p/after-2", b"3")
    finally:
        await writer.close()
    events = await pending
    while len(events) < 2:
        events += await next_batch(watch)
    assert summary(events) == [("put", "p/after-1", b"2"), ("put", "p/after-2", b"3")]
    await watch.aclose()  # type: ignore[attr-defined]


async def test_the_placement_table_keeps_mirroring_across_an_etcd_restart(
    etcd_server: mesh.edges.etcd_process.EtcdServer, etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> None:
    rs = records_store.RecordStore(etcd_kv, "mm")
    for i in range(5):
        await rs.create_model(f"m{i}", IRIS)
    placement = placement_table.PlacementTable(etcd_kv, "mm")
    await placement.start()
    try:
        rev = await rs.put_instance("node-a", NODE)
        assert await placement.wait_for_revision(rev, 5.0)

        await asyncio.to_thread(etcd_server.stop)
        assert placement.model("m0") == IRIS  # reads go on while etcd is down
        await asyncio.to_thread(etcd_server.start)

        # Retry the first write: the client may still be reconnecting.
        deadline = time.monotonic() + 10
        while True:
            try:
                created, _ = await rs.update_model_entry("after", lambda r: r or IRIS)
                break
            except errors.StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert created == IRIS
        await rs.update_model("m0", lambda r: None)
        assert await placement.wait_until(
            lambda: placement.model("after") is not None and placement.model("m0") is None, 10.0
        )
        assert sorted(placement.models()) == ["after", "m1", "m2", "m3", "m4"]
        assert placement.instance("node-a") == NODE
        assert placement.relists == 0  # resumed, not rebuilt
    finally:
        await placement.stop()


async def test_keys_put_with_a_lease_vanish_when_it_is_revoked(
    etcd_kv: mesh.kv.etcd_kv.EtcdKV,
) -> None:
    lease = await etcd_kv.grant_lease(30)
    await etcd_kv.put("inst/a", b"1", lease=lease)
    cas = await etcd_kv.compare_and_put("inst/b", b"2", 0, lease=lease)
    assert cas is not None
    assert await etcd_kv.keep_alive(lease)
    await etcd_kv.revoke_lease(lease)
    assert await etcd_kv.get("inst/a") is None
    assert await etcd_kv.get("inst/b") is None
    assert not await etcd_kv.keep_alive(lease)
    await etcd_kv.revoke_lease(lease)  # revoking twice is harmless
    with pytest.raises(errors.Conflict, match="lease"):
        await etcd_kv.put("inst/c", b"3", lease=lease)


async def test_a_lease_left_to_expire_takes_its_keys(etcd_kv: mesh.kv.etcd_kv.EtcdKV) -> None:
    lease = await etcd_kv.grant_lease(1)
    await etcd_kv.put("inst/a", b"1", lease=lease)
    deadline = time.monotonic() + 10
    while await etcd_kv.get("inst/a") is not None:
        assert time.monotonic() < deadline, "the lease never expired"
        await asyncio.sleep(0.2)
    assert not await etcd_kv.keep_alive(lease)


async def test_a_stopped_etcd_raises_store_unavailable_promptly(
    etcd_server: mesh.edges.etcd_process.EtcdServer, etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> None:
    await etcd_kv.put("k", b"v")
    lease = await etcd_kv.grant_lease(30)
    etcd_server.stop()
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("get", lambda: etcd_kv.get("k")),
        ("list", lambda: etcd_kv.list_prefix("")),
        ("put", lambda: etcd_kv.put("k", b"v")),
        ("cas", lambda: etcd_kv.compare_and_put("k", b"v", 1)),
        ("delete", lambda: etcd_kv.delete("k")),
        ("grant", lambda: etcd_kv.grant_lease(5)),
        ("keep-alive", lambda: etcd_kv.keep_alive(lease)),
        ("revoke", lambda: etcd_kv.revoke_lease(lease)),
    ]
    for name, call in calls:
        t0 = time.monotonic()
        with pytest.raises(errors.StoreUnavailable, match=re.escape(etcd_server.endpoint)):
            await asyncio.wait_for(call(), etcd_kv.timeout + 5)
        assert time.monotonic() - t0 < etcd_kv.timeout + 2, name


async def test_closing_the_client_under_a_watch_raises_store_unavailable(
    etcd_server: mesh.edges.etcd_process.EtcdServer,
) -> None:
    store_ = await mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint])
    watch = store_.watch_prefix("p/", 0)
    pending = asyncio.ensure_future(next_batch(watch))
    await asyncio.sleep(0.2)  # the stream is open
    await store_.close()
    with pytest.raises(errors.StoreUnavailable, match="closed"):
        await pending


async def test_connecting_to_no_etcd_raises_store_unavailable(
    etcd_server: mesh.edges.etcd_process.EtcdServer,
) -> None:
    etcd_server.stop()
    with pytest.raises(errors.StoreUnavailable, match=re.escape(etcd_server.endpoint)):
        await asyncio.wait_for(mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint]), 15)


async def test_etcd_restarts_on_the_same_data_and_ports(
    etcd_server: mesh.edges.etcd_process.EtcdServer,
) -> None:
    port = etcd_server.client_port
    before = await mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint])
    try:
        rev = await before.put("kept", b"across restarts")
    finally:
        await before.close()
    await asyncio.to_thread(etcd_server.restart)
    assert etcd_server.client_port == port
    after = await mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint])
    try:
        assert await after.get("kept") == kv_store.KeyValue("kept", b"across restarts", rev)
    finally:
        await after.close()
