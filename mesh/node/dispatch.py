"""The routing loop: decide where a model is served, act, and decide again
when that fails.

Shared by the data plane (a request is served here or forwarded) and the
management API (``ensureLoaded`` loads here or asks a peer). Each round asks
:func:`mesh.core.placement.route` for a decision over the current placement table
and carries it out through the caller's two actions:

* ``here(unreachable, remaining)`` — use (or load) this node's copy;
* ``there(route, unreachable, remaining)`` — use the peer ``route.instance``
  (which holds a ready copy, or was chosen to load one).

A peer that refuses the load (:class:`mesh.core.errors.Reroute`), fails it
(:class:`mesh.core.errors.ModelLoadFailed`, recorded in etcd) or cannot be reached
(:class:`mesh.core.errors.RuntimeUnavailable`) is avoided for the rest of the
request, and an unreachable peer for a few seconds by every request. A copy
loading elsewhere is waited for through the mirror; when this node's own
claim is refused because the store already holds another node's copy that
the mirror has not shown yet, the mirror catches up first, so the request
waits for that copy instead of trying to load it here again. All of it within the
caller's deadline and ``routing.max_attempts`` rounds.

The requests this node has in flight to each peer steer the choice between
ready copies; a caller sending to a peer holds :meth:`Dispatcher.sending`
for as long as the request (or stream) is out, and the count follows it on
every exit, errors and cancellation included.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from mesh.core import clock, errors, placement, records, settings
from mesh.kv import placement_table
from mesh.node import cache_manager

T = TypeVar("T")

SUSPECT_SECONDS = 5.0
"""How long a peer that could not be reached is avoided by every request."""

_NOBODY: frozenset[str] = frozenset()
_SERVE_HERE = placement.Route(placement.Action.SERVE_HERE)

Here = Callable[[frozenset[str], float], Awaitable[T]]
There = Callable[[placement.Route, frozenset[str], float], Awaitable[T]]


class Dispatcher:
    """Runs routing decisions for this node."""

    def __init__(
        self,
        config: settings.Settings,
        mirror: placement_table.PlacementTable,
        manager: cache_manager.CacheManager,
    ) -> None:
        self._cache = config.cache
        self._routing = config.routing
        self._self = config.node.instance_id
        self._table = mirror
        self._manager = manager
        self._suspect: dict[str, float] = {}
        self.in_flight: dict[str, int] = {}
        """Requests this node has in flight to each peer (:meth:`sending`)."""
        self.last_sent: dict[str, float] = {}
        """When this node last sent a request to each peer."""
        self.forwarded = 0
        """Requests (and streams) this node has sent to a peer, ever."""

    @contextlib.contextmanager
    def sending(self, instance_id: str) -> Iterator[None]:
        """One request in flight to the peer ``instance_id`` while the block
        runs: counted on entry (with the time it was sent), and no longer
        counted on any exit, an error or a cancellation included."""
        self.in_flight[instance_id] = self.in_flight.get(instance_id, 0) + 1
        self.last_sent[instance_id] = time.monotonic()
        self.forwarded += 1
        try:
            yield
        finally:
            self.in_flight[instance_id] -= 1

    def suspect(self, instance_id: str) -> None:
        """Avoid this peer for a few seconds: it could not be reached."""
        self._suspect[instance_id] = time.monotonic()

    async def run(self, model_id: str, timeout: float | None, here: Here[T], there: There[T]) -> T:
        loop = asyncio.get_running_loop()
        budget = timeout if timeout is not None else self._routing.default_deadline_seconds
        deadline = loop.time() + budget
        avoid: set[str] = set()
        last_error: errors.MeshError | None = None
        for _ in range(self._routing.max_attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            rec = self._table.model(model_id)
            if rec is None:
                raise errors.ModelNotFound(model_id)
            unreachable = self._unreachable(avoid)
            decision = self._decide(model_id, rec, unreachable, last_error)
            try:
                if decision.action is placement.Action.SERVE_HERE:
                    return await here(unreachable, remaining)
                if decision.action is placement.Action.WAIT:
                    await self._table.wait_until(
                        lambda: self._settled(model_id, avoid), min(remaining, 5.0)
                    )
                    continue
                return await there(decision, unreachable, remaining)
            except errors.Reroute as e:
                last_error = e
                if decision.instance:
                    avoid.add(decision.instance)
                else:
                    await self._catch_up(model_id, deadline - loop.time())
            except errors.ModelLoadFailed as e:
                last_error = e  # recorded in the model's record: decide again
                avoid.add(decision.instance or self._self)
            except errors.RuntimeUnavailable as e:
                if not decision.instance:
                    raise  # this node's own runtime: nothing to retry elsewhere
                last_error = e
                avoid.add(decision.instance)
                self.suspect(decision.instance)
        if last_error is not None:
            raise last_error
        raise errors.DeadlineExceeded(
            f"model {model_id!r}: no copy could serve before the deadline"
        )

    async def _catch_up(self, model_id: str, remaining: float) -> None:
        """This node's own claim was refused: the store holds a copy (often
        one loading elsewhere) that the mirror has not shown yet. Decided
        again on the same stale view, the request would choose this node
        again and again; once the mirror has caught up, it waits for that
        copy or goes to it."""
        with contextlib.suppress(errors.MeshError):  # the store unreachable: decide anyway
            await self._table.catch_up(model_id, ("model",), max(0.0, min(remaining, 5.0)))

    def _unreachable(self, avoid: set[str]) -> frozenset[str]:
        """The peers this request avoids, and those every request avoids for now."""
        if self._suspect:
            now = time.monotonic()
            for i in [i for i, t in self._suspect.items() if now - t >= SUSPECT_SECONDS]:
                del self._suspect[i]  # avoided long enough
        if not self._suspect and not avoid:
            return _NOBODY  # the common case, without building sets
        return frozenset(avoid | self._suspect.keys())

    def _decide(
        self,
        model_id: str,
        rec: records.ModelRecord,
        unreachable: frozenset[str],
        last_error: errors.MeshError | None,
    ) -> placement.Route:
        """The next place to try. When no node is left because every one this
        request tried failed to load the model (their failures may not be in
        this node's mirror yet, so the fail-fast rule cannot see them), the
        client gets that load failure, not "no room"."""
        if self._manager.has_copy(model_id):
            return _SERVE_HERE  # what placement.route says first; skips building its inputs
        try:
            return placement.route(
                model_id,
                rec,
                self._table.instances(),
                self._self,
                here=self._manager.has_copy(model_id),
                avoid=unreachable,
                in_flight=self.in_flight,
                last_sent=self.last_sent,
                labels=placement.required_labels(rec.model_type, rec.runtime),
                model_size=max(rec.size_bytes, self._cache.min_model_size_bytes),
                now_ms=clock.now_ms(),
                failure_expiry_ms=int(self._cache.failure_expiry_seconds * 1000),
                churn_threshold_ms=int(self._cache.churn_threshold_seconds * 1000),
            )
        except errors.InsufficientCapacity:
            if isinstance(last_error, errors.ModelLoadFailed):
                raise last_error from None
            raise

    def _settled(self, model_id: str, avoid: set[str]) -> bool:
        """A ready copy appeared, or no copy is loading any more."""
        rec = self._table.model(model_id)
        if rec is None:
            return True
        live = {i: r for i, r in self._table.instances().items() if i not in avoid}
        return bool(placement.live_copies(rec, live, records.CopyState.LOADED)) or not (
            placement.live_copies(rec, live, records.CopyState.LOADING)
        )
