"""The stand-ins and meters a simulated mesh node
(:class:`load_tests.sim_agent.Agent`, in :mod:`load_tests.simulate`) is
built from.

Why it exists: to run a hundred mesh nodes in one process against a real
etcd, everything a node does *besides* placement has to cost next to
nothing, and everything it does *with* etcd has to be counted. The mesh's
own parts (placement table, record store, cache manager, dispatcher, data
plane, membership, leader election, janitor, scaler) are used as they are;
only what sits behind the mesh's seams (:mod:`mesh.core.interfaces`,
:class:`router.upstream.Upstream`, :class:`mesh.kv.kv_store.KVStore`) is replaced:

* :class:`SyntheticRuntime` (a :class:`mesh.core.interfaces.RuntimeAdapter`): a
  load sleeps a few milliseconds and reports the model's synthetic size; an
  unload is instant. Every copy it holds is entered in a :class:`Ledger`
  shared by all the simulated nodes: the ground truth of what is loaded where,
  independent of what etcd says.
* :class:`SyntheticPuller` (a :class:`mesh.core.interfaces.ModelPuller`): fetches
  nothing and returns the folder the model would be in (it does not exist, so
  the cache manager finds no files and keeps the size from the model's record).
* :class:`RuntimeUpstream`: the node's V2 hop to its runtime; answers at once
  if the runtime holds the model, else ``NOT_FOUND`` (what MLServer says of a
  model it does not hold).
* :class:`PeerUpstream` and :class:`Peers`: the hop to another node, in
  process. A forwarded call goes straight into the peer's
  :class:`router.dataplane.DataPlane` with the same metadata a gRPC hop would
  carry (``mm-balanced``, ``mm-model-id``); a mesh error raised there comes
  back as the gRPC status :mod:`mesh.edges.grpc_status` gives it, so the calling
  node's dispatcher reads it exactly as it would read a real peer's answer.
  :class:`Peers` is also the :class:`mesh.core.interfaces.PeerLoader` the scaler
  asks for extra copies, as the ``Peer.EnsureLocal`` servicer
  (:mod:`mesh.edges.management_grpc`) would.
* :class:`CountingKV`: wraps any :class:`mesh.kv.kv_store.KVStore` and counts every
  call by kind (and writes by key folder: registry, instances, leader), and
  every watch batch and event received: the node's etcd traffic as the node
  itself causes it.
"""

from __future__ import annotations

import asyncio
import collections
import pathlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Protocol

from mesh.core import errors
from mesh.edges import grpc_status
from mesh.kv import kv_store
from router import dataplane, upstream, wire

KINDS = (
    "get",
    "list",
    "put",
    "txn",
    "delete",
    "lease_grant",
    "keep_alive",
    "lease_revoke",
    "watch",
)
"""Requests a node sends to etcd, as counted by :class:`CountingKV`
(``txn``: a compare-and-put or compare-and-delete; ``watch``: a watch stream
opened). Watch events are not requests: etcd sends them."""


class CountingKV:
    """A :class:`mesh.kv.kv_store.KVStore` that counts what passes through it.

    ``counts`` holds one entry per :data:`KINDS` plus ``watch_batches``,
    ``watch_events``, ``txn_failed`` (compare-and-sets that lost) and
    ``write:<folder>`` (puts, txns and deletes by the key's second path
    segment: ``registry``, ``instances``, ``leader``...). ``close`` closes
    the wrapped store only when ``owns`` is true (several counters may share
    one client)."""

    def __init__(self, inner: kv_store.KVStore, *, owns: bool = True) -> None:
        self.inner = inner
        self.owns = owns
        self.counts: collections.Counter[str] = collections.Counter()

    def _write(self, kind: str, key: str) -> None:
        self.counts[kind] += 1
        self.counts[f"write:{folder(key)}"] += 1

    async def get(self, key: str) -> kv_store.KeyValue | None:
        self.counts["get"] += 1
        return await self.inner.get(key)

    async def list_prefix(self, prefix: str) -> kv_store.Snapshot:
        self.counts["list"] += 1
        snap = await self.inner.list_prefix(prefix)
        self.counts["list_keys"] += len(snap.items)
        return snap

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self._write("put", key)
        return await self.inner.put(key, value, lease=lease)

    async def compare_and_put(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int = 0
    ) -> int | None:
        self._write("txn", key)
        rev = await self.inner.compare_and_put(key, value, expected_mod_revision, lease=lease)
        if rev is None:
            self.counts["txn_failed"] += 1
        return rev

    async def compare_and_delete(self, key: str, expected_mod_revision: int) -> bool:
        self._write("txn", key)
        done = await self.inner.compare_and_delete(key, expected_mod_revision)
        if not done:
            self.counts["txn_failed"] += 1
        return done

    async def delete(self, key: str) -> bool:
        self._write("delete", key)
        return await self.inner.delete(key)

    def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[list[kv_store.WatchEvent]]:
        return self._watch(prefix, start_revision)

    async def _watch(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[list[kv_store.WatchEvent]]:
        self.counts["watch"] += 1
        batches = self.inner.watch_prefix(prefix, start_revision)
        try:
            async for batch in batches:
                self.counts["watch_batches"] += 1
                self.counts["watch_events"] += len(batch)
                yield batch
        finally:
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:
                await aclose()

    async def grant_lease(self, ttl_seconds: int) -> int:
        self.counts["lease_grant"] += 1
        return await self.inner.grant_lease(ttl_seconds)

    async def keep_alive(self, lease: int) -> bool:
        self.counts["keep_alive"] += 1
        return await self.inner.keep_alive(lease)

    async def revoke_lease(self, lease: int) -> None:
        self.counts["lease_revoke"] += 1
        await self.inner.revoke_lease(lease)

    async def close(self) -> None:
        if self.owns:
            await self.inner.close()


def folder(key: str) -> str:
    """The folder of a record key: ``mm/registry/m1`` → ``registry``,
    ``mm/leader`` → ``leader``."""
    parts = key.strip("/").split("/")
    return parts[1] if len(parts) > 1 else parts[0]


def total(counters: Iterable[Mapping[str, int]]) -> collections.Counter[str]:
    """The sum of several nodes' counts."""
    out: collections.Counter[str] = collections.Counter()
    for c in counters:
        out.update(c)
    return out


def requests_in(counts: Mapping[str, int]) -> int:
    """How many requests to etcd ``counts`` holds (watch events excluded)."""
    return sum(counts.get(k, 0) for k in KINDS)


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """``after - before`` for every key of ``after`` (counts only grow)."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


class Ledger:
    """What every synthetic runtime holds, across all simulated nodes.

    ``holders`` maps a model to the nodes whose runtime holds it now;
    ``peak_copies`` is the most copies a model ever had at once;
    ``loads``/``unloads`` count per node, ``loaded_models`` every model ever
    loaded."""

    def __init__(self) -> None:
        self.holders: dict[str, set[str]] = {}
        self.peak_copies: dict[str, int] = {}
        self.loads: collections.Counter[str] = collections.Counter()
        self.unloads: collections.Counter[str] = collections.Counter()
        self.loaded_models: set[str] = set()
        self.bytes_held: collections.Counter[str] = collections.Counter()

    def loaded(self, node: str, model_id: str, size: int) -> None:
        held = self.holders.setdefault(model_id, set())
        if node in held:
            raise AssertionError(f"{node} loaded {model_id} twice without an unload")
        held.add(node)
        self.peak_copies[model_id] = max(self.peak_copies.get(model_id, 0), len(held))
        self.loads[node] += 1
        self.bytes_held[node] += size
        self.loaded_models.add(model_id)

    def unloaded(self, node: str, model_id: str, size: int) -> None:
        held = self.holders.get(model_id, set())
        if node not in held:
            return
        held.discard(node)
        if not held:
            del self.holders[model_id]
        self.unloads[node] += 1
        self.bytes_held[node] -= size

    def holds(self, node: str, model_id: str) -> bool:
        return node in self.holders.get(model_id, ())

    def models_per_node(self, nodes: Iterable[str]) -> dict[str, int]:
        """Models held by each of ``nodes`` (0 for one holding none)."""
        count = dict.fromkeys(nodes, 0)
        for held in self.holders.values():
            for n in held:
                count[n] = count.get(n, 0) + 1
        return count

    def copies_histogram(self) -> dict[int, int]:
        """How many models have 1, 2, 3... copies now."""
        return dict(sorted(collections.Counter(len(h) for h in self.holders.values()).items()))

    def pairs(self) -> set[tuple[str, str]]:
        """Every (model, node) copy held now."""
        return {(m, n) for m, held in self.holders.items() for n in held}


class SyntheticRuntime:
    """A :class:`mesh.core.interfaces.RuntimeAdapter` that holds nothing but a
    ledger entry: ``load`` sleeps ``load_seconds`` and returns the model's
    size from ``sizes`` (``default_size`` for a model not in it)."""

    name = "synthetic"

    def __init__(
        self,
        node: str,
        ledger: Ledger,
        sizes: Mapping[str, int],
        *,
        load_seconds: float = 0.005,
        default_size: int = 1 << 20,
        model_types: Sequence[str] = ("sklearn",),
    ) -> None:
        self.node = node
        self.ledger = ledger
        self.sizes = sizes
        self.load_seconds = load_seconds
        self.default_size = default_size
        self.model_types = tuple(model_types)
        self.held: dict[str, int] = {}

    @property
    def grpc_target(self) -> str:
        return f"in-process:{self.node}"

    @property
    def pid(self) -> int | None:
        return None

    @property
    def counts_gpu_memory(self) -> bool:
        return False

    def supported_model_types(self) -> tuple[str, ...]:
        return self.model_types

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for model_id in list(self.held):
            await self.unload(model_id)

    async def ready(self) -> bool:
        return True

    async def load(self, model_id: str, model_type: str, model_path: pathlib.Path) -> int:
        if model_type not in self.model_types:
            raise errors.ModelLoadFailed(model_id, f"type {model_type!r} is not supported")
        await asyncio.sleep(self.load_seconds)
        if model_id in self.held:  # loaded again behind the cache's back: same copy
            return self.held[model_id]
        size = self.sizes.get(model_id, self.default_size)
        self.held[model_id] = size
        self.ledger.loaded(self.node, model_id, size)
        return size

    async def unload(self, model_id: str) -> None:
        size = self.held.pop(model_id, None)
        if size is not None:
            self.ledger.unloaded(self.node, model_id, size)


class SyntheticPuller:
    """A :class:`mesh.core.interfaces.ModelPuller` that fetches nothing."""

    def __init__(self, model_dir: pathlib.Path) -> None:
        self.model_dir = model_dir
        self.pulls = 0

    async def pull(self, model_id: str, record: object) -> pathlib.Path:
        self.pulls += 1
        return self.model_dir / model_id

    async def remove(self, model_id: str) -> None:
        return None

    async def retire(self, model_id: str, record: object) -> bool:
        return False


def answer(model_id: str) -> bytes:
    """A minimal ``ModelInferResponse``: field 1 (``model_name``) only."""
    return wire.rewrite_name(b"", model_id)


class _Unary:
    """The stream half of :class:`router.upstream.Upstream` for the
    simulation's hops: the simulation carries no streams."""

    def stream(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
        *,
        settle: float = 0.0,
    ) -> AsyncIterator[bytes]:
        return _unimplemented()


async def _unimplemented() -> AsyncIterator[bytes]:
    raise upstream.UpstreamError("UNIMPLEMENTED", "the simulation carries no streams")
    yield b""  # pragma: no cover - makes this an async generator


class RuntimeUpstream(_Unary):
    """A node's hop to its synthetic runtime (:class:`router.upstream.Upstream`)."""

    def __init__(self, runtime: SyntheticRuntime) -> None:
        self.runtime = runtime
        self.served = 0
        self.missing = 0
        """Calls for a model the runtime did not hold (the router then reloads it)."""

    async def call(
        self,
        method: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        model_id = wire.read_name(request)
        if model_id not in self.runtime.held:
            self.missing += 1
            raise upstream.UpstreamError("NOT_FOUND", f"model {model_id!r} is not loaded")
        self.served += 1
        return answer(model_id)


class PeerUpstream(_Unary):
    """The hop to another simulated node (:class:`router.upstream.Upstream`):
    its data plane, called in process with the forwarded metadata; its mesh
    errors come back as the gRPC status the real hop would carry."""

    def __init__(self, plane: dataplane.DataPlane) -> None:
        self.plane = plane

    async def call(
        self,
        method: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        try:
            return await self.plane.call(method, request, list(metadata), timeout)
        except errors.MeshError as e:
            raise upstream.UpstreamError(grpc_status.code_for(e).name, e.message) from None


class Loader(Protocol):
    """What :class:`Peers` needs of a node to load a model there (the cache
    manager's ``ensure_loaded``, ``load_soon`` and ``holds``)."""

    async def ensure_loaded(
        self, model_id: str, timeout: float | None = None, *, extra_copy: bool = False
    ) -> None: ...

    def load_soon(self, model_id: str, *, extra_copy: bool = False) -> None: ...

    def holds(self, model_id: str) -> bool: ...


class Peers:
    """Every simulated node by its advertised endpoint: the data plane's
    ``peer(endpoint)`` and the scaler's :class:`mesh.core.interfaces.PeerLoader`.
    An endpoint nobody has (a node that stopped) is unreachable."""

    def __init__(self) -> None:
        self._planes: dict[str, PeerUpstream] = {}
        self._loaders: dict[str, Loader] = {}
        self.ensure_calls = 0

    def add(self, endpoint: str, plane: dataplane.DataPlane, loader: Loader) -> None:
        self._planes[endpoint] = PeerUpstream(plane)
        self._loaders[endpoint] = loader

    def remove(self, endpoint: str) -> None:
        self._planes.pop(endpoint, None)
        self._loaders.pop(endpoint, None)

    def upstream(self, endpoint: str) -> upstream.Upstream:
        up = self._planes.get(endpoint)
        if up is None:
            return _Unreachable(endpoint)
        return up

    async def ensure_local(
        self,
        endpoint: str,
        model_id: str,
        *,
        extra_copy: bool = False,
        sync: bool = True,
        timeout: float | None = None,
    ) -> bool:
        self.ensure_calls += 1
        loader = self._loaders.get(endpoint)
        if loader is None:
            raise errors.RuntimeUnavailable(f"peer {endpoint} is unavailable")
        if sync:
            await loader.ensure_loaded(model_id, timeout, extra_copy=extra_copy)
        else:
            loader.load_soon(model_id, extra_copy=extra_copy)
        return loader.holds(model_id)


class _Unreachable(_Unary):
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def call(
        self,
        method: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        raise errors.RuntimeUnavailable(f"peer {self.endpoint} is unavailable")
