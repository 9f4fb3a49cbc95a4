"""The janitor removes copies of instances gone for longer than the grace
period and load failures past their expiry, never touches live instances,
and changes nothing unless its node is the leader."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from mesh.core import records
from mesh.kv import memory_kv, placement_table, records_store
from mesh.node import janitor, leader

LOADED = records.CopyInfo(records.CopyState.LOADED, 1)
LOADING = records.CopyInfo(records.CopyState.LOADING, 1)
NODE = records.InstanceRecord(endpoint="127.0.0.1:8033", capacity_bytes=1 << 30)
NOW_MS = 1_700_000_000_000
MINUTE_MS = 60_000


def model(
    copies: dict[str, records.CopyInfo] | None = None,
    failures: dict[str, records.FailureInfo] | None = None,
) -> records.ModelRecord:
    return records.ModelRecord(
        model_type="sklearn", path="iris", copies=copies or {}, failures=failures or {}
    )


def failure(age_ms: int) -> records.FailureInfo:
    return records.FailureInfo(NOW_MS - age_ms, "boom")


# --- pure decisions ---------------------------------------------------------


def test_note_missing_keeps_the_first_sighting_and_drops_instances_back() -> None:
    noted = janitor.note_missing({"a": 5.0, "b": 6.0}, {"a", "b", "c", "d"}, {"b", "d"}, 9.0)
    assert noted == {"a": 5.0, "c": 9.0}
    # Holding nothing any more: forgotten.
    assert janitor.note_missing(noted, set(), set(), 10.0) == {}


def test_copy_holders_are_every_instance_with_a_copy() -> None:
    models = [model({"a": LOADED, "b": LOADING}), model({"b": LOADED}), model()]
    assert janitor.copy_holders(models) == {"a", "b"}


def test_stale_copies_are_those_of_instances_missing_past_the_grace() -> None:
    m = model({"live": LOADED, "old": LOADED, "new": LOADING, "unnoted": LOADED})
    missing = {"old": 0.0, "new": 8.0, "live": 0.0}
    assert janitor.stale_copies(m, {"live"}, missing, now=10.0, grace=5.0) == ("old",)
    assert janitor.stale_copies(m, {"live"}, missing, now=13.0, grace=5.0) == ("new", "old")
    # A live instance is never stale, even if once noted missing.
    assert "live" not in janitor.stale_copies(m, {"live"}, missing, now=100.0, grace=0.0)
    assert janitor.stale_copies(m, {"live"}, missing, now=4.9, grace=5.0) == ()


def test_expired_failures_are_exactly_those_not_recent() -> None:
    m = model(failures={"a": failure(16 * MINUTE_MS), "b": failure(14 * MINUTE_MS)})
    expiry = 15 * MINUTE_MS
    assert janitor.expired_failures(m, NOW_MS, expiry) == ("a",)
    assert set(records.recent_failures(m, NOW_MS, expiry)) == {"b"}
    exact = model(failures={"c": failure(expiry)})
    assert janitor.expired_failures(exact, NOW_MS, expiry) == ("c",)
    assert records.recent_failures(exact, NOW_MS, expiry) == {}


def test_cleaned_returns_the_same_record_when_nothing_goes() -> None:
    m = model({"a": LOADED, "b": LOADED}, {"c": failure(0)})
    assert janitor.cleaned(m, ["x"], ["y"]) is m
    out = janitor.cleaned(m, ["a"], ["c"])
    assert dict(out.copies) == {"b": LOADED}
    assert dict(out.failures) == {}
    assert dataclasses.replace(out, copies=m.copies, failures=m.failures) == m


# --- the janitor on the in-memory store -------------------------------------


class FakeLeader:
    def __init__(self, leading: bool = True) -> None:
        self.is_leader = leading


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall_ms = NOW_MS

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Cluster:
    mem: memory_kv.MemoryKV
    rs: records_store.RecordStore
    placement: placement_table.PlacementTable
    leases: dict[str, int]

    async def join(self, instance_id: str) -> None:
        lease = await self.mem.grant_lease(60)
        self.leases[instance_id] = lease
        rev = await self.rs.put_instance(instance_id, NODE, lease)
        assert await self.placement.wait_for_revision(rev, 1.0)

    async def die(self, instance_id: str) -> None:
        self.mem.expire_lease(self.leases.pop(instance_id))
        assert await self.placement.wait_until(
            lambda: self.placement.instance(instance_id) is None, 1.0
        )

    async def put_model(self, model_id: str, record: records.ModelRecord) -> None:
        await self.rs.update_model(model_id, lambda _: record)
        assert await self.placement.wait_until(
            lambda: self.placement.model(model_id) == record, 1.0
        )

    async def stored(self, model_id: str) -> records.ModelRecord:
        got = await self.rs.get_model(model_id)
        assert got is not None
        return got[0]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    mem = memory_kv.MemoryKV()
    placement = placement_table.PlacementTable(mem, "mm", retry_delay=0.01)
    await placement.start()
    try:
        yield Cluster(mem, records_store.RecordStore(mem, "mm"), placement, {})
    finally:
        await placement.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_janitor(
    cluster: Cluster, clock: Clock, lead: FakeLeader, *, interval: float = 3600.0
) -> janitor.Janitor:
    return janitor.Janitor(
        cluster.rs,
        cluster.placement,
        lead,
        interval_seconds=interval,
        grace_seconds=10.0,
        failure_expiry_seconds=15 * 60,
        clock=clock,
        wall_clock_ms=lambda: clock.wall_ms,
    )


async def test_copies_of_a_dead_instance_go_after_the_grace_period_not_before(
    cluster: Cluster, clock: Clock
) -> None:
    for node in ("a", "b"):
        await cluster.join(node)
    await cluster.put_model("m1", model({"a": LOADED, "b": LOADED}))
    await cluster.put_model("m2", model({"a": LOADING}))
    sweeper = make_janitor(cluster, clock, FakeLeader())
    await sweeper.start()
    try:
        await cluster.die("a")
        assert sweeper.missing_since == {"a": clock.now}
        clock.now += 9.9
        sweep = await sweeper.run_once()
        assert sweep == janitor.Sweep(leader=True)
        assert set((await cluster.stored("m1")).copies) == {"a", "b"}

        clock.now += 0.1
        sweep = await sweeper.run_once()
        assert sweep.pruned == {"m1": ("a",), "m2": ("a",)}
        assert dict((await cluster.stored("m1")).copies) == {"b": LOADED}
        assert dict((await cluster.stored("m2")).copies) == {}
        # Once the mirror has the result, the instance holds nothing: forgotten.
        await cluster.placement.wait_for_revision(cluster.mem.revision, 1.0)
        assert (await sweeper.run_once()).pruned == {}
        assert sweeper.missing_since == {}
    finally:
        await sweeper.stop()


async def test_copies_of_live_instances_are_never_touched(cluster: Cluster, clock: Clock) -> None:
    await cluster.join("a")
    await cluster.join("b")
    await cluster.put_model("m1", model({"a": LOADED, "b": LOADING}))
    sweeper = make_janitor(cluster, clock, FakeLeader())
    await sweeper.start()
    try:
        before = cluster.mem.revision
        clock.now += 3600
        assert await sweeper.run_once() == janitor.Sweep(leader=True)
        assert cluster.mem.revision == before  # nothing written at all
    finally:
        await sweeper.stop()


async def test_an_instance_that_registers_again_keeps_its_copies_and_restarts_its_grace(
    cluster: Cluster, clock: Clock
) -> None:
    await cluster.join("a")
    await cluster.put_model("m1", model({"a": LOADED}))
    sweeper = make_janitor(cluster, clock, FakeLeader())
    await sweeper.start()
    try:
        await cluster.die("a")
        clock.now += 8
        await cluster.join("a")  # back, with a new lease, between two passes
        assert sweeper.missing_since == {}
        clock.now += 8
        assert (await sweeper.run_once()).pruned == {}
        await cluster.die("a")  # gone again: a fresh grace period
        clock.now += 8
        assert (await sweeper.run_once()).pruned == {}
        assert set((await cluster.stored("m1")).copies) == {"a"}
        clock.now += 2
        assert (await sweeper.run_once()).pruned == {"m1": ("a",)}
    finally:
        await sweeper.stop()


async def test_copies_of_an_instance_already_gone_at_start_wait_a_full_grace(
    cluster: Cluster, clock: Clock
) -> None:
    await cluster.put_model("m1", model({"ghost": LOADED}))
    sweeper = make_janitor(cluster, clock, FakeLeader())
    await sweeper.start()
    try:
        assert sweeper.missing_since == {"ghost": clock.now}
        clock.now += 9
        assert (await sweeper.run_once()).pruned == {}
        clock.now += 1
        assert (await sweeper.run_once()).pruned == {"m1": ("ghost",)}
    finally:
        await sweeper.stop()


async def test_expired_failures_are_removed_and_fresh_ones_kept(
    cluster: Cluster, clock: Clock
) -> None:
    await cluster.join("a")
    fresh = failure(14 * MINUTE_MS)
    await cluster.put_model(
        "m1",
        model({"a": LOADED}, {"old": failure(16 * MINUTE_MS), "new": fresh}),
    )
    await cluster.put_model("m2", model(failures={"new": fresh}))
    sweeper = make_janitor(cluster, clock, FakeLeader())
    await sweeper.start()
    try:
        sweep = await sweeper.run_once()
        assert sweep.expired == {"m1": ("old",)}
        m1 = await cluster.stored("m1")
        assert dict(m1.failures) == {"new": fresh}
        assert dict(m1.copies) == {"a": LOADED}
        clock.wall_ms += 2 * MINUTE_MS
        await cluster.placement.wait_for_revision(cluster.mem.revision, 1.0)
        assert (await sweeper.run_once()).expired == {"m1": ("new",), "m2": ("new",)}
        assert dict((await cluster.stored("m2")).failures) == {}
    finally:
        await sweeper.stop()


async def test_a_janitor_that_is_not_leader_changes_nothing(cluster: Cluster, clock: Clock) -> None:
    await cluster.join("a")
    await cluster.put_model("m1", model({"a": LOADED}, {"a2": failure(60 * MINUTE_MS)}))
    lead = FakeLeader(leading=False)
    sweeper = make_janitor(cluster, clock, lead)
    await sweeper.start()
    try:
        await cluster.die("a")
        before = cluster.mem.revision
        clock.now += 3600
        assert await sweeper.run_once() == janitor.Sweep(leader=False)
        assert cluster.mem.revision == before
        # It kept track all along, so on becoming leader it acts at once.
        lead.is_leader = True
        sweep = await sweeper.run_once()
        assert sweep.pruned == {"m1": ("a",)}
        assert sweep.expired == {"m1": ("a2",)}
    finally:
        await sweeper.stop()


async def test_the_elected_node_prunes_on_its_own_schedule(cluster: Cluster) -> None:
    elected = leader.Leader(cluster.mem, leader.leader_key("mm"), "node-b", 5)
    sweeper = janitor.Janitor(
        cluster.rs, cluster.placement, elected, interval_seconds=0.02, grace_seconds=0.05
    )
    await cluster.join("a")
    await cluster.put_model("m1", model({"a": LOADED}))
    await elected.start()
    await sweeper.start()
    try:
        assert await elected.wait_leader(1.0)
        await cluster.die("a")
        assert await cluster.placement.wait_until(
            lambda: cluster.placement.model("m1") == model(), 2.0
        )
    finally:
        await sweeper.stop()
        await elected.stop()
    assert cluster.mem.leases() == {}  # the janitor's node resigned


async def test_a_pass_survives_the_store_going_down(cluster: Cluster, clock: Clock) -> None:
    await cluster.put_model("m1", model({"ghost": LOADED}))
    sweeper = make_janitor(cluster, clock, FakeLeader(), interval=0.01)
    await sweeper.start()
    try:
        cluster.mem.available = False
        clock.now += 60
        await asyncio.sleep(0.05)  # passes fail and are logged; the loop goes on
        cluster.mem.available = True
        assert await cluster.placement.wait_until(
            lambda: cluster.placement.model("m1") == model(), 2.0
        )
    finally:
        await sweeper.stop()
