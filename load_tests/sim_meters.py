"""What the scenario :mod:`load_tests.simulate` measures beside the nodes'
own counts: the time of every routing decision, etcd's own counters, and
which copies etcd records as loaded.

Why it exists: :class:`load_tests.sim_runtime.CountingKV` counts what each
node asks of etcd, from inside the node; these meters look from outside,
over the whole process and over etcd itself: :class:`RouteTimer` wraps
:func:`mesh.core.placement.route` for the run (every call the dispatchers make is
timed, nothing else is replaced; a request for a copy on the node it entered
is served without a call), :func:`etcd_counters` reads etcd's
``/metrics`` (gRPC messages per method, watch responses, MVCC counts,
database size), and :func:`etcd_pairs` reads the model records, to be
compared with what the runtimes hold.
"""

from __future__ import annotations

import collections
import contextlib
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import parser as prom_parser

from mesh.core import errors, placement, records
from mesh.edges import etcd_process
from mesh.kv import records_store


class RouteTimer:
    """Times every call of :func:`mesh.core.placement.route` while installed,
    by the decision it returned (``forward``, ``load there``...; ``error:
    <class>`` when it raised)."""

    def __init__(self) -> None:
        self.by_action: dict[str, list[int]] = collections.defaultdict(list)

    @property
    def ns(self) -> list[int]:
        """Every call's nanoseconds."""
        return [ns for v in self.by_action.values() for ns in v]

    @property
    def actions(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.by_action.items()}

    def reset(self) -> None:
        self.by_action = collections.defaultdict(list)

    @contextlib.contextmanager
    def installed(self) -> Iterator[RouteTimer]:
        original: Callable[..., placement.Route] = placement.route

        def timed(*args: Any, **kwargs: Any) -> placement.Route:
            t0 = time.perf_counter_ns()
            try:
                decision = original(*args, **kwargs)
            except errors.MeshError as e:
                self.by_action[f"error: {type(e).__name__}"].append(time.perf_counter_ns() - t0)
                raise
            self.by_action[decision.action.value].append(time.perf_counter_ns() - t0)
            return decision

        placement.route = timed
        try:
            yield self
        finally:
            placement.route = original


ETCD_METHODS = (
    "Range",
    "Txn",
    "Put",
    "DeleteRange",
    "LeaseGrant",
    "LeaseKeepAlive",
    "LeaseRevoke",
    "Watch",
)


def etcd_counters(text: str) -> dict[str, float]:
    """The counters of etcd's ``/metrics`` this scenario reports: gRPC
    messages received per method (``recv:Range``...), watch responses sent
    (``sent:Watch``), MVCC puts / ranges / deletes and watch events
    (``mvcc:...``), and the database size (``db_size``, ``db_size_in_use``)."""
    out: dict[str, float] = {}
    for family in prom_parser.text_string_to_metric_families(text):
        for s in family.samples:
            method = s.labels.get("grpc_method", "")
            if s.name == "grpc_server_msg_received_total" and method in ETCD_METHODS:
                out[f"recv:{method}"] = out.get(f"recv:{method}", 0.0) + s.value
            elif s.name == "grpc_server_msg_sent_total" and method == "Watch":
                out["sent:Watch"] = out.get("sent:Watch", 0.0) + s.value
            elif s.name in (
                "etcd_mvcc_put_total",
                "etcd_mvcc_range_total",
                "etcd_mvcc_delete_total",
                "etcd_debugging_mvcc_events_total",
            ):
                short = s.name.removeprefix("etcd_").removeprefix("debugging_")
                out[short.removesuffix("_total").replace("mvcc_", "mvcc:")] = s.value
            elif s.name == "etcd_mvcc_db_total_size_in_bytes":
                out["db_size"] = s.value
            elif s.name == "etcd_mvcc_db_total_size_in_use_in_bytes":
                out["db_size_in_use"] = s.value
    return out


def counter_delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, int]:
    """Growth of each counter (sizes excluded: they are levels, not counts)."""
    return {
        k: int(v - before.get(k, 0.0))
        for k, v in sorted(after.items())
        if not k.startswith("db_size") and v - before.get(k, 0.0)
    }


def read_etcd_metrics(etcd: etcd_process.EtcdServer) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{etcd.url}/metrics", timeout=10) as r:
        return etcd_counters(r.read().decode())


def etcd_pairs(snapshot_items: Sequence[tuple[str, bytes]], prefix: str) -> set[tuple[str, str]]:
    """(model, node) of every LOADED copy in a listing of the model records."""
    out: set[tuple[str, str]] = set()
    for key, value in snapshot_items:
        where = records_store.split_key(prefix, key)
        if where is None or where[0] != records_store.MODEL:
            continue
        rec = records.ModelRecord.from_json(value)
        out |= {(where[1], n) for n, c in rec.copies.items() if c.state is records.CopyState.LOADED}
    return out
