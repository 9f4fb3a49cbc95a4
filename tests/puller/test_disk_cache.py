"""The disk tier on real files: a retired model's folder is kept and comes
back without a pull; changed files, another source, or no room mean a pull."""

from __future__ import annotations

import os
import pathlib

from mesh.core import records
from puller import disk_cache

RECORD = records.ModelRecord(model_type="sklearn", path="iris")


class CountingPuller:
    """The storage puller's stand-in: writes ``size`` bytes per pull, counts pulls."""

    def __init__(self, model_dir: pathlib.Path, size: int = 100) -> None:
        self.model_dir = model_dir
        self.size = size
        self.pulls: list[str] = []

    async def pull(self, model_id: str, record: records.ModelRecord) -> pathlib.Path:
        self.pulls.append(model_id)
        folder = self.model_dir / model_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.joblib").write_bytes(b"m" * self.size)
        return folder

    async def remove(self, model_id: str) -> None:
        path = self.model_dir / model_id
        for f in path.glob("*"):
            f.unlink()
        if path.exists():
            path.rmdir()

    async def retire(self, model_id: str, record: records.ModelRecord) -> bool:
        await self.remove(model_id)
        return False


def tier(
    tmp_path: pathlib.Path, budget: int = 1000
) -> tuple[disk_cache.DiskCachePuller, CountingPuller, list[str], list[str]]:
    inner = CountingPuller(tmp_path)
    events: list[str] = []
    dropped: list[str] = []
    t = disk_cache.DiskCachePuller(inner, tmp_path, budget, lambda e, _b: events.append(e))
    t.on_dropped = dropped.append
    t.load_index()
    return t, inner, events, dropped


async def test_a_retired_model_comes_back_from_disk_without_a_pull(tmp_path: pathlib.Path) -> None:
    t, inner, events, _ = tier(tmp_path)
    path = await t.pull("m", RECORD)
    (path / "model-settings.json").write_text("{}")  # what the runtime adds
    assert await t.retire("m", RECORD)
    assert not path.exists() and t.holds("m") and t.held_bytes() == 102
    again = await t.pull("m", RECORD)
    assert again == path and (again / "model.joblib").read_bytes() == b"m" * 100
    assert not (again / disk_cache.MANIFEST_FILE).exists()
    assert inner.pulls == ["m"] and events.count("hit") == 1 and events.count("miss") == 1


async def test_changed_files_or_another_source_are_pulled_again(tmp_path: pathlib.Path) -> None:
    t, inner, _, dropped = tier(tmp_path)
    await t.pull("m", RECORD)
    await t.retire("m", RECORD)
    kept = tmp_path / disk_cache.CACHE_FOLDER / "m" / "model.joblib"
    kept.write_bytes(b"tampered")
    await t.pull("m", RECORD)
    await t.retire("m", RECORD)
    await t.pull("m", records.ModelRecord(model_type="sklearn", path="iris-v2"))
    assert inner.pulls == ["m", "m", "m"] and dropped == ["m", "m"]


async def test_the_least_recently_kept_are_dropped_to_stay_within_budget(
    tmp_path: pathlib.Path,
) -> None:
    t, inner, events, dropped = tier(tmp_path, budget=250)
    for m in ("a", "b", "c"):
        await t.pull(m, RECORD)
        assert await t.retire(m, RECORD)
    assert t.model_ids() == ["b", "c"] and dropped == ["a"] and t.held_bytes() == 200
    assert not (tmp_path / disk_cache.CACHE_FOLDER / "a").exists()
    inner.size = 300  # bigger than the whole tier: deleted, not kept
    await t.pull("big", RECORD)
    assert not await t.retire("big", RECORD)
    assert not (tmp_path / "big").exists() and t.model_ids() == ["b", "c"]
    assert events.count("dropped") == 1


async def test_a_removed_model_leaves_the_tier_and_an_off_tier_keeps_nothing(
    tmp_path: pathlib.Path,
) -> None:
    t, _, _, dropped = tier(tmp_path)
    await t.pull("m", RECORD)
    await t.retire("m", RECORD)
    await t.remove("m")
    assert not t.holds("m") and dropped == ["m"]
    off, _, _, _ = tier(tmp_path / "off", budget=0)
    await off.pull("m", RECORD)
    assert not await off.retire("m", RECORD) and not (tmp_path / "off" / "m").exists()


async def test_what_an_earlier_run_kept_is_read_back_oldest_first_out(
    tmp_path: pathlib.Path,
) -> None:
    t, _, _, _ = tier(tmp_path)
    for m in ("old", "new"):
        await t.pull(m, RECORD)
        await t.retire(m, RECORD)
    manifest = tmp_path / disk_cache.CACHE_FOLDER / "old" / disk_cache.MANIFEST_FILE
    os.utime(manifest, (1, 1))
    (tmp_path / disk_cache.CACHE_FOLDER / "stray").mkdir()
    restarted, inner, _, _ = tier(tmp_path, budget=150)
    assert restarted.model_ids() == ["new"]
    assert not (tmp_path / disk_cache.CACHE_FOLDER / "stray").exists()
    await restarted.pull("new", RECORD)
    assert inner.pulls == []
