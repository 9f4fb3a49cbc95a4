"""Scenario "scale": many registered models, one node, a real etcd.

Why it exists: meshserve's premise is far more models registered than
loaded, so what each registration costs at rest (etcd bytes, node memory)
and whether the request path slows down as the table grows are what decide
how many models one mesh can hold. Issue 7's target: routing p50 with
100,000 models registered within 5 % of the p50 with 10.

One run starts an etcd and one node as its own process (with its MLServer,
``load_tests.local_node``), registers one real Predictor (iris logistic
regression) through the management API plus filler models so that 10 are
registered, loads iris with a first call, and then:

1. **with 10 registered**: the node's RSS, etcd's database size
   (``etcdctl endpoint status``: ``dbSize``, ``dbSizeInUse``), and
   concurrency-1 ModelInfer latency through the mesh and directly to the
   same MLServer, alternating in blocks;
2. **registering**: ``--api`` Predictors one at a time through the
   management API (``setVModel``, what ``meshserve predictor apply`` does:
   ms per registration), then the rest of the models written straight into
   etcd through ``mesh.kv.records_store.RecordStore.create_model`` (the same
   compare-and-set the management API ends in) with ``--concurrency`` writes
   in flight: models per second; then how long the node's mirror of etcd
   took to show the last one (polled with ModelReady on it);
3. **with N registered**: the same figures again. Bytes per model and RSS
   per model are the differences divided by the models added; routing is
   compared as the mesh's p50 and as its added p50 over direct (the direct
   side shows how much the machine itself drifted between the two).

Filler models are plain registrations (``ModelRecord`` of type sklearn with
a path each, no copies), like a Predictor that was never called.
``--quick`` registers 10,000 models (well under a minute); the full run
100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import pathlib
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import psutil
from tritonclient.grpc import service_pb2

from kube import mesh_client
from load_tests import latencies, latency, loadgen, local_node, report
from mesh.core import clock, records
from mesh.edges import etcd_process
from mesh.kv import etcd_kv, records_store
from meshserve import samples

PREFIX = "scale-bench"
INPUT = "predict"
SIDES = ("direct", "mesh")
ROUTING_TARGET = 1.05


@dataclasses.dataclass(frozen=True)
class Config:
    models: int = 100_000
    """Registered in all at the end (the first 10 included)."""
    api: int = 300
    """Of them, registered one at a time through the management API."""
    concurrency: int = 64
    """etcd writes in flight during the bulk registration."""
    requests: int = 2000
    """Concurrency-1 calls per side, in each state."""
    block: int = 100
    warmup: int = 200


QUICK = Config(models=10_000, api=100, requests=600)
SMOKE = Config(models=300, api=20, concurrency=16, requests=100, block=50, warmup=20)


def db_size(etcd: etcd_process.EtcdServer) -> dict[str, int]:
    """etcd's ``dbSize`` and ``dbSizeInUse`` (bytes), from ``etcdctl``."""
    out = subprocess.run(
        ["etcdctl", f"--endpoints={etcd.url}", "endpoint", "status", "-w", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    status = json.loads(out)[0]["Status"]
    return {"db_size": int(status["dbSize"]), "db_size_in_use": int(status.get("dbSizeInUse", 0))}


def filler(i: int, now_ms: int) -> tuple[str, records.ModelRecord]:
    return f"bulk-model-{i:06d}", records.ModelRecord(
        model_type="sklearn", path=f"bulk/model-{i:06d}", registered_ms=now_ms
    )


async def bulk_register(
    st: records_store.RecordStore, first: int, count: int, concurrency: int
) -> tuple[float, int, str]:
    """(seconds, key + value bytes written, last model id) of registering
    ``count`` filler models, ``concurrency`` writes at a time."""
    now_ms = clock.now_ms()
    sem = asyncio.Semaphore(concurrency)
    written = 0

    async def one(i: int) -> None:
        nonlocal written
        model_id, rec = filler(i, now_ms)
        async with sem:
            if not await st.create_model(model_id, rec):
                raise RuntimeError(f"{model_id} was already registered")
        written += len(st.model_key(model_id)) + len(rec.to_json())

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(first, first + count)))
    return time.monotonic() - t0, written, filler(first + count - 1, now_ms)[0]


async def wait_visible(endpoint: str, model_id: str, timeout_s: float = 300.0) -> float:
    """Seconds until the node answers ModelReady for ``model_id`` (not
    NOT_FOUND): its mirror of etcd holds the model."""
    body = service_pb2.ModelReadyRequest(name=model_id).SerializeToString()
    t0 = time.monotonic()
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = channel.unary_unary(f"/{loadgen.SERVICE}/ModelReady")
        while True:
            try:
                await stub(body, timeout=5.0)
                return time.monotonic() - t0
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"the node did not see {model_id} in {timeout_s:.0f} s")
            await asyncio.sleep(0.02)


async def sequential(
    cfg: Config, targets: dict[str, loadgen.Target], bodies: dict[str, list[bytes]]
) -> dict[str, latencies.Recorder]:
    for side in SIDES:
        await loadgen.closed_loop(targets[side], bodies[side], [0], concurrency=1, count=cfg.warmup)
    out = {s: latencies.Recorder() for s in SIDES}
    for _ in range(max(1, cfg.requests // cfg.block)):
        for side in SIDES:
            r = await loadgen.closed_loop(
                targets[side], bodies[side], [0], concurrency=1, count=cfg.block
            )
            if r.errors:
                raise RuntimeError(f"{side}: errors {dict(r.errors)}")
            out[side].add(r.latency)
    return out


def state(
    lat: dict[str, latencies.Recorder], node: local_node.NodeProcess, etcd: etcd_process.EtcdServer
) -> dict[str, Any]:
    s = {k: v.summary() for k, v in lat.items()}
    return {
        "latency_us": {k: v.as_dict() for k, v in s.items()},
        "added_p50_us": s["mesh"].p50_us - s["direct"].p50_us,
        "node_rss_bytes": psutil.Process(node.pid).memory_info().rss,
        **db_size(etcd),
    }


@dataclasses.dataclass(frozen=True)
class Registration:
    """What registering the models past the first 10 took."""

    api_s: list[float]
    """Seconds of each Predictor registered through the management API."""
    bulk: int
    """Models registered straight into etcd."""
    bulk_s: float
    written: int
    """Key + value bytes of the bulk registration."""
    catch_up_s: float
    """Until the node's mirror showed the last one."""


def apply_specs(endpoint: str, specs: Sequence[Any]) -> list[float]:
    """Seconds of applying each of ``specs`` through the management API."""
    took = []
    with mesh_client.MeshClient(endpoint) as mc:
        for s in specs:
            t0 = time.perf_counter()
            mc.apply(s)
            took.append(time.perf_counter() - t0)
    return took


async def register_the_rest(
    cfg: Config, node: local_node.NodeProcess, st: records_store.RecordStore, sample: samples.Sample
) -> Registration:
    """Register ``--api`` Predictors through the management API, the rest
    straight into etcd, and wait for the node's mirror to show the last."""
    api_specs = [latency.predictor_spec(f"scale-api-{i:05d}", sample) for i in range(cfg.api)]
    api_s = await asyncio.to_thread(apply_specs, node.endpoint, api_specs)
    bulk = cfg.models - 10 - cfg.api
    bulk_s, written, last = await bulk_register(st, 9, bulk, cfg.concurrency)
    catch_up_s = await wait_visible(node.endpoint, last)
    return Registration(api_s, bulk, bulk_s, written, catch_up_s)


async def measure_states(
    cfg: Config,
    node: local_node.NodeProcess,
    etcd: etcd_process.EtcdServer,
    st: records_store.RecordStore,
    sample: samples.Sample,
) -> tuple[dict[str, Any], Registration, dict[str, Any]]:
    """The state with 10 registered, the registration of the rest, and the
    state with all of them registered."""
    name = "scale-iris"
    spec = latency.predictor_spec(name, sample)
    await asyncio.to_thread(apply_specs, node.endpoint, [spec])
    _, _, last = await bulk_register(st, 0, 9, 9)
    await wait_visible(node.endpoint, last)
    x = {INPUT: sample.inputs.astype(np.float64)}
    bodies = {
        "direct": [loadgen.infer_request(spec.model_id, x, [INPUT])],
        "mesh": [loadgen.infer_request(name, x, [INPUT])],
    }
    targets = {
        "direct": loadgen.Target(node.runtime_endpoint),
        "mesh": loadgen.Target(node.endpoint),
    }
    try:
        local_node.check_answer(
            await targets["mesh"].call(bodies["mesh"][0], 120.0), sample, "mesh"
        )
        local_node.check_answer(await targets["direct"].call(bodies["direct"][0]), sample, "direct")
        before = state(await sequential(cfg, targets, bodies), node, etcd)
        registration = await register_the_rest(cfg, node, st, sample)
        await asyncio.sleep(1.0)  # let the node settle after the burst of watch events
        after = state(await sequential(cfg, targets, bodies), node, etcd)
    finally:
        for t in targets.values():
            await t.close()
    return before, registration, after


async def measure_async(cfg: Config, work: pathlib.Path) -> dict[str, Any]:
    sample = samples.train_iris_logistic(work / "store" / "iris")
    etcd = etcd_process.EtcdServer(work / "etcd", log_path=work / "logs" / "etcd.log", fast=True)
    node = local_node.NodeProcess(work, etcd.endpoint, PREFIX, "scale-node", work / "store")
    etcd.start()
    started: list[psutil.Process] = []
    try:
        await node.start()
        assert etcd.pid is not None
        started = [psutil.Process(etcd.pid), *node.tree()]
        kv = await etcd_kv.EtcdKV.connect([etcd.endpoint])
        try:
            st = records_store.RecordStore(kv, PREFIX)
            before, registration, after = await measure_states(cfg, node, etcd, st, sample)
        finally:
            await kv.close()
    finally:
        await asyncio.to_thread(node.stop)
        etcd.stop()
    left = latency.alive(started)
    return scale_figures(cfg, registration, before, after, left)


def register_figures(cfg: Config, reg: Registration) -> dict[str, Any]:
    """The registrations' speed: through the API, straight into etcd, and
    the node's catching up."""
    api_ms = np.array(reg.api_s) * 1000
    return {
        "api": {
            "models": cfg.api,
            "p50_ms": round(float(np.percentile(api_ms, 50)), 2),
            "p99_ms": round(float(np.percentile(api_ms, 99)), 2),
            "per_s": round(cfg.api / (float(api_ms.sum()) / 1000), 1),
        },
        "bulk": {
            "models": reg.bulk,
            "concurrency": cfg.concurrency,
            "seconds": round(reg.bulk_s, 2),
            "per_s": round(reg.bulk / reg.bulk_s, 1),
            "key_value_bytes_per_model": round(reg.written / reg.bulk, 1),
        },
        "node_catch_up_s": round(reg.catch_up_s, 3),
    }


def scale_figures(
    cfg: Config,
    registration: Registration,
    before: dict[str, Any],
    after: dict[str, Any],
    left: list[str],
) -> dict[str, Any]:
    """Every figure of the run: the registrations, both states, and what
    each added model cost (etcd bytes, node memory, routing time)."""
    added_models = cfg.models - 10
    return {
        "machine": report.machine(),
        "config": dataclasses.asdict(cfg),
        "registered": {"before": 10, "after": cfg.models},
        "register": register_figures(cfg, registration),
        "before": before,
        "after": after,
        "per_model": {
            "etcd_db_bytes": round((after["db_size"] - before["db_size"]) / added_models, 1),
            "etcd_db_in_use_bytes": round(
                (after["db_size_in_use"] - before["db_size_in_use"]) / added_models, 1
            ),
            "node_rss_bytes": round(
                (after["node_rss_bytes"] - before["node_rss_bytes"]) / added_models, 1
            ),
        },
        "routing": {
            "mesh_p50_ratio": _ratio(
                after["latency_us"]["mesh"]["p50"], before["latency_us"]["mesh"]["p50"]
            ),
            "added_p50_us": {"10": before["added_p50_us"], "n": after["added_p50_us"]},
            "direct_p50_ratio": _ratio(
                after["latency_us"]["direct"]["p50"], before["latency_us"]["direct"]["p50"]
            ),
        },
        "leftover_processes": left,
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def table(f: dict[str, Any]) -> str:
    n = f["registered"]["after"]
    r, pm = f["register"], f["per_model"]
    lines = [
        f"{n:,} registered models, one node (own process) and its MLServer, a real etcd "
        f"({f['machine']['cpus']} CPUs)",
        "",
        f"register through the management API (setVModel, one at a time): "
        f"p50 {r['api']['p50_ms']:.2f} ms, p99 {r['api']['p99_ms']:.2f} ms "
        f"({r['api']['per_s']:.0f}/s, {r['api']['models']} Predictors)",
        f"register straight into etcd (RecordStore.create_model, {r['bulk']['concurrency']} in "
        f"flight): {r['bulk']['models']:,} models in {r['bulk']['seconds']:.1f} s "
        f"({r['bulk']['per_s']:.0f}/s); {r['bulk']['key_value_bytes_per_model']:.0f} B of key "
        "+ value each",
        f"the node's mirror showed the last one {1000 * r['node_catch_up_s']:.0f} ms after it "
        "was written",
        "",
    ]
    rows = []
    for label, key in (("10 registered", "before"), (f"{n:,} registered", "after")):
        s = f[key]
        lat = s["latency_us"]
        rows.append(
            [
                label,
                f"{lat['direct']['p50']}",
                f"{lat['mesh']['p50']}",
                f"{lat['mesh']['p99']}",
                f"{s['added_p50_us']:+d}",
                f"{s['node_rss_bytes'] / 2**20:.1f}",
                f"{s['db_size'] / 2**20:.1f} / {s['db_size_in_use'] / 2**20:.1f}",
            ]
        )
    lines.append(
        report.fmt_table(
            [
                "",
                "direct p50 µs",
                "mesh p50 µs",
                "mesh p99 µs",
                "added p50 µs",
                "node RSS MiB",
                "etcd db / in use MiB",
            ],
            rows,
        )
    )
    lines += [
        "",
        f"per registered model: etcd db {pm['etcd_db_bytes']:.0f} B "
        f"(in use {pm['etcd_db_in_use_bytes']:.0f} B), node RSS {pm['node_rss_bytes']:.0f} B",
        f"routing: mesh p50 with {n:,} / with 10 = {f['routing']['mesh_p50_ratio']:.3f} "
        f"(direct p50 ratio {f['routing']['direct_p50_ratio']:.3f}: the machine's own drift)",
        "leftover processes: " + (", ".join(f["leftover_processes"]) or "none"),
    ]
    return "\n".join(lines)


def notes(f: dict[str, Any]) -> tuple[str, ...]:
    n = f["registered"]["after"]
    ratio = f["routing"]["mesh_p50_ratio"]
    added = f["routing"]["added_p50_us"]
    met = ratio <= ROUTING_TARGET
    out = [
        f"Target routing p50 with {n:,} registered within 5 % of with 10: "
        + ("met" if met else "MISSED")
        + f" (x{ratio:.3f}; added over direct {added['10']:+d} → {added['n']:+d} µs"
        + ("" if met else f", {ratio - ROUTING_TARGET:.3f} over")
        + ")."
    ]
    if not met:
        out.append(
            "Why (a lead to check, not yet shown): the node's mirror holds a record object per "
            "registered model, and every full pass of Python's cyclic garbage collector walks "
            "all of them, which lengthens the pauses that land on requests (the p99 grows more "
            "than the p50). gc.freeze() after the mirror's first sync, or records with fewer "
            "container objects, would take them out of it; the node's RSS per model above says "
            "how many objects there are to walk."
        )
    grew = added["n"] - added["10"]
    if added["10"] > 0 and grew > 0.05 * added["10"]:
        out.append(
            f"The mesh's added p50 over direct grew by {grew} µs "
            f"({grew / added['10']:.0%}) while the direct p50 moved "
            f"x{f['routing']['direct_p50_ratio']:.2f}: on a shared 2-core machine, repeat the "
            "run before reading a trend into it."
        )
    if f["config"]["models"] < 100_000:
        out.append(
            f"This run registered {n:,} models, not the 100,000 of the target: run "
            "`python -m load_tests scale` (without --quick) for that figure."
        )
    return tuple(out)


def run(quick: bool, argv: Sequence[str] = ()) -> report.ScenarioReport:
    """The scenario; ``argv`` may hold ``--models N``, ``--api N``,
    ``--concurrency N`` and ``--smoke`` (a few seconds, for tests)."""
    p = argparse.ArgumentParser(prog="python -m load_tests scale")
    p.add_argument("--models", type=int, default=0)
    p.add_argument("--api", type=int, default=-1)
    p.add_argument("--concurrency", type=int, default=0)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(list(argv))
    cfg = SMOKE if args.smoke else QUICK if quick else Config()
    cfg = dataclasses.replace(
        cfg,
        models=args.models or cfg.models,
        api=cfg.api if args.api < 0 else args.api,
        concurrency=args.concurrency or cfg.concurrency,
    )
    if cfg.models < 10 + cfg.api + 1:
        p.error("--models must be more than 10 + --api")
    f = report.measure("scale", measure_async, cfg)
    return report.ScenarioReport(
        scenario="scale",
        title="Scale: many registered models",
        quick=quick,
        figures=f,
        table=table(f),
        notes=notes(f),
    )
