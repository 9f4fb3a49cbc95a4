"""Leader election on the KV store, for the mesh's periodic cluster tasks.

Some work must be done by one node at a time: pruning the copies that dead
nodes left in the model records and expiring old load failures
(:mod:`mesh.node.janitor`). Every node is equal (DESIGN.md §1), so the nodes elect
one among themselves through a single key, ``<prefix>/leader`` (§4), using
only the :class:`mesh.kv.kv_store.KVStore` interface, so the same code runs on etcd and
on the in-memory store of the unit tests:

- **campaign**: a node grants itself a lease and writes the key with its
  instance id, only if the key is absent (compare-and-put on revision 0), under
  that lease. One write wins; the others lose the compare and revoke their
  lease.
- **hold**: the winner renews its lease every third of the TTL and watches the
  key; the key's mod revision is its term (a fencing token, :attr:`Leader.term`).
- **wait**: the others watch the key and campaign again when it is deleted:
  when the leader resigns (:meth:`Leader.stop` deletes the key, so another
  node takes over within a round trip) or when its lease expires (the node
  died or lost etcd: takeover within the TTL).

Leadership never outlives what the lease guarantees. A leader whose renewals
fail (etcd unreachable, a stalled event loop) stops being leader on its own
when the TTL has passed since the last renewal *was sent* (etcd counts from
when it received it, which is later, so by then no other node can have won):
:attr:`Leader.is_leader` compares the clock with that deadline, so it turns
false on time even while a renewal call is still hanging. A leader whose key
is deleted or overwritten, or whose lease etcd no longer knows, steps down at
once.

etcd keeps leases across its own restarts (and extends them), so after an
outage the key usually survives: the former leader finds the key it wrote, at
the revision it wrote it, renews the lease and resumes; the others keep
waiting. If the lease expired instead, the key vanished with it and the first
node to campaign wins. Every store error is retried with a capped back-off;
nothing here ever stops trying while the node runs.

Imports no etcd or gRPC library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mesh.core import errors
from mesh.kv import kv_store

_log = logging.getLogger(__name__)

Listener = Callable[[bool], None]
"""Called with ``True`` when this node becomes leader and ``False`` when it
stops being leader (lease lost or not renewed in time, key gone, stopped)."""


def leader_key(prefix: str) -> str:
    """The election key under a record prefix: ``<prefix>/leader``."""
    return f"{prefix.strip('/')}/leader"


class Leader:
    """This node's side of the election on ``key``.

    :meth:`start` campaigns in the background (it never raises for an
    unreachable store: it keeps trying); :attr:`is_leader` says whether this
    node leads now; :meth:`wait_leader` waits for it; :meth:`add_listener`
    hears every change; :meth:`stop` resigns.

    ``lease_ttl_seconds`` bounds both how long a dead leader blocks the others
    and how long a leader cut off from the store goes on believing it leads.
    ``retry_delay`` / ``max_retry_delay`` are the back-off of retries after a
    store error. ``clock`` is a monotonic clock in seconds.
    """

    def __init__(
        self,
        store: kv_store.KVStore,
        key: str,
        instance_id: str,
        lease_ttl_seconds: int,
        *,
        retry_delay: float = 0.1,
        max_retry_delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not instance_id:
            raise ValueError("leader election needs a non-empty instance id")
        if lease_ttl_seconds < 1:
            raise ValueError(f"lease_ttl_seconds must be >= 1, not {lease_ttl_seconds}")
        self.kv = store
        self.key = key
        self.instance_id = instance_id
        self.ttl = lease_ttl_seconds
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._clock = clock
        self._value = instance_id.encode()
        self._renew_every = lease_ttl_seconds / 3
        self._lease = 0
        """Our lease, while we may have a key under it."""
        self._held_rev = 0
        """Mod revision of the key we wrote under ``_lease`` (0: none known)."""
        self._leading = False
        self._valid_until = 0.0
        self._changed = asyncio.Event()
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self.elections = 0
        """How many times this node became (or resumed being) leader."""

    # --- state ------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this node leads now: it won the key and its lease was
        renewed less than a TTL ago."""
        return self._leading and self._clock() < self._valid_until

    @property
    def term(self) -> int:
        """The leader key's mod revision while this node leads, else 0. It
        grows with every election, so it can fence writes of a former leader."""
        return self._held_rev if self.is_leader else 0

    @property
    def lease(self) -> int:
        """The lease this node holds (or last tried for) the key under; 0: none."""
        return self._lease

    async def holder(self) -> str | None:
        """The instance id that holds the key now, as the store says (``None``:
        nobody). Raises :class:`mesh.core.errors.StoreUnavailable`."""
        item = await self.kv.get(self.key)
        return None if item is None else item.value.decode(errors="replace")

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(True)`` on becoming leader and ``callback(False)``
        on losing leadership. Runs in the election task: keep it short."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    async def wait_leader(self, timeout: float | None) -> bool:
        """Wait until this node leads; ``False`` if ``timeout`` seconds pass first."""
        try:
            async with asyncio.timeout(timeout):
                while not self.is_leader:
                    await self._changed.wait()
        except TimeoutError:
            return self.is_leader
        return True

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Campaign in the background, for as long as the node runs."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"leader-election-{self.key}")

    async def stop(self) -> None:
        """Stop campaigning and resign: if this node holds the key, delete it
        (so another node takes over at once) and revoke the lease. Waits at
        most one TTL for the store; past that the lease expires by itself."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._step_down("stopped")
        lease, rev = self._lease, self._held_rev
        self._lease = self._held_rev = 0
        if not lease and not rev:
            return
        try:
            async with asyncio.timeout(self.ttl):
                if rev:
                    await self.kv.compare_and_delete(self.key, rev)
                if lease:
                    await self.kv.revoke_lease(lease)
        except (errors.MeshError, TimeoutError) as e:
            _log.warning(
                "leader %s: could not resign from %r (%s); the key expires with its lease",
                self.instance_id,
                self.key,
                e,
            )

    # --- transitions ------------------------------------------------------

    def _notify(self, leading: bool) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in list(self._listeners):
            try:
                listener(leading)
            except Exception:
                _log.exception("leader listener %r failed", listener)

    def _elected(self, valid_until: float, how: str) -> None:
        self._valid_until = valid_until
        if not self._leading:
            self._leading = True
            self.elections += 1
            _log.info(
                "%s is now leader on %r (%s, term %d)",
                self.instance_id,
                self.key,
                how,
                self._held_rev,
            )
            self._notify(True)

    def _step_down(self, reason: str) -> None:
        if self._leading:
            self._leading = False
            level = logging.INFO if reason == "stopped" else logging.WARNING
            _log.log(level, "%s is no longer leader on %r: %s", self.instance_id, self.key, reason)
            self._notify(False)

    async def _drop_lease(self) -> None:
        """Forget our lease, revoking it if the store lets us (best effort:
        otherwise it expires by itself)."""
        lease, self._lease, self._held_rev = self._lease, 0, 0
        if lease:
            with contextlib.suppress(errors.MeshError):
                await self.kv.revoke_lease(lease)

    # --- the election loop ------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            try:
                await self._campaign_once()
                delay = self.retry_delay
                continue
            except (errors.StoreUnavailable, errors.Conflict, kv_store.WatchLost) as e:
                _log.info(
                    "leader election on %r: %s; retrying in %.1f s",
                    self.key,
                    getattr(e, "message", e),
                    delay,
                )
            except Exception:
                _log.exception("leader election on %r failed; retrying in %.1f s", self.key, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _current(self) -> tuple[kv_store.KeyValue | None, int]:
        """The key as stored now, and the store revision of that reading."""
        snapshot = await self.kv.list_prefix(self.key)
        item = next((i for i in snapshot.items if i.key == self.key), None)
        return item, snapshot.revision

    async def _campaign_once(self) -> None:
        """One round: take the key if free, resume it if it is still ours,
        else wait for it to be deleted. Returns when the round is over."""
        current, revision = await self._current()
        if current is None:
            if await self._acquire():
                await self._hold()
            return
        if self._lease and self._held_rev == current.mod_revision and current.value == self._value:
            # The key we wrote survived (an outage): renew the lease to resume.
            sent = self._clock()
            if await self._renew():
                self._elected(sent + self.ttl, "resumed")
                await self._hold()
            else:
                await self._drop_lease()
            return
        # Someone else's key (or a stale one of ours): it ends with its lease.
        await self._drop_lease()
        await self._wait_deleted(revision + 1)

    async def _acquire(self) -> bool:
        """Grant a lease and write the key under it only if absent."""
        await self._drop_lease()
        sent = self._clock()
        self._lease = await self.kv.grant_lease(self.ttl)
        # If the write's outcome is unknown (an error), the lease is kept so
        # that the next round (or stop) revokes it along with any key under it.
        rev = await self.kv.compare_and_put(self.key, self._value, 0, lease=self._lease)
        if rev is None:
            await self._drop_lease()
            return False
        self._held_rev = rev
        self._elected(sent + self.ttl, "elected")
        return True

    async def _renew(self) -> bool:
        """One keep-alive: ``False`` if the store no longer knows the lease."""
        try:
            return await self.kv.keep_alive(self._lease)
        except errors.Conflict:
            return False

    async def _next_change(self, start_revision: int) -> kv_store.WatchEvent:
        """The first change to the key from ``start_revision`` on."""
        batches = self.kv.watch_prefix(self.key, start_revision)
        try:
            async for batch in batches:
                for event in batch:
                    if event.key == self.key:
                        return event
        finally:
            # Close the store's stream now, not when the GC finds it.
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:
                await aclose()
        raise errors.StoreUnavailable(f"the watch on {self.key!r} ended")

    async def _wait_deleted(self, start_revision: int) -> None:
        while True:
            event = await self._next_change(start_revision)
            if event.kind is kv_store.EventKind.DELETE:
                return
            start_revision = event.mod_revision + 1

    async def _watch_own_key(self) -> str:
        """Return (with the reason) once the key we hold is deleted or
        overwritten; store errors are retried here."""
        delay = self.retry_delay
        while True:
            try:
                current, revision = await self._current()
                if current is None:
                    return "the key was deleted"
                if current.mod_revision != self._held_rev:
                    return "the key was overwritten"
                event = await self._next_change(revision + 1)
                if event.kind is kv_store.EventKind.DELETE:
                    return "the key was deleted (lease expired or revoked)"
                return "the key was overwritten"
            except (errors.StoreUnavailable, kv_store.WatchLost) as e:
                _log.debug("leader %s: watch on own key: %s", self.instance_id, e)
            except Exception:
                _log.exception("leader %s: watch on own key failed", self.instance_id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _hold(self) -> None:
        """Keep the lease alive while leading; return when leadership ends."""
        watcher = asyncio.create_task(self._watch_own_key(), name=f"leader-watch-{self.key}")
        next_renewal = self._valid_until - self.ttl + self._renew_every
        delay = self.retry_delay
        try:
            while True:
                wake = min(next_renewal, self._valid_until)
                done, _ = await asyncio.wait({watcher}, timeout=max(0.0, wake - self._clock()))
                if watcher in done:
                    self._step_down(watcher.result())
                    await self._drop_lease()
                    return
                now = self._clock()
                if now >= self._valid_until:
                    # Keep the lease and revision: if the key survives the
                    # outage, the next round resumes it.
                    self._step_down(f"the lease was not renewed within its {self.ttl} s TTL")
                    return
                if now < next_renewal:
                    continue
                try:
                    async with asyncio.timeout(max(0.001, self._valid_until - now)):
                        alive = await self._renew()
                except (errors.StoreUnavailable, TimeoutError) as e:
                    _log.warning(
                        "leader %s: lease renewal failed (%s); %.1f s of leadership left",
                        self.instance_id,
                        getattr(e, "message", None) or "no answer in time",
                        max(0.0, self._valid_until - self._clock()),
                    )
                    next_renewal = self._clock() + delay
                    delay = min(delay * 2, self._renew_every)
                    continue
                if not alive:
                    self._step_down("the lease expired")
                    self._lease = self._held_rev = 0
                    return
                self._valid_until = now + self.ttl
                next_renewal = now + self._renew_every
                delay = self.retry_delay
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
