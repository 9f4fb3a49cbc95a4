"""The production :class:`mesh.kv.kv_store.KVStore`: etcd v3, through ``etcd3aio``.

etcd3aio (grpc.aio) does the wire work; this module keeps its quirks from
leaking into the mesh:

- Every failure to reach etcd becomes :class:`mesh.core.errors.StoreUnavailable`
  naming the endpoints, and every unary call has a deadline, so nothing
  waits forever on a dead etcd (a watch excepted: it waits for etcd to come
  back).
- Compare-and-set compares the key's *mod* revision (DESIGN.md §4).
  etcd3aio has builders for value, version and create-revision compares only,
  so the ``Compare`` message is built from its generated protobuf classes.
  Transactions are sent once, never retried by the library: a retried CAS
  whose first attempt did commit would report a lost race for our own write.
- A watch survives etcd restarts: etcd3aio re-opens the stream on
  ``UNAVAILABLE``. It resumes from ``header.revision + 1`` of the last
  response, which can skip events of a catch-up that was cut short, so this
  module tracks the next revision it still needs from the events it has really
  delivered (:mod:`mesh.kv.etcd_watch_position`) and re-opens the watch itself
  when the two disagree. etcd3aio also
  jumps silently past a compaction; here a response with ``compact_revision``
  or ``canceled`` ends the watch with :class:`mesh.kv.kv_store.WatchLost`, and the
  watcher re-lists.
- TLS (:class:`EtcdTLS`): the CA of etcd's certificate and, for etcd's
  ``--client-cert-auth``, a client certificate, as bytes read by the caller
  (:mod:`mesh.edges.tls`); passed to etcd3aio's secure channel.
- The gRPC channel is tuned so that a client notices a restarted etcd within
  about a second (gRPC's default reconnect back-off grows to two minutes and
  its subchannels are shared process-wide, so a fresh client could inherit a
  stale back-off).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import etcd3aio
import grpc
import grpc.aio

# etcd3aio exports no Compare builder for MOD and no re-export of the proto
# classes; its private ``_protobuf`` module is where they are reachable.
from etcd3aio import _protobuf as etcd_pb

from mesh.core import errors
from mesh.kv import etcd_watch_position as watch_position
from mesh.kv import kv_store

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_DELETE = 1  # mvccpb.Event.EventType (PUT is 0)

_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    # One subchannel per client: gRPC otherwise shares subchannels between
    # channels to the same address, and a new client inherits the back-off of
    # an old one that saw etcd go away.
    ("grpc.use_local_subchannel_pool", 1),
    # Reconnect within a second of etcd coming back (default back-off: 1 s
    # growing to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A page of records may exceed gRPC's default 4 MiB.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclasses.dataclass(frozen=True)
class EtcdTLS:
    """TLS to etcd, as PEM bytes."""

    ca_cert: bytes
    """CA certificate(s) etcd's server certificate is checked against."""
    cert_key: bytes | None = None
    """Private key of the client certificate (etcd's ``--client-cert-auth``)."""
    cert_chain: bytes | None = None
    """The client certificate."""
    server_name: str = ""
    """Name etcd's certificate is checked against; empty: the endpoint's host
    (needed with several endpoints, which share one channel)."""


class _Compacted(Exception):
    """A read at a revision etcd has compacted away."""


def _raise_if_closed_under_us(where: str, what: str) -> None:
    """grpc.aio cancels the calls in flight when their channel is closed; the
    caller then sees ``CancelledError`` although nobody cancelled its task.
    Report that as the store going away, and let real cancellations through."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() == 0:
        raise errors.StoreUnavailable(f"{where}: {what}: the client was closed")


def _normalise_endpoint(endpoint: str) -> str:
    e = endpoint.strip()
    for scheme in ("http://", "https://"):
        e = e.removeprefix(scheme)
    return e.rstrip("/")


def _range_end(prefix: str) -> bytes:
    """The exclusive end of every key starting with ``prefix``."""
    end: bytes = etcd3aio.prefix_range_end(prefix.encode())
    return end


def _last_event_revision(resp: Any) -> int | None:
    return int(resp.events[-1].kv.mod_revision) if resp.events else None


def _events(resp: Any) -> list[kv_store.WatchEvent]:
    """A watch response's events, in the store's terms."""
    return [
        kv_store.WatchEvent(
            kv_store.EventKind.DELETE if e.type == _DELETE else kv_store.EventKind.PUT,
            e.kv.key.decode(),
            b"" if e.type == _DELETE else bytes(e.kv.value),
            int(e.kv.mod_revision),
        )
        for e in resp.events
    ]


class EtcdKV:
    """A :class:`mesh.kv.kv_store.KVStore` on an etcd cluster.

    Build it with :meth:`connect` (or the constructor, then :meth:`open`).
    ``timeout`` bounds each unary call, retries included.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        page_size: int = 1000,
        watch_backoff: tuple[float, float] = (0.1, 1.0),
        tls: EtcdTLS | None = None,
    ) -> None:
        if not endpoints:
            raise errors.ConfigError("etcd: no endpoint given")
        self.endpoints: tuple[str, ...] = tuple(_normalise_endpoint(e) for e in endpoints)
        self.timeout = timeout
        self.page_size = page_size
        self.tls = tls
        self._client = etcd3aio.Etcd3Client(
            list(self.endpoints),
            rpc_max_attempts=3,
            watch_reconnect_backoff_seconds=watch_backoff[0],
            watch_max_reconnect_backoff_seconds=watch_backoff[1],
            # No CA: a plaintext channel (etcd3aio's rule).
            tls_server_name=(tls.server_name or None) if tls else None,
            ca_cert=tls.ca_cert if tls else None,
            cert_key=tls.cert_key if tls else None,
            cert_chain=tls.cert_chain if tls else None,
        )
        # etcd3aio takes no channel options; it builds its channel from this
        # list in connect(), so extending it before then is the only way in.
        options = getattr(getattr(self._client, "_manager", None), "grpc_options", None)
        if isinstance(options, list):
            options.extend(_CHANNEL_OPTIONS)
        else:  # pragma: no cover - a future etcd3aio changed its internals
            _log.warning("etcd3aio internals changed: gRPC reconnect tuning not applied")
        self._connected = False

    @property
    def _where(self) -> str:
        scheme = "https://" if self.tls else ""
        return f"etcd at {','.join(scheme + e for e in self.endpoints)}"

    @classmethod
    async def connect(
        cls,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        check: bool = True,
        tls: EtcdTLS | None = None,
    ) -> EtcdKV:
        """A connected store; with ``check``, raise
        :class:`mesh.core.errors.StoreUnavailable` unless etcd answers a read."""
        store = cls(endpoints, timeout=timeout, tls=tls)
        try:
            await store.open(check=check)
        except BaseException:
            await store.close()
            raise
        return store

    async def open(self, *, check: bool = True) -> None:
        """Open the channel; with ``check``, prove etcd answers a read
        (:class:`mesh.core.errors.StoreUnavailable` if not)."""
        if not self._connected:
            await self._client.connect()
            self._connected = True
        if check:
            await self._call(
                "check", lambda: self._kv().get("\0meshserve-ping", timeout=self.timeout)
            )

    async def close(self) -> None:
        if self._connected:
            self._connected = False
            await self._client.close()

    # --- plumbing ---------------------------------------------------------

    def _kv(self) -> Any:
        svc = self._client.kv
        if svc is None:
            raise errors.StoreUnavailable(f"{self._where}: client is closed")
        return svc

    def _lease(self) -> Any:
        svc = self._client.lease
        if svc is None:
            raise errors.StoreUnavailable(f"{self._where}: client is closed")
        return svc

    def _watch(self) -> Any:
        svc = self._client.watch
        if svc is None:
            raise errors.StoreUnavailable(f"{self._where}: client is closed")
        return svc

    def _unavailable(self, what: str, exc: BaseException) -> errors.StoreUnavailable:
        if isinstance(exc, grpc.aio.AioRpcError):
            detail = f"{exc.code().name}: {exc.details()}"
        elif isinstance(exc, TimeoutError):
            detail = f"no answer within {self.timeout:g} s"
        else:
            detail = str(exc) or type(exc).__name__
        return errors.StoreUnavailable(f"{self._where}: {what} failed: {detail}")

    async def _call(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run one etcd call, turning every way of not reaching etcd into
        :class:`StoreUnavailable`. A lease etcd does not know raises
        :class:`mesh.core.errors.Conflict`."""
        try:
            async with asyncio.timeout(self.timeout + 1.0):
                return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (exc.details() or ""):
                raise _Compacted from exc
            if exc.code() == grpc.StatusCode.NOT_FOUND and "lease" in (exc.details() or ""):
                raise errors.Conflict(
                    f"{self._where}: {what}: the lease is not found (expired or revoked)"
                ) from exc
            raise self._unavailable(what, exc) from exc
        except (etcd3aio.EtcdError, TimeoutError, grpc.RpcError) as exc:
            raise self._unavailable(what, exc) from exc
        except asyncio.CancelledError:
            _raise_if_closed_under_us(self._where, what)
            raise

    # --- KVStore ----------------------------------------------------------

    async def get(self, key: str) -> kv_store.KeyValue | None:
        resp = await self._call(f"get {key!r}", lambda: self._kv().get(key, timeout=self.timeout))
        if not resp.kvs:
            return None
        item = resp.kvs[0]
        return kv_store.KeyValue(item.key.decode(), bytes(item.value), int(item.mod_revision))

    async def list_prefix(self, prefix: str) -> kv_store.Snapshot:
        """Every key under ``prefix`` at one revision, read in pages so a large
        table never exceeds a gRPC message (the pages after the first are read
        at the first page's revision; if etcd compacts that revision meanwhile,
        the listing starts over)."""
        end = _range_end(prefix)
        for _ in range(3):
            try:
                return await self._list_once(prefix, end)
            except _Compacted:
                continue
        raise errors.StoreUnavailable(f"{self._where}: list {prefix!r}: compacted while paging")

    async def _list_once(self, prefix: str, end: bytes) -> kv_store.Snapshot:
        items: list[kv_store.KeyValue] = []
        start = prefix.encode()
        revision = 0
        while True:

            async def page(start: bytes = start, revision: int = revision) -> Any:
                return await self._kv().get(
                    start,
                    range_end=end,
                    revision=revision,
                    limit=self.page_size,
                    timeout=self.timeout,
                )

            resp = await self._call(f"list {prefix!r}", page)
            if revision == 0:
                revision = int(resp.header.revision)
            items.extend(
                kv_store.KeyValue(i.key.decode(), bytes(i.value), int(i.mod_revision))
                for i in resp.kvs
            )
            if not resp.more or not resp.kvs:
                return kv_store.Snapshot(tuple(items), revision)
            start = bytes(resp.kvs[-1].key) + b"\0"

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        resp = await self._call(
            f"put {key!r}", lambda: self._kv().put(key, value, lease=lease, timeout=self.timeout)
        )
        return int(resp.header.revision)

    @staticmethod
    def _mod_equals(key: str, expected_mod_revision: int) -> Any:
        if expected_mod_revision < 0:
            raise ValueError(f"expected_mod_revision must be >= 0, not {expected_mod_revision}")
        if expected_mod_revision == 0:
            # The key is absent: it has no create revision.
            return etcd_pb.Compare(
                result=etcd_pb.Compare.EQUAL,
                target=etcd_pb.Compare.CREATE,
                key=key.encode(),
                create_revision=0,
            )
        return etcd_pb.Compare(
            result=etcd_pb.Compare.EQUAL,
            target=etcd_pb.Compare.MOD,
            key=key.encode(),
            mod_revision=expected_mod_revision,
        )

    async def compare_and_put(
        self, key: str, value: bytes, expected_mod_revision: int, *, lease: int = 0
    ) -> int | None:
        compare = self._mod_equals(key, expected_mod_revision)
        op = self._kv().txn_op_put(key, value, lease=lease)
        resp = await self._call(
            f"compare-and-put {key!r}",
            lambda: self._kv().txn([compare], [op], timeout=self.timeout, max_attempts=1),
        )
        return int(resp.header.revision) if resp.succeeded else None

    async def compare_and_delete(self, key: str, expected_mod_revision: int) -> bool:
        compare = self._mod_equals(key, expected_mod_revision)
        op = self._kv().txn_op_delete(key)
        resp = await self._call(
            f"compare-and-delete {key!r}",
            lambda: self._kv().txn([compare], [op], timeout=self.timeout, max_attempts=1),
        )
        if not resp.succeeded:
            return False
        return bool(resp.responses and resp.responses[0].response_delete_range.deleted > 0)

    async def delete(self, key: str) -> bool:
        resp = await self._call(
            f"delete {key!r}", lambda: self._kv().delete(key, timeout=self.timeout)
        )
        return int(resp.deleted) > 0

    async def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[list[kv_store.WatchEvent]]:
        """Changes under ``prefix`` from ``start_revision`` (inclusive; 0: from
        now on). Waits through etcd restarts; raises :class:`mesh.kv.kv_store.WatchLost`
        when etcd compacted the revisions it needs or cancelled the watch, and
        :class:`StoreUnavailable` when the client is closed under it."""
        end = _range_end(prefix)
        # The first revision not yet delivered, from what was really delivered.
        next_rev = start_revision
        while True:
            position = watch_position.WatchPosition(next_revision=next_rev, library_next=next_rev)
            reopen = False
            stream = self._watch().watch(
                prefix, range_end=end, start_revision=next_rev, progress_notify=True
            )
            try:
                async with contextlib.aclosing(stream):
                    async for resp in stream:
                        self._raise_if_lost(prefix, position.next_revision, resp)
                        position, step = watch_position.next_position(
                            position,
                            created=bool(resp.created),
                            header_revision=int(resp.header.revision),
                            last_event_revision=_last_event_revision(resp),
                        )
                        if step is watch_position.WatchStep.EVENTS:
                            yield _events(resp)
                        elif step is watch_position.WatchStep.RESUMED:
                            _log.info(
                                "watch %r resumed at revision %d", prefix, position.next_revision
                            )
                        elif step is watch_position.WatchStep.REOPEN:
                            _log.info(
                                "watch %r re-opened by etcd3aio at %d; resuming at %d",
                                prefix,
                                position.library_next,
                                position.next_revision,
                            )
                            reopen = True
                            break
            except (etcd3aio.EtcdError, grpc.RpcError) as exc:
                raise self._unavailable(f"watch {prefix!r}", exc) from exc
            except asyncio.CancelledError:
                _raise_if_closed_under_us(self._where, f"watch {prefix!r}")
                raise
            if not reopen:
                raise errors.StoreUnavailable(f"{self._where}: watch {prefix!r} stream ended")
            next_rev = position.next_revision

    def _raise_if_lost(self, prefix: str, next_rev: int, resp: Any) -> None:
        """End the watch when etcd compacted the revisions it still needs, or
        cancelled it: etcd3aio would jump past either in silence."""
        if resp.compact_revision > 0:
            raise kv_store.WatchLost(
                f"{self._where}: watch {prefix!r} from revision {next_rev}: "
                f"history compacted up to {resp.compact_revision}"
            )
        if resp.canceled:
            raise kv_store.WatchLost(
                f"{self._where}: watch {prefix!r} cancelled by etcd: "
                f"{resp.cancel_reason or 'no reason given'}"
            )

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision`` (operators and tests: watches
        from older revisions then end with :class:`mesh.kv.kv_store.WatchLost`)."""
        await self._call(
            f"compact to {revision}",
            lambda: self._kv().compact(revision, physical=True, timeout=self.timeout),
        )

    async def grant_lease(self, ttl_seconds: int) -> int:
        resp = await self._call(
            "lease grant", lambda: self._lease().grant(ttl_seconds, timeout=self.timeout)
        )
        return int(resp.ID)

    async def keep_alive(self, lease: int) -> bool:
        """One keep-alive round trip; ``False`` if etcd no longer knows the lease."""

        async def once() -> bool:
            call = self._lease().keep_alive(lease)
            try:
                async with asyncio.timeout(self.timeout):
                    async for resp in call:
                        return int(resp.TTL) > 0
            finally:
                call.cancel()
            return False

        return await self._call(f"keep-alive of lease {lease}", once)

    async def revoke_lease(self, lease: int) -> None:
        # A lease etcd no longer knows has expired or was revoked: its keys are
        # gone, as asked.
        with contextlib.suppress(errors.Conflict):
            await self._call(
                f"revoke of lease {lease}",
                lambda: self._lease().revoke(lease, timeout=self.timeout),
            )


async def connect(
    endpoints: Sequence[str],
    *,
    timeout: float = 5.0,
    check: bool = True,
) -> EtcdKV:
    """:meth:`EtcdKV.connect`: a connected store on ``endpoints``."""
    return await EtcdKV.connect(endpoints, timeout=timeout, check=check)
