"""What a node says about itself: its instance record and its state gauges.

Other nodes place models by this node's instance record (capacity, used
bytes, least recently used time, loads in flight, request rate, labels,
whether it is draining), which :mod:`mesh.node.membership` keeps in etcd
under a lease; Prometheus scrapes the state gauges
(:class:`mesh.node.metrics.NodeState`). Both are read off the cache manager
and the placement-table mirror at the moment they are asked for. The real
node (``meshserve.node``) and the benchmarks' simulated nodes
(``load_tests.sim_agent``) build them with these same functions.
"""

from __future__ import annotations

from mesh.core import clock, interfaces, records
from mesh.kv import placement_table
from mesh.node import cache_manager, metrics


def instance_record(
    manager: cache_manager.CacheManager,
    endpoint: str,
    runtime: interfaces.RuntimeAdapter,
    labels: tuple[str, ...],
    node_version: str,
    started_ms: int,
) -> records.InstanceRecord:
    """A node's instance record, as of now."""
    return records.InstanceRecord(
        endpoint=endpoint,
        capacity_bytes=manager.capacity_bytes,
        used_bytes=manager.used_bytes(),
        lru_time_ms=manager.lru_time_ms(),
        victim_rank=manager.victim_rank(),
        model_count=manager.model_count(),
        in_flight_loads=manager.loading_count(),
        rpm=manager.requests_per_minute(),
        labels=(
            f"rt:{runtime.name}",
            *(f"mt:{t}" for t in runtime.supported_model_types()),
            *labels,
        ),
        version=node_version,
        start_ms=started_ms,
        shutting_down=manager.draining,
    )


def metrics_state(
    manager: cache_manager.CacheManager,
    mirror: placement_table.PlacementTable,
    failure_expiry_seconds: float,
) -> metrics.NodeState:
    """The node's state gauges, as of now."""
    now_ms = clock.now_ms()
    expiry_ms = int(failure_expiry_seconds * 1000)
    models = mirror.models()
    statuses = [records.model_status(r, now_ms, expiry_ms) for r in models.values()]
    lru_ms = manager.lru_time_ms()
    return metrics.NodeState(
        capacity_bytes=manager.capacity_bytes,
        used_bytes=manager.used_bytes(),
        lru_age_seconds=(now_ms - lru_ms) / 1000 if lru_ms else 0.0,
        models_here=manager.model_count(),
        models_loaded_cluster=statuses.count(records.ModelStatus.LOADED),
        models_managed=len(models),
        models_with_failure=statuses.count(records.ModelStatus.LOADING_FAILED),
    )
