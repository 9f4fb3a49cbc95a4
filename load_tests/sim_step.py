"""One step of the simulation (:mod:`load_tests.simulate`): ``nodes`` node
agents and ``models`` registered models under a fresh key prefix, from the
models' registration to the last node stopped, and the step's figures.

Why it exists: a step is a sequence of phases, each reading counters
before and after it: register the models straight into etcd, start the
nodes (a few at a time), measure the etcd traffic at rest, send the
open-loop request stream, stop the scalers and read the placement once the
loads have settled, stop the nodes. Each phase is a function here, so that
what a figure counts can be read off the phase that measured it; the
scenario (:mod:`load_tests.simulate`) runs one step after another against
one etcd, and the arithmetic on the counts is :mod:`load_tests.sim_figures`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psutil

from load_tests import (
    scale,
    sim_agent,
    sim_config,
    sim_figures,
    sim_meters,
    sim_runtime,
    workload,
)
from mesh.core import clock, errors, records
from mesh.edges import etcd_process
from mesh.kv import etcd_kv, records_store
from router import upstream, wire

MODEL_TYPE = "sklearn"
METHOD = "ModelInfer"


@dataclasses.dataclass
class Step:
    """A step under way: its etcd, key prefix and models, the registrar's
    etcd client, and the nodes with the stand-ins they share."""

    cfg: sim_config.Config
    etcd: etcd_process.EtcdServer
    prefix: str
    ids: list[str]
    sizes: list[int]
    registrar: sim_runtime.CountingKV
    ledger: sim_runtime.Ledger = dataclasses.field(default_factory=sim_runtime.Ledger)
    peers: sim_runtime.Peers = dataclasses.field(default_factory=sim_runtime.Peers)
    agents: list[sim_agent.Agent] = dataclasses.field(default_factory=list)
    shared: list[etcd_kv.EtcdKV] = dataclasses.field(default_factory=list)
    """The etcd clients the nodes share (``etcd_clients``); none: one each."""

    @property
    def node_ids(self) -> list[str]:
        return [a.node_id for a in self.agents]


async def register(
    cfg: sim_config.Config,
    st: records_store.RecordStore,
    ids: Sequence[str],
    sizes: Sequence[int],
) -> float:
    """Register every model; seconds it took."""
    now_ms = clock.now_ms()
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


async def add_agents(step: Step, nodes: int, work: pathlib.Path) -> None:
    """The step's node agents, each with its own counted etcd client (or one
    of ``etcd_clients`` shared ones) and a synthetic runtime."""
    cfg, endpoint = step.cfg, step.etcd.endpoint
    size_of = dict(zip(step.ids, step.sizes, strict=True))
    if cfg.etcd_clients:
        step.shared = list(
            await asyncio.gather(
                *(etcd_kv.EtcdKV.connect([endpoint]) for _ in range(cfg.etcd_clients))
            )
        )
    for i in range(nodes):
        node_id = f"sim-{i:03d}"
        conf = sim_config.node_settings(cfg, endpoint, step.prefix, node_id, work)
        if step.shared:
            kv = sim_runtime.CountingKV(step.shared[i % len(step.shared)], owns=False)
        else:
            kv = sim_runtime.CountingKV(await etcd_kv.EtcdKV.connect([endpoint]))
        runtime = sim_runtime.SyntheticRuntime(
            node_id, step.ledger, size_of, load_seconds=cfg.load_ms / 1000
        )
        step.agents.append(sim_agent.Agent(conf, kv, runtime, step.peers))


async def start_agents(step: Step) -> tuple[float, dict[str, int], int]:
    """Start the nodes, ``start_concurrency`` at a time: seconds it took,
    the etcd traffic of the start, and this process's RSS after."""
    t0 = time.monotonic()
    starting = asyncio.Semaphore(step.cfg.start_concurrency)

    async def start_one(a: sim_agent.Agent) -> None:
        async with starting:
            await a.start()

    await asyncio.gather(*(start_one(a) for a in step.agents))
    start_s = time.monotonic() - t0
    start_counts = sim_runtime.total(counts_of(step.agents))
    rss = psutil.Process().memory_info().rss
    traffic = {
        "requests": sim_runtime.requests_in(start_counts),
        "list_keys": start_counts["list_keys"],
        "watch_events": start_counts["watch_events"],
    }
    return start_s, traffic, rss


async def at_rest(step: Step) -> dict[str, Any]:
    """The nodes' etcd traffic at rest: once every mirror shows every node, a
    leader is elected and the start-up writes are seen, ``idle_s`` with no
    requests."""
    agents, nodes = step.agents, len(step.agents)
    await wait_for(lambda: all(len(a.table.instances()) == nodes for a in agents), 10.0)
    await wait_for(lambda: any(a.leader.is_leader for a in agents), 10.0)
    await asyncio.sleep(0.5)
    c0 = counts_of(agents)
    t0 = time.monotonic()
    await asyncio.sleep(step.cfg.idle_s)
    return sim_figures.phase_traffic(c0, counts_of(agents), time.monotonic() - t0)


@dataclasses.dataclass(frozen=True)
class Requests:
    """The step's open-loop stream, fixed before it starts: when each request
    is sent, the model it asks for, the node it enters at."""

    count: int
    send_at: workload.Floats
    picks: workload.Ints
    entries: workload.Ints
    bodies: dict[int, bytes]
    """Each model asked for (by index), its request bytes."""


def plan_requests(cfg: sim_config.Config, ids: Sequence[str], nodes: int) -> Requests:
    """Poisson arrivals at ``rate_per_s`` for ``duration_s``, Zipf(α) over the
    models, entering at a node drawn at random (as a Service spreads them)."""
    count = max(1, int(cfg.rate_per_s * cfg.duration_s))
    send_at = workload.schedule(workload.Arrivals(cfg.rate_per_s), count, cfg.seed)
    picks = workload.zipf_models(workload.Zipf(len(ids), cfg.zipf_alpha), count, cfg.seed + 1)
    entries = np.random.default_rng(cfg.seed + 2).integers(0, nodes, size=count)
    bodies = {i: wire.rewrite_name(b"", ids[i]) for i in set(int(p) for p in picks)}
    return Requests(count, send_at, picks, entries, bodies)


@dataclasses.dataclass
class Answers:
    """What came back: latencies of the right answers, how late each request
    was sent, errors by kind, and how long the stream took."""

    latency_ns: list[int] = dataclasses.field(default_factory=list)
    lag_s: list[float] = dataclasses.field(default_factory=list)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    seconds: float = 0.0


async def send(step: Step, r: Requests) -> Answers:
    """Send the stream, each request into its entry node's data plane at its
    time, each answer checked for the model it names."""
    out = Answers()
    ids, timeout_s = step.ids, step.cfg.timeout_s
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int) -> None:
        delay = start + float(r.send_at[i]) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        out.lag_s.append(loop.time() - start - float(r.send_at[i]))
        agent = step.agents[int(r.entries[i])]
        t = time.perf_counter_ns()
        try:
            answer = await agent.plane.call(METHOD, r.bodies[int(r.picks[i])], (), timeout_s)
            if wire.read_name(answer) != ids[int(r.picks[i])]:
                out.errors["wrong answer"] += 1
            else:
                out.latency_ns.append(time.perf_counter_ns() - t)
        except errors.MeshError as e:
            out.errors[type(e).__name__] += 1
        except upstream.UpstreamError as e:
            out.errors[f"status {e.code}"] += 1

    await asyncio.gather(*(one(i) for i in range(r.count)))
    out.seconds = loop.time() - start
    return out


@dataclasses.dataclass(frozen=True)
class Load:
    """What the request phase measured, and the counters read before it that
    the placement read needs."""

    requests: dict[str, Any]
    routing: dict[str, Any]
    etcd: dict[str, Any]
    server_load: dict[str, int]
    loads: dict[str, int]
    """Loads per node during the phase."""
    evictions: int
    requested: set[str]
    served_before: int
    ensure_before: int


def request_figures(r: Requests, a: Answers, forwarded: int, requested: int) -> dict[str, Any]:
    return {
        "sent": r.count,
        "ok": len(a.latency_ns),
        "errors": dict(a.errors),
        "achieved_per_s": round(r.count / a.seconds, 1),
        "distinct_models": requested,
        "latency_ms": sim_figures.percentiles(a.latency_ns, 1e-6),
        "send_lag_ms": sim_figures.percentiles(a.lag_s, 1e3),
        "forwarded": forwarded,
    }


async def under_load(step: Step, timer: sim_meters.RouteTimer) -> Load:
    """The request phase, with the nodes' and etcd's counters read around it
    and every routing decision timed."""
    cfg, agents, ledger = step.cfg, step.agents, step.ledger
    r = plan_requests(cfg, step.ids, len(agents))
    requested = {step.ids[int(p)] for p in r.picks}
    loads0 = collections.Counter(ledger.loads)
    evict0 = sum(a.evictions() for a in agents)
    served0 = sum(a.upstream.served for a in agents)
    forwarded0 = sum(a.plane.forwarded for a in agents)
    ensure0 = step.peers.ensure_calls
    m0 = await asyncio.to_thread(sim_meters.read_etcd_metrics, step.etcd)
    c0 = counts_of(agents)
    timer.reset()
    answers = await send(step, r)
    forwarded = sum(a.plane.forwarded for a in agents) - forwarded0
    routed_ns = timer.ns
    routing = {
        "decisions": len(routed_ns),
        "us": sim_figures.percentiles(routed_ns, 1e-3),
        "us_by_action": {
            k: sim_figures.percentiles(v, 1e-3) for k, v in sorted(timer.by_action.items())
        },
        "actions": timer.actions,
    }
    busy = sim_figures.phase_traffic(c0, counts_of(agents), answers.seconds)
    m1 = await asyncio.to_thread(sim_meters.read_etcd_metrics, step.etcd)
    return Load(
        requests=request_figures(r, answers, forwarded, len(requested)),
        routing=routing,
        etcd={
            **busy,
            "per_request": round(busy["requests"] / max(1, r.count), 2),
            "watch_events_per_request": round(busy["watch_events"] / max(1, r.count), 1),
        },
        server_load=sim_meters.counter_delta(m1, m0),
        loads={n: ledger.loads[n] - loads0[n] for n in step.node_ids},
        evictions=sum(a.evictions() for a in agents) - evict0,
        requested=requested,
        served_before=served0,
        ensure_before=ensure0,
    )


async def read_placement(step: Step, load: Load) -> tuple[dict[str, Any], float, dict[str, int]]:
    """With no new copies asked for (the scalers stopped) and the loads
    settled: the placement figures, the seconds waited, etcd's database size."""
    cfg, agents, ledger, node_ids = step.cfg, step.agents, step.ledger, step.node_ids
    await asyncio.gather(*(a.scaler.stop() for a in agents))
    settle_s = await settle(agents)
    per_node = ledger.models_per_node(node_ids)
    capacity = sim_config.node_capacity(cfg)
    used = [ledger.bytes_held[n] / capacity for n in node_ids]
    snap = await step.registrar.inner.list_prefix(
        f"{step.prefix}/{records_store.KIND_FOLDERS[records_store.MODEL]}/"
    )
    in_etcd = sim_meters.etcd_pairs([(i.key, i.value) for i in snap.items], step.prefix)
    held = ledger.pairs()
    db = await asyncio.to_thread(scale.db_size, step.etcd)
    loads, spread = load.loads, sim_figures.spread
    placement = {
        "loads": sum(loads.values()),
        "loads_per_node": spread(list(loads.values())),
        "nodes_with_loads": sum(1 for v in loads.values() if v),
        "evictions": load.evictions,
        "extra_copy_requests": step.peers.ensure_calls - load.ensure_before,
        "models_loaded_now": len({m for m, _ in held}),
        "models_per_node": spread(list(per_node.values())),
        "models_per_node_sorted": sorted(per_node.values(), reverse=True),
        "used_fraction": spread([round(u, 3) for u in used]),
        "copies_now": {str(k): v for k, v in ledger.copies_histogram().items()},
        "peak_copies_max": max(ledger.peak_copies.values(), default=0),
        "over_max_copies": sum(1 for v in ledger.peak_copies.values() if v > cfg.max_copies),
        "requested_never_loaded": len(load.requested - ledger.loaded_models),
        "etcd_only_copies": len(in_etcd - held),
        "runtime_only_copies": len(held - in_etcd),
        "served_by_runtimes": sum(a.upstream.served for a in agents) - load.served_before,
        "runtime_misses": sum(a.upstream.missing for a in agents),
    }
    return placement, settle_s, db


async def run_step(
    cfg: sim_config.Config,
    etcd: etcd_process.EtcdServer,
    nodes: int,
    models: int,
    timer: sim_meters.RouteTimer,
    work: pathlib.Path,
) -> dict[str, Any]:
    """One step from scratch under its own key prefix; its figures."""
    ids, sizes = sim_config.model_ids(models), sim_config.model_sizes(cfg, models)
    registrar = sim_runtime.CountingKV(await etcd_kv.EtcdKV.connect([etcd.endpoint]))
    step = Step(cfg, etcd, f"sim-{nodes}n-{models}m", ids, sizes, registrar)
    try:
        reg_store = records_store.RecordStore(registrar, step.prefix)
        register_s = await register(cfg, reg_store, ids, sizes)
        await add_agents(step, nodes, work)
        start_s, start_traffic, rss = await start_agents(step)
        idle = await at_rest(step)
        load = await under_load(step, timer)
        placement, settle_s, db = await read_placement(step, load)
        t0 = time.monotonic()
        await asyncio.gather(*(a.stop() for a in step.agents))
        stop_s = time.monotonic() - t0
        step.agents = []
    finally:
        await asyncio.gather(*(a.stop() for a in step.agents), return_exceptions=True)
        for c in step.shared:
            await c.close()
        await registrar.close()
    return {
        "nodes": nodes,
        "models": models,
        "register_s": round(register_s, 2),
        "start_s": round(start_s, 2),
        "stop_s": round(stop_s, 2),
        "settle_s": round(settle_s, 2),
        "process_rss_mib": round(rss / sim_config.MiB, 1),
        "requests": load.requests,
        "routing": load.routing,
        "placement": placement,
        "etcd": {
            "start": start_traffic,
            "idle": idle,
            "load": load.etcd,
            "server_load": load.server_load,
            "register": sim_runtime.requests_in(registrar.counts),
            **db,
        },
    }
