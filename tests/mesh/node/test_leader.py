"""Leader election on the in-memory store: one leader among contenders, a
quick takeover when the leader resigns or its lease expires, and no leader
that outlives its lease while the store is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from mesh.kv import memory_kv
from mesh.node import leader

KEY = leader.leader_key("mm")


@pytest.fixture
def mem() -> memory_kv.MemoryKV:
    return memory_kv.MemoryKV()


@pytest.fixture
async def contenders(mem: memory_kv.MemoryKV) -> AsyncIterator[list[leader.Leader]]:
    nodes = [
        leader.Leader(mem, KEY, f"node-{i}", 1, retry_delay=0.01, max_retry_delay=0.05)
        for i in range(3)
    ]
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def leaders(nodes: list[leader.Leader]) -> list[leader.Leader]:
    return [n for n in nodes if n.is_leader]


def test_the_key_lives_under_the_prefix() -> None:
    assert leader.leader_key("mm") == "mm/leader"
    assert leader.leader_key("/team/mm/") == "team/mm/leader"


async def test_exactly_one_of_three_contenders_leads(
    contenders: list[leader.Leader], mem: memory_kv.MemoryKV
) -> None:
    for node in contenders:
        await node.start()
    assert await until(lambda: len(leaders(contenders)) == 1)
    await asyncio.sleep(1.1)  # longer than the TTL: renewals keep it
    [winner] = leaders(contenders)
    assert await winner.holder() == winner.instance_id
    assert winner.term > 0
    assert [n.term for n in contenders if n is not winner] == [0, 0]
    assert mem.leases() == {winner.lease: {KEY}}  # the losers revoked theirs


async def test_another_takes_over_at_once_when_the_leader_resigns(
    contenders: list[leader.Leader], mem: memory_kv.MemoryKV
) -> None:
    for node in contenders:
        await node.start()
    assert await until(lambda: len(leaders(contenders)) == 1)
    [first] = leaders(contenders)
    heard: list[bool] = []
    first.add_listener(heard.append)
    old_term = first.term
    await first.stop()
    assert not first.is_leader
    assert heard == [False]
    rest = [n for n in contenders if n is not first]
    # Well within the TTL: the deletion wakes the others, no expiry needed.
    assert await until(lambda: len(leaders(rest)) == 1, timeout=0.5)
    [second] = leaders(rest)
    assert second.term > old_term
    assert await second.holder() == second.instance_id


async def test_another_takes_over_when_the_leaders_lease_expires(
    contenders: list[leader.Leader], mem: memory_kv.MemoryKV
) -> None:
    for node in contenders:
        await node.start()
    assert await until(lambda: len(leaders(contenders)) == 1)
    [first] = leaders(contenders)
    lost = asyncio.Event()
    first.add_listener(lambda leading: None if leading else lost.set())
    mem.expire_lease(first.lease)
    assert await until(lambda: not first.is_leader, timeout=0.5)
    await asyncio.wait_for(lost.wait(), 0.5)
    assert await until(lambda: len(leaders(contenders)) == 1, timeout=1.0)
    await asyncio.sleep(0.1)
    assert len(leaders(contenders)) == 1


async def test_a_contender_that_starts_after_a_leader_exists_waits(
    contenders: list[leader.Leader],
) -> None:
    first, late = contenders[0], contenders[1]
    await first.start()
    assert await first.wait_leader(1.0)
    await late.start()
    assert not await late.wait_leader(0.3)
    assert first.is_leader
    assert await late.holder() == first.instance_id
    await first.stop()
    assert await late.wait_leader(0.5)


async def test_a_leader_cut_off_from_the_store_steps_down_within_the_ttl(
    contenders: list[leader.Leader], mem: memory_kv.MemoryKV
) -> None:
    for node in contenders:
        await node.start()
    assert await until(lambda: len(leaders(contenders)) == 1)
    [first] = leaders(contenders)
    heard: list[bool] = []
    first.add_listener(heard.append)
    mem.available = False
    mem.break_watches()
    # No renewal gets through: leadership ends once the TTL (1 s) has passed.
    assert await until(lambda: not leaders(contenders), timeout=1.5)
    assert heard == [False]
    await asyncio.sleep(0.2)
    assert not leaders(contenders)  # nobody can win while the store is down
    mem.available = True
    assert await until(lambda: len(leaders(contenders)) == 1, timeout=2.0)
    await asyncio.sleep(0.1)
    assert len(leaders(contenders)) == 1


async def test_a_leader_whose_key_survives_an_outage_resumes_with_the_same_term() -> None:
    # etcd keeps (and extends) leases across its restarts: a store whose
    # leases never expire by the clock plays that part here.
    mem = memory_kv.MemoryKV(clock=lambda: 0.0)
    nodes = [leader.Leader(mem, KEY, f"node-{i}", 1, retry_delay=0.01) for i in range(2)]
    try:
        for node in nodes:
            await node.start()
        assert await until(lambda: len(leaders(nodes)) == 1)
        [first] = leaders(nodes)
        term = first.term
        mem.available = False
        mem.break_watches()
        assert await until(lambda: not leaders(nodes), timeout=1.5)
        mem.available = True
        assert await until(lambda: len(leaders(nodes)) == 1)
        assert leaders(nodes) == [first]
        assert first.term == term
        assert first.elections == 2
    finally:
        for node in nodes:
            await node.stop()


async def test_a_leader_whose_key_is_deleted_steps_down_at_once(
    contenders: list[leader.Leader], mem: memory_kv.MemoryKV
) -> None:
    first = contenders[0]
    await first.start()
    assert await first.wait_leader(1.0)
    term = first.term
    events: list[bool] = []
    first.add_listener(events.append)
    await mem.delete(KEY)
    # It steps down, then wins the free key again, with a new term.
    assert await until(lambda: events[:2] == [False, True], timeout=1.0)
    assert first.is_leader and first.term > term


async def test_stopping_a_follower_leaves_the_leader_alone(
    contenders: list[leader.Leader],
) -> None:
    first, follower = contenders[0], contenders[1]
    await first.start()
    assert await first.wait_leader(1.0)
    await follower.start()
    await asyncio.sleep(0.05)
    await follower.stop()
    assert first.is_leader
    assert await first.holder() == first.instance_id


async def test_stop_returns_when_the_store_is_down(
    mem: memory_kv.MemoryKV,
) -> None:
    node = leader.Leader(mem, KEY, "node-a", 1, retry_delay=0.01)
    await node.start()
    assert await node.wait_leader(1.0)
    mem.available = False
    await asyncio.wait_for(node.stop(), 1.0)  # gives up within the TTL
    assert not node.is_leader
    mem.available = True
    # The key could not be deleted: it goes when its lease expires, unrenewed.
    assert await node.holder() == "node-a"
    assert node.lease == 0


def test_rejects_an_empty_id_and_a_ttl_below_one_second(mem: memory_kv.MemoryKV) -> None:
    with pytest.raises(ValueError, match="instance id"):
        leader.Leader(mem, KEY, "", 5)
    with pytest.raises(ValueError, match="lease_ttl_seconds"):
        leader.Leader(mem, KEY, "a", 0)
