"""The scaler's decisions: which busy model gets a sibling copy, on which
node, how often it asks, and the minimum copies the leader keeps.

Why it exists: :mod:`mesh.node.scaler` had no test at all. It runs here over
the real cache manager on the in-memory KV store with a scripted runtime
(:mod:`tests.mesh.scripted_runtime`), other nodes being instance records in
the placement table; the peers it asks are recorded, not called. One round
is one :meth:`Scaler.check` call, so no test waits on its timer. The real
two-node case is ``tests/integration/test_scale_up.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from collections.abc import AsyncIterator

import pytest

from mesh.core import errors, records, settings
from mesh.node import scaler
from tests.mesh import scripted_runtime as scripted

MiB = 1024 * 1024
THRESHOLD_RPM = 3
"""A copy serving more than this many requests a minute gets a sibling."""


@dataclasses.dataclass(frozen=True)
class Ask:
    endpoint: str
    model_id: str
    extra_copy: bool


class RecordingPeers:
    """The peers the scaler asks: records each ask; refuses models in ``refuse``."""

    def __init__(self) -> None:
        self.asked: list[Ask] = []
        self.refuse: set[str] = set()

    async def ensure_local(
        self,
        endpoint: str,
        model_id: str,
        *,
        extra_copy: bool = False,
        sync: bool = True,
        timeout: float | None = None,
    ) -> bool:
        self.asked.append(Ask(endpoint, model_id, extra_copy))
        if model_id in self.refuse:
            raise errors.RuntimeUnavailable(f"peer {endpoint} is gone")
        return True


@dataclasses.dataclass
class Mesh:
    node: scripted.Node
    peers: RecordingPeers
    leader: bool = False

    def scaler(self) -> scaler.Scaler:
        config = dataclasses.replace(
            self.node.config, scaling=settings.ScalingSettings(scale_up_rpm=THRESHOLD_RPM)
        )
        return scaler.Scaler(
            config, self.node.mirror, self.node.manager, self.peers, lambda: self.leader
        )

    async def serve(self, model_id: str, times: int) -> None:
        """``times`` requests for ``model_id`` on this node (loading it first)."""
        self.node.runtime.gate(model_id).set()
        for _ in range(times):
            async with self.node.manager.serving(model_id, timeout=5):
                pass

    async def add_node(self, instance_id: str, free_mib: int, shutting_down: bool = False) -> None:
        """Another node's record: 1000 MiB of capacity, ``free_mib`` of it free."""
        rec = records.InstanceRecord(
            endpoint=f"{instance_id}:8033",
            capacity_bytes=1000 * MiB,
            used_bytes=(1000 - free_mib) * MiB,
            labels=("mt:sklearn",),
            shutting_down=shutting_down,
        )
        await self.node.store.put_instance(instance_id, rec)
        await self.node.mirror.wait_until(lambda: instance_id in self.node.mirror.instances(), 5)

    async def limit(self, model_id: str, *, min_copies: int = 0, max_copies: int = 0) -> None:
        """Register the model again with these copy limits."""
        rec = await self.node.store.update_model(
            model_id,
            lambda r: (
                None
                if r is None
                else dataclasses.replace(r, min_copies=min_copies, max_copies=max_copies)
            ),
        )
        await self.node.mirror.wait_until(lambda: self.node.mirror.model(model_id) == rec, 5)


@contextlib.asynccontextmanager
async def mesh(tmp_path: pathlib.Path) -> AsyncIterator[Mesh]:
    """This node ("n1", 1000 MiB, models a, b, c) among the nodes tests add."""
    cache = settings.CacheSettings(capacity_bytes=1000 * MiB, min_model_size_bytes=100 * MiB)
    async with scripted.node(tmp_path, cache, "abc") as n:
        m = Mesh(n, RecordingPeers())
        await m.add_node("n1", free_mib=1000)
        yield m


@pytest.fixture
async def two(tmp_path: pathlib.Path) -> AsyncIterator[Mesh]:
    """This node and n2, which has room."""
    async with mesh(tmp_path) as m:
        await m.add_node("n2", free_mib=900)
        yield m


async def test_a_copy_busier_than_the_threshold_gets_a_sibling_on_another_node(
    two: Mesh,
) -> None:
    await two.serve("a", THRESHOLD_RPM + 1)
    await two.scaler().check()
    assert two.peers.asked == [Ask("n2:8033", "a", extra_copy=True)]


async def test_a_copy_at_the_threshold_gets_no_sibling(two: Mesh) -> None:
    await two.serve("a", THRESHOLD_RPM)
    await two.scaler().check()
    assert two.peers.asked == []


async def test_the_sibling_goes_to_the_node_placement_picks(tmp_path: pathlib.Path) -> None:
    async with mesh(tmp_path) as m:
        await m.add_node("n2", free_mib=150)  # room for one 100 MiB copy
        await m.add_node("n3", free_mib=900)  # room for nine
        await m.add_node("n4", free_mib=900, shutting_down=True)
        await m.serve("a", THRESHOLD_RPM + 1)
        await m.scaler().check()
        assert m.peers.asked == [Ask("n3:8033", "a", extra_copy=True)]


async def test_a_model_at_its_maximum_copies_gets_no_sibling(two: Mesh) -> None:
    await two.limit("a", max_copies=1)
    await two.serve("a", THRESHOLD_RPM + 1)
    await two.scaler().check()
    assert two.peers.asked == []


async def test_with_no_other_node_able_to_hold_it_nothing_is_asked(tmp_path: pathlib.Path) -> None:
    async with mesh(tmp_path) as m:
        await m.add_node("n2", free_mib=900, shutting_down=True)
        await m.serve("a", THRESHOLD_RPM + 1)
        await m.scaler().check()
        assert m.peers.asked == []


async def test_a_busy_model_is_asked_for_once_per_cooldown(two: Mesh) -> None:
    s = two.scaler()
    await two.serve("a", THRESHOLD_RPM + 1)
    await s.check()
    await two.serve("a", THRESHOLD_RPM + 1)
    await s.check()
    assert two.peers.asked == [Ask("n2:8033", "a", extra_copy=True)]


async def test_a_peer_that_refuses_does_not_stop_the_round(two: Mesh) -> None:
    two.peers.refuse.add("a")
    await two.serve("a", THRESHOLD_RPM + 1)
    await two.serve("b", THRESHOLD_RPM + 1)
    await two.scaler().check()
    assert sorted(a.model_id for a in two.peers.asked) == ["a", "b"]


async def test_the_leader_tops_up_a_models_minimum_copies(two: Mesh) -> None:
    await two.serve("c", 1)  # one copy, here
    await two.limit("c", min_copies=2)
    two.leader = True
    await two.scaler().check()
    assert two.peers.asked == [Ask("n2:8033", "c", extra_copy=True)]


async def test_a_node_that_does_not_lead_leaves_minimums_alone(two: Mesh) -> None:
    await two.serve("c", 1)
    await two.limit("c", min_copies=2)
    await two.scaler().check()
    assert two.peers.asked == []
