"""The simulation's stand-ins and meters (:mod:`load_tests.sim_runtime`),
against the in-memory KV store: no server."""

from __future__ import annotations

import pathlib
from typing import Any, cast

import pytest

from load_tests import sim_runtime
from mesh.core import errors
from mesh.kv import kv_store, memory_kv
from router import dataplane, upstream, wire


async def test_counting_kv_counts_every_call_by_kind_and_folder() -> None:
    inner = memory_kv.MemoryKV()
    c = sim_runtime.CountingKV(inner)
    await c.put("mm/instances/a", b"1")
    rev = await c.compare_and_put("mm/registry/m", b"x", 0)
    assert rev is not None
    assert await c.compare_and_put("mm/registry/m", b"y", 0) is None  # lost
    assert (await c.get("mm/registry/m")) is not None
    snap = await c.list_prefix("mm/")
    assert len(snap.items) == 2
    assert not await c.compare_and_delete("mm/registry/m", rev + 100)  # lost
    assert await c.delete("mm/instances/a")
    lease = await c.grant_lease(10)
    assert await c.keep_alive(lease)
    await c.revoke_lease(lease)
    assert dict(c.counts) == {
        "put": 1,
        "txn": 3,
        "txn_failed": 2,
        "get": 1,
        "list": 1,
        "list_keys": 2,
        "delete": 1,
        "lease_grant": 1,
        "keep_alive": 1,
        "lease_revoke": 1,
        "write:instances": 2,
        "write:registry": 3,
    }
    assert sim_runtime.requests_in(c.counts) == 10
    await c.close()


async def test_counting_kv_counts_watch_streams_batches_and_events() -> None:
    inner = memory_kv.MemoryKV()
    c = sim_runtime.CountingKV(inner)
    start = (await c.list_prefix("mm/")).revision + 1
    await inner.put("mm/registry/a", b"1")
    await inner.put("mm/registry/b", b"2")
    seen: list[kv_store.WatchEvent] = []
    stream = c.watch_prefix("mm/", start)
    async for batch in stream:
        seen += batch
        if len(seen) >= 2:
            break
    aclose = getattr(stream, "aclose", None)
    assert aclose is not None
    await aclose()
    assert [e.key for e in seen] == ["mm/registry/a", "mm/registry/b"]
    assert c.counts["watch"] == 1
    assert c.counts["watch_events"] == 2
    assert 1 <= c.counts["watch_batches"] <= 2
    assert sim_runtime.requests_in(c.counts) == 2  # the list and the watch, not the events


async def test_a_shared_client_is_closed_by_its_owner_only() -> None:
    closed: list[bool] = []

    class Inner(memory_kv.MemoryKV):
        async def close(self) -> None:
            closed.append(True)

    inner = Inner()
    await sim_runtime.CountingKV(inner, owns=False).close()
    assert closed == []
    await sim_runtime.CountingKV(inner).close()
    assert closed == [True]


def test_key_folders_totals_and_deltas() -> None:
    assert sim_runtime.folder("mm/registry/m1") == "registry"
    assert sim_runtime.folder("mm/leader") == "leader"
    assert sim_runtime.folder("/p/instances/n/") == "instances"
    assert sim_runtime.total([{"get": 1, "put": 2}, {"get": 3}]) == {"get": 4, "put": 2}
    assert sim_runtime.delta({"get": 5, "put": 2, "txn": 1}, {"get": 3, "txn": 1}) == {
        "get": 2,
        "put": 2,
    }


def test_ledger_tracks_holders_peaks_and_bytes() -> None:
    led = sim_runtime.Ledger()
    led.loaded("a", "m1", 10)
    led.loaded("b", "m1", 10)
    led.loaded("a", "m2", 5)
    with pytest.raises(AssertionError):
        led.loaded("a", "m1", 10)
    assert led.peak_copies == {"m1": 2, "m2": 1}
    assert led.copies_histogram() == {1: 1, 2: 1}
    led.unloaded("b", "m1", 10)
    led.unloaded("b", "m1", 10)  # not held: ignored
    assert led.holds("a", "m1") and not led.holds("b", "m1")
    assert led.peak_copies["m1"] == 2
    assert led.models_per_node(["a", "b", "c"]) == {"a": 2, "b": 0, "c": 0}
    assert led.pairs() == {("m1", "a"), ("m2", "a")}
    assert led.bytes_held == {"a": 15, "b": 0}
    assert led.loads == {"a": 2, "b": 1} and led.unloads == {"b": 1}
    assert led.loaded_models == {"m1", "m2"}


async def test_synthetic_runtime_loads_with_its_size_and_unloads() -> None:
    led = sim_runtime.Ledger()
    rt = sim_runtime.SyntheticRuntime(
        "n1", led, {"m1": 123}, load_seconds=0.0, default_size=7, model_types=("sklearn",)
    )
    assert await rt.ready() and rt.pid is None and not rt.counts_gpu_memory
    assert await rt.load("m1", "sklearn", pathlib.Path("/nowhere/m1")) == 123
    assert await rt.load("m1", "sklearn", pathlib.Path("/nowhere/m1")) == 123  # same copy
    assert await rt.load("m2", "sklearn", pathlib.Path("/nowhere/m2")) == 7
    with pytest.raises(errors.ModelLoadFailed):
        await rt.load("m3", "onnx", pathlib.Path("/nowhere/m3"))
    assert led.pairs() == {("m1", "n1"), ("m2", "n1")}
    await rt.unload("m1")
    await rt.unload("m1")
    assert led.pairs() == {("m2", "n1")}
    await rt.stop()
    assert led.pairs() == set() and rt.held == {}


async def test_runtime_upstream_answers_only_for_a_held_model() -> None:
    rt = sim_runtime.SyntheticRuntime("n1", sim_runtime.Ledger(), {}, load_seconds=0.0)
    up = sim_runtime.RuntimeUpstream(rt)
    body = wire.rewrite_name(b"", "m1")
    with pytest.raises(upstream.UpstreamError) as e:
        await up.call("ModelInfer", body, 1.0)
    assert e.value.code == "NOT_FOUND" and up.missing == 1
    await rt.load("m1", "sklearn", pathlib.Path("/nowhere"))
    assert wire.read_name(await up.call("ModelInfer", body, 1.0)) == "m1"
    assert up.served == 1


class _Plane:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []

    async def call(self, method: str, request: bytes, headers: Any, timeout: float | None) -> bytes:
        self.calls.append((method, list(headers)))
        if self.error is not None:
            raise self.error
        return sim_runtime.answer(wire.read_name(request))


class _Loader:
    def __init__(self) -> None:
        self.loaded: list[tuple[str, bool]] = []
        self.soon: list[str] = []

    async def ensure_loaded(
        self, model_id: str, timeout: float | None = None, *, extra_copy: bool = False
    ) -> None:
        self.loaded.append((model_id, extra_copy))

    def load_soon(self, model_id: str, *, extra_copy: bool = False) -> None:
        self.soon.append(model_id)

    def holds(self, model_id: str) -> bool:
        return (model_id, True) in self.loaded


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.Reroute("claimed elsewhere"), "ABORTED"),
        (errors.ModelLoadFailed("m1", "bad file"), "FAILED_PRECONDITION"),
        (errors.InsufficientCapacity("full"), "RESOURCE_EXHAUSTED"),
        (errors.RuntimeUnavailable("gone"), "UNAVAILABLE"),
    ],
)
async def test_a_peer_s_mesh_error_comes_back_as_its_grpc_status(
    error: errors.MeshError, code: str
) -> None:
    peers = sim_runtime.Peers()
    plane = _Plane(error)
    peers.add("sim:b", cast(dataplane.DataPlane, plane), _Loader())
    meta = [("mm-balanced", "true"), ("mm-model-id", "m1")]
    with pytest.raises(upstream.UpstreamError) as e:
        await peers.upstream("sim:b").call("ModelInfer", wire.rewrite_name(b"", "m1"), 1.0, meta)
    assert e.value.code == code and e.value.details == error.message
    assert plane.calls == [("ModelInfer", meta)]


async def test_peers_forward_load_and_refuse_unknown_endpoints() -> None:
    peers = sim_runtime.Peers()
    loader = _Loader()
    peers.add("sim:b", cast(dataplane.DataPlane, _Plane(None)), loader)
    answer = await peers.upstream("sim:b").call("ModelInfer", wire.rewrite_name(b"", "m1"), 1.0)
    assert wire.read_name(answer) == "m1"
    assert await peers.ensure_local("sim:b", "m1", extra_copy=True)
    assert not await peers.ensure_local("sim:b", "m2", sync=False)
    assert loader.loaded == [("m1", True)] and loader.soon == ["m2"]
    assert peers.ensure_calls == 2
    peers.remove("sim:b")
    with pytest.raises(errors.RuntimeUnavailable):
        await peers.upstream("sim:b").call("ModelInfer", b"", 1.0)
    with pytest.raises(errors.RuntimeUnavailable):
        await peers.ensure_local("sim:b", "m1")


async def test_the_puller_fetches_nothing() -> None:
    p = sim_runtime.SyntheticPuller(pathlib.Path("/nowhere"))
    assert await p.pull("m1", object()) == pathlib.Path("/nowhere/m1")
    await p.remove("m1")
    assert p.pulls == 1
