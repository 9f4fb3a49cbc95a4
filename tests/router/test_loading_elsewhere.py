"""Two nodes' data planes over one in-memory store: a request for a model
that another node is loading waits for that copy instead of starting a
second one, even when this node's mirror has not yet seen the other's claim."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mesh.core import records, settings
from mesh.kv import kv_store, memory_kv, placement_table, records_store
from mesh.node import cache_manager, dispatch
from router import dataplane, wire
from tests.mesh import scripted_runtime as scripted
from tests.router.test_dataplane import Runtime

MiB = 1024 * 1024
MODEL = "m"


class LaggingView:
    """A node's view of the store whose watch stands still until the node
    reads the store itself (a mirror that lags the store, deterministically)."""

    def __init__(self, kv: memory_kv.MemoryKV) -> None:
        self._kv = kv
        self.flowing = asyncio.Event()
        self.flowing.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)

    async def get(self, key: str) -> kv_store.KeyValue | None:
        self.flowing.set()
        return await self._kv.get(key)

    async def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[list[kv_store.WatchEvent]]:
        async for batch in self._kv.watch_prefix(prefix, start_revision):
            await self.flowing.wait()
            yield batch


class PlaneUpstream:
    """A peer reached in-process: its data plane, with the forwarded headers."""

    def __init__(self, plane: dataplane.DataPlane) -> None:
        self._plane = plane

    async def call(
        self,
        method: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        return await self._plane.call(method, request, list(metadata), timeout)

    def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        raise NotImplementedError("not used here")


class Node:
    def __init__(
        self, instance_id: str, kv: kv_store.KVStore, store: records_store.RecordStore, tmp: Any
    ) -> None:
        self.config = settings.Settings(
            cache=settings.CacheSettings(capacity_bytes=1000 * MiB),
            node=settings.NodeSettings(instance_id=instance_id, data_dir=tmp / instance_id),
        )
        self.mirror = placement_table.PlacementTable(kv, "t")
        self.runtime = scripted.ScriptedRuntime()
        self.manager = cache_manager.CacheManager(
            self.config, store, self.mirror, self.runtime, scripted.FolderPuller(tmp / instance_id)
        )
        self.peers: dict[str, dataplane.DataPlane] = {}
        self.plane = dataplane.DataPlane(
            self.config,
            self.mirror,
            self.manager,
            dispatch.Dispatcher(self.config, self.mirror, self.manager),
            Runtime(),
            lambda endpoint: PlaneUpstream(self.peers[endpoint]),
        )


async def _sees_both_nodes_and_the_model(mirror: placement_table.PlacementTable) -> None:
    await mirror.wait_until(
        lambda: mirror.model(MODEL) is not None and len(mirror.instances()) == 2, 5
    )


@contextlib.asynccontextmanager
async def two_nodes(tmp: pathlib.Path) -> AsyncIterator[tuple[Node, Node, LaggingView]]:
    """Nodes a and b (b with more room, so b's placement picks itself), one
    model registered; b's view of the store can be held back."""
    kv = memory_kv.MemoryKV()
    store = records_store.RecordStore(kv, "t")
    b_view = LaggingView(kv)
    a, b = Node("a", kv, store, tmp), Node("b", b_view, store, tmp)
    a.peers["b"], b.peers["a"] = b.plane, a.plane
    for node, used in ((a, 500 * MiB), (b, 0)):
        instance_id = node.config.node.instance_id
        rec = records.InstanceRecord(
            endpoint=instance_id,
            capacity_bytes=1000 * MiB,
            used_bytes=used,
            labels=("mt:sklearn",),
        )
        await store.put_instance(instance_id, rec)
    await store.create_model(MODEL, records.ModelRecord(model_type="sklearn", path=MODEL))
    for node in (a, b):
        await node.mirror.start()
        await node.manager.start()
        await _sees_both_nodes_and_the_model(node.mirror)
    try:
        yield a, b, b_view
    finally:
        for node in (a, b):
            for g in node.runtime.gates.values():
                g.set()
            await node.manager.stop()
            await node.mirror.stop()


async def test_requests_wait_for_the_copy_another_node_claimed_before_their_mirror_saw_it(
    tmp_path: pathlib.Path,
) -> None:
    async with two_nodes(tmp_path) as (a, b, b_view):
        b_view.flowing.clear()  # b's mirror stops here: it will not see a's claim
        a.manager.load_soon(MODEL)
        await a.runtime.started(MODEL).wait()  # a's claim is in the store
        request = wire.rewrite_name(b"", MODEL)
        storm = [
            asyncio.create_task(node.plane.call("ModelInfer", request, [], 10.0))
            for _ in range(5)
            for node in (a, b)
        ]
        answers: asyncio.Future[list[bytes]] = asyncio.gather(*storm)
        # b went to the store (its own claims were refused), or gave up
        went: asyncio.Future[bool] = asyncio.ensure_future(b_view.flowing.wait())
        either: list[asyncio.Future[Any]] = [answers, went]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        went.cancel()
        a.runtime.gate(MODEL).set()
        assert await answers == [b"answer"] * 10
        assert a.runtime.loads == [MODEL]
        assert b.runtime.loads == []
        assert b.manager.loads_claimed == 0
