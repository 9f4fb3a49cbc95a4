"""Leader election against a real etcd, each contender on its own
connection: one leader, a takeover within about a second when the leader
resigns, is revoked or goes silent, and exactly one leader again after etcd
is stopped and restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

import mesh.edges.etcd_process
import mesh.kv.etcd_kv
from mesh.node import leader

pytestmark = pytest.mark.integration

KEY = leader.leader_key("mm")
TTL = 1  # seconds: etcd's smallest lease with the fixture's fast raft timings


async def until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def leaders(nodes: list[leader.Leader]) -> list[leader.Leader]:
    return [n for n in nodes if n.is_leader]


@pytest.fixture
async def nodes(
    etcd_server: mesh.edges.etcd_process.EtcdServer, etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> AsyncIterator[list[leader.Leader]]:
    """Two contenders, on the fixture's connection and on a second one."""
    other = await mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint], timeout=1.0)
    contenders = [
        leader.Leader(store, KEY, f"node-{i}", TTL, retry_delay=0.05, max_retry_delay=0.2)
        for i, store in enumerate([etcd_kv, other])
    ]
    try:
        for node in contenders:
            await node.start()
        assert await until(lambda: len(leaders(contenders)) == 1, 5.0)
        yield contenders
    finally:
        for node in contenders:
            await node.stop()
        await other.close()


async def test_one_leads_and_the_other_takes_over_when_it_resigns(
    nodes: list[leader.Leader],
) -> None:
    [first] = leaders(nodes)
    [second] = [n for n in nodes if n is not first]
    assert await second.holder() == first.instance_id
    await asyncio.sleep(1.5)  # renewals keep the 1 s lease
    assert leaders(nodes) == [first]
    await first.stop()
    assert await second.wait_leader(2.0)
    assert await second.holder() == second.instance_id
    assert not first.is_leader


async def test_revoking_the_leaders_lease_elects_a_leader_again(
    nodes: list[leader.Leader], etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> None:
    [first] = leaders(nodes)
    term = first.term
    await etcd_kv.revoke_lease(first.lease)
    assert await until(lambda: not first.is_leader, 1.0)
    assert await until(lambda: len(leaders(nodes)) == 1, 2.0)
    [now] = leaders(nodes)
    assert now.term > term
    assert await now.holder() == now.instance_id


async def test_a_silent_leader_is_replaced_once_its_lease_expires(
    nodes: list[leader.Leader],
) -> None:
    [first] = leaders(nodes)
    [second] = [n for n in nodes if n is not first]
    await first.kv.close()  # as if the node froze: no renewal, no resignation
    assert await second.wait_leader(TTL + 2.0)
    assert not first.is_leader


async def test_exactly_one_leader_after_etcd_stops_and_restarts(
    nodes: list[leader.Leader], etcd_server: mesh.edges.etcd_process.EtcdServer
) -> None:
    await asyncio.to_thread(etcd_server.stop)
    # Nobody can renew: whoever led stops leading within the TTL.
    assert await until(lambda: not leaders(nodes), TTL + 0.5)
    await asyncio.sleep(1.0)
    assert not leaders(nodes)
    await asyncio.to_thread(etcd_server.start)
    assert await until(lambda: len(leaders(nodes)) == 1, 5.0)
    [winner] = leaders(nodes)
    await asyncio.sleep(0.5)
    assert leaders(nodes) == [winner]
    assert await winner.holder() == winner.instance_id
