"""A node's copies: what pins them, what they count, and the signal an
unload waits on for the last request to end."""

from __future__ import annotations

import asyncio
import math

from mesh.core import eviction, records
from mesh.node import local_copies

MiB = 1024 * 1024
SOURCE = records.ModelRecord(model_type="sklearn", path="m")


def loaded(model_id: str, last_used: float = 0.0) -> local_copies.LocalCopy:
    c = local_copies.LocalCopy.loading(model_id, SOURCE, 100 * MiB)
    c.phase, c.last_used = local_copies.CopyPhase.LOADED, last_used
    return c


async def test_a_copy_is_pinned_while_it_loads_serves_or_has_requests_waiting() -> None:
    c = local_copies.LocalCopy.loading("m", SOURCE, 100 * MiB)
    assert c.entry().pinned
    c.phase = local_copies.CopyPhase.LOADED
    assert not c.entry().pinned
    c.in_flight = 1
    assert c.entry().pinned
    c.in_flight, c.waiting = 0, 1
    assert c.entry().pinned


def test_recent_requests_count_the_last_minute_only() -> None:
    recent = local_copies.RecentRequests()
    for t in (0.0, 30.0, 61.0):
        recent.add(t)
    assert recent.per_minute(61.0) == 2
    assert recent.per_minute(200.0) == 0


async def test_a_served_request_counts_its_use_and_says_when_the_copy_is_idle() -> None:
    copies = local_copies.LocalCopies("popularity", 600.0)
    c = loaded("m")
    copies.add(c)
    c.in_flight = 2
    assert not copies.served(c)
    assert copies.served(c)
    assert c.last_used > 0
    assert copies.model_rpm() == {"m": 2} and copies.requests_per_minute() == 2
    assert copies.entry(c).popularity > copies.entry(loaded("other")).popularity


async def test_with_lru_eviction_no_popularity_is_counted() -> None:
    copies = local_copies.LocalCopies("lru", 600.0)
    c = loaded("m")
    copies.add(c)
    c.in_flight = 1
    copies.served(c)
    assert copies.entry(c).popularity == copies.entry(loaded("other")).popularity


async def test_loads_not_yet_given_room_count_as_used_but_not_as_held() -> None:
    copies = local_copies.LocalCopies("lru", 600.0)
    copies.add(loaded("ready"))
    pulling = local_copies.LocalCopy.loading("pulling", SOURCE, 100 * MiB)
    copies.add(pulling)
    assert copies.used_bytes() == 200 * MiB and copies.held_bytes() == 100 * MiB
    pulling.reserved = True
    assert copies.held_bytes() == 200 * MiB
    assert copies.loading_count() == 1 and copies.model_count() == 2
    assert copies.holds("ready") and not copies.holds("pulling") and copies.has_copy("pulling")


async def test_recently_used_lists_ready_models_most_recent_first() -> None:
    copies = local_copies.LocalCopies("lru", 600.0)
    for m, t in (("old", 1.0), ("new", 3.0), ("mid", 2.0)):
        copies.add(loaded(m, t))
    assert copies.recently_used(1e12) == ["new", "mid", "old"]
    assert copies.lru_time_ms() == 1000


async def test_a_discarded_copy_replaced_meanwhile_stays() -> None:
    copies = local_copies.LocalCopies("lru", 600.0)
    first, second = loaded("m"), loaded("m")
    copies.add(first)
    copies.add(second)
    copies.discard(first)
    assert copies.get("m") is second


async def test_a_signal_fired_between_arming_and_waiting_is_not_missed() -> None:
    signal = local_copies.ChangeSignal()
    armed = signal.armed()
    signal.fire()
    signal.armed().clear()  # a later waiter's event, not this one's
    await asyncio.wait_for(armed.wait(), 5)
    assert not signal.armed().is_set()


async def test_an_unload_waits_until_the_last_request_in_flight_ends() -> None:
    signal = local_copies.ChangeSignal()
    copies = local_copies.LocalCopies("lru", 600.0)
    c = loaded("m")
    copies.add(c)
    c.in_flight = 2
    begun = asyncio.Event()

    async def unload() -> None:
        begun.set()
        await local_copies.until_idle(c, signal, 30.0)

    idle = asyncio.create_task(unload())
    await begun.wait()  # its first step ran: it waits on the signal
    assert not copies.served(c)  # one request still in flight
    assert copies.served(c)  # the last: the manager fires its room-freed signal
    signal.fire()
    await asyncio.wait_for(idle, 5)
    assert c.in_flight == 0


async def test_an_unload_stops_waiting_for_requests_after_its_timeout() -> None:
    c = loaded("m")
    c.in_flight = 1
    await asyncio.wait_for(local_copies.until_idle(c, local_copies.ChangeSignal(), 0.01), 5)
    assert c.in_flight == 1


async def test_the_victim_rank_is_that_of_the_copy_evicted_first() -> None:
    copies = local_copies.LocalCopies("popularity", 600.0)
    popular, rare = loaded("popular", 1.0), loaded("rare", 2.0)
    for c in (popular, rare):
        copies.add(c)
    for c in (popular, popular, popular, rare):
        c.in_flight = 1
        copies.served(c)
    rank = copies.victim_rank(lambda m: False)
    assert rank is not None and math.isfinite(rank)
    assert rank == round(eviction.victim_rank(copies.entry(rare)), 2)
    assert copies.victim_rank(lambda m: m == "popular") == -math.inf  # an extra copy goes first
    rare.in_flight = popular.in_flight = 1  # both in use: nothing may go now
    assert copies.victim_rank(lambda m: False) is None
