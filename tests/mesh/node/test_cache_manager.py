"""The cache manager's promises, on the in-memory KV store with a scripted
runtime (the real-runtime cases are in tests/integration/test_mesh_node.py):
one load per model however many requests wait for it, and nothing loading
or serving is ever evicted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import random
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import pytest

from mesh.core import errors, records, settings
from mesh.node import cache_manager
from tests.mesh import scripted_runtime as scripted

MiB = 1024 * 1024
Parts = tuple[cache_manager.CacheManager, scripted.ScriptedRuntime, scripted.GatedRecordStore]


@contextlib.contextmanager
def logged(text: str) -> Iterator[asyncio.Event]:
    """An event set when the cache manager logs a line containing ``text``."""
    event = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                event.set()

    logger = logging.getLogger("mesh.node")  # the cache manager and its room maker
    handler, level = Watch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield event
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.asynccontextmanager
async def started(
    tmp_path: pathlib.Path,
    eviction: str = "popularity",
    load_timeout: float = 120.0,
    churn_threshold: float = 0.0,
) -> AsyncIterator[Parts]:
    """A manager for a 250 MiB node (room for two models of 100 MiB) with
    models a, b and c registered."""
    cache = settings.CacheSettings(
        capacity_bytes=250 * MiB,
        min_model_size_bytes=100 * MiB,
        eviction=eviction,
        load_timeout_seconds=load_timeout,
        churn_threshold_seconds=churn_threshold,
    )
    async with scripted.node(tmp_path, cache, "abc") as n:
        yield n.manager, n.runtime, n.store


@pytest.fixture
async def parts(
    tmp_path: pathlib.Path,
) -> AsyncIterator[Parts]:
    async with started(tmp_path) as p:
        yield p


async def _serve(manager: cache_manager.CacheManager, model_id: str) -> None:
    async with manager.serving(model_id, timeout=5):
        pass


async def _begun(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """``work`` in a task, once the task has run up to its first wait: a
    task's first step runs without pause until then, and the event it sets
    at the start wakes this caller only after that step."""
    begun = asyncio.Event()

    async def run() -> None:
        begun.set()
        await work

    task = asyncio.create_task(run())
    await begun.wait()
    return task


async def _fill_with_a_and_b(
    manager: cache_manager.CacheManager, runtime: scripted.ScriptedRuntime
) -> None:
    """Let every load through, and fill the node with a, then b."""
    for m in "abc":
        runtime.gate(m).set()
    await _serve(manager, "a")
    await _serve(manager, "b")


async def test_many_requests_for_a_cold_model_cause_one_load(
    parts: Parts,
) -> None:
    manager, runtime, rs = parts
    waiters = [asyncio.create_task(_serve(manager, "a")) for _ in range(20)]
    await runtime.started("a").wait()
    assert runtime.loads == ["a"]
    entry = await rs.get_model("a")
    assert entry is not None and entry[0].copies["n1"].state is records.CopyState.LOADING
    runtime.gate("a").set()
    await asyncio.gather(*waiters)
    assert runtime.loads == ["a"]
    entry = await rs.get_model("a")
    assert entry is not None and entry[0].copies["n1"].state is records.CopyState.LOADED


async def test_a_loading_model_is_never_evicted(
    parts: Parts,
) -> None:
    manager, runtime, _ = parts
    runtime.gate("b").set()
    runtime.gate("c").set()
    loading_a = asyncio.create_task(_serve(manager, "a"))  # stays loading
    await _serve(manager, "b")
    # a (loading) and b fill the 250 MiB node; c must evict b, never a.
    await _serve(manager, "c")
    assert runtime.unloads == ["b"]
    assert not manager.holds("b") and manager.holds("c")
    runtime.gate("a").set()
    await loading_a
    assert manager.holds("a")


async def test_a_model_serving_a_request_is_never_evicted(
    parts: Parts,
) -> None:
    manager, runtime, _ = parts
    await _fill_with_a_and_b(manager, runtime)
    async with manager.serving("a", timeout=5):  # a is older but busy
        await _serve(manager, "c")
    assert runtime.unloads == ["b"]


@pytest.mark.parametrize(
    ("eviction", "evicted"), [("popularity", "b"), ("lru", "a")], ids=["popularity", "lru"]
)
async def test_evicts_the_least_popular_model_or_with_lru_the_least_recent(
    tmp_path: pathlib.Path, eviction: str, evicted: str
) -> None:
    async with started(tmp_path, eviction) as (manager, runtime, _):
        for m in "abc":
            runtime.gate(m).set()
        for _ in range(3):
            await _serve(manager, "a")
        await _serve(manager, "b")  # the most recent, but asked for once
        await _serve(manager, "c")
        assert runtime.unloads == [evicted]
        assert manager.holds("c")


async def test_a_load_waits_for_room_held_by_loading_models_and_is_not_marked_failed(
    parts: Parts,
) -> None:
    manager, runtime, rs = parts
    runtime.gate("c").set()
    pinned = [asyncio.create_task(_serve(manager, m)) for m in "ab"]
    await runtime.started("a").wait()
    await runtime.started("b").wait()
    with logged("model c waits for room") as waits:
        waiting = asyncio.create_task(_serve(manager, "c"))  # a and b hold the room
        await waits.wait()
    # a and b load in either order: each one's pull runs beside its claim
    assert not waiting.done() and sorted(runtime.loads) == ["a", "b"]
    runtime.gate("a").set()  # a loads, serves its request, and may be evicted
    await asyncio.wait_for(waiting, 5)
    assert runtime.loads[2:] == ["c"] and runtime.unloads == ["a"]
    entry = await rs.get_model("c")
    assert entry is not None and entry[0].failures == {}
    runtime.gate("b").set()
    await asyncio.gather(*pinned)


async def test_room_held_past_the_load_timeout_is_resource_exhausted_not_a_failure(
    tmp_path: pathlib.Path,
) -> None:
    async with started(tmp_path, load_timeout=0.3) as (manager, runtime, rs):
        for m in "abc":
            runtime.gate(m).set()
        async with manager.serving("a", timeout=5), manager.serving("b", timeout=5):
            # a and b serve requests for longer than c may wait for room
            with pytest.raises(errors.NoRoomNow, match="models in use or loading hold"):
                await _serve(manager, "c")
        entry = await rs.get_model("c")
        assert entry is not None and entry[0].failures == {} and "n1" not in entry[0].copies
        await _serve(manager, "c")  # not failed: served once there is room


async def test_with_a_churn_threshold_room_held_by_recent_models_is_refused_at_once(
    tmp_path: pathlib.Path,
) -> None:
    async with started(tmp_path, churn_threshold=60.0) as (manager, runtime, rs):
        for m in "abc":
            runtime.gate(m).set()
        await _serve(manager, "a")
        await _serve(manager, "b")  # both used just now: within the threshold
        # Refused at once: a load waiting for room would outlast the
        # request's deadline (DeadlineExceeded), and end after the 120 s
        # load timeout in a NoRoomNow that blames models in use.
        with pytest.raises(errors.NoRoomNow, match="MESHSERVE_CHURN_THRESHOLD"):
            await _serve(manager, "c")
        entry = await rs.get_model("c")
        assert entry is not None and entry[0].failures == {}
        assert manager.holds("a") and manager.holds("b")  # nothing evicted


async def test_a_model_larger_than_the_node_is_recorded_as_failed(
    tmp_path: pathlib.Path,
) -> None:
    cache = settings.CacheSettings(capacity_bytes=250 * MiB, min_model_size_bytes=100 * MiB)
    async with scripted.node(tmp_path, cache, []) as n:
        manager, rs = n.manager, n.store
        await rs.create_model(
            "huge", records.ModelRecord(model_type="sklearn", path="huge", size_bytes=300 * MiB)
        )
        await n.mirror.wait_until(lambda: n.mirror.model("huge") is not None, 5)
        with pytest.raises(errors.InsufficientCapacity) as info:
            await _serve(manager, "huge")
        assert not isinstance(info.value, errors.NoRoomNow)
        entry = await rs.get_model("huge")
        assert entry is not None and "n1" in entry[0].failures


async def test_requests_waiting_for_an_unload_start_one_load_not_several(
    parts: Parts,
) -> None:
    manager, runtime, rs = parts
    runtime.gate("a").set()
    await _serve(manager, "a")
    async with manager.serving("a", timeout=5):  # in flight: the unload waits for it
        unloading = await _begun(manager.unload("a", "test"))
        assert not manager.has_copy("a")  # unloading
        waiters = [await _begun(_serve(manager, "a")) for _ in range(3)]
    await unloading
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert runtime.loads == ["a", "a"]
    entry = await rs.get_model("a")
    assert entry is not None
    assert entry[0].copies["n1"].state is records.CopyState.LOADED


async def test_a_failed_load_is_recorded_and_fails_fast(
    parts: Parts,
) -> None:
    manager, runtime, rs = parts
    runtime.fail["a"] = "bad pickle"
    runtime.gate("a").set()
    with pytest.raises(errors.ModelLoadFailed, match="bad pickle"):
        await _serve(manager, "a")
    entry = await rs.get_model("a")
    assert entry is not None and entry[0].failures["n1"].message == "bad pickle"
    with pytest.raises(errors.ModelLoadFailed, match="bad pickle"):
        await _serve(manager, "a")
    assert runtime.loads == ["a"]  # the second request did not try again


async def test_an_unregistered_model_is_not_found(
    parts: Parts,
) -> None:
    manager, _, _ = parts
    with pytest.raises(errors.ModelNotFound, match="nope"):
        await _serve(manager, "nope")


async def test_a_request_whose_deadline_passes_leaves_the_load_running(
    parts: Parts,
) -> None:
    manager, runtime, _ = parts
    with pytest.raises(errors.DeadlineExceeded):
        async with manager.serving("a", timeout=0.05):
            pass
    runtime.gate("a").set()
    await _serve(manager, "a")
    assert runtime.loads == ["a"]


async def test_a_load_past_its_timeout_is_cancelled_unloaded_and_recorded(
    tmp_path: pathlib.Path,
) -> None:
    cache = settings.CacheSettings(capacity_bytes=1024**3, load_timeout_seconds=0.2)
    async with scripted.node(tmp_path, cache, ["slow"]) as n:
        manager, runtime, rs = n.manager, n.runtime, n.store
        # the load never finishes: its gate stays shut
        with pytest.raises(errors.ModelLoadFailed, match="longer than"):
            await _serve(manager, "slow")
        assert runtime.unloads == ["slow"]
        entry = await rs.get_model("slow")
        assert entry is not None and "n1" in entry[0].failures and not entry[0].copies
        assert not manager.has_copy("slow")


class CountingRuntime(scripted.ScriptedRuntime):
    """A scripted runtime that keeps the most models it ever held at once
    (a load takes its memory when it starts, an unload gives it back)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()
        self.most_held = 0

    async def load(self, model_id: str, model_type: str, model_path: pathlib.Path) -> int:
        self.held.add(model_id)
        self.most_held = max(self.most_held, len(self.held))
        return await super().load(model_id, model_type, model_path)

    async def unload(self, model_id: str) -> None:
        self.held.discard(model_id)
        await super().unload(model_id)


@pytest.mark.parametrize("seed", range(8))
async def test_concurrent_loads_never_hold_more_than_the_capacity(
    tmp_path: pathlib.Path, seed: int
) -> None:
    rng = random.Random(seed)
    cache = settings.CacheSettings(capacity_bytes=250 * MiB, min_model_size_bytes=100 * MiB)
    runtime = CountingRuntime()
    for m in "abcd":
        runtime.gate(m).set()
    async with scripted.node(tmp_path, cache, "abcd", runtime=runtime) as n:

        async def request(model_id: str, pause: int) -> None:
            for _ in range(pause):
                await asyncio.sleep(0)  # interleave with the other requests
            async with n.manager.serving(model_id, timeout=30):
                for _ in range(rng.randrange(3)):
                    await asyncio.sleep(0)

        await asyncio.gather(*(request(rng.choice("abcd"), rng.randrange(20)) for _ in range(100)))
    assert runtime.most_held <= 2, runtime.most_held
    assert len(runtime.loads) >= 4  # the four models took turns


async def test_a_first_request_answers_once_its_copy_is_recorded_loaded(parts: Parts) -> None:
    manager, runtime, store = parts
    runtime.gate("a").set()
    await _serve(manager, "a")  # its inference ran beside the LOADED write
    rec = await store.get_model("a")
    assert rec is not None and rec[0].copies["n1"].state is records.CopyState.LOADED


async def test_an_evicted_model_kept_on_disk_is_recorded_there_until_the_tier_drops_it(
    tmp_path: pathlib.Path,
) -> None:
    cache = settings.CacheSettings(capacity_bytes=250 * MiB, min_model_size_bytes=100 * MiB)
    puller = scripted.FolderPuller(tmp_path, keep=True)
    async with scripted.node(tmp_path, cache, "abc", puller=puller) as n:
        for m in "abc":
            n.runtime.gate(m).set()
            await _serve(n.manager, m)

        def on_disk() -> tuple[str, ...]:
            rec = n.mirror.model("a")
            return () if rec is None else rec.disk_copies

        assert await n.mirror.wait_until(lambda: on_disk() == ("n1",), 5)
        assert n.runtime.unloads == ["a"] and puller.retired == ["a"]
        n.manager.dropped_from_disk("a")
        assert await n.mirror.wait_until(lambda: on_disk() == (), 5)


async def test_room_for_a_model_of_known_size_is_made_while_its_claim_is_in_flight(
    parts: Parts,
) -> None:
    manager, runtime, store = parts
    for m in "abc":
        runtime.gate(m).set()
        await _serve(manager, m)
    assert runtime.unloads == ["a"]  # and a's size is on record now
    runtime.unloaded.clear()
    claim = store.hold("a")
    again = asyncio.create_task(_serve(manager, "a"))
    await runtime.unloaded.wait()  # room made for a ...
    rec = await store.get_model("a")
    assert rec is not None and "n1" not in rec[0].copies  # ... before its claim landed
    assert runtime.loads.count("a") == 1  # and the runtime load waits for the claim
    claim.set()
    await again
    assert manager.holds("a") and runtime.loads.count("a") == 2


async def test_an_evicted_copy_counts_no_more_once_the_runtime_let_it_go(
    parts: Parts,
) -> None:
    manager, runtime, store = parts
    await _fill_with_a_and_b(manager, runtime)
    settling = store.hold("a")  # a's withdrawal from etcd waits: a stays settling
    await _serve(manager, "c")  # evicts a, whose memory the runtime has freed
    assert runtime.unloads == ["a"]
    # b and c, not the settling a too: counting it made the node "over
    # capacity" when c's load ended, and one more model was evicted.
    assert manager.used_bytes() == 200 * MiB
    settling.set()
    await _serve(manager, "b")
    await _serve(manager, "c")
    assert runtime.loads == ["a", "b", "c"]
