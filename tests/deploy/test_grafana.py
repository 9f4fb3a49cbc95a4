"""The Grafana dashboard in deploy/ charts only metrics a node really exposes."""

from __future__ import annotations

import json
import pathlib
import re

from mesh.node import metrics

DASHBOARD = (
    pathlib.Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "meshserve-dashboard.json"
)


def _exposed_families() -> set[str]:
    m = metrics.Metrics()
    m.watch_state(
        lambda: metrics.NodeState(
            capacity_bytes=1, used_bytes=0, lru_age_seconds=0, models_here=0,
            models_loaded_cluster=0, models_managed=0, models_with_failure=0,
        )
    )  # fmt: skip
    text = m.exposition().decode()
    return {_family(name) for name in re.findall(r"^# TYPE (\S+) ", text, re.M)}


def _family(series: str) -> str:
    """A metric's name without the suffixes Prometheus adds to its series."""
    return re.sub(r"_(bucket|count|sum|total|created)$", "", series)


def test_every_metric_the_dashboard_queries_is_exposed_by_a_node() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    queried = {
        _family(name) for expr in exprs for name in re.findall(r"\b(modelmesh_[a-z_]+)", expr)
    }
    exposed = _exposed_families()
    assert queried, "the dashboard queries no metric"
    assert queried <= exposed, sorted(queried - exposed)


def test_the_dashboard_covers_every_modelmesh_metric() -> None:
    dash = DASHBOARD.read_text()
    missing = sorted(
        name for name in _exposed_families() if name.startswith("modelmesh_") and name not in dash
    )
    assert not missing, missing
