"""Scenario "nodes": throughput and tail latency with 1, 2 and 3 nodes under
a Zipf load whose models do not fit in one node.

Why it exists: meshserve's reason to be a *mesh* is that adding nodes adds
room for models: with one node too small for the models in use, requests
keep waiting for loads (and evict what the next request wants); with enough
nodes every model stays loaded somewhere and a miss costs at most one hop
to the peer that holds it. Issue 7, scenario 5 asks for throughput and p99
with 1, 2 and 3 nodes under such a load. This scenario measures it, and
also what explains it: loads, evictions, requests that waited for a load
(the hit rate) and requests forwarded to a peer, read from the nodes' own
Prometheus metrics (``modelmesh_*``, :mod:`mesh.node.metrics`).

Set-up (:mod:`load_tests.nodes_cluster`): one real etcd for the whole
run; for each node count k, k fresh node processes (each with its own
MLServer) under a fresh key prefix, a fixed room of ``slots`` models of
``model_bytes`` each, and ``models`` copies of the iris sample registered as
Predictors. With the defaults (20 models, 8 per node) the models in use need
2.5 × one node's room, 1.25 × two nodes' and fit in three (24 slots).

Extra copies for load (``MESHSERVE_SCALE_UP_RPM=0``) and the hand-over at
shutdown (``MESHSERVE_HANDOVER_WINDOW=0``) are off: on one machine an extra
copy adds no CPU, only competes for the room being measured, and would make
the loads counted here depend on the request rate rather than on the room.

The client spreads requests over the k nodes' endpoints, round-robin
(request i goes to node i mod k), as a Kubernetes Service spreads
connections over runtime pods: a request lands on a node that may not hold
its model, and the mesh forwards it (``mm-balanced``), which is the cost a
real deployment pays. Sending everything to one node would hide that hop and
load one node's Python process with all the routing. Requests name the
Predictor (as a user does); bodies are prebuilt ``ModelInferRequest`` bytes
(a 5×4 FP64 batch) sent by :mod:`load_tests.loadgen`; popularity is Zipf(α)
over the models, ranks shuffled over them (:mod:`load_tests.workload`).

For each k, after start: one call per model (every answer checked against
scikit-learn's own prediction), then an untimed warm-up of the same Zipf
load, then, with the nodes' metrics read before and after each phase:

1. **open loop**: Poisson arrivals at a fixed ``rate_per_s``, the same
   schedule and model picks for every k; latency from each request's
   scheduled time (queueing shows), p50/p99/p99.9, errors by gRPC status;
2. **saturation**: a closed loop of ``saturation_concurrency`` callers,
   spread over the nodes like the requests: the most the k nodes answer.

On a 2-core machine, k nodes, k MLServers, etcd and the client share two
CPUs: added nodes add no CPU (more processes, the same CPUs, and a
forwarding hop for most requests). What they buy here is room, which shows
as fewer loads, a higher hit rate and a shorter tail under the open loop,
and as more throughput only because loads cost CPU too (and MLServer loads
one model at a time). The machine's CPU use during each phase is reported
so that this can be read off the figures.

``--quick`` (about 70 s on 2 CPUs) and the default (about 3 min) differ in
the length of each phase; ``--smoke`` is 1 and 2 nodes with 8 models, for a test.

This module runs the load phases and reads the nodes' figures; the nodes
are started by :mod:`load_tests.nodes_cluster`, and the table, notes and
plots are :mod:`load_tests.nodes_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import psutil
from prometheus_client import parser as prometheus_parser

from load_tests import (
    latencies,
    latency,
    loadgen,
    nodes_cluster,
    nodes_report,
    report,
    workload,
)
from mesh.core import settings
from mesh.edges import etcd_process
from meshserve import samples

PREFIX = "nodes-bench"


@dataclasses.dataclass(frozen=True)
class Config:
    node_counts: tuple[int, ...] = (1, 2, 3)
    """Node counts measured, each with fresh nodes and a fresh key prefix."""
    models: int = 20
    """Predictors registered (copies of the iris sample), all asked for."""
    slots: int = 8
    """Models one node can hold: its capacity is ``slots`` × ``model_bytes``."""
    model_bytes: int = 16 * 2**20
    """What each model counts for (``MESHSERVE_MIN_MODEL_SIZE``): far above
    an iris model's real footprint, so every model weighs exactly this."""
    zipf_alpha: float = 1.0
    """Popularity: the k-th most asked-for model with probability ∝ 1/k^α."""
    rate_per_s: float = 40.0
    """Offered rate of the open loop (Poisson), the same for every k."""
    warmup_seconds: float = 10.0
    """Untimed Zipf load at ``rate_per_s`` after the first call of each
    model, so the caches reach their steady state before measuring."""
    open_seconds: float = 30.0
    """Length of the open-loop schedule."""
    saturation_concurrency: int = 12
    """Callers of the closed loop, spread over the nodes."""
    saturation_seconds: float = 10.0
    timeout_s: float = 15.0
    """Deadline of each request; one that runs out counts as an error."""
    eviction: str = ""
    """``MESHSERVE_EVICTION`` of the nodes (``popularity`` or ``lru``);
    empty: the mesh's default."""
    seed: int = 5


QUICK = Config(warmup_seconds=3.0, open_seconds=8.0, saturation_seconds=3.0)
SMOKE = Config(
    node_counts=(1, 2),
    models=8,
    slots=4,
    rate_per_s=30.0,
    warmup_seconds=1.5,
    open_seconds=3.0,
    saturation_concurrency=4,
    saturation_seconds=1.5,
)
"""1 and 2 nodes, 8 models in 4 slots each: a test that the scenario runs."""


MESH_COUNTERS = (
    "loads",
    "load_failures",
    "evictions",
    "waited_for_load",
    "served",
    "api_calls",
    "api_errors",
)


def read_metrics(text: str) -> dict[str, float]:
    """The figures this scenario needs from one node's ``/metrics`` page
    (Prometheus text): counters since the node started, and state gauges."""
    out = dict.fromkeys(
        (
            *MESH_COUNTERS,
            "capacity_bytes",
            "used_bytes",
            "models_here",
            "models_loaded_cluster",
            "models_with_failure",
        ),
        0.0,
    )
    simple = {
        "modelmesh_loadmodel_milliseconds_count": "loads",
        "modelmesh_loadmodel_failure_total": "load_failures",
        "modelmesh_model_evicted_total": "evictions",
        "modelmesh_cache_miss_milliseconds_count": "waited_for_load",
        "modelmesh_instance_capacity_bytes": "capacity_bytes",
        "modelmesh_instance_used_bytes": "used_bytes",
        "modelmesh_instance_models_total": "models_here",
        "modelmesh_models_loaded_total": "models_loaded_cluster",
        "modelmesh_models_with_failure_total": "models_with_failure",
    }
    for family in prometheus_parser.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in simple:
                out[simple[s.name]] += s.value
            elif s.name == "modelmesh_invoke_model_milliseconds_count":
                if s.labels.get("method") == "ModelInfer":
                    out["served"] += s.value
            elif (
                s.name == "modelmesh_api_request_milliseconds_count"
                and s.labels.get("method") == "ModelInfer"
            ):
                out["api_calls"] += s.value
                if s.labels.get("code") != "OK":
                    out["api_errors"] += s.value
    return out


def mesh_delta(
    before: Sequence[Mapping[str, float]], after: Sequence[Mapping[str, float]], sent: int
) -> dict[str, Any]:
    """What the nodes did between two reads of their metrics, all nodes
    together, for a phase in which the client sent ``sent`` requests (pure).

    ``forwarded``: every request the client sends is one ModelInfer call at
    the node it reaches, and one more at a peer if that node forwards it
    (a forwarded request is never forwarded again), so the calls counted by
    all nodes, less those sent, are the forwarded ones. ``hit_rate``: the
    share of the requests served by a runtime that did not wait for a load.
    """
    d = {k: round(sum(a[k] for a in after) - sum(b[k] for b in before)) for k in MESH_COUNTERS}
    served = d["served"]
    return {
        **{k: d[k] for k in MESH_COUNTERS if k != "api_calls"},
        "forwarded": max(0, d["api_calls"] - sent),
        "hit_rate": round(1.0 - d["waited_for_load"] / served, 4) if served else 0.0,
        "loads_per_1000": round(1000.0 * d["loads"] / served, 1) if served else 0.0,
    }


def merge(results: Sequence[loadgen.RunResult]) -> loadgen.RunResult:
    """One result from the per-node parts of a run that ran at once."""
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    return loadgen.RunResult(
        mode=results[0].mode,
        sent=sum(r.sent for r in results),
        ok=sum(r.ok for r in results),
        errors=errors,
        duration_s=max(r.duration_s for r in results),
        latency=latencies.merged(r.latency for r in results),
        send_lag=latencies.merged(r.send_lag for r in results),
        peak_in_flight=sum(r.peak_in_flight for r in results),
        offered_rate_per_s=sum(r.offered_rate_per_s for r in results),
        concurrency=sum(r.concurrency for r in results),
    )


async def open_spread(
    targets: Sequence[loadgen.Target],
    bodies: Sequence[bytes],
    picks: np.ndarray[Any, np.dtype[np.int64]],
    offsets: np.ndarray[Any, np.dtype[np.float64]],
    timeout_s: float,
) -> loadgen.RunResult:
    """The open-loop schedule, request i to ``targets[i % k]``."""
    k = len(targets)
    parts = await asyncio.gather(
        *(
            loadgen.open_loop(t, bodies, picks[j::k], offsets[j::k], timeout_s=timeout_s)
            for j, t in enumerate(targets)
        )
    )
    r = merge(parts)
    span = float(offsets[-1]) if len(offsets) else 0.0
    return dataclasses.replace(r, offered_rate_per_s=len(offsets) / span if span else 0.0)


async def closed_spread(
    targets: Sequence[loadgen.Target],
    bodies: Sequence[bytes],
    popularity: workload.Zipf,
    concurrency: int,
    duration_s: float,
    timeout_s: float,
    seed: int,
) -> loadgen.RunResult:
    """``concurrency`` callers, dealt round-robin over the targets, each
    node's callers taking Zipf picks of their own."""
    k = len(targets)
    share = [concurrency // k + (1 if j < concurrency % k else 0) for j in range(k)]
    parts = await asyncio.gather(
        *(
            loadgen.closed_loop(
                t,
                bodies,
                workload.zipf_models(popularity, 100_000, seed + j),
                concurrency=c,
                duration_s=duration_s,
                timeout_s=timeout_s,
            )
            for j, (t, c) in enumerate(zip(targets, share, strict=True))
            if c
        )
    )
    return merge(parts)


def cpu_busy(before: Any, after: Any) -> float:
    """Share of the machine's CPU time that was busy between two
    ``psutil.cpu_times()`` (every process, this benchmark's or not)."""
    total = sum(after) - sum(before)
    idle = (after.idle - before.idle) + (
        getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0)
    )
    return round(1.0 - idle / total, 3) if total > 0 else 0.0


def node_env(cfg: Config) -> dict[str, str]:
    """What every node's environment adds for this scenario: its fixed room,
    every model's weight, no extra copies for load, no hand-over at shutdown."""
    return {
        "MESHSERVE_CAPACITY": str(cfg.slots * cfg.model_bytes),
        "MESHSERVE_MIN_MODEL_SIZE": str(cfg.model_bytes),
        "MESHSERVE_SCALE_UP_RPM": "0",
        "MESHSERVE_HANDOVER_WINDOW": "0",
        **({"MESHSERVE_EVICTION": cfg.eviction} if cfg.eviction else {}),
    }


async def metrics(cluster: nodes_cluster.Cluster) -> list[dict[str, float]]:
    """What this scenario reads of every node's metrics, now."""
    return [read_metrics(page) for page in await cluster.metrics_pages()]


@dataclasses.dataclass(frozen=True)
class Phases:
    """What the load phases of one node count measured."""

    open: loadgen.RunResult
    saturation: loadgen.RunResult
    metrics: tuple[list[dict[str, float]], list[dict[str, float]], list[dict[str, float]]]
    """The nodes' metrics before the open loop, after it, and after the
    saturation."""
    cpu: tuple[Any, Any, Any]
    """``psutil.cpu_times()`` at the same three moments."""


async def load_phases(
    cfg: Config, cluster: nodes_cluster.Cluster, bodies: Sequence[bytes]
) -> Phases:
    """The untimed warm-up, then the open loop and the saturation, with the
    nodes' metrics and the machine's CPU times read around each."""
    targets = cluster.targets
    popularity = workload.Zipf(cfg.models, cfg.zipf_alpha)
    arrivals = workload.Arrivals(cfg.rate_per_s)
    warm_offsets = workload.schedule_for(arrivals, cfg.warmup_seconds, cfg.seed + 100)
    warm_picks = workload.zipf_models(popularity, len(warm_offsets), cfg.seed + 101)
    await open_spread(targets, bodies, warm_picks, warm_offsets, cfg.timeout_s)

    offsets = workload.schedule_for(arrivals, cfg.open_seconds, cfg.seed)
    picks = workload.zipf_models(popularity, len(offsets), cfg.seed + 1)
    m0, c0 = await metrics(cluster), psutil.cpu_times()
    open_r = await open_spread(targets, bodies, picks, offsets, cfg.timeout_s)
    m1, c1 = await metrics(cluster), psutil.cpu_times()
    sat_r = await closed_spread(
        targets,
        bodies,
        popularity,
        cfg.saturation_concurrency,
        cfg.saturation_seconds,
        cfg.timeout_s,
        cfg.seed + 2,
    )
    m2, c2 = await metrics(cluster), psutil.cpu_times()
    return Phases(open_r, sat_r, (m0, m1, m2), (c0, c1, c2))


def phase_figures(r: loadgen.RunResult, mesh: dict[str, Any], busy: float) -> dict[str, Any]:
    return {**r.as_dict(), "mesh": mesh, "cpu_busy": busy}


def k_figures(k: int, startup_s: float, took_s: float, p: Phases) -> dict[str, Any]:
    """The figures of one node count from what its phases measured (pure)."""
    m0, m1, m2 = p.metrics
    c0, c1, c2 = p.cpu
    open_r, sat_r = p.open, p.saturation
    return {
        "nodes": k,
        "startup_s": round(startup_s, 2),
        "open": phase_figures(open_r, mesh_delta(m0, m1, open_r.sent), cpu_busy(c0, c1)),
        "saturation": phase_figures(sat_r, mesh_delta(m1, m2, sat_r.sent), cpu_busy(c1, c2)),
        "per_node": [
            {
                "models_here": int(m["models_here"]),
                "used_bytes": int(m["used_bytes"]),
                "capacity_bytes": int(m["capacity_bytes"]),
                "served": int(m["served"] - b["served"]),
            }
            for m, b in zip(m2, m0, strict=True)
        ],
        "models_loaded_cluster": int(max(m["models_loaded_cluster"] for m in m2)),
        "models_with_failure": int(max(m["models_with_failure"] for m in m2)),
        "took_s": round(took_s, 1),
    }


async def measure_k(
    cfg: Config,
    k: int,
    work: pathlib.Path,
    etcd: str,
    sample: samples.Sample,
    started: list[psutil.Process],
) -> tuple[dict[str, Any], tuple[tuple[float, float], ...]]:
    """Figures of k fresh nodes, and the open loop's latency CDF."""
    cluster = nodes_cluster.Cluster(k, work, etcd, f"{PREFIX}-{k}", work / "store", node_env(cfg))
    t0 = time.monotonic()
    try:
        try:
            await cluster.start()
        finally:
            started += cluster.tree()
        startup_s = time.monotonic() - t0
        bodies = await cluster.serve_models(cfg.models, sample)
        phases = await load_phases(cfg, cluster, bodies)
    finally:
        await cluster.stop()
    figures = k_figures(k, startup_s, time.monotonic() - t0, phases)
    return figures, phases.open.latency.cdf(120)


async def measure_async(cfg: Config, work: pathlib.Path) -> dict[str, Any]:
    sample = samples.train_iris_logistic(work / "iris")
    nodes_cluster.fill_store(work / "store", sample, cfg.models)
    etcd = etcd_process.EtcdServer(work / "etcd", log_path=work / "logs" / "etcd.log", fast=True)
    etcd.start()
    started: list[psutil.Process] = []
    runs: list[dict[str, Any]] = []
    cdf: dict[str, Any] = {}
    try:
        assert etcd.pid is not None
        started.append(psutil.Process(etcd.pid))
        for k in cfg.node_counts:
            fig, c = await measure_k(cfg, k, work, etcd.endpoint, sample, started)
            runs.append(fig)
            cdf[str(k)] = c
    finally:
        etcd.stop()
    left = latency.alive(started)
    weights = workload.zipf_weights(workload.Zipf(cfg.models, cfg.zipf_alpha))
    return {
        "machine": report.machine(),
        "config": dataclasses.asdict(cfg),
        "model": {
            "name": "iris logistic regression",
            "type": sample.model_type,
            "file_bytes": sample.model_file.stat().st_size,
            "batch": list(sample.inputs.shape),
        },
        "capacity": {
            "node_bytes": cfg.slots * cfg.model_bytes,
            "model_bytes": cfg.model_bytes,
            "models_per_node": cfg.slots,
            "working_set_bytes": cfg.models * cfg.model_bytes,
            "working_set_over_one_node": round(cfg.models / cfg.slots, 2),
            "top_slots_request_share": round(float(weights[: cfg.slots].sum()), 3),
        },
        "spread": "round-robin over the nodes' endpoints",
        "eviction": cfg.eviction or settings.CacheSettings().eviction,
        "runs": runs,
        "leftover_processes": left,
        "cdf": cdf,
    }


def run(quick: bool, argv: Sequence[str] = ()) -> report.ScenarioReport:
    """The scenario; ``argv`` may hold ``--rate R`` (open-loop requests a
    second), ``--nodes 1,2,3``, ``--eviction popularity|lru`` and ``--smoke``
    (1 and 2 nodes, a few seconds of load, for tests)."""
    p = argparse.ArgumentParser(prog="python -m load_tests nodes")
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--nodes", default="")
    p.add_argument("--eviction", choices=("popularity", "lru"), default="")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(list(argv))
    cfg = SMOKE if args.smoke else QUICK if quick else Config()
    if args.rate:
        cfg = dataclasses.replace(cfg, rate_per_s=args.rate)
    if args.eviction:
        cfg = dataclasses.replace(cfg, eviction=args.eviction)
    if args.nodes:
        try:
            counts = tuple(int(x) for x in args.nodes.split(",") if x.strip())
        except ValueError:
            p.error(f"--nodes: {args.nodes!r} is not a list of numbers like 1,2,3")
        if not counts or min(counts) < 1:
            p.error("--nodes: give node counts of 1 or more")
        cfg = dataclasses.replace(cfg, node_counts=counts)
    f = report.measure("nodes", measure_async, cfg)
    return report.ScenarioReport(
        scenario="nodes",
        title="Nodes: throughput and p99 with 1, 2 and 3 nodes, Zipf load over their room",
        quick=quick,
        figures={k: v for k, v in f.items() if k != "cdf"},
        table=nodes_report.table(f),
        notes=nodes_report.notes(f),
        plots=nodes_report.plots(f),
    )
