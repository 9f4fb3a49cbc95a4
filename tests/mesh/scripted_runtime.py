"""A runtime whose loads finish when a test says so, and a puller that
makes a folder: the cache manager's and the data plane's unit tests run the
real manager over them, without processes."""

from __future__ import annotations

import asyncio
import pathlib

from mesh import errors, records

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
        self.fail: dict[str, str] = {}

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

    async def load(self, model_id: str, model_type: str, model_path: pathlib.Path) -> int:
        self.loads.append(model_id)
        await self.gate(model_id).wait()
        if model_id in self.fail:
            raise errors.ModelLoadFailed(model_id, self.fail[model_id])
        return 100 * MiB

    async def unload(self, model_id: str) -> None:
        self.unloads.append(model_id)


class FolderPuller:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    async def pull(self, model_id: str, record: records.ModelRecord) -> pathlib.Path:
        d = self.root / model_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.joblib").write_bytes(b"x" * 10)
        return d

    async def remove(self, model_id: str) -> None:
        pass
