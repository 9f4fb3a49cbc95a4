"""This node's instance record: published at start, again when it changes
(changes close together make one write), and not rewritten while nothing
changes, except for a slow refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mesh.core import records
from mesh.kv import memory_kv, records_store
from mesh.node import membership


class CountingKV(memory_kv.MemoryKV):
    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self.puts += 1
        return await super().put(key, value, lease=lease)


async def test_publishes_changes_once_and_leaves_an_unchanged_record_alone() -> None:
    kv = CountingKV()
    rs = records_store.RecordStore(kv, "t")
    used = [0]

    def snapshot() -> records.InstanceRecord:
        return records.InstanceRecord(endpoint="n1:1", capacity_bytes=100, used_bytes=used[0])

    m = membership.Membership(
        rs, "n1", snapshot, 30, republish_seconds=0.05, coalesce_seconds=0.05, refresh_seconds=1.5
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await m.start()
    try:
        assert kv.puts == 1
        await asyncio.sleep(0.3)  # six republish checks, nothing changed
        assert kv.puts == 1
        for n in (10, 20, 30):  # three changes in a burst: one write
            used[0] = n
            m.changed()
        await until(lambda: kv.puts >= 2)
        await asyncio.sleep(0.2)
        assert kv.puts == 2
        got = await rs.get_instance("n1")
        assert got is not None and got[0].used_bytes == 30
        await until(lambda: kv.puts >= 3, 5.0)  # the refresh, with nothing changed
        assert loop.time() - started >= 1.5
    finally:
        await m.stop()


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)
