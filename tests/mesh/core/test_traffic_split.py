"""A canary's share of a vmodel's requests: per request, or sticky by key,
and only once the new model is loaded and has not failed."""

from __future__ import annotations

import random

import pytest

from mesh.core import records, traffic_split

SPLIT = records.VModelRecord("old", "new", canary_percent=30)


def share(v: records.VModelRecord, n: int = 10_000, **kw: object) -> float:
    draws = random.Random(7)
    picks = [
        traffic_split.routed_model(v, target_ready=True, routing_key="", draw=draws.random())
        for _ in range(n)
    ]
    return picks.count("new") / n


def test_the_target_takes_its_percent_of_requests() -> None:
    assert share(SPLIT) == pytest.approx(0.30, abs=0.02)
    assert traffic_split.traffic(SPLIT, target_ready=True) == {"old": 70, "new": 30}


@pytest.mark.parametrize(
    "vmodel",
    [
        records.VModelRecord("old", "new"),  # no canary: the alias moves once loaded
        records.VModelRecord("old", "new", failed=True, canary_percent=30),
        records.VModelRecord("same", "same", canary_percent=30),
        records.VModelRecord("old", "new", canary_percent=0),  # blue-green: held, no traffic
    ],
    ids=["no-canary", "failed", "settled", "zero"],
)
def test_everything_stays_on_the_active_model_otherwise(vmodel: records.VModelRecord) -> None:
    assert share(vmodel, 1000) == 0.0


def test_nothing_goes_to_a_target_not_loaded_yet() -> None:
    assert traffic_split.routed_model(SPLIT, target_ready=False, routing_key="", draw=0.0) == "old"
    assert traffic_split.traffic(SPLIT, target_ready=False) == {"old": 100}


def test_a_routing_key_always_lands_on_the_same_model_and_only_moves_forward() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    at = {
        p: {
            k: traffic_split.routed_model(
                records.VModelRecord("old", "new", canary_percent=p),
                target_ready=True,
                routing_key=k,
                draw=0.99,
            )
            for k in keys
        }
        for p in (10, 30, 60)
    }
    assert sum(m == "new" for m in at[30].values()) / len(keys) == pytest.approx(0.30, abs=0.04)
    for lower, higher in ((10, 30), (30, 60)):
        moved_back = [k for k in keys if at[lower][k] == "new" and at[higher][k] == "old"]
        assert moved_back == []
    assert traffic_split.key_position("user-1") == traffic_split.key_position("user-1")
