"""The dispatcher counts what this node has in flight to each peer for as long
as it is out, whatever way it ends, and that count steers the next request
to the less busy copy."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import pytest

from mesh.core import errors, placement, records, settings
from mesh.node import dispatch
from tests.mesh import scripted_runtime as scripted

MiB = 1024 * 1024
PEER = records.InstanceRecord(
    endpoint="127.0.0.1:1", capacity_bytes=1024 * MiB, labels=("mt:sklearn",)
)


@pytest.fixture
async def node(tmp_path: pathlib.Path) -> AsyncIterator[scripted.Node]:
    async with scripted.node(tmp_path, settings.CacheSettings(capacity_bytes=100 * MiB), []) as n:
        yield n


@pytest.fixture
def dispatcher(node: scripted.Node) -> dispatch.Dispatcher:
    return dispatch.Dispatcher(node.config, node.mirror, node.manager)


def test_a_request_to_a_peer_counts_while_it_is_out(dispatcher: dispatch.Dispatcher) -> None:
    with dispatcher.sending("b"):
        assert dispatcher.in_flight == {"b": 1}
        with dispatcher.sending("b"), dispatcher.sending("c"):
            assert dispatcher.in_flight == {"b": 2, "c": 1}
        assert dispatcher.in_flight == {"b": 1, "c": 0}
    assert dispatcher.in_flight == {"b": 0, "c": 0}
    assert dispatcher.forwarded == 3
    assert dispatcher.last_sent.keys() == {"b", "c"}


def test_a_request_that_fails_is_no_longer_counted(dispatcher: dispatch.Dispatcher) -> None:
    with pytest.raises(errors.RuntimeUnavailable), dispatcher.sending("b"):
        raise errors.RuntimeUnavailable("peer b went away")
    assert dispatcher.in_flight == {"b": 0}


async def test_a_request_cancelled_on_its_way_is_no_longer_counted(
    dispatcher: dispatch.Dispatcher,
) -> None:
    sent = asyncio.Event()

    async def forward() -> None:
        with dispatcher.sending("b"):
            sent.set()
            await asyncio.Event().wait()  # the peer never answers

    task = asyncio.create_task(forward())
    await sent.wait()
    assert dispatcher.in_flight == {"b": 1}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dispatcher.in_flight == {"b": 0}


async def test_the_next_request_goes_to_the_ready_copy_with_less_in_flight(
    node: scripted.Node, dispatcher: dispatch.Dispatcher
) -> None:
    ready = records.CopyInfo(records.CopyState.LOADED, 0)
    await node.store.put_instance("b", PEER)
    await node.store.put_instance("c", PEER)
    model = records.ModelRecord(model_type="sklearn", path="m", copies={"b": ready, "c": ready})
    assert await node.store.create_model("m", model)
    assert await node.mirror.wait_until(lambda: node.mirror.model("m") is not None, None)
    chosen: list[str] = []

    async def here(unreachable: frozenset[str], remaining: float) -> str:
        raise AssertionError("this node holds no copy")

    async def there(route: placement.Route, unreachable: frozenset[str], remaining: float) -> str:
        chosen.append(route.instance)
        return route.instance

    for busy in ("b", "c"):
        with dispatcher.sending(busy):
            await dispatcher.run("m", 5.0, here, there)
    assert chosen == ["c", "b"]


async def test_when_every_node_failed_the_load_the_client_gets_the_load_failure(
    node: scripted.Node, dispatcher: dispatch.Dispatcher
) -> None:
    """The peers' failures are not in this node's mirror (they lag): placement
    sees no node left, and the answer is still the load's failure."""
    await node.store.put_instance("n1", PEER)
    await node.store.put_instance("b", PEER)
    assert await node.store.create_model("m", records.ModelRecord(model_type="sklearn", path="m"))
    assert await node.mirror.wait_until(
        lambda: node.mirror.model("m") is not None and len(node.mirror.instances()) == 2, None
    )
    tried: list[str] = []

    async def here(unreachable: frozenset[str], remaining: float) -> str:
        tried.append("n1")
        raise errors.ModelLoadFailed("m", "pop from empty list")

    async def there(route: placement.Route, unreachable: frozenset[str], remaining: float) -> str:
        tried.append(route.instance)
        raise errors.ModelLoadFailed("m", "pop from empty list")

    with pytest.raises(errors.ModelLoadFailed, match="pop from empty list"):
        await dispatcher.run("m", 5.0, here, there)
    assert sorted(tried) == ["b", "n1"]
