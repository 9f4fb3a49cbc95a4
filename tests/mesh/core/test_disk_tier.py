"""The disk tier's rules: least recently used out first within a byte budget,
and kept files trusted only if they are exactly as they were kept."""

from __future__ import annotations

from mesh.core import disk_tier, records


def entry(model_id: str, size: int, used: float) -> disk_tier.DiskEntry:
    return disk_tier.DiskEntry(model_id, size, used)


def test_a_model_that_fits_is_kept_and_nothing_dropped() -> None:
    plan = disk_tier.plan_keep([entry("a", 30, 1)], 100, entry("b", 70, 2))
    assert plan == disk_tier.KeepPlan(keep=True, drop=())


def test_the_least_recently_used_are_dropped_until_the_model_fits() -> None:
    kept = [entry("old", 40, 1), entry("mid", 40, 2), entry("new", 10, 3)]
    plan = disk_tier.plan_keep(kept, 100, entry("m", 50, 4))
    assert plan == disk_tier.KeepPlan(keep=True, drop=("old",))
    plan = disk_tier.plan_keep(kept, 100, entry("m", 90, 4))
    assert plan == disk_tier.KeepPlan(keep=True, drop=("old", "mid"))
    plan = disk_tier.plan_keep(kept, 100, entry("m", 95, 4))
    assert plan == disk_tier.KeepPlan(keep=True, drop=("old", "mid", "new"))


def test_a_model_bigger_than_the_tier_is_not_kept_and_drops_nothing() -> None:
    plan = disk_tier.plan_keep([entry("a", 10, 1)], 100, entry("huge", 101, 2))
    assert plan == disk_tier.KeepPlan(keep=False)


def test_an_older_copy_of_the_same_model_is_replaced_not_counted() -> None:
    plan = disk_tier.plan_keep([entry("m", 80, 1), entry("a", 20, 2)], 100, entry("m", 80, 3))
    assert plan == disk_tier.KeepPlan(keep=True, drop=())


def test_a_tier_over_a_smaller_budget_drops_its_oldest_first() -> None:
    kept = [entry("b", 50, 2), entry("a", 50, 1), entry("c", 50, 3)]
    assert disk_tier.over_budget(kept, 100) == ("a",)
    assert disk_tier.over_budget(kept, 150) == ()
    assert disk_tier.over_budget(kept, 0) == ("a", "b", "c")


RECORD = records.ModelRecord(model_type="sklearn", path="s3/iris", storage_key="k")
FILES = {
    "model.joblib": disk_tier.FileStamp(1000, 5),
    "sub/extra.bin": disk_tier.FileStamp(20, 6),
}


def manifest() -> disk_tier.Manifest:
    return disk_tier.Manifest("m", disk_tier.source_key(RECORD), FILES)


def test_a_manifest_reads_back_as_written_and_sums_its_files() -> None:
    m = manifest()
    assert disk_tier.Manifest.from_json(m.to_json()) == m
    assert m.size_bytes == 1020


def test_a_damaged_manifest_reads_as_none() -> None:
    assert disk_tier.Manifest.from_json("{not json") is None
    assert disk_tier.Manifest.from_json('{"version": 1}') is None
    assert disk_tier.Manifest.from_json('{"version": 99, "model_id": "m"}') is None


def test_unchanged_files_of_the_same_source_are_trusted() -> None:
    source = disk_tier.source_key(RECORD)
    assert disk_tier.manifest_problem(manifest(), "m", source, dict(FILES)) is None


def test_a_missing_added_or_changed_file_is_not_trusted() -> None:
    source = disk_tier.source_key(RECORD)
    missing = {"model.joblib": FILES["model.joblib"]}
    added = {**FILES, "x": disk_tier.FileStamp(1, 1)}
    resized = {**FILES, "model.joblib": disk_tier.FileStamp(999, 5)}
    touched = {**FILES, "model.joblib": disk_tier.FileStamp(1000, 7)}
    for found, word in ((missing, "missing"), (added, "appeared"), (resized, "changed")):
        problem = disk_tier.manifest_problem(manifest(), "m", source, found)
        assert problem is not None and word in problem
    assert disk_tier.manifest_problem(manifest(), "m", source, touched) is not None


def test_files_of_another_source_or_model_are_not_trusted() -> None:
    moved = records.ModelRecord(model_type="sklearn", path="s3/iris-v2", storage_key="k")
    other_key = records.ModelRecord(
        model_type="sklearn", path="s3/iris", storage_key="k", storage_params={"bucket": "b"}
    )
    for rec in (moved, other_key):
        problem = disk_tier.manifest_problem(manifest(), "m", disk_tier.source_key(rec), FILES)
        assert problem is not None and "source" in problem
    same = disk_tier.source_key(RECORD)
    assert disk_tier.manifest_problem(manifest(), "other", same, FILES) is not None
