"""The etcd store's watch never skips an event and never hides a compaction,
whatever etcd3aio's own reconnect logic does.

etcd3aio re-opens a broken watch stream from ``header.revision + 1`` of the
last response and jumps past compactions; these tests feed the store scripted
etcd responses (no server) to check that it re-opens from the first revision
it has not delivered, and ends the watch with ``WatchLost`` instead.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from etcd3aio import _protobuf as etcd_pb

from mesh.core import errors
from mesh.kv import etcd_kv, kv_store


def response(
    *,
    header: int,
    created: bool = False,
    events: Sequence[tuple[int, str]] = (),
    compact_revision: int = 0,
    canceled: bool = False,
) -> Any:
    r = etcd_pb.WatchResponse(created=created, compact_revision=compact_revision, canceled=canceled)
    r.header.revision = header
    for rev, key in events:
        e = r.events.add()
        e.type = 0
        e.kv.key = key.encode()
        e.kv.value = b"v"
        e.kv.mod_revision = rev
    return r


class ScriptedWatch:
    """Stands in for etcd3aio's ``WatchService.watch``: each call plays the
    next script (a list of responses), then waits forever."""

    def __init__(self, scripts: list[list[Any]]) -> None:
        self.scripts: Iterator[list[Any]] = iter(scripts)
        self.starts: list[int] = []

    async def watch(
        self, key: str, range_end: bytes | None = None, start_revision: int = 0, **_: Any
    ) -> AsyncIterator[Any]:
        self.starts.append(start_revision)
        for r in next(self.scripts):
            yield r
        await asyncio.Future()


@pytest.fixture
async def store() -> AsyncIterator[etcd_kv.EtcdKV]:
    s = etcd_kv.EtcdKV(["127.0.0.1:1"])
    await s.open(check=False)
    try:
        yield s
    finally:
        await s.close()


def script(
    store: etcd_kv.EtcdKV, monkeypatch: pytest.MonkeyPatch, *scripts: list[Any]
) -> ScriptedWatch:
    fake = ScriptedWatch(list(scripts))
    monkeypatch.setattr(store._client.watch, "watch", fake.watch)
    return fake


async def next_batch(it: AsyncIterator[list[kv_store.WatchEvent]]) -> list[kv_store.WatchEvent]:
    return await asyncio.wait_for(anext(it), 10.0)


async def test_a_reconnect_past_undelivered_events_reopens_from_the_first_missing_revision(
    store: etcd_kv.EtcdKV, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = script(
        store,
        monkeypatch,
        [
            response(header=10, created=True),
            # The stream broke before the replay of 5..10; etcd3aio re-created
            # it from 11 on its own.
            response(header=12, created=True),
            response(header=12, events=[(11, "p/late")]),
        ],
        [
            response(header=12, created=True),
            response(header=12, events=[(5, "p/a"), (9, "p/b")]),
            response(header=12, events=[(11, "p/late")]),
        ],
    )
    watch = store.watch_prefix("p/", 5)
    assert [e.key for e in await next_batch(watch)] == ["p/a", "p/b"]
    assert [e.key for e in await next_batch(watch)] == ["p/late"]
    assert fake.starts == [5, 5]


async def test_a_reconnect_at_the_next_revision_keeps_the_stream(
    store: etcd_kv.EtcdKV, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = script(
        store,
        monkeypatch,
        [
            response(header=4, created=True),
            response(header=5, events=[(5, "p/a")]),
            response(header=7, created=True),  # etcd3aio resumed at 6: no gap
            response(header=7, events=[(7, "p/b")]),
        ],
    )
    watch = store.watch_prefix("p/", 5)
    assert [e.key for e in await next_batch(watch)] == ["p/a"]
    assert [e.key for e in await next_batch(watch)] == ["p/b"]
    assert fake.starts == [5]


async def test_a_progress_notification_moves_the_resume_point(
    store: etcd_kv.EtcdKV, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = script(
        store,
        monkeypatch,
        [
            response(header=4, created=True),
            response(header=20),  # progress: everything up to 20 was sent
            response(header=25, created=True),  # etcd3aio resumed at 21: no gap
            response(header=25, events=[(22, "p/a")]),
        ],
    )
    watch = store.watch_prefix("p/", 5)
    assert [e.key for e in await next_batch(watch)] == ["p/a"]
    assert fake.starts == [5]


async def test_a_compaction_ends_the_watch_with_watch_lost(
    store: etcd_kv.EtcdKV, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(
        store,
        monkeypatch,
        [
            response(header=30, created=True),
            response(header=30, compact_revision=20, canceled=True),
        ],
    )
    with pytest.raises(kv_store.WatchLost, match="compacted up to 20"):
        await next_batch(store.watch_prefix("p/", 5))


async def test_a_cancelled_watch_ends_with_watch_lost(
    store: etcd_kv.EtcdKV, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(
        store, monkeypatch, [response(header=3, created=True), response(header=3, canceled=True)]
    )
    with pytest.raises(kv_store.WatchLost, match="cancelled"):
        await next_batch(store.watch_prefix("p/", 1))


async def test_a_store_never_opened_raises_store_unavailable() -> None:
    s = etcd_kv.EtcdKV(["127.0.0.1:1"])
    with pytest.raises(errors.StoreUnavailable, match=re.escape("127.0.0.1:1")):
        await s.get("k")


def test_endpoints_may_be_urls_but_not_missing() -> None:
    assert etcd_kv.EtcdKV(["http://127.0.0.1:2379/"]).endpoints == ("127.0.0.1:2379",)
    with pytest.raises(errors.ConfigError):
        etcd_kv.EtcdKV([])
