"""A real etcd for the tests.

``etcd_server`` starts one single-member etcd per test (with raft's fast
timings it is ready in about a tenth of a second) on free 127.0.0.1 ports,
its data in the test's temporary folder, and stops it afterwards, so every
test starts from an empty store and may stop and restart its etcd freely.
``etcd_kv`` is a connected :class:`mesh.kv.etcd_kv.EtcdKV` on it.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import pytest

import mesh.edges.etcd_process
import mesh.kv.etcd_kv


@pytest.fixture
def etcd_server(tmp_path: pathlib.Path) -> Iterator[mesh.edges.etcd_process.EtcdServer]:
    """A started :class:`mesh.edges.etcd_process.EtcdServer` (fast raft timings) on
    free ports, its data under ``tmp_path``; stopped after the test."""
    server = mesh.edges.etcd_process.EtcdServer(tmp_path / "etcd", fast=True)
    server.start(timeout=30.0)
    try:
        yield server
    finally:
        server.discard()


@pytest.fixture
async def etcd_kv(
    etcd_server: mesh.edges.etcd_process.EtcdServer,
) -> AsyncIterator[mesh.kv.etcd_kv.EtcdKV]:
    """A connected :class:`mesh.kv.etcd_kv.EtcdKV` on ``etcd_server``, closed after."""
    store = await mesh.kv.etcd_kv.EtcdKV.connect([etcd_server.endpoint])
    try:
        yield store
    finally:
        await store.close()
