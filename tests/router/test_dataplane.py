"""The data plane on one node over the in-memory KV store, with a scripted
runtime: what a peer's forwarded request gets when this node cannot serve it."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Sequence

import pytest

from mesh.core import errors, settings
from mesh.node import dispatch
from router import dataplane, request_parsing
from tests.mesh import scripted_runtime as scripted

MiB = 1024 * 1024


class Runtime:
    """The runtime's V2 service: answers every call with the same bytes."""

    async def call(
        self,
        method: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        return b"answer"

    async def stream(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
        *,
        settle: float = 0.0,
    ) -> AsyncIterator[bytes]:
        raise NotImplementedError("not used here")
        yield b""


async def test_a_forwarded_request_finding_no_room_here_is_sent_back_to_try_another_node(
    tmp_path: pathlib.Path,
) -> None:
    cache = settings.CacheSettings(
        capacity_bytes=150 * MiB, min_model_size_bytes=100 * MiB, load_timeout_seconds=0.2
    )
    async with scripted.node(tmp_path, cache, "ab") as n:
        manager, rs, mirror = n.manager, n.store, n.mirror
        plane = dataplane.DataPlane(
            n.config,
            mirror,
            manager,
            dispatch.Dispatcher(n.config, mirror, manager),
            Runtime(),
            lambda endpoint: Runtime(),
        )
        n.runtime.gate("a").set()
        n.runtime.gate("b").set()
        async with manager.serving("a", timeout=5):  # a holds the only room, busy
            headers = [
                (request_parsing.BALANCED_HEADER, "true"),
                (request_parsing.MODEL_HEADER, "b"),
            ]
            with pytest.raises(errors.Reroute, match="models in use or loading hold"):
                await plane.call("ModelInfer", b"", headers, 5.0)
        entry = await rs.get_model("b")
        assert entry is not None and entry[0].failures == {}
        assert await plane.call("ModelInfer", b"", headers, 5.0) == b"answer"
