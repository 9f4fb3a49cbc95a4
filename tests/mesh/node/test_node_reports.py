"""What a node reports about itself follows what its cache manager holds and
what the placement table says of the cluster."""

from __future__ import annotations

import pathlib

from mesh.core import settings
from mesh.node import node_reports
from tests.mesh import scripted_runtime as scripted

MiB = 1024 * 1024


async def test_the_instance_record_shows_copies_labels_and_draining(
    tmp_path: pathlib.Path,
) -> None:
    cache = settings.CacheSettings(capacity_bytes=250 * MiB, min_model_size_bytes=100 * MiB)
    async with scripted.node(tmp_path, cache, "ab") as n:
        n.runtime.gate("a").set()
        async with n.manager.serving("a", timeout=5):
            pass
        n.manager.draining = True
        rec = node_reports.instance_record(n.manager, "n1:8033", n.runtime, ("zone:x",), "v1", 7)
    assert (rec.endpoint, rec.version, rec.start_ms) == ("n1:8033", "v1", 7)
    assert rec.capacity_bytes == 250 * MiB and rec.used_bytes == 100 * MiB
    assert rec.model_count == 1 and rec.in_flight_loads == 0 and rec.rpm == 1
    assert rec.labels == ("rt:scripted", "mt:sklearn", "zone:x")
    assert rec.shutting_down


async def test_the_state_gauges_count_models_here_and_in_the_cluster(
    tmp_path: pathlib.Path,
) -> None:
    cache = settings.CacheSettings(capacity_bytes=250 * MiB, min_model_size_bytes=100 * MiB)
    async with scripted.node(tmp_path, cache, "abc") as n:
        n.runtime.gate("a").set()
        async with n.manager.serving("a", timeout=5):
            pass
        state = node_reports.metrics_state(n.manager, n.mirror, 60.0)
    assert state.models_here == 1 and state.used_bytes == 100 * MiB
    assert state.models_managed == 3 and state.models_loaded_cluster == 1
    assert state.models_with_failure == 0 and state.lru_age_seconds >= 0
