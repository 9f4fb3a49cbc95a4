"""The disk tier: a puller that keeps the files of models evicted from memory.

Wraps the node's :class:`puller.model_puller.StoragePuller`. When a model
leaves memory while still registered, :meth:`DiskCachePuller.retire` moves
its folder out of the runtime's repository into ``<model_dir>/.disk-cache/``
(a rename: no copy; hidden, so runtimes never scan it) with a manifest of
its files beside them, dropping the least recently used kept models to stay
within the byte budget (:func:`mesh.core.disk_tier.plan_keep`). The next
:meth:`pull` of the model checks the manifest against the files
(:func:`mesh.core.disk_tier.manifest_problem`) and renames the folder back:
no storage is read. Files that fail the check are deleted and pulled again.

The tier outlives the node's process (the folder is hidden, so the
start-up sweep keeps it); at start it is read back from the manifests.
Every hit, miss, drop and the bytes held go to ``on_event`` (the node's
``meshserve_disk_cache_*`` metrics), and every model dropped from the tier
to ``on_dropped`` (the node writes that its disk no longer holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import shutil
import time
from collections.abc import Callable

from mesh.core import disk_tier, interfaces, records

log = logging.getLogger(__name__)

CACHE_FOLDER = ".disk-cache"
"""The tier's folder inside the model directory."""
MANIFEST_FILE = ".disk-cache-manifest.json"
"""The manifest, inside each kept model's folder (hidden: not a model file)."""

EventHook = Callable[[str, int], None]
"""``(event, bytes held)``; event is ``hit``, ``miss``, ``kept``, ``dropped``
or ``start``. Called on the event loop only."""


def stamps(folder: pathlib.Path) -> dict[str, disk_tier.FileStamp]:
    """Every file under ``folder`` but the manifest: relative path → stamp."""
    found: dict[str, disk_tier.FileStamp] = {}
    for dirpath, _dirs, names in os.walk(folder):
        base = pathlib.Path(dirpath).relative_to(folder)
        for n in names:
            relative = (base / n).as_posix()
            if relative == MANIFEST_FILE:
                continue
            st = os.stat(os.path.join(dirpath, n))
            found[relative] = disk_tier.FileStamp(st.st_size, st.st_mtime_ns)
    return found


def read_manifest(folder: pathlib.Path) -> disk_tier.Manifest | None:
    try:
        return disk_tier.Manifest.from_json((folder / MANIFEST_FILE).read_text())
    except OSError:
        return None


class DiskCachePuller:
    """:class:`mesh.core.interfaces.ModelPuller` with a disk tier in front
    of ``inner``. ``budget_bytes`` 0 keeps nothing."""

    def __init__(
        self,
        inner: interfaces.ModelPuller,
        model_dir: pathlib.Path,
        budget_bytes: int,
        on_event: EventHook | None = None,
        on_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self._inner = inner
        self._model_dir = model_dir
        self._root = model_dir / CACHE_FOLDER
        self.budget_bytes = budget_bytes
        self._entries: dict[str, disk_tier.DiskEntry] = {}
        self._lock = asyncio.Lock()
        self._on_event = on_event
        self.on_dropped = on_dropped
        """Called with each model dropped from the tier (settable after start)."""

    # -- start-up -------------------------------------------------------------

    def load_index(self) -> None:
        """Read back what an earlier run kept (blocking; call at start):
        folders with a manifest are entries, anything else is deleted; then
        drop the least recently used beyond the budget."""
        self._root.mkdir(parents=True, exist_ok=True)
        for child in self._root.iterdir():
            manifest = read_manifest(child) if child.is_dir() else None
            if manifest is None or manifest.model_id != child.name:
                _delete(child)
                continue
            used = (child / MANIFEST_FILE).stat().st_mtime
            self._entries[child.name] = disk_tier.DiskEntry(child.name, manifest.size_bytes, used)
        for model_id in disk_tier.over_budget(self._entries.values(), self.budget_bytes):
            self._drop_blocking(model_id)
            self._dropped(model_id)
        if self._entries:
            log.info(
                "disk tier: %d model(s), %.1f MB kept from an earlier run",
                len(self._entries),
                self.held_bytes() / 1e6,
            )
        self._event("start")

    # -- what it holds ----------------------------------------------------------

    def held_bytes(self) -> int:
        return sum(e.size_bytes for e in self._entries.values())

    def holds(self, model_id: str) -> bool:
        """Whether the tier holds the model's files (kept, not loaded)."""
        return model_id in self._entries

    def model_ids(self) -> list[str]:
        return sorted(self._entries)

    # -- the ModelPuller protocol -------------------------------------------------

    async def pull(self, model_id: str, record: records.ModelRecord) -> pathlib.Path:
        async with self._lock:
            restored = await self._restore(model_id, record)
        if restored is not None:
            self._event("hit")
            return restored
        self._event("miss")
        return await self._inner.pull(model_id, record)

    async def remove(self, model_id: str) -> None:
        async with self._lock:
            if model_id in self._entries:
                await asyncio.to_thread(self._drop_blocking, model_id)
                self._dropped(model_id)
        await self._inner.remove(model_id)

    async def retire(self, model_id: str, record: records.ModelRecord) -> bool:
        """Keep the model's folder in the tier, dropping older ones to make
        room; ``False`` (and the files deleted) when it is not kept."""
        if self.budget_bytes <= 0:
            await self._inner.remove(model_id)
            return False
        async with self._lock:
            kept, dropped = await asyncio.to_thread(self._keep_blocking, model_id, record)
        for victim in dropped:
            self._dropped(victim)
        if kept:
            self._event("kept")
        else:
            await self._inner.remove(model_id)
        return kept

    # -- internals ------------------------------------------------------------

    async def _restore(self, model_id: str, record: records.ModelRecord) -> pathlib.Path | None:
        if model_id not in self._entries:
            return None
        restored = await asyncio.to_thread(self._restore_blocking, model_id, record)
        if restored is None:
            self._dropped(model_id)
        return restored

    def _restore_blocking(self, model_id: str, record: records.ModelRecord) -> pathlib.Path | None:
        kept = self._root / model_id
        manifest = read_manifest(kept)
        problem = "its manifest is missing or damaged"
        if manifest is not None:
            try:
                found = stamps(kept)
            except OSError as e:
                found = {}
                log.debug("listing kept files of %s: %s", model_id, e)
            problem = (
                disk_tier.manifest_problem(manifest, model_id, disk_tier.source_key(record), found)
                or ""
            )
        if problem:
            log.info("disk tier: not reusing the kept files of %s: %s", model_id, problem)
            self._drop_blocking(model_id)
            return None
        target = self._model_dir / model_id
        _delete(target)
        (kept / MANIFEST_FILE).unlink()
        kept.rename(target)
        del self._entries[model_id]
        return target

    def _keep_blocking(
        self, model_id: str, record: records.ModelRecord
    ) -> tuple[bool, tuple[str, ...]]:
        """Whether the folder was kept, and the models dropped for it."""
        folder = self._model_dir / model_id
        if not folder.is_dir():
            return False, ()
        try:
            found = stamps(folder)
        except OSError:
            return False, ()
        manifest = disk_tier.Manifest(model_id, disk_tier.source_key(record), found)
        entry = disk_tier.DiskEntry(model_id, manifest.size_bytes, time.time())
        plan = disk_tier.plan_keep(self._entries.values(), self.budget_bytes, entry)
        if not plan.keep:
            return False, ()
        for victim in plan.drop:
            self._drop_blocking(victim)
        self._root.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST_FILE).write_text(manifest.to_json())
        target = self._root / model_id
        _delete(target)
        folder.rename(target)
        self._entries[model_id] = entry
        return True, plan.drop

    def _drop_blocking(self, model_id: str) -> None:
        self._entries.pop(model_id, None)
        _delete(self._root / model_id)

    def _dropped(self, model_id: str) -> None:
        """Tell the node a model left the tier (on the event loop)."""
        self._event("dropped")
        if self.on_dropped is not None:
            try:
                self.on_dropped(model_id)
            except Exception:
                log.exception("the disk tier's drop callback failed")

    def _event(self, event: str) -> None:
        if self._on_event is not None:
            self._on_event(event, self.held_bytes())


def _delete(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
