"""Prometheus metrics with KServe ModelMesh's names and meanings.

Operators who run ModelMesh have dashboards and alerts on these names, so a
node exposes the same ones on :2112. Event metrics (latencies, loads,
evictions) are recorded where they happen, through the small methods of
:class:`Metrics`; state metrics (capacity, used bytes, models loaded...) are
read from the node when Prometheus scrapes, through a collector, so they can
never drift from the truth.

The histograms every request moves are
:class:`mesh.node.request_histogram.RequestHistogram` (no lock, a bisection
per observation); the rest are ``prometheus_client``'s own.

Some are meshserve's own (ModelMesh has no pull metric nor disk tier):
``meshserve_model_pull_milliseconds`` and ``meshserve_model_pull_bytes``,
``meshserve_load_step_milliseconds{step}`` (claim, pull, room, load, record:
:mod:`mesh.node.load_steps`), and the disk tier's
``meshserve_disk_cache_hits_total``, ``..._misses_total``,
``..._evictions_total`` and ``meshserve_disk_cache_bytes``.

Per-model labels are off by default (one series per model is too many with
thousands of models); ``MESHSERVE_METRICS_PER_MODEL=true`` turns a
``modelId`` label on for the per-model histograms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import prometheus_client
from prometheus_client import core as prometheus_core
from prometheus_client import registry as prometheus_registry

from mesh.core import clock
from mesh.node import model_stats, request_histogram

# Latency buckets in milliseconds, from sub-millisecond hits to minute-long loads.
_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)
_BYTES = tuple(float(4**i) for i in range(5, 17))  # 1 KiB .. 4 GiB


@dataclasses.dataclass(frozen=True)
class NodeState:
    """What the state gauges report, read at scrape time."""

    capacity_bytes: int
    used_bytes: int
    lru_age_seconds: float
    models_here: int
    models_loaded_cluster: int
    models_managed: int
    models_with_failure: int


@dataclasses.dataclass(frozen=True)
class RequestMetrics:
    """What every request moves: the call's time, the runtime's time, the
    sizes, and the wait for a model to load."""

    api_request: request_histogram.RequestHistogram
    invoke: request_histogram.RequestHistogram
    request_size: request_histogram.RequestHistogram
    response_size: request_histogram.RequestHistogram
    cache_miss: request_histogram.RequestHistogram
    chain_stage: request_histogram.RequestHistogram
    """Each step of a vmodel's chain (:mod:`router.chains`), labelled by stage."""


@dataclasses.dataclass(frozen=True)
class CopyMetrics:
    """The life of a model's copy on this node: pulled, loaded (or not),
    unloaded, evicted."""

    pull: prometheus_client.Histogram
    pull_bytes: prometheus_client.Counter
    load: prometheus_client.Histogram
    load_failure: prometheus_client.Counter
    unload: prometheus_client.Histogram
    unload_failure: prometheus_client.Counter
    evicted: prometheus_client.Counter
    age_at_eviction: prometheus_client.Histogram
    loaded_size: prometheus_client.Histogram


def _request_metrics(
    registry: prometheus_client.CollectorRegistry, model: tuple[str, ...]
) -> RequestMetrics:
    def h(
        name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> request_histogram.RequestHistogram:
        return request_histogram.RequestHistogram(name, doc, labels, buckets, registry)

    return RequestMetrics(
        api_request=h(
            "modelmesh_api_request_milliseconds",
            "Time a node took to answer an external gRPC call",
            ("method", "code"),
            _MS,
        ),
        invoke=h(
            "modelmesh_invoke_model_milliseconds",
            "Time the runtime took to answer a call routed to it by this node",
            ("method", *model),
            _MS,
        ),
        request_size=h("modelmesh_request_size_bytes", "Size of inference requests", model, _BYTES),
        response_size=h(
            "modelmesh_response_size_bytes", "Size of inference responses", model, _BYTES
        ),
        cache_miss=h(
            "modelmesh_cache_miss_milliseconds",
            "Time a request waited for its model to load (cache misses only)",
            model,
            _MS,
        ),
        chain_stage=h(
            "meshserve_chain_stage_milliseconds",
            "Time of each step of a vmodel's chain (preprocess, predict, postprocess, explain)",
            ("stage", *(("vmodelId",) if model else ())),
            _MS,
        ),
    )


def _copy_metrics(
    registry: prometheus_client.CollectorRegistry, model: tuple[str, ...]
) -> CopyMetrics:
    h = prometheus_client.Histogram
    c = prometheus_client.Counter
    return CopyMetrics(
        pull=h(
            "meshserve_model_pull_milliseconds",
            "Time to fetch a model's files onto the node (part of the load time)",
            model,
            buckets=_MS,
            registry=registry,
        ),
        pull_bytes=c(
            "meshserve_model_pull_bytes", "Bytes of model files fetched", model, registry=registry
        ),
        load=h(
            "modelmesh_loadmodel_milliseconds",
            "Time to load a model, pull included",
            model,
            buckets=_MS,
            registry=registry,
        ),
        load_failure=c(
            "modelmesh_loadmodel_failure", "Failed model loads", model, registry=registry
        ),
        unload=h(
            "modelmesh_unloadmodel_milliseconds",
            "Time to unload a model",
            model,
            buckets=_MS,
            registry=registry,
        ),
        unload_failure=c(
            "modelmesh_unloadmodel_failure", "Failed model unloads", model, registry=registry
        ),
        evicted=c(
            "modelmesh_model_evicted", "Models evicted to make room", model, registry=registry
        ),
        age_at_eviction=h(
            "modelmesh_age_at_eviction_milliseconds",
            "Time since last use of a model when it was evicted",
            model,
            buckets=(*_MS, 300000, 1800000, 3600000),
            registry=registry,
        ),
        loaded_size=h(
            "modelmesh_loaded_model_size_bytes",
            "Size of models when loaded",
            model,
            buckets=_BYTES,
            registry=registry,
        ),
    )


@dataclasses.dataclass(frozen=True)
class DiskCacheMetrics:
    """The disk tier (:mod:`puller.disk_cache`) and the steps of each load."""

    hits: prometheus_client.Counter
    misses: prometheus_client.Counter
    evictions: prometheus_client.Counter
    held: prometheus_client.Gauge
    load_step: prometheus_client.Histogram


def _disk_cache_metrics(registry: prometheus_client.CollectorRegistry) -> DiskCacheMetrics:
    c = prometheus_client.Counter
    return DiskCacheMetrics(
        hits=c(
            "meshserve_disk_cache_hits",
            "Loads whose files came from the node's disk tier (no pull)",
            registry=registry,
        ),
        misses=c(
            "meshserve_disk_cache_misses",
            "Loads that pulled the model's files from storage",
            registry=registry,
        ),
        evictions=c(
            "meshserve_disk_cache_evictions",
            "Models whose kept files were dropped from the disk tier",
            registry=registry,
        ),
        held=prometheus_client.Gauge(
            "meshserve_disk_cache_bytes",
            "Bytes of model files the disk tier holds",
            registry=registry,
        ),
        load_step=prometheus_client.Histogram(
            "meshserve_load_step_milliseconds",
            "Time of each step of a load (claim, pull, room, load, record)",
            ("step",),
            buckets=_MS,
            registry=registry,
        ),
    )


class Metrics:
    """One node's metrics, in their own registry."""

    def __init__(self, per_model: bool = False) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.per_model = per_model
        model = ("modelId",) if per_model else ()
        self.requests = _request_metrics(self.registry, model)
        self.copies = _copy_metrics(self.registry, model)
        self.disk = _disk_cache_metrics(self.registry)
        self.model_stats = model_stats.StatsBook()
        """Per-model inference counts as Triton reports them (all models, always)."""

    def _labels(self, model_id: str) -> tuple[str, ...]:
        return (model_id,) if self.per_model else ()

    # -- events ------------------------------------------------------------------

    def api_call(self, method: str, code: str, ms: float) -> None:
        self.requests.api_request.labels(method, code).observe(ms)

    def invoked(self, method: str, model_id: str, ms: float, req: int, resp: int) -> None:
        labels = self._labels(model_id)
        self.requests.invoke.labels(method, *labels).observe(ms)
        if method == "ModelInfer":
            self.requests.request_size.labels(*labels).observe(req)
            self.requests.response_size.labels(*labels).observe(resp)
            self.model_stats.record(model_id, True, int(ms * 1e6), clock.now_ms())

    def invoke_failed(self, method: str, model_id: str, ms: float) -> None:
        """The runtime refused an inference (its own error, not the mesh's)."""
        if method == "ModelInfer":
            self.model_stats.record(model_id, False, int(ms * 1e6), clock.now_ms())

    def chain_stage(self, vmodel_id: str, stage: str, ms: float) -> None:
        """One step of a vmodel's chain took ``ms``."""
        self.requests.chain_stage.labels(stage, *self._labels(vmodel_id)).observe(ms)

    def waited_for_load(self, model_id: str, ms: float) -> None:
        self.requests.cache_miss.labels(*self._labels(model_id)).observe(ms)

    def loaded(self, model_id: str, ms: float, size_bytes: int) -> None:
        labels = self._labels(model_id)
        _observe(self.copies.load, labels, ms)
        _observe(self.copies.loaded_size, labels, size_bytes)

    def pulled(self, model_id: str, ms: float, size_bytes: int) -> None:
        labels = self._labels(model_id)
        _observe(self.copies.pull, labels, ms)
        fetched = self.copies.pull_bytes
        (fetched.labels(*labels) if labels else fetched).inc(size_bytes)

    def load_steps(self, steps: dict[str, float]) -> None:
        """The milliseconds of each step of one load."""
        for step, ms in steps.items():
            self.disk.load_step.labels(step).observe(ms)

    def disk_cache(self, event: str, held_bytes: int) -> None:
        """A disk tier event (``hit``, ``miss``, ``dropped``...) and the
        bytes it holds after it."""
        counter = {
            "hit": self.disk.hits,
            "miss": self.disk.misses,
            "dropped": self.disk.evictions,
        }.get(event)
        if counter is not None:
            counter.inc()
        self.disk.held.set(held_bytes)

    def load_failed(self, model_id: str) -> None:
        _inc(self.copies.load_failure, self._labels(model_id))

    def unloaded(self, model_id: str, ms: float, ok: bool) -> None:
        labels = self._labels(model_id)
        _observe(self.copies.unload, labels, ms)
        if not ok:
            _inc(self.copies.unload_failure, labels)

    def evicted_model(self, model_id: str, age_ms: float) -> None:
        labels = self._labels(model_id)
        _inc(self.copies.evicted, labels)
        _observe(self.copies.age_at_eviction, labels, age_ms)

    # -- state, read at scrape time --------------------------------------------------

    def watch_state(self, read: Callable[[], NodeState]) -> None:
        """Report ``read()`` as the state gauges on every scrape."""
        self.registry.register(_StateCollector(read))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        out: bytes = prometheus_client.generate_latest(self.registry)
        return out


def _observe(metric: prometheus_client.Histogram, labels: tuple[str, ...], value: float) -> None:
    (metric.labels(*labels) if labels else metric).observe(value)


def _inc(metric: prometheus_client.Counter, labels: tuple[str, ...]) -> None:
    (metric.labels(*labels) if labels else metric).inc()


class _StateCollector(prometheus_registry.Collector):
    def __init__(self, read: Callable[[], NodeState]) -> None:
        self._read = read

    def describe(self) -> list[prometheus_core.Metric]:
        return []  # read lazily: nothing to describe at registration

    def collect(self) -> Iterator[prometheus_core.Metric]:
        s = self._read()
        g = prometheus_core.GaugeMetricFamily
        yield g(
            "modelmesh_instance_capacity_bytes",
            "Bytes of models this node may hold",
            value=s.capacity_bytes,
        )
        yield g(
            "modelmesh_instance_used_bytes", "Bytes of models held by this node", value=s.used_bytes
        )
        yield g(
            "modelmesh_instance_lru_age_seconds",
            "Time since the least recently used model here was used",
            value=s.lru_age_seconds,
        )
        yield g(
            "modelmesh_instance_models_total",
            "Models loaded or loading on this node",
            value=s.models_here,
        )
        yield g(
            "modelmesh_models_loaded_total",
            "Models with a ready copy in the mesh",
            value=s.models_loaded_cluster,
        )
        yield g(
            "modelmesh_models_managed_total",
            "Models registered in the mesh",
            value=s.models_managed,
        )
        yield g(
            "modelmesh_models_with_failure_total",
            "Models whose recent loads failed",
            value=s.models_with_failure,
        )
