"""Scenario "peers": meshserve next to Ray Serve's model multiplexing, and
next to one runtime holding every model, on the same seeded traces.

Why it exists: a claim that the mesh serves many models well needs a peer
measured on the same machine, trace, models, room and client. Issue 16 asks
for Ray Serve multiplexing (``@serve.multiplexed``), the best-known
open-source way to put many models on few replicas. Every system here gets:

* the same models: ``models`` scikit-learn random forests of 2-3 MiB each
  (``joblib`` files, trained here with fixed seeds), read from one folder;
* the same room: ``nodes`` mesh nodes of ``slots`` models each
  (:mod:`load_tests.peers_mesh`), or ``nodes`` Ray replicas with
  ``max_num_models_per_replica=slots`` (:mod:`load_tests.peers_ray`);
  the floor (one MLServer with every model loaded, called directly) has
  room for all;
* the same client and protocol: V2 JSON over HTTP from one open-loop
  ``aiohttp`` client (:mod:`load_tests.peers_http`): ``POST
  /v2/models/<m>/infer`` to the mesh's REST ports (round-robin over the
  nodes, as a Service would) and to the floor's MLServer; Ray's proxy with
  the model in the ``serve_multiplexed_model_id`` header and the same body;
* the same traces (:mod:`load_tests.peers_trace`): for each shape (Zipf α
  0.8 and 1.2 with Poisson arrivals, Zipf α 1.0 with Gamma gaps of CV 4)
  and each rate, ``warmup_s`` untimed then ``measured_s`` timed seconds,
  seeded, identical for every system.

The systems run one after the other. Each point starts its system afresh
(its own etcd and work folder) and stops it after, so that a point's figures
do not depend on which points ran before it, and every system starts, as the
offline references do, with an empty cache before the warm-up;
``--carry-over`` runs every point on one start instead, in the same order
(each trace has a new set of favourites, so this measures how fast a system
drops the last trace's). Per point: p50/p90/p99/max latency from each
request's scheduled send time, loads per 100 requests (the mesh's
``modelmesh_loadmodel_milliseconds_count``, Ray's load function's counter
file), CPU seconds of each process over the timed part, and the offline
references on the same trace (one LRU over all the slots, LRU with perfect
affinity, Belady). Idle RSS of each process is read once a system is up,
before its first request. Ray lives in its own venv (``.runtimes/ray``,
``make bench``); without it the Ray side reports why and the others run.

``--quick``: 2 rates × 3 shapes, 4 s warm-up + 12 s measured each (about
8 minutes with the three systems). ``--systems meshserve,ray,floor`` and
``--rates 20,60`` choose. The table and notes are :mod:`load_tests.peers_report`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import joblib
import numpy as np
import numpy.typing as npt
import psutil
from sklearn import ensemble

from load_tests import (
    latency,
    peers_http,
    peers_mesh,
    peers_ray,
    peers_report,
    peers_trace,
    report,
)
from mesh.edges import etcd_process

MiB = 1024 * 1024
SYSTEMS = ("meshserve", "ray", "floor")


@dataclasses.dataclass(frozen=True)
class Config:
    models: int = 40
    nodes: int = 2
    """Mesh nodes, and Ray replicas."""
    slots: int = 8
    """Models each node / replica holds."""
    model_bytes: int = 64 * MiB
    """What the mesh counts each model as (its floor on a model's size)."""
    features: int = 10
    rates: tuple[float, ...] = (20.0, 60.0)
    shapes: tuple[peers_trace.Shape, ...] = peers_trace.SHAPES
    warmup_s: float = 10.0
    measured_s: float = 60.0
    timeout_s: float = 30.0
    systems: tuple[str, ...] = SYSTEMS
    seed: int = 16
    carry_over: bool = False
    """Run every point on one start of each system, not a fresh start per
    point."""


QUICK = Config(warmup_s=4.0, measured_s=12.0)


def model_names(models: int) -> list[str]:
    return [f"forest-{i:02d}" for i in range(models)]


def train_forests(
    store: pathlib.Path, names: Sequence[str], x: npt.NDArray[np.float64], seed: int
) -> dict[str, list[float]]:
    """One random forest per name (2-3 MiB each: 14-21 trees on 3,000 rows of
    noise, grown to purity), saved as ``<store>/<name>/model.joblib``;
    returns each one's own prediction for ``x``."""
    expected = {}
    for i, name in enumerate(names):
        rng = np.random.default_rng(seed + i)
        data = rng.normal(size=(3000, x.shape[1]))
        labels = rng.integers(0, 3, size=3000)
        model = ensemble.RandomForestClassifier(n_estimators=14 + i % 8, random_state=seed + i)
        model.fit(data, labels)
        (store / name).mkdir(parents=True, exist_ok=True)
        joblib.dump(model, store / name / "model.joblib")
        expected[name] = [float(v) for v in model.predict(x)]
    return expected


class System(Protocol):
    name: str
    route: peers_http.Route

    async def start(self) -> None: ...
    async def loads(self) -> float: ...
    async def load_step_sums(self) -> dict[str, float]: ...
    def processes(self) -> dict[str, list[psutil.Process]]: ...
    async def stop(self) -> None: ...


def cpu_by_role(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each role's processes."""
    out = {}
    for name, ps in procs.items():
        total = 0.0
        for p in ps:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        out[name] = total
    return out


def rss_by_role(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """Resident memory (MiB) of each role's processes, now."""
    out = {}
    for name, ps in procs.items():
        total = 0
        for p in ps:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        out[name] = round(total / MiB, 1)
    return out


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (every process, ours or not)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return float(sum(t) - idle)


def own_cpu_s() -> float:
    t = psutil.Process(os.getpid()).cpu_times()
    return float(t.user + t.system)


async def run_point(
    system: System,
    s: Any,
    t: peers_trace.PeerTrace,
    names: Sequence[str],
    body: bytes,
    timeout_s: float,
) -> dict[str, Any]:
    """One trace through ``system``: the warm-up, then the timed part with
    loads and CPU read around it."""
    w_offsets, w_picks = t.warm()
    await peers_http.open_loop(s, system.route, body, names, w_picks, w_offsets, timeout_s)
    offsets, picks = t.measured()
    procs = system.processes()
    c0, me0, all0 = cpu_by_role(procs), own_cpu_s(), busy_cpu_s()
    l0, s0 = await system.loads(), await system.load_step_sums()
    r = await peers_http.open_loop(s, system.route, body, names, picks, offsets, timeout_s)
    c1, me1, all1 = cpu_by_role(procs), own_cpu_s(), busy_cpu_s()
    l1, s1 = await system.loads(), await system.load_step_sums()
    cpu = {k: round(c1[k] - c0[k], 2) for k in c0}
    return {
        "shape": t.shape.name,
        "rate_per_s": t.rate_per_s,
        **r.as_dict(),
        "loads": round(l1 - l0),
        "loads_per_100": peers_trace.loads_per_100(l1 - l0, r.sent),
        "per_load": {k: round((s1[k] - s0[k]) / max(1.0, l1 - l0), 2) for k in s1},
        "cpu_s": cpu,
        "client_cpu_s": round(me1 - me0, 2),
        "others_cpu_s": round(max(0.0, (all1 - all0) - sum(cpu.values()) - (me1 - me0)), 2),
    }


async def check(
    system: System, names: Sequence[str], expected: dict[str, list[float]], body: bytes
) -> None:
    """A few models called once (untimed), each answer compared with
    scikit-learn's own prediction."""
    async with peers_http.session() as s:
        for n in names:
            answer = await peers_http.call(s, system.route, n, body, 120.0)
            got = peers_http.output_data(answer)
            if got != expected[n]:
                raise RuntimeError(f"{system.name}: {n} answered {got}, expected {expected[n]}")


def starts(
    traces: Sequence[peers_trace.PeerTrace], carry_over: bool
) -> list[list[peers_trace.PeerTrace]]:
    """The traces each start of a system runs, in order: one each, or all
    on one start (``carry_over``)."""
    return [list(traces)] if carry_over else [[t] for t in traces]


SystemFactory = Callable[[pathlib.Path, etcd_process.EtcdServer], System]


async def run_system(
    make: SystemFactory,
    work: pathlib.Path,
    traces: Sequence[peers_trace.PeerTrace],
    names: Sequence[str],
    expected: dict[str, list[float]],
    body: bytes,
    cfg: Config,
    started: list[psutil.Process],
) -> dict[str, Any]:
    """Run every trace through a system made by ``make``: one start per
    trace, or one for all with ``cfg.carry_over``."""
    t0 = time.monotonic()
    groups = starts(traces, cfg.carry_over)
    points: list[dict[str, Any]] = []
    startups: list[float] = []
    idle: dict[str, float] = {}
    for i, group in enumerate(groups):
        # Short: Ray's socket paths under it must stay within AF_UNIX's 107 bytes.
        async with started_system(make, work / f"s{i}", started) as (system, startup_s):
            startups.append(startup_s)
            idle = idle or rss_by_role(system.processes())
            await check(system, names[:3], expected, body)
            async with peers_http.session() as s:
                for t in group:
                    points.append(await run_point(system, s, t, names, body, cfg.timeout_s))
    return {
        "startup_s": round(max(startups), 1),
        "starts": len(groups),
        "idle_rss_mib": idle,
        "idle_rss_total_mib": round(sum(idle.values()), 1),
        "points": points,
        "took_s": round(time.monotonic() - t0, 1),
    }


@contextlib.asynccontextmanager
async def started_system(
    make: SystemFactory, work: pathlib.Path, started: list[psutil.Process]
) -> AsyncIterator[tuple[System, float]]:
    """A fresh etcd and a system on it, started (with the seconds that
    took), stopped on exit; their processes are added to ``started``."""
    etcd = etcd_process.EtcdServer(work / "etcd", log_path=work / "logs" / "etcd.log", fast=True)
    etcd.start()
    assert etcd.pid is not None
    started.append(psutil.Process(etcd.pid))
    try:
        system = make(work, etcd)
        t0 = time.monotonic()
        try:
            try:
                await system.start()
            finally:
                started += [p for ps in system.processes().values() for p in ps]
            yield system, time.monotonic() - t0
        except Exception as e:
            if isinstance(system, peers_ray.RaySystem):
                e.add_note(system.log_tail()[-1500:])
            raise
        finally:
            await system.stop()
    finally:
        etcd.discard()


def make_system(name: str, cfg: Config, store: pathlib.Path, body: bytes) -> SystemFactory:
    """How to make system ``name`` in a work folder, on an etcd."""
    names = model_names(cfg.models)

    def make(work: pathlib.Path, etcd: etcd_process.EtcdServer) -> System:
        if name == "meshserve":
            assert etcd.pid is not None
            return peers_mesh.MeshSystem(
                work, etcd.endpoint, etcd.pid, store, names, cfg.nodes, cfg.slots, cfg.model_bytes
            )
        if name == "ray":
            return peers_ray.RaySystem(work, store, cfg.nodes, cfg.slots)
        return peers_mesh.FloorSystem(work, etcd.endpoint, store, names, cfg.model_bytes, body)

    return make


def trace_figures(cfg: Config, traces: Sequence[peers_trace.PeerTrace]) -> list[dict[str, Any]]:
    names = model_names(cfg.models)
    return [
        {
            "shape": t.shape.name,
            "alpha": t.shape.alpha,
            "cv": t.shape.cv,
            "rate_per_s": t.rate_per_s,
            "measured": peers_trace.shape_stats(t, cfg.models),
            "references_loads_per_100": peers_trace.references(t, names, cfg.nodes, cfg.slots),
        }
        for t in traces
    ]


async def measure_systems(
    cfg: Config,
    work: pathlib.Path,
    traces: Sequence[peers_trace.PeerTrace],
    x: npt.NDArray[np.float64],
) -> tuple[dict[str, Any], list[psutil.Process]]:
    """Train the models, then run each system in turn through every trace;
    a system that fails is reported, not fatal."""
    names = model_names(cfg.models)
    body = peers_http.v2_body(x)
    store = work / "store"
    expected = train_forests(store, names, x, cfg.seed)
    started: list[psutil.Process] = []
    out: dict[str, Any] = {}
    for name in cfg.systems:
        why = peers_ray.available() if name == "ray" else ""
        if why:
            out[name] = {"error": why}
            continue
        make = make_system(name, cfg, store, body)
        try:
            out[name] = await run_system(
                make, work / name, traces, names, expected, body, cfg, started
            )
        except Exception as e:
            notes = "\n".join(getattr(e, "__notes__", []))
            out[name] = {"error": f"{type(e).__name__}: {e}"[:2000], "log": notes}
    return out, started


async def measure_async(cfg: Config, work: pathlib.Path) -> dict[str, Any]:
    x = peers_mesh.features(1, cfg.features, cfg.seed)
    traces = [
        peers_trace.build(s, r, cfg.models, cfg.warmup_s, cfg.measured_s, cfg.seed)
        for s in cfg.shapes
        for r in cfg.rates
    ]
    systems, started = await measure_systems(cfg, work, traces, x)
    sizes = [p.stat().st_size for p in sorted((work / "store").glob("*/model.joblib"))]
    return {
        "machine": report.machine(),
        "config": {
            **dataclasses.asdict(cfg),
            "shapes": [dataclasses.asdict(s) for s in cfg.shapes],
        },
        "protocol": "V2 JSON over HTTP, one aiohttp open-loop client, for every system",
        "model_file_mib": {"min": round(min(sizes) / MiB, 2), "max": round(max(sizes) / MiB, 2)},
        "traces": trace_figures(cfg, traces),
        "systems": systems,
        "leftover_processes": latency.alive(started),
    }


def parse(argv: Sequence[str], quick: bool) -> Config:
    p = argparse.ArgumentParser(prog="python -m load_tests peers")
    p.add_argument("--systems", default="", help="comma-separated: " + ",".join(SYSTEMS))
    p.add_argument("--rates", default="", help="requests a second, comma-separated")
    p.add_argument("--measured", type=float, default=0.0, help="timed seconds per point")
    p.add_argument(
        "--carry-over",
        action="store_true",
        help="run every point on one start of each system (default: a fresh start per point)",
    )
    args = p.parse_args(list(argv))
    cfg = QUICK if quick else Config()
    if args.systems:
        chosen = tuple(x.strip() for x in args.systems.split(",") if x.strip())
        if not chosen or set(chosen) - set(SYSTEMS):
            p.error(f"--systems: choose among {', '.join(SYSTEMS)}")
        cfg = dataclasses.replace(cfg, systems=chosen)
    if args.rates:
        try:
            rates = tuple(float(x) for x in args.rates.split(",") if x.strip())
        except ValueError:
            p.error(f"--rates: {args.rates!r} is not a list of numbers")
        cfg = dataclasses.replace(cfg, rates=rates)
    if args.measured:
        cfg = dataclasses.replace(cfg, measured_s=args.measured)
    if args.carry_over:
        cfg = dataclasses.replace(cfg, carry_over=True)
    return cfg


def run(quick: bool, argv: Sequence[str] = ()) -> report.ScenarioReport:
    """The scenario; ``argv`` may hold ``--systems``, ``--rates``, ``--measured``
    and ``--carry-over``."""
    f = report.measure("peers", measure_async, parse(argv, quick))
    return report.ScenarioReport(
        scenario="peers",
        title="Peers: meshserve vs Ray Serve multiplexing vs one runtime with every model",
        quick=quick,
        figures=f,
        table=peers_report.table(f),
        notes=peers_report.notes(f),
        plots=peers_report.plots(f),
    )
