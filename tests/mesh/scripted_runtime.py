"""A runtime whose loads finish when a test says so, a record store whose
writes wait while a test holds them, a puller that makes a
folder, and :func:`node`, the real cache manager over them on the in-memory
KV store: the cache manager's and the data plane's unit tests, without
processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
from collections.abc import AsyncIterator, Callable, Iterable

from mesh.core import errors, records, settings
from mesh.kv import memory_kv, placement_table, records_store
from mesh.node import cache_manager

MiB = 1024 * 1024


class ScriptedRuntime:
    """A runtime whose loads finish when the test says so."""

    name = "scripted"
    grpc_target = "127.0.0.1:1"
    pid = None
    counts_gpu_memory = False

    def __init__(self) -> None:
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.starts: dict[str, asyncio.Event] = {}
        self.fail: dict[str, str] = {}
        self.unloaded = asyncio.Event()
        """Set at every unload (a test clears it to wait for the next)."""

    def supported_model_types(self) -> tuple[str, ...]:
        return ("sklearn",)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def ready(self) -> bool:
        return True

    def gate(self, model_id: str) -> asyncio.Event:
        return self.gates.setdefault(model_id, asyncio.Event())

    def started(self, model_id: str) -> asyncio.Event:
        """Set once a load of the model has begun (the test may open its gate)."""
        return self.starts.setdefault(model_id, asyncio.Event())

    async def load(self, model_id: str, model_type: str, model_path: pathlib.Path) -> int:
        self.loads.append(model_id)
        self.started(model_id).set()
        await self.gate(model_id).wait()
        if model_id in self.fail:
            raise errors.ModelLoadFailed(model_id, self.fail[model_id])
        return 100 * MiB

    async def unload(self, model_id: str) -> None:
        self.unloads.append(model_id)
        self.unloaded.set()


class GatedRecordStore(records_store.RecordStore):
    """A record store whose writes to a model wait while the test holds it."""

    def __init__(self, kv: memory_kv.MemoryKV, prefix: str) -> None:
        super().__init__(kv, prefix)
        self.holds: dict[str, asyncio.Event] = {}

    def hold(self, model_id: str) -> asyncio.Event:
        """Hold writes to ``model_id`` until the returned event is set."""
        return self.holds.setdefault(model_id, asyncio.Event())

    async def update_model(
        self,
        model_id: str,
        fn: Callable[[records.ModelRecord | None], records.ModelRecord | None],
        known: tuple[records.ModelRecord, int] | None = None,
    ) -> records.ModelRecord | None:
        held = self.holds.get(model_id)
        if held is not None:
            await held.wait()
        return await super().update_model(model_id, fn, known)


class FolderPuller:
    """Writes a small model file per pull; with ``keep``, says it keeps the
    files of retired models (a disk tier), listing them in ``retired``."""

    def __init__(self, root: pathlib.Path, keep: bool = False) -> None:
        self.root = root
        self.keep = keep
        self.retired: list[str] = []

    async def pull(self, model_id: str, record: records.ModelRecord) -> pathlib.Path:
        d = self.root / model_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.joblib").write_bytes(b"x" * 10)
        return d

    async def remove(self, model_id: str) -> None:
        pass

    async def retire(self, model_id: str, record: records.ModelRecord) -> bool:
        self.retired.append(model_id)
        return self.keep


@dataclasses.dataclass(frozen=True)
class Node:
    """One node's parts, as :func:`node` starts them."""

    config: settings.Settings
    manager: cache_manager.CacheManager
    runtime: ScriptedRuntime
    store: GatedRecordStore
    mirror: placement_table.PlacementTable


@contextlib.asynccontextmanager
async def node(
    tmp_path: pathlib.Path,
    cache: settings.CacheSettings,
    models: Iterable[str],
    runtime: ScriptedRuntime | None = None,
    puller: FolderPuller | None = None,
) -> AsyncIterator[Node]:
    """A started cache manager ("n1") over ``runtime`` (a new scripted one by
    default) with ``models`` registered (type sklearn); stopped, with every
    gate opened, on the way out."""
    kv = memory_kv.MemoryKV()
    rs = GatedRecordStore(kv, "t")
    mirror = placement_table.PlacementTable(kv, "t")
    await mirror.start()
    config = settings.Settings(
        cache=cache, node=settings.NodeSettings(instance_id="n1", data_dir=tmp_path)
    )
    runtime = runtime or ScriptedRuntime()
    puller = puller or FolderPuller(tmp_path)
    manager = cache_manager.CacheManager(config, rs, mirror, runtime, puller)
    await manager.start()
    names = list(models)
    for m in names:
        await rs.create_model(m, records.ModelRecord(model_type="sklearn", path=m))
    await mirror.wait_until(lambda: all(mirror.model(m) for m in names), 5)
    try:
        yield Node(config, manager, runtime, rs, mirror)
    finally:
        for g in [*runtime.gates.values(), *rs.holds.values()]:
            g.set()
        await manager.stop()
        await mirror.stop()
