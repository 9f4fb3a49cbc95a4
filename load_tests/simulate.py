"""Scenario "simulate": up to a hundred mesh nodes in one process, against a
real etcd, to show placement decisions and etcd traffic as nodes and models
grow.

Why it exists: one 2-core machine cannot run a hundred mesh nodes with a
hundred model runtimes, yet what decides whether the mesh scales out is
there: how evenly placement spreads copies, how many copies a model gets,
how long a routing decision takes when the table holds many nodes and
models, and how much etcd traffic each node and each request causes (every
write reaches every node's mirror). Issue 7 asks for this simulation mode.

What is real and what is not:

* **real**: one etcd (:class:`mesh.edges.etcd_process.EtcdServer`, as the other
  scenarios start it) for the whole run; in each node, the mesh's own parts
  composed as :class:`meshserve.node.Node` composes them: its etcd client
  (:class:`mesh.kv.etcd_kv.EtcdKV`), record store, placement-table mirror (list +
  watch), cache manager, dispatcher (:mod:`mesh.core.placement` ``route`` /
  ``choose_node``), V2 data plane (:class:`router.dataplane.DataPlane`),
  membership (instance record under a lease kept alive), leader election,
  janitor and scaler;
* **synthetic** (:mod:`load_tests.sim_runtime`): the runtime (a load sleeps
  ``load_ms`` and reports the model's synthetic size), the puller, and the
  hop to a peer. There is no gRPC server: a request forwarded to a peer is
  handed in process to that node's data plane, with the metadata a gRPC hop
  carries, and the peer's mesh errors come back as the gRPC statuses
  :mod:`mesh.edges.grpc_status` gives them (so the sender's dispatcher reads them
  as over the wire). Extra copies asked by the scaler go the same way
  (:class:`load_tests.sim_runtime.Peers`). A hundred gRPC servers, and the
  hop's serialisation, would measure grpc.aio on two CPUs, not placement.

Not composed (not placement): the gRPC, REST, metrics and probe servers,
TLS, the payload log, the management API, and the drain at shutdown (every
node of a step stops at once: there is nobody to hand models over to).
:class:`load_tests.sim_agent.Agent` follows ``Node._start``
(``meshserve/node.py``) line by line otherwise; ``Node`` itself cannot be
reused because ``_start`` builds the runtime, the puller and the servers
inside one method (see the report).

Each node gets its own etcd client (one gRPC connection each, as in a real
mesh) unless ``etcd_clients`` says to share a pool. Every client is wrapped
in :class:`load_tests.sim_runtime.CountingKV`, which counts each request
(get, list, put, txn, delete, lease grant / keep-alive / revoke, watch) and
each watch event received. etcd's own view comes from its ``/metrics``
(gRPC messages received per method, watch responses sent, MVCC puts and
ranges; :mod:`load_tests.sim_meters`) and ``etcdctl endpoint status``
(database size).

Each **step** (``nodes`` × ``models``) runs from scratch under its own key
prefix: register the models (straight into etcd through
:meth:`mesh.kv.records_store.RecordStore.create_model`, log-normal synthetic sizes,
``max_copies`` each), start the nodes, measure ``idle_s`` of background
traffic, then send an open-loop Poisson stream of ``rate_per_s`` requests
for ``duration_s`` (Zipf(α) over the models, :mod:`load_tests.workload`;
each request enters at a node drawn at random, as a Service would spread
them), stop the scalers, wait for loads to settle, read the placement, stop
the nodes.

Measured per step: requests routed and errors; **routing decision time**,
the time spent in :func:`mesh.core.placement.route` itself (wrapped by
:class:`load_tests.sim_meters.RouteTimer` for the run and restored after;
every call the dispatchers make is timed, nothing else is replaced) with
its decisions by action; **placement**: loads per node, models per node
(min / max / stddev), copies per model now and at their peak, evictions
(the nodes' own ``modelmesh_model_evicted``), and whether etcd's records
agree with what the runtimes hold; **etcd traffic**: requests per second,
per routed request and per node, watch events per second, writes by
folder, at rest and under load, and the database size.

``--quick`` runs 10, 30 and 100 nodes with 1,000 models and 30 nodes with
10,000 models (about 75 s); the full run takes 10, 30 and 100 nodes with
both 1,000 and 10,000 models and longer request phases. Everything shares one Python process and
two CPUs: times are inflated by the other nodes' work (the send lag says
when the process fell behind); counts are exact.

This module is the scenario itself (its configuration, one step, the run);
a node is :mod:`load_tests.sim_agent` on the stand-ins of
:mod:`load_tests.sim_runtime`, the outside meters are
:mod:`load_tests.sim_meters`, and the table, notes and plots are
:mod:`load_tests.sim_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import logging
import math
import pathlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import psutil

from load_tests import (
    latency,
    report,
    scale,
    sim_agent,
    sim_meters,
    sim_report,
    sim_runtime,
    workload,
)
from mesh.core import errors, records, settings
from mesh.edges import etcd_process
from mesh.kv import etcd_kv, records_store
from router import dataplane, wire

log = logging.getLogger(__name__)

MiB = 1 << 20
MODEL_TYPE = "sklearn"
METHOD = "ModelInfer"


@dataclasses.dataclass(frozen=True)
class Config:
    steps: tuple[tuple[int, int], ...] = (
        (10, 1000),
        (30, 1000),
        (100, 1000),
        (10, 10_000),
        (30, 10_000),
        (100, 10_000),
    )
    """(nodes, registered models) of each step; each step starts from scratch."""
    rate_per_s: float = 100.0
    """Requests per second entering the mesh (open loop, Poisson)."""
    duration_s: float = 20.0
    """Length of the request phase of each step."""
    idle_s: float = 3.0
    """Background traffic window before the requests (nodes up, no requests)."""
    zipf_alpha: float = 1.0
    """Popularity skew over the models (ranks shuffled over the model ids)."""
    node_capacity_models: int = 24
    """Room of each node, in models of the mean synthetic size."""
    size_median_mib: float = 64.0
    """Median synthetic model size (log-normal)."""
    size_sigma: float = 1.0
    """σ of the sizes in log space; sizes are clipped to 1 MiB .. 8 × median."""
    load_ms: float = 5.0
    """How long a synthetic load takes."""
    max_copies: int = 3
    """Each model's ``max_copies``: the most copies the scaler may give it."""
    scale_up_rpm: int = 30
    """``MESHSERVE_SCALE_UP_RPM`` of every node: far below the product's 600
    because a step lasts seconds, not the minute the rate is counted over
    (30 requests to one copy within a step stands for a hot model)."""
    scale_check_s: float = 2.0
    """``MESHSERVE_SCALE_INTERVAL`` of every node."""
    etcd_clients: int = 0
    """0: one etcd client (connection) per node, as in a real mesh; k: the
    nodes share k clients, round-robin (each still counted on its own)."""
    start_concurrency: int = 10
    """Nodes starting at once. Each start lists every record; a hundred at
    once keep the one event loop so busy that the first nodes' lease
    keep-alives time out (an artefact of one process, not of the mesh)."""
    register_concurrency: int = 64
    """etcd writes in flight while the models are registered."""
    timeout_s: float = 30.0
    """Deadline of each request."""
    seed: int = 7


QUICK = Config(
    steps=((10, 1000), (30, 1000), (100, 1000), (30, 10_000)),
    duration_s=8.0,
    idle_s=5.0,
)
SMOKE = Config(steps=((10, 200),), rate_per_s=50.0, duration_s=4.0, idle_s=1.0, scale_up_rpm=10)


def model_ids(n: int) -> list[str]:
    return [f"sim-model-{i:06d}" for i in range(n)]


def model_sizes(cfg: Config, n: int) -> list[int]:
    """Log-normal sizes (bytes), clipped to 1 MiB .. 8 × the median."""
    rng = np.random.default_rng(cfg.seed)
    median = cfg.size_median_mib * MiB
    raw = rng.lognormal(math.log(median), cfg.size_sigma, size=n)
    return [int(x) for x in np.clip(raw, MiB, 8 * median)]


def node_capacity(cfg: Config) -> int:
    """Each node's capacity: ``node_capacity_models`` models of the mean size
    of the (unclipped) log-normal."""
    mean = cfg.size_median_mib * MiB * math.exp(cfg.size_sigma**2 / 2)
    return int(cfg.node_capacity_models * mean)


def node_settings(
    cfg: Config, endpoint: str, prefix: str, node_id: str, data: pathlib.Path
) -> settings.Settings:
    return settings.Settings(
        kv=settings.KVSettings(endpoints=(endpoint,), prefix=prefix),
        cache=settings.CacheSettings(capacity_bytes=node_capacity(cfg)),
        node=settings.NodeSettings(instance_id=node_id, data_dir=data / node_id),
        runtime=settings.RuntimeSettings(kind=sim_runtime.SyntheticRuntime.name),
        routing=settings.RoutingSettings(default_deadline_seconds=cfg.timeout_s),
        scaling=settings.ScalingSettings(
            scale_up_rpm=cfg.scale_up_rpm, check_interval_seconds=cfg.scale_check_s
        ),
    )


def spread(values: Sequence[float]) -> dict[str, float]:
    """min, max, mean and population standard deviation (0s for nothing)."""
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "stddev": 0.0}
    return {
        "min": min(values),
        "max": max(values),
        "mean": round(statistics.fmean(values), 2),
        "stddev": round(statistics.pstdev(values), 2),
    }


def percentiles(values: Sequence[float], scale_by: float = 1.0) -> dict[str, float]:
    """p50, p99 and max of ``values`` × ``scale_by`` (0s for nothing)."""
    if not len(values):
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    a = np.asarray(values, dtype=np.float64) * scale_by
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
    }


def parse_steps(text: str) -> tuple[tuple[int, int], ...]:
    """``10x1000,30x1000`` → ((10, 1000), (30, 1000))."""
    out = []
    for part in text.split(","):
        nodes, sep, models = part.strip().partition("x")
        if not sep or not nodes.isdigit() or not models.isdigit():
            raise ValueError(f"{part!r} is not NODESxMODELS")
        if int(nodes) < 1 or int(models) < 1:
            raise ValueError(f"{part!r}: nodes and models must be 1 or more")
        out.append((int(nodes), int(models)))
    return tuple(out)


async def register(
    cfg: Config, st: records_store.RecordStore, ids: Sequence[str], sizes: Sequence[int]
) -> float:
    """Register every model; seconds it took."""
    now_ms = int(time.time() * 1000)
    sem = asyncio.Semaphore(cfg.register_concurrency)

    async def one(model_id: str, size: int) -> None:
        rec = records.ModelRecord(
            model_type=MODEL_TYPE,
            path=f"sim/{model_id}",
            size_bytes=size,
            max_copies=cfg.max_copies,
            registered_ms=now_ms,
        )
        async with sem:
            if not await st.create_model(model_id, rec):
                raise RuntimeError(f"{model_id} was already registered")

    t0 = time.monotonic()
    await asyncio.gather(*(one(m, s) for m, s in zip(ids, sizes, strict=True)))
    return time.monotonic() - t0


def counts_of(agents: Sequence[sim_agent.Agent]) -> list[dict[str, int]]:
    return [dict(a.kv.counts) for a in agents]


def phase_traffic(
    before: Sequence[Mapping[str, int]], after: Sequence[Mapping[str, int]], seconds: float
) -> dict[str, Any]:
    """The nodes' etcd requests over a phase: by kind, per second, per node
    per second, watch events per second, writes by folder."""
    per_node = [sim_runtime.delta(a, b) for a, b in zip(after, before, strict=True)]
    tot = sim_runtime.total(per_node)
    reqs = sim_runtime.requests_in(tot)
    n = max(1, len(per_node))
    s = max(seconds, 1e-9)
    return {
        "seconds": round(seconds, 2),
        "by_kind": {k: tot[k] for k in sim_runtime.KINDS if tot[k]},
        "requests": reqs,
        "per_s": round(reqs / s, 1),
        "per_node_per_s": round(reqs / s / n, 2),
        "per_node_per_s_spread": spread(
            [round(sim_runtime.requests_in(c) / s, 2) for c in per_node]
        ),
        "watch_events": tot["watch_events"],
        "watch_events_per_s": round(tot["watch_events"] / s, 1),
        "txn_failed": tot["txn_failed"],
        "writes_by_folder": {
            k.removeprefix("write:"): v for k, v in sorted(tot.items()) if k.startswith("write:")
        },
    }


async def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout`` passes."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            return False
        await asyncio.sleep(0.02)
    return True


async def settle(agents: Sequence[sim_agent.Agent], timeout: float = 15.0) -> float:
    """Wait until no node is loading; seconds waited."""
    t0 = time.monotonic()
    await wait_for(lambda: all(a.manager.loading_count() == 0 for a in agents), timeout)
    await asyncio.sleep(0.5)  # the last records reach etcd and the mirrors
    return time.monotonic() - t0


async def run_step(
    cfg: Config,
    etcd: etcd_process.EtcdServer,
    nodes: int,
    models: int,
    timer: sim_meters.RouteTimer,
    work: pathlib.Path,
) -> dict[str, Any]:
    prefix = f"sim-{nodes}n-{models}m"
    ids = model_ids(models)
    sizes = model_sizes(cfg, models)
    size_of = dict(zip(ids, sizes, strict=True))
    registrar = sim_runtime.CountingKV(await etcd_kv.EtcdKV.connect([etcd.endpoint]))
    agents: list[sim_agent.Agent] = []
    shared: list[etcd_kv.EtcdKV] = []
    try:
        reg_store = records_store.RecordStore(registrar, prefix)
        register_s = await register(cfg, reg_store, ids, sizes)

        ledger = sim_runtime.Ledger()
        peers = sim_runtime.Peers()
        if cfg.etcd_clients:
            shared = list(
                await asyncio.gather(
                    *(etcd_kv.EtcdKV.connect([etcd.endpoint]) for _ in range(cfg.etcd_clients))
                )
            )
        for i in range(nodes):
            node_id = f"sim-{i:03d}"
            conf = node_settings(cfg, etcd.endpoint, prefix, node_id, work)
            if shared:
                kv = sim_runtime.CountingKV(shared[i % len(shared)], owns=False)
            else:
                kv = sim_runtime.CountingKV(await etcd_kv.EtcdKV.connect([etcd.endpoint]))
            runtime = sim_runtime.SyntheticRuntime(
                node_id, ledger, size_of, load_seconds=cfg.load_ms / 1000
            )
            agents.append(sim_agent.Agent(conf, kv, runtime, peers))
        node_ids = [a.node_id for a in agents]

        t0 = time.monotonic()
        starting = asyncio.Semaphore(cfg.start_concurrency)

        async def start_one(a: sim_agent.Agent) -> None:
            async with starting:
                await a.start()

        await asyncio.gather(*(start_one(a) for a in agents))
        start_s = time.monotonic() - t0
        start_counts = sim_runtime.total(counts_of(agents))
        rss = psutil.Process().memory_info().rss

        # At rest: nodes up (every mirror shows every node, a leader is
        # elected, start-up writes are seen), no requests.
        await wait_for(lambda: all(len(a.table.instances()) == nodes for a in agents), 10.0)
        await wait_for(lambda: any(a.leader.is_leader for a in agents), 10.0)
        await asyncio.sleep(0.5)
        c0 = counts_of(agents)
        t0 = time.monotonic()
        await asyncio.sleep(cfg.idle_s)
        idle = phase_traffic(c0, counts_of(agents), time.monotonic() - t0)

        # Under load.
        count = max(1, int(cfg.rate_per_s * cfg.duration_s))
        send_at = workload.schedule(workload.Arrivals(cfg.rate_per_s), count, cfg.seed)
        picks = workload.zipf_models(workload.Zipf(models, cfg.zipf_alpha), count, cfg.seed + 1)
        entries = np.random.default_rng(cfg.seed + 2).integers(0, nodes, size=count)
        bodies = {i: wire.rewrite_name(b"", ids[i]) for i in set(int(p) for p in picks)}
        lat_ns: list[int] = []
        lag_s: list[float] = []
        errs: collections.Counter[str] = collections.Counter()
        loads0 = collections.Counter(ledger.loads)
        evict0 = sum(a.evictions() for a in agents)
        served0 = sum(a.upstream.served for a in agents)
        forwarded0 = sum(a.plane.forwarded for a in agents)
        ensure0 = peers.ensure_calls
        m0 = await asyncio.to_thread(sim_meters.read_etcd_metrics, etcd)
        c0 = counts_of(agents)
        timer.reset()
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(i: int) -> None:
            delay = start + float(send_at[i]) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lag_s.append(loop.time() - start - float(send_at[i]))
            agent = agents[int(entries[i])]
            t = time.perf_counter_ns()
            try:
                answer = await agent.plane.call(METHOD, bodies[int(picks[i])], (), cfg.timeout_s)
                if wire.read_name(answer) != ids[int(picks[i])]:
                    errs["wrong answer"] += 1
                else:
                    lat_ns.append(time.perf_counter_ns() - t)
            except errors.MeshError as e:
                errs[type(e).__name__] += 1
            except dataplane.UpstreamError as e:
                errs[f"status {e.code}"] += 1

        await asyncio.gather(*(one(i) for i in range(count)))
        phase_s = loop.time() - start
        forwarded = sum(a.plane.forwarded for a in agents) - forwarded0
        routed_ns = timer.ns
        actions = timer.actions
        by_action = {k: percentiles(v, 1e-3) for k, v in sorted(timer.by_action.items())}
        busy = phase_traffic(c0, counts_of(agents), phase_s)
        m1 = await asyncio.to_thread(sim_meters.read_etcd_metrics, etcd)
        loads = {n: ledger.loads[n] - loads0[n] for n in node_ids}
        evictions = sum(a.evictions() for a in agents) - evict0

        # Placement is read with no new copies being asked for.
        await asyncio.gather(*(a.scaler.stop() for a in agents))
        settle_s = await settle(agents)
        per_node = ledger.models_per_node(node_ids)
        capacity = node_capacity(cfg)
        used = [ledger.bytes_held[n] / capacity for n in node_ids]
        snap = await registrar.inner.list_prefix(
            f"{prefix}/{records_store.KIND_FOLDERS[records_store.MODEL]}/"
        )
        in_etcd = sim_meters.etcd_pairs([(i.key, i.value) for i in snap.items], prefix)
        held = ledger.pairs()
        copies_now = {str(k): v for k, v in ledger.copies_histogram().items()}
        requested = {ids[int(p)] for p in picks}
        db = await asyncio.to_thread(scale.db_size, etcd)
        served = sum(a.upstream.served for a in agents) - served0
        runtime_misses = sum(a.upstream.missing for a in agents)

        t0 = time.monotonic()
        await asyncio.gather(*(a.stop() for a in agents))
        stop_s = time.monotonic() - t0
        agents = []
    finally:
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)
        for c in shared:
            await c.close()
        await registrar.close()

    ok = len(lat_ns)
    return {
        "nodes": nodes,
        "models": models,
        "register_s": round(register_s, 2),
        "start_s": round(start_s, 2),
        "stop_s": round(stop_s, 2),
        "settle_s": round(settle_s, 2),
        "process_rss_mib": round(rss / MiB, 1),
        "requests": {
            "sent": count,
            "ok": ok,
            "errors": dict(errs),
            "achieved_per_s": round(count / phase_s, 1),
            "distinct_models": len(requested),
            "latency_ms": percentiles(lat_ns, 1e-6),
            "send_lag_ms": percentiles(lag_s, 1e3),
            "forwarded": forwarded,
        },
        "routing": {
            "decisions": len(routed_ns),
            "us": percentiles(routed_ns, 1e-3),
            "us_by_action": by_action,
            "actions": actions,
        },
        "placement": {
            "loads": sum(loads.values()),
            "loads_per_node": spread(list(loads.values())),
            "nodes_with_loads": sum(1 for v in loads.values() if v),
            "evictions": evictions,
            "extra_copy_requests": peers.ensure_calls - ensure0,
            "models_loaded_now": len({m for m, _ in held}),
            "models_per_node": spread(list(per_node.values())),
            "models_per_node_sorted": sorted(per_node.values(), reverse=True),
            "used_fraction": spread([round(u, 3) for u in used]),
            "copies_now": copies_now,
            "peak_copies_max": max(ledger.peak_copies.values(), default=0),
            "over_max_copies": sum(1 for v in ledger.peak_copies.values() if v > cfg.max_copies),
            "requested_never_loaded": len(requested - ledger.loaded_models),
            "etcd_only_copies": len(in_etcd - held),
            "runtime_only_copies": len(held - in_etcd),
            "served_by_runtimes": served,
            "runtime_misses": runtime_misses,
        },
        "etcd": {
            "start": {
                "requests": sim_runtime.requests_in(start_counts),
                "list_keys": start_counts["list_keys"],
                "watch_events": start_counts["watch_events"],
            },
            "idle": idle,
            "load": {
                **busy,
                "per_request": round(busy["requests"] / max(1, count), 2),
                "watch_events_per_request": round(busy["watch_events"] / max(1, count), 1),
            },
            "server_load": sim_meters.counter_delta(m1, m0),
            "register": sim_runtime.requests_in(registrar.counts),
            **db,
        },
    }


async def measure_async(cfg: Config, work: pathlib.Path) -> dict[str, Any]:
    etcd = etcd_process.EtcdServer(work / "etcd", log_path=work / "logs" / "etcd.log", fast=True)
    etcd.start()
    started: list[psutil.Process] = []
    steps = []
    timer = sim_meters.RouteTimer()
    try:
        assert etcd.pid is not None
        started = [psutil.Process(etcd.pid)]
        with timer.installed():
            for nodes, models in cfg.steps:
                log.info("simulate: %d nodes, %d models", nodes, models)
                steps.append(await run_step(cfg, etcd, nodes, models, timer, work))
    finally:
        etcd.stop()
    return {
        "machine": report.machine(),
        "config": dataclasses.asdict(cfg),
        "node_capacity_bytes": node_capacity(cfg),
        "steps": steps,
        "leftover_processes": latency.alive(started),
    }


def run(quick: bool, argv: Sequence[str] = ()) -> report.ScenarioReport:
    """The scenario; ``argv`` may hold ``--steps 10x1000,100x1000``,
    ``--rate R``, ``--duration S``, ``--etcd-clients K`` and ``--smoke`` (a
    few seconds, for tests)."""
    p = argparse.ArgumentParser(prog="python -m load_tests simulate")
    p.add_argument("--steps", type=parse_steps, default=None)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--etcd-clients", type=int, default=-1)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(list(argv))
    cfg = SMOKE if args.smoke else QUICK if quick else Config()
    cfg = dataclasses.replace(
        cfg,
        steps=args.steps or cfg.steps,
        rate_per_s=args.rate or cfg.rate_per_s,
        duration_s=args.duration or cfg.duration_s,
        etcd_clients=cfg.etcd_clients if args.etcd_clients < 0 else args.etcd_clients,
    )
    f = report.measure("simulate", measure_async, cfg)
    return report.ScenarioReport(
        scenario="simulate",
        title="Simulate: placement and etcd traffic with many nodes",
        quick=quick,
        figures=f,
        table=sim_report.table(f),
        notes=sim_report.notes(f),
        plots=sim_report.plots(f),
    )
