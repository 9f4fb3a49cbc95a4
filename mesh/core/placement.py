"""Where a model's copies go, and which copy serves a request.

Pure functions over the records in the placement table (DESIGN.md §3):

* :func:`choose_node` places a new copy: skip nodes shutting down, nodes
  missing a label the model needs, and nodes told to be avoided (they failed
  the model, or already hold it); the node that held the model last, if it
  has room (affinity: its files may still be on that node's disk, and its
  popularity is remembered there, so it is not the first thing evicted);
  else nodes with room (the most free
  first, counted in copies of the model that still fit), else the node whose
  first eviction is cheapest (its ``victim_rank``: the fewest requests per
  byte, as :mod:`mesh.core.eviction` ranks them, so that two full nodes evict
  as one cache of their joint room would), then one whose disk holds the
  model, then the one whose least recently used model is oldest, but never
  one whose LRU model was used within the churn threshold (evicting it would
  thrash); ties go to the less
  busy node, then to the node a hash of model and node ranks first
  (rendezvous hashing). Every node that looks at the same table makes the
  same choice for a model, and models that arrive together spread over the
  nodes that are alike instead of piling onto one until the records catch
  up (seen with 100 simulated nodes: 42 took every load, one took 38).
* :func:`choose_copy` picks the copy that serves a forwarded request: fewest
  requests in flight from this node, then the one used least recently.
* :func:`route` is the whole decision for one request at the node that
  received it: serve here, forward to a peer's ready copy, wait for a copy
  that is loading, load (here or on a chosen peer), or fail fast.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from collections.abc import Collection, Iterable, Mapping

from mesh.core import errors, records

MAX_FAILURES = 3
"""Unexpired failed loads (on distinct nodes) after which a model fails fast."""


def required_labels(model_type: str, runtime: str = "") -> tuple[str, ...]:
    """Labels a node needs to serve a model: its type, and its runtime if pinned."""
    labels = [f"mt:{model_type}"] if model_type else []
    if runtime:
        labels.append(f"rt:{runtime}")
    return tuple(labels)


def eligible(
    instances: Mapping[str, records.InstanceRecord],
    labels: Iterable[str] = (),
    avoid: Collection[str] = (),
) -> list[str]:
    """Nodes that may take a new copy: not shutting down, with every label."""
    needed = set(labels)
    return sorted(
        i
        for i, rec in instances.items()
        if not rec.shutting_down and i not in avoid and needed <= set(rec.labels)
    )


def rank(model_id: str, instance_id: str) -> int:
    """Where ``instance_id`` stands for ``model_id`` among equal nodes: the
    same on every node and in every process (not Python's salted hash)."""
    digest = hashlib.blake2b(f"{model_id}\0{instance_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose_node(
    instances: Mapping[str, records.InstanceRecord],
    model_size: int,
    *,
    model_id: str = "",
    labels: Iterable[str] = (),
    avoid: Collection[str] = (),
    now_ms: int,
    churn_threshold_ms: int = 0,
    last_node: str = "",
    on_disk: Collection[str] = (),
) -> str | None:
    """The node to load a new copy of ``model_id`` on, or ``None`` if none
    can take it. ``last_node`` (the node that held the model last) wins when
    it has room; else, among nodes with room, those in ``on_disk`` (whose
    disk tier holds the model's files: no pull) go first; else the node
    whose first eviction is cheapest (a node that does not say ranks last),
    then one in ``on_disk``.

    Cheapest eviction before disk when every node is full: on the peers
    traces (2 nodes x 8 models, replayed) disk first made 1-9 % more loads
    than one cache of 16 would, and an evicted favourite costs a later
    miss where a pull only costs a copy."""
    candidates = eligible(instances, labels, avoid)

    def load(i: str) -> tuple[int, int, int, str]:
        r = instances[i]
        return (r.in_flight_loads, r.rpm, rank(model_id, i), i)

    roomy = [i for i in candidates if instances[i].free_bytes >= model_size]
    if last_node in roomy:
        return last_node
    roomy = [i for i in roomy if i in on_disk] or roomy
    if roomy:
        fits = max(model_size, 1)
        return min(roomy, key=lambda i: (-(instances[i].free_bytes // fits), *load(i)))
    evictable = [
        i
        for i in candidates
        if instances[i].capacity_bytes >= model_size
        and (
            instances[i].lru_time_ms == 0 or now_ms - instances[i].lru_time_ms >= churn_threshold_ms
        )
    ]
    if not evictable:
        return None

    def dearness(i: str) -> tuple[float, bool, int]:
        r = instances[i]
        rank = math.inf if r.victim_rank is None else r.victim_rank
        return (rank, i not in on_disk, r.lru_time_ms)

    return min(evictable, key=lambda i: (*dearness(i), *load(i)))


def why_no_node(
    instances: Mapping[str, records.InstanceRecord],
    model_id: str,
    model_size: int,
    labels: Iterable[str],
    avoid: Collection[str],
) -> errors.MeshError:
    """The error to give when :func:`choose_node` found nothing."""
    labels = tuple(labels)
    live = [i for i, r in instances.items() if not r.shutting_down]
    if not live:
        return errors.RuntimeUnavailable(f"no mesh node is available to load model {model_id!r}")
    if not eligible(instances, labels):
        return errors.NoSupportingRuntime(
            f"no node can serve model {model_id!r}: none has the labels {', '.join(labels)} "
            "(the model type needs a runtime this mesh does not run)"
        )
    if not eligible(instances, labels, avoid):
        return errors.InsufficientCapacity(
            f"model {model_id!r} cannot be placed: every node that could serve it failed "
            "to load it or already holds it"
        )
    if all(instances[i].capacity_bytes < model_size for i in eligible(instances, labels, avoid)):
        return errors.InsufficientCapacity(
            f"model {model_id!r} needs {model_size} bytes, more than any node's capacity"
        )
    return errors.InsufficientCapacity(
        f"no room for model {model_id!r}: every node's models were used within the churn "
        "threshold (MESHSERVE_CHURN_THRESHOLD)"
    )


def choose_copy(
    holders: Iterable[str],
    in_flight: Mapping[str, int],
    last_sent: Mapping[str, float],
) -> str | None:
    """The copy to forward to: fewest requests in flight, then least recently sent to."""
    return min(holders, key=lambda i: (in_flight.get(i, 0), last_sent.get(i, 0.0), i), default=None)


def live_copies(
    model: records.ModelRecord,
    instances: Mapping[str, records.InstanceRecord],
    state: records.CopyState | None = None,
) -> list[str]:
    """Instances that hold a copy (in ``state``, if given) and are alive."""
    return sorted(
        i for i, c in model.copies.items() if i in instances and (state is None or c.state is state)
    )


def is_extra_copy(
    model: records.ModelRecord,
    instances: Mapping[str, records.InstanceRecord],
    instance_id: str,
) -> bool:
    """Whether the copy on ``instance_id`` is beyond what the model needs:
    other live nodes hold ready copies, at least its minimum (and at least
    one). Extra copies are evicted first (:mod:`mesh.core.eviction`)."""
    ready = live_copies(model, instances, records.CopyState.LOADED)
    return len([i for i in ready if i != instance_id]) >= max(1, model.min_copies)


class Action(enum.Enum):
    SERVE_HERE = "serve here"
    """Use this node's copy: it is ready, loading, or should be loaded here."""
    FORWARD = "forward"
    """Send the request to ``Route.instance``, which holds a ready copy."""
    LOAD_THERE = "load there"
    """Send the request to ``Route.instance``, which will load the model."""
    WAIT = "wait"
    """A copy is loading on another node: wait for it, then decide again."""


@dataclasses.dataclass(frozen=True)
class Route:
    action: Action
    instance: str = ""


def route(
    model_id: str,
    model: records.ModelRecord,
    instances: Mapping[str, records.InstanceRecord],
    self_id: str,
    *,
    here: bool,
    avoid: Collection[str] = (),
    in_flight: Mapping[str, int] | None = None,
    last_sent: Mapping[str, float] | None = None,
    labels: Iterable[str] = (),
    model_size: int,
    now_ms: int,
    failure_expiry_ms: int,
    churn_threshold_ms: int = 0,
) -> Route:
    """Where a request for ``model_id`` goes from this node.

    ``here`` says this node holds a copy (ready or loading); ``avoid`` lists
    peers that failed this request already. Raises the error to give the
    caller when the model cannot be served anywhere now.
    """
    if here:
        return Route(Action.SERVE_HERE)
    # Copies on live peers not to avoid (looked up per copy: a forward costs
    # the same with 3 nodes or 100). A copy of this node's own that the
    # record still shows (being unloaded, or gone and not yet written back)
    # is not one to forward to or wait for.
    peers = {
        i: c.state
        for i, c in model.copies.items()
        if i != self_id and i in instances and i not in avoid
    }
    ready = sorted(i for i, state in peers.items() if state is records.CopyState.LOADED)
    if ready:
        # A draining node still serves, but only when no other copy is ready.
        preferred = [i for i in ready if not instances[i].shutting_down] or ready
        chosen = choose_copy(preferred, in_flight or {}, last_sent or {})
        assert chosen is not None
        return Route(Action.FORWARD, chosen)
    if records.CopyState.LOADING in peers.values():
        return Route(Action.WAIT)
    failures = records.recent_failures(model, now_ms, failure_expiry_ms)
    labels = tuple(labels)
    _fail_fast(model_id, failures, len(eligible(instances, labels)))
    avoid_load = set(avoid) | set(failures) | (set(model.copies) - {self_id})
    target = choose_node(
        instances,
        model_size,
        model_id=model_id,
        labels=labels,
        avoid=avoid_load,
        now_ms=now_ms,
        churn_threshold_ms=churn_threshold_ms,
        last_node=model.last_node,
        on_disk=model.disk_copies,
    )
    if target is None:
        raise why_no_node(instances, model_id, model_size, labels, avoid_load)
    return Route(Action.SERVE_HERE) if target == self_id else Route(Action.LOAD_THERE, target)


def _fail_fast(model_id: str, failures: Mapping[str, records.FailureInfo], able_nodes: int) -> None:
    """Raise the latest failure when the model failed on enough nodes: on
    :data:`MAX_FAILURES` of them, or on every node able to load it."""
    if failures and len(failures) >= min(MAX_FAILURES, max(1, able_nodes)):
        latest = max(failures.values(), key=lambda f: f.time_ms)
        raise errors.ModelLoadFailed(model_id, latest.message)


def wants_extra_copy(
    rpm: int,
    threshold_rpm: int,
    copies: int,
    max_copies: int,
    able_nodes: int,
) -> bool:
    """Whether a copy serving ``rpm`` requests a minute should get a sibling:
    its rate passes the threshold and the model has room for another copy
    (under its maximum, and fewer copies than nodes able to hold one)."""
    limit = min(max_copies, able_nodes) if max_copies else able_nodes
    return threshold_rpm > 0 and rpm > threshold_rpm and copies < limit


def missing_copies(
    model: records.ModelRecord, instances: Mapping[str, records.InstanceRecord]
) -> int:
    """How many copies the model lacks to reach its minimum (loading ones count)."""
    return max(0, model.min_copies - len(live_copies(model, instances)))
