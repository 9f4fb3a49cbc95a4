"""This node's instance record: published at start, again when it changes
(changes close together make one write), and not rewritten while nothing
changes, except for a slow refresh.

The tests wait on the record's writes and on the membership's looks at the
node (each reads a snapshot), never on the clock."""

from __future__ import annotations

import asyncio

from mesh.core import records
from mesh.kv import memory_kv, records_store
from mesh.node import membership
from tests.mesh.node.signals import Signal

"""Seconds to wait for what must happen: generous, as a busy machine is
slow, not wrong."""


class Node:
    """What the membership publishes, the writes it makes and its looks."""

    def __init__(self) -> None:
        self.used = 0
        self.looks = 0
        self.puts = 0
        self.happened = Signal()
        node = self

        class CountingKV(memory_kv.MemoryKV):
            async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
                rev = await super().put(key, value, lease=lease)
                node.puts += 1
                node.happened.fire()
                return rev

        self.kv = CountingKV()
        self.store = records_store.RecordStore(self.kv, "t")

    def snapshot(self) -> records.InstanceRecord:
        self.looks += 1
        self.happened.fire()
        return records.InstanceRecord(endpoint="n1:1", capacity_bytes=100, used_bytes=self.used)

    async def looked_again(self, times: int = 1) -> None:
        """Wait until the membership has looked at the node ``times`` more."""
        target = self.looks + times
        await self.happened.until(lambda: self.looks >= target)


async def test_an_unchanged_record_is_left_alone_until_the_slow_refresh() -> None:
    node = Node()
    m = membership.Membership(
        node.store, "n1", node.snapshot, 30, republish_seconds=0.05, refresh_seconds=1.5
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await m.start()
    try:
        assert node.puts == 1
        await node.looked_again(6)  # six republish checks, nothing changed
        assert node.puts == 1
        await node.happened.until(lambda: node.puts >= 2)  # the refresh
        assert loop.time() - started >= 1.5  # not before it is due
        got = await node.store.get_instance("n1")
        assert got is not None and got[0] == node.snapshot()
    finally:
        await m.stop()


async def test_changes_close_together_are_published_in_one_write() -> None:
    node = Node()
    # No republish check and no refresh during the test: only the changes
    # make the membership look. The burst spans microseconds, the window a
    # second.
    m = membership.Membership(
        node.store,
        "n1",
        node.snapshot,
        30,
        republish_seconds=3600,
        coalesce_seconds=1.0,
        refresh_seconds=3600,
    )
    await m.start()
    try:
        assert node.puts == 1
        for used in (10, 20, 30):
            node.used = used
            m.changed()
            await asyncio.sleep(0)  # the membership runs between changes
        await node.happened.until(lambda: node.puts >= 2)
        got = await node.store.get_instance("n1")
        assert got is not None and got[0].used_bytes == 30
        # Asked again with nothing changed, it looks and writes nothing: had
        # the burst been split, its second write would have come first.
        m.changed()
        await node.looked_again()
        assert node.puts == 2
    finally:
        await m.stop()
