"""Statistics on the wire: what a node sends a peer reads back the same, and
the REST form is Triton's."""

from __future__ import annotations

import json

from mesh.node import model_stats
from router import model_statistics, rest_messages

STATS = model_stats.ModelStats(model_stats.Duration(5, 1_000), model_stats.Duration(1, 20), 42)


def test_counts_survive_the_hop_to_a_peer_and_back() -> None:
    data = model_statistics.encode([("iris__ksp-1", "", STATS)])
    assert model_statistics.decode(data) == {"iris__ksp-1": STATS}


def test_rest_statistics_are_tritons_json() -> None:
    doc = json.loads(rest_messages.stats_json(model_statistics.encode([("iris", "1", STATS)])))
    (m,) = doc["model_stats"]
    assert (m["name"], m["version"], m["inference_count"], m["execution_count"]) == (
        "iris",
        "1",
        5,
        5,
    )
    assert m["last_inference"] == 42 and m["batch_stats"] == []
    assert m["inference_stats"]["success"] == {"count": 5, "ns": 1000}
    assert m["inference_stats"]["fail"] == {"count": 1, "ns": 20}
    assert m["inference_stats"]["queue"] == {"count": 0, "ns": 0}
