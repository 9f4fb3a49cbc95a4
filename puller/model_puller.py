"""The node's model puller: a model's files from any storage backend into
``<model_dir>/<model_id>``, complete or not at all.

For each pull it resolves the model's storage (:mod:`puller.storage_config`),
asks the backend what lies at the model's path (:mod:`puller.store`),
downloads every file into a hidden staging folder beside the model folder
(``.pulling-<model_id>-*``, which the runtime never looks at), checks each
file's size and, where the store gives one, its MD5, unpacks a single
archive object (:mod:`puller.archive`), and only then renames the staging
folder into place. A failure or cancellation at any point deletes the
staging folder, so a half-downloaded model is never loadable, and the next
pull starts clean.

Order and limits: at most ``max_concurrent_pulls`` pulls run at once on a
node, each in a thread of the puller's own pool (so a slow download never
holds a thread other work needs); pulls and removals of the same model are
serialised. Large pulls log
their progress (bytes and rate); every pull ends with one log line and a
:class:`PullReport` (``on_pulled`` receives it, for a metric). At start-up,
:meth:`StoragePuller.sweep` deletes model folders and staging folders a
previous run left (the runtime starts empty).

Every failure becomes :class:`mesh.core.errors.ModelLoadFailed` whose reason names
the storage location, the storage key and the cause; credential values are
scrubbed from any text before it reaches a message or a log.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import logging
import pathlib
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import BinaryIO

from mesh.core import errors, records
from puller import archive, backends, local_files, storage_config, store

log = logging.getLogger(__name__)

MiB = 1024 * 1024
STAGING_PREFIX = ".pulling-"
"""Name prefix of staging folders in the model directory (hidden, so
runtimes skip them; swept at start-up)."""
SCHEMA_FOLDER = ".schema"
"""Where a model's schema file (``spec.storage.schemaPath``) is put, inside
the model folder (hidden, so runtimes do not take it for the model)."""


@dataclasses.dataclass(frozen=True)
class PullerSettings:
    """How the node's puller works."""

    model_dir: pathlib.Path
    """The runtime's model repository: one folder per pulled model."""
    models_root: pathlib.Path = pathlib.Path(".")
    """Base of relative local paths, and where PVCs are mounted
    (``<models_root>/<pvc name>``)."""
    storage_config_dir: pathlib.Path | None = None
    """The mounted ``storage-config`` Secret (one JSON file per key); ``None``:
    local files only, unless a model path is a URI."""
    max_concurrent_pulls: int = 2
    """Pulls that may run at once on this node; more wait their turn."""
    progress_interval_seconds: float = 5.0
    """How often a large pull logs its progress."""
    progress_min_bytes: int = 64 * MiB
    """Pulls of at least this many (announced) bytes log progress."""
    free_space_reserve_bytes: int = 16 * MiB
    """Disk space left free beyond what a model needs; a pull that would eat
    into it fails before it starts."""
    reports_kept: int = 1000
    """How many models' last :class:`PullReport` are kept."""
    cancel_wait_seconds: float = 5.0
    """How long a cancelled pull waits for its download thread to stop."""


@dataclasses.dataclass(frozen=True)
class PullReport:
    """What one successful pull did."""

    model_id: str
    """The model pulled."""
    location: str
    """Where from (``s3://bucket/path``...; no credentials)."""
    key_label: str
    """Which storage key (``storage key 'name'``)."""
    files: int
    """Files in the model folder after unpacking."""
    bytes: int
    """Bytes downloaded."""
    seconds: float
    """Wall time of the whole pull, unpacking included."""
    unpack_seconds: float = 0.0
    """Time spent unpacking an archive (0 when there was none)."""

    @property
    def mb_per_second(self) -> float:
        """Download rate over the whole pull, in MB/s (10^6 bytes)."""
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def folder_name_problem(model_id: str) -> str | None:
    """Why ``model_id`` cannot name a folder in the model directory, if it
    cannot (pure)."""
    if not model_id or model_id in (".", ".."):
        return "the model id is empty or a relative folder name"
    if "/" in model_id or "\\" in model_id or "\x00" in model_id:
        return "the model id contains a path separator"
    if model_id.startswith("."):
        return "the model id starts with a dot (reserved for the puller's own folders)"
    return None


def space_problem(needed: int, free: int, reserve: int) -> str | None:
    """Why ``needed`` bytes do not fit in ``free`` with ``reserve`` kept
    free, if they do not (pure)."""
    if needed + reserve <= free:
        return None
    return (
        f"not enough disk space on the node: the model needs {needed / MiB:.1f} MiB, "
        f"{max(free - reserve, 0) / MiB:.1f} MiB are free"
    )


class _Progress:
    """Bytes received by one pull; logs now and then; stops a cancelled pull.
    Used from the pull's worker thread only."""

    def __init__(
        self,
        model_id: str,
        location: str,
        expected: int,
        cancel: threading.Event,
        settings: PullerSettings,
    ) -> None:
        self.model_id = model_id
        self.location = location
        self.expected = expected
        self.cancel = cancel
        self.received = 0
        self.started = time.monotonic()
        self._last_log = self.started
        self._loud = expected >= settings.progress_min_bytes
        self._interval = settings.progress_interval_seconds

    def add(self, n: int) -> None:
        if self.cancel.is_set():
            raise store.Cancelled("the pull was cancelled")
        self.received += n
        if not self._loud:
            return
        now = time.monotonic()
        if now - self._last_log >= self._interval:
            self._last_log = now
            rate = self.received / 1e6 / max(now - self.started, 1e-9)
            share = f" ({100 * self.received / self.expected:.0f}%)" if self.expected else ""
            log.info(
                "pulling model %s from %s: %.1f of %.1f MB%s, %.1f MB/s",
                self.model_id,
                self.location,
                self.received / 1e6,
                self.expected / 1e6,
                share,
                rate,
            )


HASH_INLINE_BYTES = 256 * 1024
"""Chunks below this are hashed as they are written; from the first larger
one on, hashing runs in a thread of its own beside the download (hashlib
lets go of the GIL), which took MD5 off the critical path of large pulls:
measured 10-25 ms of a 22-47 ms pull of an 8 MB model inline."""


class _FileSink:
    """A file being written from a store, with its MD5 and byte count."""

    def __init__(self, f: BinaryIO, progress: _Progress) -> None:
        self._f = f
        self._progress = progress
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._hasher: concurrent.futures.ThreadPoolExecutor | None = None
        self.count = 0
        self.announced_size = -1
        self.announced_md5 = ""

    def write(self, data: bytes, /) -> int:
        self._progress.add(0)  # a cancelled pull stops here
        self._f.write(data)
        n = len(data)
        if self._hasher is None and n < HASH_INLINE_BYTES:
            self._md5.update(data)
        else:  # one worker: chunks are hashed in the order they came
            if self._hasher is None:
                self._hasher = concurrent.futures.ThreadPoolExecutor(1, "md5")
            self._hasher.submit(self._md5.update, data)
        self.count += n
        self._progress.add(n)
        return n

    def announce(self, size: int = -1, md5: str = "") -> None:
        self.announced_size = size
        self.announced_md5 = md5

    def close(self) -> None:
        """Wait for the hashing thread, if any, and let it go."""
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None

    def md5_hex(self) -> str:
        self.close()
        return self._md5.hexdigest()


@dataclasses.dataclass
class _ModelLock:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0


StoreFactory = Callable[[storage_config.Source], store.Store]


class StoragePuller:
    """Satisfies :class:`mesh.core.interfaces.ModelPuller` for every storage type."""

    def __init__(
        self,
        settings: PullerSettings,
        stores: StoreFactory | None = None,
        on_pulled: Callable[[PullReport], None] | None = None,
    ) -> None:
        self.settings = settings
        self._configs = storage_config.ConfigDir(settings.storage_config_dir)
        self._stores = stores or backends.Stores(settings.models_root)
        self._on_pulled = on_pulled
        self._slots = asyncio.Semaphore(max(1, settings.max_concurrent_pulls))
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max(1, settings.max_concurrent_pulls), thread_name_prefix="pull"
        )
        self._locks: dict[str, _ModelLock] = {}
        self.reports: collections.OrderedDict[str, PullReport] = collections.OrderedDict()
        """The last :class:`PullReport` of each recently pulled model."""
        self.pulling = 0
        """Pulls running now (not those waiting for a slot)."""

    # -- start-up -------------------------------------------------------------

    def sweep(self) -> int:
        """Delete model folders and staging leftovers of an earlier run (the
        runtime starts empty, so none is loaded). The runtime's own hidden
        folders are kept. Returns how many entries were deleted."""
        model_dir = self.settings.model_dir
        if not model_dir.is_dir():
            return 0
        removed = 0
        for child in model_dir.iterdir():
            staging = child.name.startswith(STAGING_PREFIX)
            model = not child.name.startswith(".") and child.is_dir() and not child.is_symlink()
            if not (staging or model):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
            removed += 1
        if removed:
            log.info("removed %d model folder(s) left in %s by an earlier run", removed, model_dir)
        return removed

    # -- the ModelPuller protocol ---------------------------------------------

    async def pull(self, model_id: str, record: records.ModelRecord) -> pathlib.Path:
        problem = folder_name_problem(model_id)
        if problem:
            raise errors.ModelLoadFailed(model_id, problem)
        async with self._model_lock(model_id), self._slots:
            cancel = threading.Event()
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(
                self._executor, self._pull_blocking, model_id, record, cancel
            )
            self.pulling += 1
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # The worker stops at its next chunk and deletes its staging
                # folder itself; wait for that a little (a stalled read may
                # only end with its timeout).
                cancel.set()
                await asyncio.wait([work], timeout=self.settings.cancel_wait_seconds)
                if work.done() and not work.cancelled() and work.exception() is None:
                    # It finished just before it heard: a cancelled pull leaves nothing.
                    await asyncio.to_thread(shutil.rmtree, work.result(), True)
                raise
            finally:
                self.pulling -= 1

    async def remove(self, model_id: str) -> None:
        if folder_name_problem(model_id):
            return
        async with self._model_lock(model_id):
            await asyncio.to_thread(shutil.rmtree, self.settings.model_dir / model_id, True)

    async def retire(self, model_id: str, record: records.ModelRecord) -> bool:
        """No disk tier here (:mod:`puller.disk_cache` adds one): delete."""
        await self.remove(model_id)
        return False

    # -- internals ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _model_lock(self, model_id: str) -> AsyncIterator[None]:
        entry = self._locks.get(model_id)
        if entry is None:
            entry = self._locks[model_id] = _ModelLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[model_id]

    def _pull_blocking(
        self, model_id: str, record: records.ModelRecord, cancel: threading.Event
    ) -> pathlib.Path:
        t0 = time.monotonic()
        snapshot = self._configs.snapshot()
        source: storage_config.Source | None = None
        where = store.public_url(record.path)
        try:
            source = storage_config.resolve(
                record.storage_key, record.storage_params, record.path, snapshot
            )
            backend = self._stores(source)
            where = backend.location(source.path)
            report = self._download(model_id, record, source, backend, where, cancel, t0)
        except store.StoreError as e:
            raise self._failure(model_id, record, snapshot, source, where, e.message) from None
        except OSError as e:
            cause = (
                "the node's disk is full"
                if e.errno == errno.ENOSPC
                else f"writing the model files failed: {e.strerror or type(e).__name__}"
            )
            raise self._failure(model_id, record, snapshot, source, where, cause) from None
        except Exception as e:
            cause = f"unexpected {type(e).__name__}: {e}"
            failure = self._failure(model_id, record, snapshot, source, where, cause)
            log.warning("pull of model %s failed unexpectedly: %s", model_id, failure.reason)
            raise failure from None
        self._record(report)
        return self.settings.model_dir / model_id

    def _download(
        self,
        model_id: str,
        record: records.ModelRecord,
        source: storage_config.Source,
        backend: store.Store,
        where: str,
        cancel: threading.Event,
        t0: float,
    ) -> PullReport:
        targets = store.plan(source.path, backend.list(source.path))
        if record.schema_path:
            (schema,) = store.plan(record.schema_path, backend.list(record.schema_path))[:1]
            name = store.safe_relative(schema.relative.rsplit("/", 1)[-1])
            targets.append(store.Target(schema.obj, f"{SCHEMA_FOLDER}/{name}"))
        needed = store.total_size(targets)
        self._check_room(needed)
        model_dir = self.settings.model_dir
        model_dir.mkdir(parents=True, exist_ok=True)
        work = pathlib.Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{model_id}-", dir=model_dir))
        unpack_seconds = 0.0
        try:
            content = work / "model"
            content.mkdir()
            progress = _Progress(model_id, where, needed, cancel, self.settings)
            unpack = len(targets) == 1 and archive.archive_format(targets[0].relative) is not None
            local = backend if isinstance(backend, local_files.LocalStore) else None
            for t in targets:
                dest = (work / "archive" if unpack else content) / t.relative
                if unpack or local is None or not local.link(t.obj, dest):
                    self._fetch(backend, t.obj, dest, progress)
            if unpack:
                t1 = time.monotonic()
                packed = work / "archive" / targets[0].relative
                archive.unpack(packed, content, self._check_room)
                packed.unlink()
                unpack_seconds = time.monotonic() - t1
            if cancel.is_set():
                raise store.Cancelled("the pull was cancelled")
            final = model_dir / model_id
            if final.exists():
                shutil.rmtree(final)
            content.rename(final)
            files = sum(1 for p in final.rglob("*") if p.is_file())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return PullReport(
            model_id=model_id,
            location=where,
            key_label=source.key_label,
            files=files,
            bytes=progress.received,
            seconds=time.monotonic() - t0,
            unpack_seconds=unpack_seconds,
        )

    @staticmethod
    def _fetch(
        backend: store.Store, obj: store.RemoteObject, dest: pathlib.Path, progress: _Progress
    ) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            sink = _FileSink(f, progress)
            try:
                backend.fetch(obj, sink)
            finally:
                sink.close()
        md5 = sink.md5_hex()
        store.check_fetched(obj, sink.count, md5)
        announced = store.RemoteObject(obj.key, sink.announced_size, sink.announced_md5)
        store.check_fetched(announced, sink.count, md5)

    def _check_room(self, needed: int) -> None:
        model_dir = self.settings.model_dir
        probe = model_dir if model_dir.exists() else model_dir.parent
        free = shutil.disk_usage(probe).free
        problem = space_problem(needed, free, self.settings.free_space_reserve_bytes)
        if problem:
            raise store.NoSpace(problem)

    def _failure(
        self,
        model_id: str,
        record: records.ModelRecord,
        snapshot: storage_config.Snapshot,
        source: storage_config.Source | None,
        where: str,
        cause: str,
    ) -> errors.ModelLoadFailed:
        secrets: Iterable[str]
        if source is not None:
            key_label, secrets = source.key_label, source.secrets()
        else:
            key_label = (
                f"storage key {record.storage_key!r}" if record.storage_key else "no storage key"
            )
            secrets = _all_secrets(snapshot)
        reason = storage_config.redact(f"pulling {where} ({key_label}) failed: {cause}", secrets)
        return errors.ModelLoadFailed(model_id, reason)

    def _record(self, report: PullReport) -> None:
        self.reports[report.model_id] = report
        self.reports.move_to_end(report.model_id)
        while len(self.reports) > self.settings.reports_kept:
            self.reports.popitem(last=False)
        unpacked = (
            f", unpacked in {report.unpack_seconds * 1000:.0f} ms" if report.unpack_seconds else ""
        )
        log.info(
            "pulled model %s from %s (%s): %d file(s), %.1f MB in %.2f s (%.1f MB/s)%s",
            report.model_id,
            report.location,
            report.key_label,
            report.files,
            report.bytes / 1e6,
            report.seconds,
            report.mb_per_second,
            unpacked,
        )
        if self._on_pulled is not None:
            try:
                self._on_pulled(report)
            except Exception:
                log.exception("the pull callback failed")


def _all_secrets(snapshot: storage_config.Snapshot) -> Iterable[str]:
    for fields in snapshot.configs.values():
        yield from storage_config.Source("", "", fields, "").secrets()
