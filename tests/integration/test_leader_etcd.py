"""Leader election against a real etcd, each contender on its own
connection: one leader, renewals that keep it past its TTL, a takeover when
the leader resigns, is revoked or goes silent, and exactly one leader again
after etcd is stopped and restarted.

The tests wait on the election's listeners, never on the clock: a silent
leader is replaced when etcd expires its lease, which takes the TTL and up
to half a second more, so those waits are generous.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

import pytest

import mesh.edges.etcd_process
import mesh.kv.etcd_kv
from mesh.kv import kv_store
from mesh.node import leader

pytestmark = pytest.mark.integration

KEY = leader.leader_key("mm")
TTL = 2
"""Seconds: short, so that a silent leader is replaced quickly; renewals go
every 2/3 s, so a stalled loop would have to miss one by 4/3 s to matter."""
WAIT = 30.0
"""Seconds to wait for what must happen: generous, as a busy machine is
slow, not wrong."""


class Transitions:
    """Every leadership change of some contenders, in the order heard."""

    def __init__(self, nodes: list[leader.Leader]) -> None:
        self.log: list[tuple[str, bool]] = []
        self._heard = asyncio.Event()
        for node in nodes:
            node.add_listener(functools.partial(self._hear, node.instance_id))

    def _hear(self, who: str, leading: bool) -> None:
        self.log.append((who, leading))
        self._heard.set()

    async def until(self, predicate: Callable[[list[tuple[str, bool]]], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate(self.log):
                self._heard.clear()
                await self._heard.wait()


def leaders(nodes: list[leader.Leader]) -> list[leader.Leader]:
    return [n for n in nodes if n.is_leader]


def named(nodes: list[leader.Leader], instance_id: str) -> leader.Leader:
    return next(n for n in nodes if n.instance_id == instance_id)


@pytest.fixture
async def nodes(
    etcd_server: mesh.edges.etcd_process.EtcdServer, etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> AsyncIterator[tuple[list[leader.Leader], Transitions]]:
    """Two contenders, on the fixture's connection and on a second one, one
    of them elected; and what they have heard so far."""
    other = await mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint], timeout=1.0)
    contenders = [
        leader.Leader(store, KEY, f"node-{i}", TTL, retry_delay=0.05, max_retry_delay=0.2)
        for i, store in enumerate([etcd_kv, other])
    ]
    heard = Transitions(contenders)
    try:
        for node in contenders:
            await node.start()
        await heard.until(lambda log: len(log) == 1)
        yield contenders, heard
    finally:
        for node in contenders:
            await node.stop()
        await other.close()


async def test_one_leads_past_its_ttl_and_the_other_takes_over_when_it_resigns(
    nodes: tuple[list[leader.Leader], Transitions], etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> None:
    contenders, heard = nodes
    [(first_id, _)] = heard.log
    first = named(contenders, first_id)
    [second] = [n for n in contenders if n is not first]
    assert await second.holder() == first_id
    # Renewals keep it: it outlives a lease of the same TTL granted later
    # and left to expire.
    twin = await etcd_kv.grant_lease(TTL)
    put = await etcd_kv.put("twin", b"x", lease=twin)
    watch = etcd_kv.watch_prefix("twin", put + 1)
    async with asyncio.timeout(WAIT):
        [gone] = await anext(watch)
    await watch.aclose()  # type: ignore[attr-defined]
    assert gone.kind is kv_store.EventKind.DELETE
    assert leaders(contenders) == [first]
    assert heard.log == [(first_id, True)]
    await first.stop()
    await heard.until(lambda log: len(log) == 3)
    assert heard.log == [(first_id, True), (first_id, False), (second.instance_id, True)]
    assert await second.holder() == second.instance_id


async def test_revoking_the_leaders_lease_elects_a_leader_again(
    nodes: tuple[list[leader.Leader], Transitions], etcd_kv: mesh.kv.etcd_kv.EtcdKV
) -> None:
    contenders, heard = nodes
    [(first_id, _)] = heard.log
    first = named(contenders, first_id)
    term = first.term
    await etcd_kv.revoke_lease(first.lease)
    await heard.until(lambda log: len(log) == 3)
    assert (first_id, False) in heard.log
    [now_id] = [who for who, leading in heard.log[1:] if leading]
    now = named(contenders, now_id)
    assert leaders(contenders) == [now]
    assert now.term > term
    assert await now.holder() == now_id


async def test_a_silent_leader_is_replaced_once_its_lease_expires(
    nodes: tuple[list[leader.Leader], Transitions],
) -> None:
    contenders, heard = nodes
    [(first_id, _)] = heard.log
    first = named(contenders, first_id)
    [second] = [n for n in contenders if n is not first]
    first_leads_when_second_wins: list[bool] = []
    second.add_listener(lambda leading: first_leads_when_second_wins.append(first.is_leader))
    await first.kv.close()  # as if the node froze: no renewal, no resignation
    await heard.until(lambda log: (second.instance_id, True) in log)
    # etcd counts the TTL from when a renewal arrived, the leader from when
    # it sent it: by the time etcd lets another win, it no longer leads.
    assert first_leads_when_second_wins == [False]
    assert not first.is_leader


async def test_exactly_one_leader_after_etcd_stops_and_restarts(
    nodes: tuple[list[leader.Leader], Transitions],
    etcd_server: mesh.edges.etcd_process.EtcdServer,
) -> None:
    contenders, heard = nodes
    [(first_id, _)] = heard.log
    await asyncio.to_thread(etcd_server.stop)
    # Nobody can renew: whoever led stops leading once its TTL has passed.
    await heard.until(lambda log: (first_id, False) in log)
    assert not leaders(contenders)
    during_outage = list(heard.log)
    await asyncio.to_thread(etcd_server.start)
    await heard.until(lambda log: len(log) > len(during_outage))
    # Nobody won while etcd was down; one leads once it is back.
    assert during_outage == [(first_id, True), (first_id, False)]
    [(winner_id, leading)] = heard.log[len(during_outage) :]
    assert leading
    assert leaders(contenders) == [named(contenders, winner_id)]
    assert await named(contenders, winner_id).holder() == winner_id
