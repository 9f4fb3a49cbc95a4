"""The puller's promises, with an in-memory store: a model folder appears
complete or not at all, checks catch short or corrupt transfers, pulls are
limited and serialised, leftovers are swept, and no secret is ever shown."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import itertools
import json
import logging
import pathlib
import tarfile
import threading
from collections.abc import Callable

import pytest

from mesh.core import errors, records
from puller import model_puller, storage_config, store

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"


class MemoryStore:
    """A store holding ``objects`` (key → bytes); hooks make it misbehave."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.announce_size: dict[str, int] = {}
        self.announce_md5: dict[str, str] = {}
        self.send: dict[str, bytes] = {}
        self.during_fetch: Callable[[str, int], None] | None = None
        self.list_error: store.StoreError | None = None
        self.chunks = [4]
        """Sizes of the pieces a fetch writes, taken in turn."""

    def location(self, path: str) -> str:
        return f"mem://bucket/{path}"

    def list(self, path: str) -> list[store.RemoteObject]:
        if self.list_error:
            raise self.list_error
        return [
            store.RemoteObject(
                k,
                self.announce_size.get(k, len(v)),
                md5=self.announce_md5.get(k, hashlib.md5(v).hexdigest()),
            )
            for k, v in self.objects.items()
            if k == path.rstrip("/") or k.startswith(path.rstrip("/") + "/")
        ]

    def fetch(self, obj: store.RemoteObject, sink: store.Sink) -> None:
        data = self.send.get(obj.key, self.objects[obj.key])
        sizes = itertools.cycle(self.chunks)
        i = 0
        while i < len(data):
            if self.during_fetch:
                self.during_fetch(obj.key, i)
            n = next(sizes)
            sink.write(data[i : i + n])
            i += n


@pytest.fixture
def config_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    d = tmp_path / "storage-config"
    d.mkdir()
    (d / "mem").write_text(
        json.dumps(
            {"type": "s3", "bucket": "b", "access_key_id": "AKIA", "secret_access_key": SECRET}
        )
    )
    return d


def make(
    tmp_path: pathlib.Path, config_dir: pathlib.Path, backend: MemoryStore, **kw: object
) -> model_puller.StoragePuller:
    settings = model_puller.PullerSettings(
        model_dir=tmp_path / "models",
        models_root=tmp_path,
        storage_config_dir=config_dir,
        **kw,  # type: ignore[arg-type]
    )
    return model_puller.StoragePuller(settings, stores=lambda source: backend)


def rec(path: str, key: str = "mem") -> records.ModelRecord:
    return records.ModelRecord(model_type="sklearn", path=path, storage_key=key)


def leftovers(model_dir: pathlib.Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []


async def test_a_prefix_is_pulled_into_the_model_folder(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    backend = MemoryStore({"m/iris/model.joblib": b"weights!", "m/iris/sub/x.json": b"{}"})
    puller = make(tmp_path, config_dir, backend)
    folder = await puller.pull("iris-1", rec("m/iris"))
    assert folder == tmp_path / "models" / "iris-1"
    assert (folder / "model.joblib").read_bytes() == b"weights!"
    assert (folder / "sub" / "x.json").read_bytes() == b"{}"
    assert leftovers(tmp_path / "models") == ["iris-1"]
    report = puller.reports["iris-1"]
    assert (report.files, report.bytes, report.location) == (2, 10, "mem://bucket/m/iris")
    assert report.key_label == "storage key 'mem'"


@pytest.mark.parametrize("intact", [True, False], ids=["intact", "corrupt"])
async def test_large_files_are_checked_against_their_md5_however_they_arrive(
    tmp_path: pathlib.Path, config_dir: pathlib.Path, intact: bool
) -> None:
    # Small pieces are hashed inline, large ones beside the download: mixed.
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB
    backend = MemoryStore({"m/big/model.bin": data})
    backend.chunks = [1000, 300 * 1024, 7, 2 * 1024 * 1024]
    if not intact:
        backend.send["m/big/model.bin"] = data[:-1] + b"\x00"
    puller = make(tmp_path, config_dir, backend)
    if intact:
        folder = await puller.pull("big", rec("m/big"))
        assert (folder / "model.bin").read_bytes() == data
    else:
        with pytest.raises(errors.ModelLoadFailed, match="MD5 checksum mismatch"):
            await puller.pull("big", rec("m/big"))
        assert leftovers(tmp_path / "models") == []


async def test_a_single_archive_object_is_unpacked_and_not_kept(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("model.joblib")
        info.size = 7
        tf.addfile(info, io.BytesIO(b"weights"))
    puller = make(tmp_path, config_dir, MemoryStore({"m/iris.tar.gz": buf.getvalue()}))
    folder = await puller.pull("iris-2", rec("m/iris.tar.gz"))
    assert sorted(p.name for p in folder.iterdir()) == ["model.joblib"]
    assert puller.reports["iris-2"].unpack_seconds > 0


async def test_a_schema_file_is_pulled_beside_the_model(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    backend = MemoryStore({"m/model.joblib": b"w", "schemas/iris.json": b"{}"})
    puller = make(tmp_path, config_dir, backend)
    record = records.ModelRecord("sklearn", "m", storage_key="mem", schema_path="schemas/iris.json")
    folder = await puller.pull("iris-s", record)
    assert (folder / ".schema" / "iris.json").read_bytes() == b"{}"


@pytest.mark.parametrize(
    ("misbehave", "words"),
    [
        (
            lambda s: s.send.update({"m/model.joblib": b"half"}),
            "broke off: received 4 of the 8 bytes",
        ),
        (lambda s: s.announce_md5.update({"m/model.joblib": "0" * 32}), "MD5 checksum mismatch"),
    ],
)
async def test_a_short_or_corrupt_transfer_leaves_nothing_and_a_retry_succeeds(
    tmp_path: pathlib.Path,
    config_dir: pathlib.Path,
    misbehave: Callable[[MemoryStore], None],
    words: str,
) -> None:
    backend = MemoryStore({"m/model.joblib": b"weights!"})
    misbehave(backend)
    puller = make(tmp_path, config_dir, backend)
    with pytest.raises(errors.ModelLoadFailed, match=words) as info:
        await puller.pull("m-1", rec("m"))
    assert "model 'm-1'" in info.value.message
    assert "storage key 'mem'" in info.value.message
    assert leftovers(tmp_path / "models") == []
    good = make(tmp_path, config_dir, MemoryStore({"m/model.joblib": b"weights!"}))
    assert (await good.pull("m-1", rec("m")) / "model.joblib").read_bytes() == b"weights!"


async def test_a_transfer_broken_half_way_leaves_nothing_loadable(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    backend = MemoryStore({"m/a.joblib": b"x" * 64, "m/b.json": b"y" * 64})

    def break_off(key: str, offset: int) -> None:
        if key == "m/b.json" and offset >= 32:
            raise store.Corrupt("the transfer of m/b.json broke off")

    backend.during_fetch = break_off
    puller = make(tmp_path, config_dir, backend)
    with pytest.raises(errors.ModelLoadFailed, match="broke off"):
        await puller.pull("m-2", rec("m"))
    assert leftovers(tmp_path / "models") == []
    backend.during_fetch = None
    assert sorted(p.name for p in (await puller.pull("m-2", rec("m"))).iterdir()) == [
        "a.joblib",
        "b.json",
    ]


async def test_a_cancelled_pull_stops_and_cleans_up(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    backend = MemoryStore({"m/model.joblib": b"z" * 400})
    halfway, release = threading.Event(), threading.Event()

    def stall(key: str, offset: int) -> None:
        if offset == 200:
            halfway.set()
            release.wait(5)

    backend.during_fetch = stall
    puller = make(tmp_path, config_dir, backend)
    task = asyncio.create_task(puller.pull("m-3", rec("m")))
    assert await asyncio.to_thread(halfway.wait, 5)
    staging = [p for p in leftovers(tmp_path / "models") if p.startswith(".pulling-")]
    assert staging, "the half-pulled model should be in a hidden staging folder"
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(tmp_path / "models") == []
    backend.during_fetch = None
    assert (await puller.pull("m-3", rec("m"))).is_dir()


async def test_at_most_max_concurrent_pulls_run_at_once(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    backend = MemoryStore({f"m{i}/model.joblib": b"q" * 8 for i in range(5)})
    running, peak, lock = 0, 0, threading.Lock()
    entered = threading.Semaphore(0)

    def track(key: str, offset: int) -> None:
        nonlocal running, peak
        if offset:
            return
        with lock:
            running += 1
            peak = max(peak, running)
        entered.release()
        threading.Event().wait(0.05)
        with lock:
            running -= 1

    backend.during_fetch = track
    puller = make(tmp_path, config_dir, backend, max_concurrent_pulls=2)
    await asyncio.gather(*(puller.pull(f"m{i}", rec(f"m{i}")) for i in range(5)))
    assert peak == 2


async def test_pull_and_remove_of_one_model_do_not_overlap(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    backend = MemoryStore({"m/model.joblib": b"w" * 40})
    started = threading.Event()

    def slow(key: str, offset: int) -> None:
        started.set()
        threading.Event().wait(0.01)

    backend.during_fetch = slow
    puller = make(tmp_path, config_dir, backend)
    pulling = asyncio.create_task(puller.pull("m-4", rec("m")))
    await asyncio.to_thread(started.wait, 5)
    await puller.remove("m-4")  # waits for the pull, then deletes
    assert pulling.done()
    assert not (tmp_path / "models" / "m-4").exists()
    await puller.remove("m-4")  # absent: not an error


async def test_a_wrong_secret_is_reported_without_the_secret(
    tmp_path: pathlib.Path, config_dir: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = MemoryStore({})
    # A backend whose SDK echoes the secret must still not leak it.
    backend.list_error = store.AccessDenied(f"access denied: signature with {SECRET} rejected")
    puller = make(tmp_path, config_dir, backend)
    with pytest.raises(errors.ModelLoadFailed) as info:
        await puller.pull("m-5", rec("m"))
    message = info.value.message
    assert "model 'm-5'" in message and "storage key 'mem'" in message
    assert "access denied" in message
    assert SECRET not in message and SECRET not in caplog.text
    assert "***" in message


async def test_a_missing_key_names_model_and_key(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    puller = make(tmp_path, config_dir, MemoryStore({}))
    with pytest.raises(errors.ModelLoadFailed) as info:
        await puller.pull("m-6", rec("m", key="nope"))
    assert "model 'm-6'" in info.value.message
    assert "storage key 'nope' is not in the storage configuration" in info.value.message
    assert "keys there: mem" in info.value.message


async def test_a_missing_object_is_not_found(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    puller = make(tmp_path, config_dir, MemoryStore({"other/x": b"1"}))
    with pytest.raises(errors.ModelLoadFailed, match=r"mem://bucket/m.*nothing is stored there"):
        await puller.pull("m-7", rec("m"))


async def test_a_full_disk_is_named(tmp_path: pathlib.Path, config_dir: pathlib.Path) -> None:
    backend = MemoryStore({"m/model.joblib": b"w" * 8})

    def full(key: str, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    backend.during_fetch = full
    puller = make(tmp_path, config_dir, backend)
    with pytest.raises(errors.ModelLoadFailed, match="disk is full"):
        await puller.pull("m-8", rec("m"))
    assert leftovers(tmp_path / "models") == []


def test_a_model_bigger_than_the_free_space_is_refused_before_downloading() -> None:
    assert model_puller.space_problem(10, 100, 16) is None
    problem = model_puller.space_problem(200 * 2**20, 100 * 2**20, 16 * 2**20)
    assert problem is not None and "needs 200.0 MiB, 84.0 MiB are free" in problem


async def test_keys_escaping_the_folder_are_refused(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    puller = make(tmp_path, config_dir, MemoryStore({"m/../../evil": b"x", "m/ok": b"y"}))
    with pytest.raises(errors.ModelLoadFailed, match="outside the model folder"):
        await puller.pull("m-9", rec("m"))
    assert leftovers(tmp_path / "models") == []
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("model_id", ["../x", "a/b", ".hidden", ""])
async def test_model_ids_that_are_not_folder_names_are_refused(
    tmp_path: pathlib.Path, config_dir: pathlib.Path, model_id: str
) -> None:
    puller = make(tmp_path, config_dir, MemoryStore({"m/x": b"1"}))
    with pytest.raises(errors.ModelLoadFailed):
        await puller.pull(model_id, rec("m"))


async def test_large_pulls_log_their_progress(
    tmp_path: pathlib.Path, config_dir: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="puller.model_puller")
    puller = make(
        tmp_path,
        config_dir,
        MemoryStore({"m/model.joblib": b"w" * 64}),
        progress_min_bytes=1,
        progress_interval_seconds=0,
    )
    await puller.pull("m-10", rec("m"))
    assert "pulling model m-10 from mem://bucket/m:" in caplog.text
    assert "MB/s" in caplog.text
    assert "pulled model m-10 from mem://bucket/m (storage key 'mem'): 1 file(s)" in caplog.text


def test_sweep_removes_models_and_staging_but_keeps_the_runtimes_folders(
    tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    model_dir = tmp_path / "models"
    for name in ("old-model", ".pulling-old-abc", ".mlserver"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "settings.json").write_text("{}")
    puller = make(tmp_path, config_dir, MemoryStore({}))
    assert puller.sweep() == 2
    assert leftovers(model_dir) == [".mlserver", "settings.json"]


async def test_local_folders_keep_working_without_any_storage_config(
    tmp_path: pathlib.Path,
) -> None:
    source = tmp_path / "trained" / "iris"
    source.mkdir(parents=True)
    (source / "model.joblib").write_bytes(b"weights")
    puller = model_puller.StoragePuller(
        model_puller.PullerSettings(model_dir=tmp_path / "models", models_root=tmp_path)
    )
    folder = await puller.pull("iris-local", records.ModelRecord("sklearn", "trained/iris"))
    assert (folder / "model.joblib").read_bytes() == b"weights"
    # Linked, not copied (same file system); the runtime replaces its own files.
    assert (folder / "model.joblib").stat().st_ino == (source / "model.joblib").stat().st_ino
    single = await puller.pull(
        "iris-file", records.ModelRecord("sklearn", f"file://{source}/model.joblib")
    )
    assert [p.name for p in single.iterdir()] == ["model.joblib"]
    with pytest.raises(errors.ModelLoadFailed, match="no file or folder at"):
        await puller.pull("nope", records.ModelRecord("sklearn", "trained/absent"))


async def test_a_pvc_key_reads_inside_the_mounted_volume_only(tmp_path: pathlib.Path) -> None:
    (tmp_path / "claim" / "iris").mkdir(parents=True)
    (tmp_path / "claim" / "iris" / "model.joblib").write_bytes(b"w")
    (tmp_path / "secret.txt").write_text("outside")
    config = tmp_path / "config"
    config.mkdir()
    (config / "pvc").write_text(json.dumps({"type": "pvc", "name": "claim"}))
    puller = model_puller.StoragePuller(
        model_puller.PullerSettings(
            model_dir=tmp_path / "models", models_root=tmp_path, storage_config_dir=config
        )
    )
    folder = await puller.pull("iris-pvc", rec("iris", key="pvc"))
    assert (folder / "model.joblib").read_bytes() == b"w"
    with pytest.raises(errors.ModelLoadFailed, match="leads outside the volume"):
        await puller.pull("escape", rec("../secret.txt", key="pvc"))


def test_sources_list_their_secrets_for_redaction() -> None:
    source = storage_config.Source("s3", "k", {"secret_access_key": SECRET, "region": "eu"}, "m")
    assert source.secrets() == (SECRET,)
