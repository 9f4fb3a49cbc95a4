"""What only etcd does, against a real one: listings read in pages, watches
and the placement table that live through an etcd restart, calls that fail
instead of hanging while etcd is down, and restarts on the same data.

The KVStore contract itself (compare-and-set, watches, leases, compaction) is
checked on etcd and on the in-memory store alike in
``tests/mesh/kv/test_kv_contract.py``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import mesh.edges.etcd_process
import mesh.kv.etcd_kv
from mesh.core import errors, records
from mesh.kv import kv_store, placement_table, records_store

pytestmark = pytest.mark.integration

WAIT = 30.0
"""Seconds to wait for what must happen: generous, as a busy machine is
slow, not wrong."""
IRIS = records.ModelRecord(model_type="sklearn", path="iris")
NODE = records.InstanceRecord(endpoint="127.0.0.1:8033", capacity_bytes=1 << 30)


async def next_batch(
    it: AsyncIterator[list[kv_store.WatchEvent]],
) -> list[kv_store.WatchEvent]:
    return await asyncio.wait_for(anext(it), WAIT)


def summary(events: list[kv_store.WatchEvent]) -> list[tuple[str, str, bytes]]:
    return [(e.kind.value, e.key, e.value) for e in events]


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


async def test_a_watch_resumes_after_an_etcd_restart_without_gaps(
    etcd_server: mesh.edges.etcd_process.EtcdServer, etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> None:
    start = await etcd_kv.put("p/before", b"1")
    watch = etcd_kv.watch_prefix("p/", start)
    assert summary(await next_batch(watch)) == [("put", "p/before", b"1")]
    pending = asyncio.ensure_future(next_batch(watch))
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
        assert await placement.wait_for_revision(rev, WAIT)

        await asyncio.to_thread(etcd_server.stop)
        assert placement.model("m0") == IRIS  # reads go on while etcd is down
        await asyncio.to_thread(etcd_server.start)

        # Retry the first write: the client may still be reconnecting.
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    created, _ = await rs.update_model_entry("after", lambda r: r or IRIS)
                    break
                except errors.StoreUnavailable:
                    await asyncio.sleep(0.1)
        assert created == IRIS
        await rs.update_model("m0", lambda r: None)
        assert await placement.wait_until(
            lambda: placement.model("after") is not None and placement.model("m0") is None, WAIT
        )
        assert sorted(placement.models()) == ["after", "m1", "m2", "m3", "m4"]
        assert placement.instance("node-a") == NODE
        assert placement.relists == 0  # resumed, not rebuilt
    finally:
        await placement.stop()


async def test_a_stopped_etcd_makes_every_call_raise_store_unavailable_rather_than_hang(
    etcd_server: mesh.edges.etcd_process.EtcdServer,
) -> None:
    store = await mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint], timeout=1.0)
    try:
        await store.put("k", b"v")
        lease = await store.grant_lease(30)
        await asyncio.to_thread(etcd_server.stop)
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("get", lambda: store.get("k")),
            ("list", lambda: store.list_prefix("")),
            ("put", lambda: store.put("k", b"v")),
            ("cas", lambda: store.compare_and_put("k", b"v", 1)),
            ("delete", lambda: store.delete("k")),
            ("grant", lambda: store.grant_lease(5)),
            ("keep-alive", lambda: store.keep_alive(lease)),
            ("revoke", lambda: store.revoke_lease(lease)),
        ]
        for name, call in calls:
            # Each call gives up after the store's 1 s timeout (retries
            # included, plus a second of grace); a call still running after
            # WAIT hangs, and wait_for's TimeoutError fails the test.
            try:
                await asyncio.wait_for(call(), WAIT)
            except errors.StoreUnavailable as e:
                assert etcd_server.endpoint in e.message, name
            else:
                pytest.fail(f"{name} succeeded with etcd stopped")
    finally:
        await store.close()


async def test_connecting_to_no_etcd_raises_store_unavailable(
    etcd_server: mesh.edges.etcd_process.EtcdServer,
) -> None:
    etcd_server.stop()
    with pytest.raises(errors.StoreUnavailable, match=re.escape(etcd_server.endpoint)):
        await asyncio.wait_for(mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint]), WAIT)


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
