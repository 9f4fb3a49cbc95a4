"""Hand-over on drain: each recently used model whose only ready copy is on
the draining node is loaded on the node placement picks, never on itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from mesh.core import errors, records, settings
from mesh.kv import memory_kv, placement_table, records_store
from mesh.node import handover

MiB = 1024 * 1024
LOADED = records.CopyState.LOADED


def node(
    free_mib: int,
    shutting_down: bool = False,
    labels: tuple[str, ...] = ("mt:sklearn",),
    endpoint: str = "",
) -> records.InstanceRecord:
    return records.InstanceRecord(
        endpoint=endpoint,
        capacity_bytes=500 * MiB,
        used_bytes=(500 - free_mib) * MiB,
        labels=labels,
        shutting_down=shutting_down,
    )


def model(**copies: records.CopyState) -> records.ModelRecord:
    return records.ModelRecord(
        model_type="sklearn",
        path="m",
        copies={i: records.CopyInfo(state, 1) for i, state in copies.items()},
    )


def test_a_model_only_here_goes_to_the_node_with_the_most_room() -> None:
    instances = {"me": node(500, shutting_down=True), "roomy": node(400), "full": node(0)}
    assert handover.successor("m", model(me=LOADED), instances, "me", MiB, 0) == "roomy"


def test_a_model_ready_on_another_live_node_is_not_handed_over() -> None:
    instances = {"me": node(500, shutting_down=True), "other": node(400)}
    assert handover.successor("m", model(me=LOADED, other=LOADED), instances, "me", MiB, 0) is None


def test_a_copy_on_a_node_that_drains_too_does_not_count() -> None:
    instances = {"me": node(500), "leaving": node(400, shutting_down=True), "staying": node(10)}
    rec = model(me=LOADED, leaving=LOADED)
    assert handover.successor("m", rec, instances, "me", MiB, 0) == "staying"


def test_no_node_able_to_take_it_is_no_successor() -> None:
    instances = {"me": node(500), "triton": node(400, labels=("mt:onnx",))}
    assert handover.successor("m", model(me=LOADED), instances, "me", MiB, 0) is None


class AskedPeers:
    """A :class:`mesh.core.interfaces.PeerLoader` that notes what it was asked."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.asked: list[tuple[str, str, bool]] = []
        self.refuse = refuse

    async def ensure_local(
        self,
        endpoint: str,
        model_id: str,
        *,
        extra_copy: bool = False,
        sync: bool = True,
        timeout: float | None = None,
    ) -> bool:
        self.asked.append((endpoint, model_id, extra_copy))
        if model_id in self.refuse:
            raise errors.InsufficientCapacity("no room")
        return True


@contextlib.asynccontextmanager
async def mirror_of(
    models: dict[str, records.ModelRecord],
) -> AsyncIterator[placement_table.PlacementTable]:
    kv = memory_kv.MemoryKV()
    rs = records_store.RecordStore(kv, "t")
    await rs.put_instance("me", node(500, shutting_down=True, endpoint="me:8033"))
    await rs.put_instance("n2", node(400, endpoint="n2:8033"))
    for m, rec in models.items():
        await rs.create_model(m, rec)
    mirror = placement_table.PlacementTable(kv, "t")
    await mirror.start()
    try:
        yield mirror
    finally:
        await mirror.stop()


CONFIG = settings.Settings(node=settings.NodeSettings(instance_id="me"))


async def test_drain_asks_for_an_extra_copy_of_each_model_only_here() -> None:
    models = {"only-here": model(me=LOADED), "both": model(me=LOADED, n2=LOADED)}
    async with mirror_of(models) as mirror:
        peers = AskedPeers()
        moved = await handover.hand_over(CONFIG, ["only-here", "both"], mirror, peers)
    assert moved == 1
    assert peers.asked == [("n2:8033", "only-here", True)]


async def test_a_refused_hand_over_is_not_counted_and_the_next_model_still_goes() -> None:
    models = {"refused": model(me=LOADED), "taken": model(me=LOADED)}
    async with mirror_of(models) as mirror:
        peers = AskedPeers(refuse=frozenset({"refused"}))
        moved = await handover.hand_over(CONFIG, ["refused", "taken"], mirror, peers)
    assert moved == 1
    assert [m for _, m, _ in peers.asked] == ["refused", "taken"]
