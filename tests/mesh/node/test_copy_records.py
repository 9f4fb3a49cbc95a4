"""A node's copy records in the store: each write but the claim is seen by
the node's mirror when it returns (the claim is settled in the store; the
pull does not wait for the mirror), an unregistered model stays unregistered, and
last-used times are written off the request path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from mesh.core import errors, load_claims, records
from mesh.kv import memory_kv, placement_table, records_store
from mesh.node import copy_records

Parts = tuple[
    copy_records.CopyRecordWriter, records_store.RecordStore, placement_table.PlacementTable
]


@contextlib.asynccontextmanager
async def started(interval: float = 5.0) -> AsyncIterator[Parts]:
    """A writer for node n1, with model m registered and nodes n1, n2 alive."""
    kv = memory_kv.MemoryKV()
    rs = records_store.RecordStore(kv, "t")
    mirror = placement_table.PlacementTable(kv, "t")
    await mirror.start()
    for i in ("n1", "n2"):
        await rs.put_instance(i, records.InstanceRecord(endpoint=f"{i}:1", capacity_bytes=1))
    await rs.create_model("m", records.ModelRecord(model_type="sklearn", path="m"))
    await mirror.wait_until(
        lambda: mirror.model("m") is not None and len(mirror.instances()) == 2, 5
    )
    writer = copy_records.CopyRecordWriter("n1", rs, mirror, interval)
    try:
        yield writer, rs, mirror
    finally:
        writer.stop_flushing()
        await mirror.stop()


async def test_a_claim_is_in_the_store_and_a_load_in_the_mirror_when_each_write_returns() -> None:
    async with started() as (writer, rs, mirror):
        await writer.claim(load_claims.LoadClaim("m", "n1"))
        stored = await rs.get_model("m")
        assert stored is not None and stored[0].copies["n1"].state is records.CopyState.LOADING
        await writer.loaded("m", 123)
        rec = mirror.model("m")
        assert rec is not None and rec.copies["n1"].state is records.CopyState.LOADED
        assert rec.size_bytes == 123


async def test_a_claim_on_a_model_another_node_loads_is_rerouted() -> None:
    async with started() as (writer, rs, mirror):
        await copy_records.CopyRecordWriter("n2", rs, mirror, 5.0).claim(
            load_claims.LoadClaim("m", "n2")
        )
        with pytest.raises(errors.Reroute):
            await writer.claim(load_claims.LoadClaim("m", "n1"))


async def test_a_failure_replaces_the_copy_and_a_withdrawal_removes_it() -> None:
    async with started() as (writer, _, mirror):
        await writer.claim(load_claims.LoadClaim("m", "n1"))
        await writer.failed("m", "bad pickle")
        rec = mirror.model("m")
        assert rec is not None and "n1" not in rec.copies
        assert rec.failures["n1"].message == "bad pickle"
        await writer.loaded("m", 1)
        await writer.withdraw("m")
        rec = mirror.model("m")
        assert rec is not None and not rec.copies and not rec.failures


async def test_an_unregistered_model_stays_unregistered() -> None:
    async with started() as (writer, rs, mirror):
        await rs.update_model("m", lambda r: None)
        await mirror.wait_until(lambda: mirror.model("m") is None, 5)
        assert await writer.loaded("m", 1) is None
        assert await rs.get_model("m") is None


async def test_copies_left_by_an_earlier_run_are_withdrawn() -> None:
    async with started() as (writer, _, mirror):
        await writer.loaded("m", 1)
        await writer.withdraw_left_over()
        rec = mirror.model("m")
        assert rec is not None and "n1" not in rec.copies


async def test_touched_models_last_use_is_written_later_and_never_back_in_time() -> None:
    async with started(interval=0.01) as (writer, _, mirror):
        flushed = asyncio.Event()
        used = {"m": 2_000.0, "gone": 1.0}
        writer.start_flushing(used.get, flushed.set)
        writer.touched("m")
        writer.touched("gone")  # no copy here: skipped
        await asyncio.wait_for(flushed.wait(), 5)
        rec = mirror.model("m")
        assert rec is not None and rec.last_used_ms == 2_000_000
        flushed.clear()
        used["m"] = 1_000.0  # older than the record: not written back
        writer.touched("m")
        await asyncio.wait_for(flushed.wait(), 5)
        rec = mirror.model("m")
        assert rec is not None and rec.last_used_ms == 2_000_000
