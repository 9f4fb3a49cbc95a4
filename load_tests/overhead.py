"""Scenario "overhead": what the mesh adds to a request, next to what any
Python gRPC hop adds, in one run.

Why it exists: issue 7's targets for the hot path are ratios to a yardstick
measured in the same run: the mesh's added p50 at most 1.1 × that of a bare
raw-bytes grpc.aio proxy (``load_tests.bare_proxy``), its throughput at
least 0.95 × the bare proxy's, and, as a stretch, an added p50 of at most
0.25 ms over calling the runtime directly. On a 2-core machine a single
Python hop alone was measured at +0.36 to +0.56 ms p50, so the yardstick
matters more than any absolute figure.

One run starts, under a temporary folder:

* an etcd (``mesh.edges.etcd_process``);
* one mesh node as its own process (``python -m meshserve.cli node``,
  configured through the environment as ``meshserve up`` does), which starts
  its own MLServer; the MLServer's gRPC port is read from the
  ``settings.json`` the node wrote;
* the bare proxy as its own process, pointed at that same MLServer.

It trains one small scikit-learn model (logistic regression on iris, ~1 KB),
registers it as a Predictor and loads it with a first call through the mesh.
Then three paths reach the *same loaded model in the same MLServer*:
``direct`` (concrete model id, MLServer's own port), ``bare`` (the same
bytes through the bare proxy) and ``mesh`` (the Predictor's name, through the
node, as a user calls it). Requests are prebuilt ``ModelInferRequest`` bytes
(a 5×4 FP64 batch) sent by ``load_tests.loadgen`` from this process; every
path's answer is checked against scikit-learn's own prediction first.
Three phases, each taking turns between the paths in rounds so that drift
on a shared machine hits all three alike:

1. **concurrency 1**: sequential calls (closed loop, one caller);
2. **saturation**: a closed loop with many callers for a fixed time: the
   throughput each path can carry;
3. **half rate**: an open loop (Poisson arrivals) at half the *direct*
   saturation throughput, the same schedule for every path: latency under a
   realistic load, queueing included.

CPU cost, measured honestly: the bare proxy, the node and MLServer are
separate processes, so each one's CPU time (user + system, from
``psutil.Process.cpu_times``, the process itself without its children) is
read before and after each path's share of each phase; CPU-µs per request
is that difference over the requests the path answered. Background work
(the node's lease keep-alive, etcd watches) is included in the node's figure;
the same counter read while *another* path runs gives its idle rate, shown
too. The client's own CPU per request is shown as well: on 2 cores the
client, the hop and MLServer share the CPUs, so a costly client would
distort the figures.

``--quick`` is a small run (about 40 s); the default is longer and steadier
(about 2 min).

This module starts the processes and measures the three paths; the table,
notes and plots are :mod:`load_tests.overhead_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from kube import mesh_client
from load_tests import latencies, latency, loadgen, local_node, overhead_report, report, workload
from mesh.edges import etcd_process, ports, processes
from meshserve import samples

PATHS = overhead_report.PATHS
INPUT = "predict"
PREFIX = "overhead-bench"


@dataclasses.dataclass(frozen=True)
class Config:
    warmup: int = 300
    """Untimed calls per path first."""
    sequential_rounds: int = 20
    sequential_block: int = 100
    """Concurrency-1 calls per path: rounds × block."""
    saturation_concurrency: int = 16
    saturation_rounds: int = 3
    saturation_seconds: float = 3.0
    """Per path and round."""
    half_rate_rounds: int = 3
    half_rate_seconds: float = 5.0
    seed: int = 11


SMOKE = Config(
    warmup=10,
    sequential_rounds=2,
    sequential_block=20,
    saturation_concurrency=4,
    saturation_rounds=1,
    saturation_seconds=0.3,
    half_rate_rounds=1,
    half_rate_seconds=0.5,
)
"""A few seconds of load: for a test that the scenario still runs."""

QUICK = Config(
    warmup=100,
    sequential_rounds=4,
    sequential_block=100,
    saturation_rounds=2,
    saturation_seconds=1.5,
    half_rate_rounds=2,
    half_rate_seconds=2.0,
)


# ---------------------------------------------------------------------------
# Measuring


class Meter:
    """CPU seconds of the hop processes, counted per (phase, path)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids  # role -> pid: bare_proxy, mesh_node, mlserver, client
        self.cpu: dict[tuple[str, str, str], float] = {}
        self.wall: dict[tuple[str, str], float] = {}
        self.ok: dict[tuple[str, str], int] = {}

    def snapshot(self) -> dict[str, float]:
        return {role: local_node.cpu_s(pid) for role, pid in self.pids.items()}

    def add(
        self,
        phase: str,
        path: str,
        before: dict[str, float],
        after: dict[str, float],
        wall: float,
        ok: int,
    ) -> None:
        for role in self.pids:
            key = (phase, path, role)
            self.cpu[key] = self.cpu.get(key, 0.0) + after[role] - before[role]
        self.wall[phase, path] = self.wall.get((phase, path), 0.0) + wall
        self.ok[phase, path] = self.ok.get((phase, path), 0) + ok

    def per_request_us(self, phase: str, path: str, role: str) -> float:
        ok = self.ok.get((phase, path), 0)
        return round(1e6 * self.cpu.get((phase, path, role), 0.0) / ok, 1) if ok else 0.0

    def idle_ms_per_s(self, phase: str, role: str, busy_path: str) -> float:
        """CPU ms per second of ``role`` while the other paths ran."""
        cpu = sum(self.cpu.get((phase, p, role), 0.0) for p in PATHS if p != busy_path)
        wall = sum(self.wall.get((phase, p), 0.0) for p in PATHS if p != busy_path)
        return round(1e3 * cpu / wall, 2) if wall else 0.0


async def timed(meter: Meter, phase: str, path: str, run: Any) -> loadgen.RunResult:
    before, t0 = meter.snapshot(), time.monotonic()
    result: loadgen.RunResult = await run
    meter.add(phase, path, before, meter.snapshot(), time.monotonic() - t0, result.ok)
    return result


@dataclasses.dataclass
class PhaseResults:
    latency: dict[str, latencies.Recorder]
    runs: dict[str, list[loadgen.RunResult]]

    @classmethod
    def empty(cls) -> PhaseResults:
        return cls({p: latencies.Recorder() for p in PATHS}, {p: [] for p in PATHS})

    def add(self, path: str, r: loadgen.RunResult) -> None:
        self.latency[path].add(r.latency)
        self.runs[path].append(r)

    def errors(self, path: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs[path]:
            for k, v in r.errors.items():
                out[k] = out.get(k, 0) + v
        return out

    def throughput(self, path: str) -> float:
        ok = sum(r.ok for r in self.runs[path])
        secs = sum(r.duration_s for r in self.runs[path])
        return ok / secs if secs else 0.0


async def phases(
    cfg: Config, targets: dict[str, loadgen.Target], bodies: dict[str, list[bytes]], meter: Meter
) -> tuple[PhaseResults, PhaseResults, PhaseResults, float]:
    for path, t in targets.items():
        await loadgen.closed_loop(t, bodies[path], [0], concurrency=1, count=cfg.warmup)

    seq = PhaseResults.empty()
    for _ in range(cfg.sequential_rounds):
        for path, t in targets.items():
            r = await timed(
                meter,
                "sequential",
                path,
                loadgen.closed_loop(
                    t, bodies[path], [0], concurrency=1, count=cfg.sequential_block
                ),
            )
            seq.add(path, r)

    sat = PhaseResults.empty()
    for _ in range(cfg.saturation_rounds):
        for path, t in targets.items():
            r = await timed(
                meter,
                "saturation",
                path,
                loadgen.closed_loop(
                    t,
                    bodies[path],
                    [0],
                    concurrency=cfg.saturation_concurrency,
                    duration_s=cfg.saturation_seconds,
                ),
            )
            sat.add(path, r)

    rate = 0.5 * sat.throughput("direct")
    half = PhaseResults.empty()
    for i in range(cfg.half_rate_rounds):
        offsets = workload.schedule_for(
            workload.Arrivals(rate), cfg.half_rate_seconds, cfg.seed + i
        )
        picks = np.zeros(len(offsets), dtype=np.int64)
        for path, t in targets.items():
            r = await timed(
                meter, "half_rate", path, loadgen.open_loop(t, bodies[path], picks, offsets)
            )
            half.add(path, r)
    return seq, sat, half, rate


def added(s: dict[str, latencies.Summary], hi: str, lo: str) -> dict[str, int]:
    a, b = s[hi], s[lo]
    return {
        "p50": a.p50_us - b.p50_us,
        "p90": a.p90_us - b.p90_us,
        "p99": a.p99_us - b.p99_us,
    }


def summarize(phase: PhaseResults) -> dict[str, Any]:
    s = {p: phase.latency[p].summary() for p in PATHS}
    return {
        "latency_us": {p: s[p].as_dict() for p in PATHS},
        "errors": {p: phase.errors(p) for p in PATHS},
        "added_us": {
            "bare_over_direct": added(s, "bare", "direct"),
            "mesh_over_direct": added(s, "mesh", "direct"),
            "mesh_over_bare": added(s, "mesh", "bare"),
        },
    }


def bare_proxy(work: pathlib.Path, runtime_ep: str) -> tuple[processes.ChildProcess, int]:
    """The bare proxy's process (not started), pointed at MLServer, and its port."""
    port = ports.free_port()
    proxy = processes.ChildProcess(
        "bare proxy",
        [
            sys.executable,
            "-m",
            "load_tests.bare_proxy",
            "--listen",
            f"127.0.0.1:{port}",
            "--target",
            runtime_ep,
        ],
        work / "logs" / "bare_proxy.log",
        cwd=local_node.REPO_ROOT,
    )
    return proxy, port


async def register(mesh_ep: str, sample: samples.Sample) -> dict[str, list[bytes]]:
    """Register the model as a Predictor; each path's request bytes (the
    concrete model id for MLServer and the bare proxy, the Predictor's name
    through the mesh)."""
    name = "overhead-iris"
    spec = latency.predictor_spec(name, sample)

    def apply() -> None:
        with mesh_client.MeshClient(mesh_ep) as mc:
            mc.apply(spec)

    await asyncio.to_thread(apply)
    x = {INPUT: sample.inputs.astype(np.float64)}
    by_id = loadgen.infer_request(spec.model_id, x, [INPUT])
    return {
        "direct": [by_id],
        "bare": [by_id],
        "mesh": [loadgen.infer_request(name, x, [INPUT])],
    }


async def measure_paths(
    cfg: Config,
    endpoints: dict[str, str],
    bodies: dict[str, list[bytes]],
    sample: samples.Sample,
    meter: Meter,
) -> tuple[float, tuple[PhaseResults, PhaseResults, PhaseResults], float]:
    """The first call through the mesh (it loads the model; ms), every path's
    answer checked, then the three phases and the half rate they used."""
    targets = {p: loadgen.Target(endpoints[p]) for p in PATHS}
    try:
        t1 = time.monotonic()
        local_node.check_answer(
            await targets["mesh"].call(bodies["mesh"][0], 120.0), sample, "mesh"
        )
        first_call_ms = (time.monotonic() - t1) * 1000
        for p in ("direct", "bare"):
            local_node.check_answer(await targets[p].call(bodies[p][0]), sample, p)
        seq, sat, half, rate = await phases(cfg, targets, bodies, meter)
    finally:
        for t in targets.values():
            await t.close()
    return first_call_ms, (seq, sat, half), rate


async def measure_async(cfg: Config, work: pathlib.Path) -> dict[str, Any]:
    sample = samples.train_iris_logistic(work / "store" / "iris")
    etcd = etcd_process.EtcdServer(work / "etcd", log_path=work / "logs" / "etcd.log", fast=True)
    node = local_node.NodeProcess(work, etcd.endpoint, PREFIX, "overhead-node", work / "store")
    proxy: processes.ChildProcess | None = None
    started: list[psutil.Process] = []
    t0 = time.monotonic()
    etcd.start()
    try:
        await node.start()
        startup_s = time.monotonic() - t0
        mlserver_proc = node.runtime_process()
        assert etcd.pid is not None
        proxy, proxy_port = bare_proxy(work, node.runtime_endpoint)
        proxy.start()
        await asyncio.to_thread(proxy.wait_for_port, "127.0.0.1", proxy_port, 30.0)
        assert proxy.pid is not None
        started = [psutil.Process(etcd.pid), *node.tree(), psutil.Process(proxy.pid)]
        bodies = await register(node.endpoint, sample)
        endpoints = {
            "direct": node.runtime_endpoint,
            "bare": f"127.0.0.1:{proxy_port}",
            "mesh": node.endpoint,
        }
        meter = Meter(
            {
                "bare_proxy": proxy.pid,
                "mesh_node": node.pid,
                "mlserver": mlserver_proc.pid,
                "client": os.getpid(),
            }
        )
        first_call_ms, results, rate = await measure_paths(cfg, endpoints, bodies, sample, meter)
    finally:
        if proxy is not None:
            await asyncio.to_thread(proxy.stop)
        await asyncio.to_thread(node.stop)
        etcd.stop()
    left = latency.alive(started)
    model = {
        "name": "iris logistic regression",
        "type": sample.model_type,
        "file_bytes": sample.model_file.stat().st_size,
        "batch": list(sample.inputs.shape),
        "request_bytes": {p: len(bodies[p][0]) for p in PATHS},
    }
    return assemble(cfg, model, startup_s, first_call_ms, results, rate, meter, left)


def cpu_figures(meter: Meter, phase: str) -> dict[str, Any]:
    """CPU-µs per request of each process in ``phase``, and the hops' idle rate."""
    return {
        "bare_proxy": meter.per_request_us(phase, "bare", "bare_proxy"),
        "mesh_node": meter.per_request_us(phase, "mesh", "mesh_node"),
        "mlserver": {p: meter.per_request_us(phase, p, "mlserver") for p in PATHS},
        "client": {p: meter.per_request_us(phase, p, "client") for p in PATHS},
        "idle_ms_per_s": {
            "bare_proxy": meter.idle_ms_per_s(phase, "bare_proxy", "bare"),
            "mesh_node": meter.idle_ms_per_s(phase, "mesh_node", "mesh"),
        },
    }


def assemble(
    cfg: Config,
    model: dict[str, Any],
    startup_s: float,
    first_call_ms: float,
    results: tuple[PhaseResults, PhaseResults, PhaseResults],
    rate: float,
    meter: Meter,
    left: list[str],
) -> dict[str, Any]:
    """The scenario's figures from what was measured (pure)."""
    seq, sat, half = results
    throughput = {p: round(sat.throughput(p), 1) for p in PATHS}
    seq_f, half_f = summarize(seq), summarize(half)
    sat_f = summarize(sat)
    figures: dict[str, Any] = {
        "machine": report.machine(),
        "model": model,
        "config": dataclasses.asdict(cfg),
        "startup_s": round(startup_s, 2),
        "first_call_ms": round(first_call_ms, 1),
        "sequential": {"calls_per_path": cfg.sequential_rounds * cfg.sequential_block, **seq_f},
        "saturation": {
            "concurrency": cfg.saturation_concurrency,
            "seconds_per_path": cfg.saturation_rounds * cfg.saturation_seconds,
            "throughput_per_s": throughput,
            "throughput_ratio": {
                "bare_vs_direct": _ratio(throughput["bare"], throughput["direct"]),
                "mesh_vs_direct": _ratio(throughput["mesh"], throughput["direct"]),
                "mesh_vs_bare": _ratio(throughput["mesh"], throughput["bare"]),
            },
            **sat_f,
        },
        "half_rate": {
            "rate_per_s": round(rate, 1),
            "arrivals": "Poisson",
            "seconds_per_path": cfg.half_rate_rounds * cfg.half_rate_seconds,
            **half_f,
            "send_lag_p99_us": {
                p: max((r.send_lag.summary().p99_us for r in half.runs[p]), default=0)
                for p in PATHS
            },
        },
        "cpu_us_per_request": {
            "sequential": cpu_figures(meter, "sequential"),
            "saturation": cpu_figures(meter, "saturation"),
            "half_rate": cpu_figures(meter, "half_rate"),
        },
        "leftover_processes": left,
    }
    figures["targets"] = targets_met(figures)
    figures["cdf"] = {
        "sequential": {p: seq.latency[p].cdf(120) for p in PATHS},
        "half_rate": {p: half.latency[p].cdf(120) for p in PATHS},
    }
    return figures


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def targets_met(f: dict[str, Any]) -> dict[str, Any]:
    seq = f["sequential"]["added_us"]
    bare_p50 = seq["bare_over_direct"]["p50"]
    mesh_p50 = seq["mesh_over_direct"]["p50"]
    tput = f["saturation"]["throughput_ratio"]["mesh_vs_bare"]
    return {
        "mesh_added_p50_le_1.1x_bare": {
            "met": mesh_p50 <= 1.1 * bare_p50,
            "mesh_added_p50_us": mesh_p50,
            "bare_added_p50_us": bare_p50,
            "ratio": _ratio(mesh_p50, bare_p50),
        },
        "mesh_throughput_ge_0.95x_bare": {"met": tput >= 0.95, "ratio": tput},
        "stretch_mesh_added_p50_le_250us": {"met": mesh_p50 <= 250, "mesh_added_p50_us": mesh_p50},
    }


def run(quick: bool, argv: Sequence[str] = ()) -> report.ScenarioReport:
    """The scenario; ``argv`` may hold ``--concurrency N`` (callers at
    saturation) and ``--smoke`` (a few seconds of load, for tests)."""
    p = argparse.ArgumentParser(prog="python -m load_tests overhead")
    p.add_argument("--concurrency", type=int, default=0)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(list(argv))
    cfg = SMOKE if args.smoke else QUICK if quick else Config()
    if args.concurrency:
        cfg = dataclasses.replace(cfg, saturation_concurrency=args.concurrency)
    f = report.measure("overhead", measure_async, cfg)
    return report.ScenarioReport(
        scenario="overhead",
        title="Overhead: direct vs a bare Python hop vs the mesh",
        quick=quick,
        figures={k: v for k, v in f.items() if k != "cdf"},
        table=overhead_report.table(f),
        notes=overhead_report.notes(f),
        plots=overhead_report.plots(f),
    )
