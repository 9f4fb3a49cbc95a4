"""The scale scenario's report from made-up measurements, and a few seconds
of the real scenario."""

from __future__ import annotations

from typing import Any

import pytest

from load_tests import scale


def side(direct: int, mesh: int, rss: int, db: int) -> dict[str, Any]:
    lat = {
        k: {"count": 100, "p50": v, "p90": v, "p99": 2 * v, "p99.9": 2 * v, "max": 3 * v}
        for k, v in (("direct", direct), ("mesh", mesh))
    }
    return {
        "latency_us": lat,
        "added_p50_us": mesh - direct,
        "node_rss_bytes": rss,
        "db_size": db,
        "db_size_in_use": db,
    }


def figures(models: int, mesh_after: int) -> dict[str, Any]:
    return {
        "machine": {"cpus": 2},
        "config": {"models": models},
        "registered": {"before": 10, "after": models},
        "register": {
            "api": {"models": 100, "p50_ms": 2.9, "p99_ms": 6.7, "per_s": 318.0},
            "bulk": {
                "models": models - 110,
                "concurrency": 64,
                "seconds": 3.0,
                "per_s": 3300.0,
                "key_value_bytes_per_model": 263.0,
            },
            "node_catch_up_s": 0.03,
        },
        "before": side(800, 1400, 80 << 20, 1 << 15),
        "after": side(800, mesh_after, 90 << 20, 4 << 20),
        "per_model": {
            "etcd_db_bytes": 380.0,
            "etcd_db_in_use_bytes": 380.0,
            "node_rss_bytes": 790.0,
        },
        "routing": {
            "mesh_p50_ratio": round(mesh_after / 1400, 3),
            "added_p50_us": {"10": 600, "n": mesh_after - 800},
            "direct_p50_ratio": 1.0,
        },
        "leftover_processes": [],
    }


def test_target_met_and_table() -> None:
    f = figures(100_000, 1420)
    notes = scale.notes(f)
    assert notes[0].startswith("Target routing p50 with 100,000 registered") and "met" in notes[0]
    assert len(notes) == 1
    text = scale.table(f)
    assert "100,000 registered" in text and "per registered model: etcd db 380 B" in text


def test_target_missed_and_a_small_run_says_so() -> None:
    notes = scale.notes(figures(10_000, 1600))
    assert "MISSED" in notes[0]
    assert any("grew by 200 µs" in n for n in notes)
    assert any("not the 100,000" in n for n in notes)


@pytest.mark.integration
def test_smoke_run_of_the_real_scenario() -> None:
    f = scale.run(True, ["--smoke"]).figures
    assert f["registered"]["after"] == scale.SMOKE.models
    assert f["leftover_processes"] == []
    assert f["after"]["db_size"] > f["before"]["db_size"]
