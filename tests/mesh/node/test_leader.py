"""Leader election on the in-memory store: one leader among contenders, a
takeover as soon as the key is deleted (the leader resigns or its lease
ends), renewals that keep a leader past its TTL, and no leader that outlives
its lease while the store is unreachable.

The tests wait on what the election tells (its listeners) and on the calls
the store answers, never on the clock. Contenders hold 60 s leases, far
longer than any wait here, so a takeover within a test was caused by a
deletion, not by an expiry; the tests about the TTL itself move the leader's
clock instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable

import pytest

from mesh.kv import kv_store, memory_kv
from mesh.node import leader
from tests.mesh.node.signals import WAIT, Signal

KEY = leader.leader_key("mm")
TTL = 60
"""Seconds to wait for what must happen (less than ``TTL``: nothing here
expires by itself while a test waits)."""


class ObservedKV(memory_kv.MemoryKV):
    """The in-memory store, counting the calls the election makes to wait
    with, and telling the test after each."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.answered = Signal()
        self.renewals = 0
        self.watches = 0

    async def keep_alive(self, lease: int) -> bool:
        alive = await super().keep_alive(lease)
        self.renewals += alive
        self.answered.fire()
        return alive

    async def revoke_lease(self, lease: int) -> None:
        await super().revoke_lease(lease)
        self.answered.fire()

    def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[list[kv_store.WatchEvent]]:
        # Asked for from a revision it has read: from here on, the caller
        # misses no change of the key.
        self.watches += 1
        self.answered.fire()
        return super().watch_prefix(prefix, start_revision)


class Transitions:
    """Every leadership change of some contenders, in the order heard."""

    def __init__(self, nodes: list[leader.Leader]) -> None:
        self.log: list[tuple[str, bool]] = []
        self.heard = Signal()
        for node in nodes:
            node.add_listener(functools.partial(self._hear, node.instance_id))

    def _hear(self, who: str, leading: bool) -> None:
        self.log.append((who, leading))
        self.heard.fire()

    async def until(self, predicate: Callable[[list[tuple[str, bool]]], bool]) -> None:
        await self.heard.until(lambda: predicate(self.log))


class SkewedClock:
    """The monotonic clock, moved forward at will."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew


def contenders_on(
    store: memory_kv.MemoryKV, ttl: int = TTL, clock: Callable[[], float] = time.monotonic
) -> list[leader.Leader]:
    return [
        leader.Leader(
            store, KEY, f"node-{i}", ttl, retry_delay=0.01, max_retry_delay=0.05, clock=clock
        )
        for i in range(3)
    ]


@pytest.fixture
def mem() -> ObservedKV:
    return ObservedKV()


@pytest.fixture
async def contenders(mem: ObservedKV) -> AsyncIterator[list[leader.Leader]]:
    nodes = contenders_on(mem)
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


def leaders(nodes: list[leader.Leader]) -> list[leader.Leader]:
    return [n for n in nodes if n.is_leader]


def named(nodes: list[leader.Leader], instance_id: str) -> leader.Leader:
    return next(n for n in nodes if n.instance_id == instance_id)


async def elect(nodes: list[leader.Leader], heard: Transitions) -> leader.Leader:
    """Start every contender; the one that won."""
    for node in nodes:
        await node.start()
    await heard.until(lambda log: len(log) >= 1)
    [(winner, leading)] = heard.log
    assert leading
    return named(nodes, winner)


def test_the_key_lives_under_the_prefix() -> None:
    assert leader.leader_key("mm") == "mm/leader"
    assert leader.leader_key("/team/mm/") == "team/mm/leader"


async def test_exactly_one_of_three_contenders_leads_and_the_others_give_their_leases_back(
    contenders: list[leader.Leader], mem: ObservedKV
) -> None:
    heard = Transitions(contenders)
    winner = await elect(contenders, heard)
    await mem.answered.until(lambda: mem.leases() == {winner.lease: {KEY}})
    assert leaders(contenders) == [winner]
    assert await winner.holder() == winner.instance_id
    assert winner.term > 0
    assert [n.term for n in contenders if n is not winner] == [0, 0]
    assert heard.log == [(winner.instance_id, True)]


async def test_a_leader_renews_its_lease_and_leads_past_its_ttl(mem: ObservedKV) -> None:
    # A 2 s lease is renewed every 2/3 s: four renewals take the leader past
    # its first TTL (a stalled loop would have to miss a renewal by 4/3 s
    # for it to step down).
    node = leader.Leader(mem, KEY, "node-a", 2, retry_delay=0.01)
    heard = Transitions([node])
    try:
        await elect([node], heard)
        await mem.answered.until(lambda: mem.renewals >= 4)
        assert node.is_leader
        assert heard.log == [("node-a", True)]
        assert mem.leases() == {node.lease: {KEY}}
    finally:
        await node.stop()


async def test_another_takes_over_as_soon_as_the_leader_resigns(
    contenders: list[leader.Leader],
) -> None:
    heard = Transitions(contenders)
    first = await elect(contenders, heard)
    old_term = first.term
    await first.stop()
    assert not first.is_leader
    assert heard.log == [(first.instance_id, True), (first.instance_id, False)]
    # The deletion wakes the others: no lease had to expire.
    await heard.until(lambda log: len(log) == 3)
    second_id, leading = heard.log[2]
    assert leading and second_id != first.instance_id
    second = named(contenders, second_id)
    assert second.term > old_term
    assert await second.holder() == second_id


async def test_another_is_elected_when_the_leaders_lease_ends(
    contenders: list[leader.Leader], mem: ObservedKV
) -> None:
    heard = Transitions(contenders)
    first = await elect(contenders, heard)
    term = first.term
    mem.expire_lease(first.lease)
    # The leader hears of its key's deletion as the others do, so either
    # may come first; the new term fences off the old leader's writes.
    await heard.until(lambda log: len(log) == 3)
    assert (first.instance_id, False) in heard.log
    [now_id] = [who for who, leading in heard.log[1:] if leading]
    now = named(contenders, now_id)
    assert leaders(contenders) == [now]
    assert now.term > term
    assert await now.holder() == now_id


async def test_a_contender_that_starts_after_a_leader_exists_waits_for_the_key(
    contenders: list[leader.Leader], mem: ObservedKV
) -> None:
    first, late = contenders[0], contenders[1]
    heard = Transitions([first, late])
    await elect([first], heard)
    await mem.answered.until(lambda: mem.watches == 1)  # the leader watches its key
    await late.start()
    await mem.answered.until(lambda: mem.watches == 2)  # the late one waits for it
    assert not late.is_leader
    assert await late.holder() == first.instance_id
    await first.stop()
    await heard.until(lambda log: len(log) == 3)
    assert heard.log == [("node-0", True), ("node-0", False), ("node-1", True)]


async def test_a_leader_cut_off_from_the_store_stops_leading_a_ttl_after_its_last_renewal() -> None:
    mem = ObservedKV()
    clock = SkewedClock()
    nodes = contenders_on(mem, ttl=1, clock=clock)
    heard = Transitions(nodes)
    try:
        first = await elect(nodes, heard)
        mem.available = False
        mem.break_watches()
        # Its last renewal was sent before this instant: one TTL later by
        # its clock it no longer believes it leads, whatever its tasks do.
        clock.skew += 1
        assert not first.is_leader and not leaders(nodes)
        await heard.until(lambda log: (first.instance_id, False) in log)
        during_outage = list(heard.log)
        mem.available = True
        await heard.until(lambda log: len(log) > len(during_outage))
        # Nobody won while the store was down; one leads once it is back.
        assert during_outage == [(first.instance_id, True), (first.instance_id, False)]
        assert heard.log[-1][1]
        assert len(leaders(nodes)) == 1
    finally:
        for node in nodes:
            await node.stop()


async def test_a_leader_whose_key_survives_an_outage_resumes_with_the_same_term() -> None:
    # etcd keeps leases across an outage and extends them when it comes
    # back; a store clock that never moves rules out any expiry meanwhile.
    mem = ObservedKV(clock=lambda: 0.0)
    clock = SkewedClock()
    nodes = contenders_on(mem, ttl=1, clock=clock)
    heard = Transitions(nodes)
    try:
        first = await elect(nodes, heard)
        term = first.term
        mem.available = False
        mem.break_watches()
        clock.skew += 1
        await heard.until(lambda log: len(log) == 2)
        mem.available = True
        await heard.until(lambda log: len(log) == 3)
        assert heard.log[2] == (first.instance_id, True)
        assert leaders(nodes) == [first]
        assert first.term == term
        assert first.elections == 2
    finally:
        for node in nodes:
            await node.stop()


async def test_a_leader_whose_key_is_deleted_steps_down_then_wins_it_again(
    contenders: list[leader.Leader], mem: ObservedKV
) -> None:
    first = contenders[0]
    heard = Transitions([first])
    await elect([first], heard)
    term = first.term
    await mem.delete(KEY)
    await heard.until(lambda log: len(log) == 3)
    assert [leading for _, leading in heard.log] == [True, False, True]
    assert first.is_leader and first.term > term


async def test_stopping_a_follower_leaves_the_leader_alone(
    contenders: list[leader.Leader], mem: ObservedKV
) -> None:
    first, follower = contenders[0], contenders[1]
    heard = Transitions([first, follower])
    await elect([first], heard)
    await mem.answered.until(lambda: mem.watches == 1)
    await follower.start()
    await mem.answered.until(lambda: mem.watches == 2)  # the follower waits
    await follower.stop()
    assert first.is_leader
    assert await first.holder() == first.instance_id
    assert heard.log == [(first.instance_id, True)]


async def test_stop_returns_when_the_store_is_down(mem: ObservedKV) -> None:
    node = leader.Leader(mem, KEY, "node-a", TTL, retry_delay=0.01)
    await node.start()
    assert await node.wait_leader(WAIT)
    mem.available = False
    await asyncio.wait_for(node.stop(), WAIT)  # every store call fails at once
    assert not node.is_leader
    mem.available = True
    # The key could not be deleted: it goes when its lease expires, unrenewed.
    assert await node.holder() == "node-a"
    assert node.lease == 0


def test_rejects_an_empty_id_and_a_ttl_below_one_second(mem: ObservedKV) -> None:
    with pytest.raises(ValueError, match="instance id"):
        leader.Leader(mem, KEY, "", 5)
    with pytest.raises(ValueError, match="lease_ttl_seconds"):
        leader.Leader(mem, KEY, "a", 0)
