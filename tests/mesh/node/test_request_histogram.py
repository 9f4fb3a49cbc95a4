"""The lock-free request histogram exposes what prometheus_client's own
would, for the same observations."""

from __future__ import annotations

import prometheus_client
import pytest

from mesh.node import request_histogram


def _exposition(registry: prometheus_client.CollectorRegistry) -> list[str]:
    text = prometheus_client.generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_the_exposition_matches_prometheus_clients_histogram() -> None:
    ours_registry = prometheus_client.CollectorRegistry(auto_describe=True)
    theirs_registry = prometheus_client.CollectorRegistry(auto_describe=True)
    ours = request_histogram.RequestHistogram(
        "t_milliseconds", "doc", ("method", "code"), (0.5, 1, 2.5, 10), ours_registry
    )
    theirs = prometheus_client.Histogram(
        "t_milliseconds",
        "doc",
        ("method", "code"),
        buckets=(0.5, 1, 2.5, 10),
        registry=theirs_registry,
    )
    for labels, value in [
        (("ModelInfer", "OK"), 0.2),
        (("ModelInfer", "OK"), 0.5),  # on a bound: counted in that bucket
        (("ModelInfer", "OK"), 3.0),
        (("ModelInfer", "NOT_FOUND"), 11.0),  # above every bound: +Inf only
        (("ModelMetadata", "OK"), 1.0),
    ]:
        ours.labels(*labels).observe(value)
        theirs.labels(*labels).observe(value)
    assert _exposition(ours_registry) == _exposition(theirs_registry)


def test_a_histogram_without_labels_observes_directly() -> None:
    registry = prometheus_client.CollectorRegistry(auto_describe=True)
    h = request_histogram.RequestHistogram("s_bytes", "doc", (), (1024.0,), registry)
    h.observe(10)
    h.observe(4096)
    assert registry.get_sample_value("s_bytes_count") == 2
    assert registry.get_sample_value("s_bytes_bucket", {"le": "1024.0"}) == 1


def test_wrong_label_values_are_refused() -> None:
    registry = prometheus_client.CollectorRegistry(auto_describe=True)
    h = request_histogram.RequestHistogram("w_ms", "doc", ("method",), (1.0,), registry)
    with pytest.raises(ValueError, match="takes labels"):
        h.labels("a", "b")
