"""The periodic cluster tasks the elected leader runs on the model records.

Two kinds of entries in a model record (DESIGN.md §3, §4) outlive what they
describe unless somebody removes them:

- **copies on dead instances.** A node that dies cannot remove its copies from
  the records; its instance record vanishes when its lease expires, but the
  copies would stay, and requests would keep being routed to a node that is
  gone. Once an instance has had no instance record for a grace period, its
  copies are removed, so the router stops choosing them and the model is
  placed again on demand. The grace period spares a node whose record was
  briefly missing (an etcd blip, a lease re-granted) and that registers again:
  copies of an instance whose record is back are never touched.
- **expired load failures.** Failures count for fail-fast only while recent
  (:func:`mesh.core.records.recent_failures`); older ones are removed so records
  do not grow forever and status shows only what still matters.

The decisions are pure functions over frozen records (:func:`note_missing`,
:func:`stale_copies`, :func:`expired_failures`, :func:`cleaned`); the
:class:`Janitor` applies them every interval with compare-and-set updates
through :class:`mesh.kv.records_store.RecordStore`, and only while this node is the
leader (:mod:`mesh.node.leader`), so one node does it at a time. Every node's
janitor tracks since when each instance has been missing from its own mirror
of the table (:class:`mesh.kv.placement_table.PlacementTable`), so a node that takes over
the leadership applies the grace period from what it has already seen.

Imports no etcd or gRPC library.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Protocol

from mesh.core import clock as wall_clock
from mesh.core import errors, records
from mesh.kv import placement_table, records_store

_log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 5.0
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_FAILURE_EXPIRY_SECONDS = 15 * 60.0


class LeaderState(Protocol):
    """What the janitor needs of the election (:class:`mesh.node.leader.Leader`)."""

    @property
    def is_leader(self) -> bool: ...


# --- pure decisions ---------------------------------------------------------


def copy_holders(models: Iterable[records.ModelRecord]) -> set[str]:
    """Every instance id that holds a copy (loaded or loading) of a model."""
    return {instance for model in models for instance in model.copies}


def note_missing(
    missing_since: Mapping[str, float],
    holders: Collection[str],
    live_instances: Collection[str],
    now: float,
) -> dict[str, float]:
    """Since when each instance that holds copies but has no instance record
    has been seen missing: the time already noted, else ``now``. Instances
    with a record again, or holding nothing, are dropped."""
    return {
        instance: missing_since.get(instance, now)
        for instance in holders
        if instance not in live_instances
    }


def stale_copies(
    model: records.ModelRecord,
    live_instances: Collection[str],
    missing_since: Mapping[str, float],
    now: float,
    grace: float,
) -> tuple[str, ...]:
    """The instances (sorted) whose copies of ``model`` are to be removed:
    those with no instance record, missing since at least ``grace`` before
    ``now`` (``now``, ``grace`` and ``missing_since`` on one clock). An instance
    not yet noted missing is not stale."""
    return tuple(
        sorted(
            instance
            for instance in model.copies
            if instance not in live_instances
            and instance in missing_since
            and now - missing_since[instance] >= grace
        )
    )


def expired_failures(model: records.ModelRecord, now_ms: int, expiry_ms: int) -> tuple[str, ...]:
    """The instances (sorted) whose failure record of ``model`` is at least
    ``expiry_ms`` old: exactly those :func:`mesh.core.records.recent_failures`
    leaves out."""
    return tuple(
        sorted(
            instance
            for instance, failure in model.failures.items()
            if now_ms - failure.time_ms >= expiry_ms
        )
    )


def cleaned(
    model: records.ModelRecord,
    drop_copies: Collection[str],
    drop_failures: Collection[str],
) -> records.ModelRecord:
    """``model`` without the copies on ``drop_copies`` and the failures of
    ``drop_failures``; the very same object when none of them is there (so
    :meth:`mesh.kv.records_store.RecordStore.update_model` writes nothing)."""
    copies = {k: v for k, v in model.copies.items() if k not in drop_copies}
    failures = {k: v for k, v in model.failures.items() if k not in drop_failures}
    if len(copies) == len(model.copies) and len(failures) == len(model.failures):
        return model
    return dataclasses.replace(model, copies=copies, failures=failures)


# --- the periodic task ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What one pass of the janitor did."""

    leader: bool
    """Whether this node was leader, so the pass could write anything."""
    pruned: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Model id → instances whose copies were removed."""
    expired: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Model id → instances whose failures were removed."""


class Janitor:
    """Runs the cluster tasks every ``interval_seconds`` while ``leader``
    leads: removes copies of instances missing from ``table`` for
    ``grace_seconds``, and failures older than ``failure_expiry_seconds``.

    ``clock`` (monotonic seconds) times the grace period; ``wall_clock_ms``
    (milliseconds since the epoch, as in the records) ages failures.
    """

    def __init__(
        self,
        record_store: records_store.RecordStore,
        placement: placement_table.PlacementTable,
        leader: LeaderState,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        failure_expiry_seconds: float = DEFAULT_FAILURE_EXPIRY_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = wall_clock.now_ms,
    ) -> None:
        self._store = record_store
        self._table = placement
        self._leader = leader
        self.interval = interval_seconds
        self.grace = grace_seconds
        self.failure_expiry_ms = int(failure_expiry_seconds * 1000)
        self._clock = clock
        self._wall_clock_ms = wall_clock_ms
        self._missing: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def missing_since(self) -> Mapping[str, float]:
        """Instance id → when it was first seen without an instance record
        while holding copies (``clock`` time)."""
        return dict(self._missing)

    async def start(self) -> None:
        """Track instances in the table, and run a pass every interval."""
        if self._task is not None:
            return
        self._table.add_listener(self._on_change)
        self._note()
        self._task = asyncio.create_task(self._run(), name="janitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._table.remove_listener(self._on_change)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_change(self, kind: str, record_id: str) -> None:
        """An instance record came or went: note it at once, so an instance
        that vanishes and comes back between passes restarts its grace."""
        if kind != records_store.INSTANCE:
            return
        if self._table.instance(record_id) is None:
            self._missing.setdefault(record_id, self._clock())
        else:
            self._missing.pop(record_id, None)

    def _note(self) -> tuple[dict[str, records.ModelRecord], set[str], float]:
        now = self._clock()
        models = dict(self._table.models())
        live = set(self._table.instances())
        self._missing = note_missing(self._missing, copy_holders(models.values()), live, now)
        return models, live, now

    async def run_once(self) -> Sweep:
        """One pass: note missing instances, then (only while leader) clean
        every model record that needs it. Store errors propagate
        (:class:`mesh.core.errors.StoreUnavailable`); a model whose update keeps
        losing races is left for the next pass."""
        models, live, now = self._note()
        if not self._leader.is_leader:
            return Sweep(leader=False)
        now_ms = self._wall_clock_ms()
        pruned: dict[str, tuple[str, ...]] = {}
        expired: dict[str, tuple[str, ...]] = {}
        for model_id, model in models.items():
            stale = stale_copies(model, live, self._missing, now, self.grace)
            old = expired_failures(model, now_ms, self.failure_expiry_ms)
            if not stale and not old:
                continue
            if not self._leader.is_leader:
                break

            def update(
                current: records.ModelRecord | None, stale: tuple[str, ...] = stale
            ) -> records.ModelRecord | None:
                if current is None:
                    return None
                # Re-check against the mirror: an instance back since stays.
                gone = [i for i in stale if self._table.instance(i) is None]
                return cleaned(
                    current, gone, expired_failures(current, now_ms, self.failure_expiry_ms)
                )

            try:
                result = await self._store.update_model(model_id, update)
            except errors.Conflict as e:
                _log.warning("janitor: %s: %s", model_id, e.message)
                continue
            if result is None:
                continue
            removed = tuple(i for i in stale if i not in result.copies)
            if removed:
                pruned[model_id] = removed
                _log.info(
                    "janitor: removed copies of %s on instances gone for over %g s: %s",
                    model_id,
                    self.grace,
                    ", ".join(removed),
                )
            dropped = tuple(i for i in old if i not in result.failures)
            if dropped:
                expired[model_id] = dropped
                _log.info(
                    "janitor: expired load failures of %s on %s", model_id, ", ".join(dropped)
                )
        return Sweep(leader=True, pruned=pruned, expired=expired)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except errors.MeshError as e:
                _log.warning("janitor: pass failed: %s", e.message)
            except Exception:
                _log.exception("janitor: pass failed")
