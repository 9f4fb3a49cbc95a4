"""What one hop between mesh nodes costs: a model served by its own node vs
the same model reached through another node that forwards the request.

Why it exists: in a mesh of several nodes a request may land on a node that
does not hold the model; that node forwards the raw request to the peer that
does (``router/dataplane.py``, marked ``mm-balanced``), and the peer serves
it. ``load_tests.latency`` prices the mesh in front of one MLServer; this
benchmark prices the extra hop, measured in the same run, on the same
machine, against the same loaded model, so that the difference means
something even where absolute latencies do not.

One run starts a local mesh of two nodes: one etcd (``mesh.edges.etcd_process``),
and nodes A and B (``meshserve.node.Node``), each with its own MLServer, each
on an event loop in a thread of its own in this process (as the integration
tests run them), both under one etcd prefix. It trains one small
scikit-learn model (logistic regression on iris, ~1 KB), registers it as a
Predictor and sends one request through A, which loads it on A (A is given
more free capacity, so placement picks it); it then checks that A holds the
model and B does not. Scale-up copies and the hand-over at shutdown are
turned off, so that B never gets a copy of its own and every call through B
is forwarded. Then three paths are timed with the same client
(``tritonclient.grpc``), the same prebuilt request (one 5×4 FP64 batch,
input and output ``predict``) and the same loaded model in A's MLServer:

1. **direct**: straight to A's MLServer (its V2 gRPC endpoint), called with
   the concrete model id the mesh loaded;
2. **via A**: through node A by the Predictor's name, served from A's own
   copy (one hop: client → A → MLServer);
3. **via B**: through node B by the Predictor's name, forwarded to A (two
   hops: client → B → A → MLServer); the run fails unless B's
   ``plane.forwarded`` grew by exactly the number of calls sent to B, and
   A's stayed at 0.

Each path gets ``--warmup`` untimed calls, then ``--requests`` sequential
calls (concurrency 1); the three paths take turns in blocks of 100 so that
drift on the machine hits all alike.

How to read it: p50, p90, p99 and mean per path, in µs. "A over direct" is
what a node adds in front of its runtime (the figure of
``load_tests.latency``, measured again here); "B over A" is the cost of the
forwarding hop: what a request pays for landing on the wrong node. Both are
differences at the same percentile. The last line of the output is one JSON
object with every figure, for comparing runs (``--json`` prints only that
line). Both nodes and the client share this process's CPUs and GIL, so on a
small machine the hop's price includes the second node's Python work on the
same cores: quote the CPU count (printed) with any figure.

Run: ``.venv/bin/python -m load_tests.forwarding [--requests N]``. Everything
runs under a temporary folder and is stopped at the end; the run fails if an
etcd or MLServer it started (checked by pid) is still alive afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import psutil
from tritonclient import grpc as triton

from kube import mesh_client
from load_tests import latency
from mesh.core import placement, records, settings
from mesh.edges import etcd_process
from meshserve import node, samples
from runtime_adapters import mlserver

PREFIX = "fwd-bench"
"""The etcd prefix both nodes share (the etcd is the run's own)."""
NODE_A, NODE_B = "fwd-a", "fwd-b"
GiB = 1024**3
PATHS = ("direct", "via_a", "via_b")
MIRROR_TIMEOUT_S = 10.0

_T = TypeVar("_T")


class NodeThread:
    """A :class:`meshserve.node.Node` on an event loop in a thread of its own.

    The node starts MLServer from the loop's thread, which outlives it: a
    child dies with the thread that started it (``mesh.edges.processes``)."""

    def __init__(self, config: settings.Settings) -> None:
        self.config = config
        self.node = node.Node(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def submit(self, coro: Coroutine[Any, Any, _T]) -> Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def begin_start(self) -> Future[None]:
        """Start the loop's thread and, on it, the node (not waited for)."""
        self._thread.start()
        return self.submit(self.node.start())

    def stop(self) -> None:
        try:
            if self._thread.is_alive():
                self.submit(self.node.stop()).result(60)
        finally:
            if self._thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(10)
            self.loop.close()

    @property
    def endpoint(self) -> str:
        """The node's gRPC endpoint (``host:port``)."""
        return f"127.0.0.1:{self.node.port}"

    @property
    def runtime_pid(self) -> int | None:
        rt = self.node.runtime
        return rt.pid if isinstance(rt, mlserver.MLServerAdapter) else None


def node_config(
    etcd_endpoint: str, work: pathlib.Path, instance_id: str, capacity_bytes: int
) -> settings.Settings:
    """A node of the run's two-node mesh: free port, own folders, shared
    prefix; no scale-up copies (``scale_up_rpm=0``) and no hand-over at
    shutdown, so that the model stays on A alone."""
    return settings.Settings(
        kv=settings.KVSettings(endpoints=(etcd_endpoint,), prefix=PREFIX),
        service=settings.ServiceSettings(
            host="127.0.0.1", grpc_port=0, rest_port=-1, metrics_port=-1, probe_port=-1
        ),
        cache=settings.CacheSettings(capacity_bytes=capacity_bytes),
        node=settings.NodeSettings(
            instance_id=instance_id,
            data_dir=work / instance_id,
            models_root=work / "store",
        ),
        runtime=settings.RuntimeSettings(venv=latency.REPO_ROOT / ".runtimes"),
        scaling=settings.ScalingSettings(scale_up_rpm=0, handover_window_seconds=0),
    )


class TwoNodes:
    """One etcd (started from the main thread) and nodes A and B, started in
    parallel; :meth:`stop` stops all of it."""

    def __init__(self, work: pathlib.Path) -> None:
        self.etcd = etcd_process.EtcdServer(
            work / "etcd", log_path=work / "logs" / "etcd.log", fast=True
        )
        ep = self.etcd.endpoint
        # More free capacity on A: placement loads a new model on A.
        self.a = NodeThread(node_config(ep, work, NODE_A, 2 * GiB))
        self.b = NodeThread(node_config(ep, work, NODE_B, 1 * GiB))

    def start(self) -> None:
        self.etcd.start()
        started = [n.begin_start() for n in (self.a, self.b)]
        try:
            for f in started:
                f.result(120)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> list[int]:
        """etcd's and both MLServers' pids."""
        found = [self.etcd.pid, self.a.runtime_pid, self.b.runtime_pid]
        return [p for p in found if p is not None]

    def stop(self) -> None:
        try:
            stops = [threading.Thread(target=n.stop) for n in (self.a, self.b)]
            for t in stops:
                t.start()
            for t in stops:
                t.join(90)
        finally:
            self.etcd.stop()


def process_trees(pids: Sequence[int]) -> list[psutil.Process]:
    """The processes behind ``pids`` and their descendants, as of now."""
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return procs


def wait_for_copy(b: NodeThread, model_id: str, holder: str) -> None:
    """Wait until B's mirror of etcd shows ``holder``'s ready copy, so that
    B's first call is routed to it, not loaded on B."""
    deadline = time.monotonic() + MIRROR_TIMEOUT_S
    while time.monotonic() < deadline:
        rec = b.node.table.model(model_id)
        instances = b.node.table.instances()
        if rec is not None and holder in placement.live_copies(
            rec, instances, records.CopyState.LOADED
        ):
            return
        time.sleep(0.01)
    raise RuntimeError(f"node B's mirror does not show {holder}'s copy of {model_id}")


def holders(mesh: TwoNodes, model_id: str) -> dict[str, bool]:
    return {
        NODE_A: mesh.a.node.manager.holds(model_id),
        NODE_B: mesh.b.node.manager.holds(model_id),
    }


def load_on_a(
    mesh: TwoNodes,
    call: latency.Call,
    via_a: triton.InferenceServerClient,
    name: str,
    model_id: str,
) -> tuple[int, dict[str, bool]]:
    """ns of the first call through A (which loads the model on A), and
    where the model is then; waits until B's mirror shows A's copy."""
    t1 = time.perf_counter_ns()
    call.check(call(via_a, name), "first call through A")
    first_call_ns = time.perf_counter_ns() - t1
    placed = holders(mesh, model_id)
    if placed != {NODE_A: True, NODE_B: False}:
        raise RuntimeError(f"expected the model on A only, got {placed}")
    wait_for_copy(mesh.b, model_id, NODE_A)
    return first_call_ns, placed


def time_paths(
    mesh: TwoNodes,
    call: latency.Call,
    rt: triton.InferenceServerClient,
    via_a: triton.InferenceServerClient,
    via_b: triton.InferenceServerClient,
    model_id: str,
    name: str,
    args: argparse.Namespace,
) -> tuple[dict[str, latency.Ns], dict[str, int]]:
    """ns of the calls on each of the three paths, and how many calls each
    node forwarded meanwhile (with the number B should have)."""
    fwd_a0, fwd_b0 = mesh.a.node.plane.forwarded, mesh.b.node.plane.forwarded
    call.check(call(rt, model_id), "direct call")
    call.check(call(via_a, name), "call through A")
    call.check(call(via_b, name), "call through B")
    times = latency.warm(
        {
            "direct": lambda: call(rt, model_id),
            "via_a": lambda: call(via_a, name),
            "via_b": lambda: call(via_b, name),
        },
        args.requests,
        args.warmup,
    )
    b_calls = 1 + args.warmup + args.requests
    forwarded = {
        "a": mesh.a.node.plane.forwarded - fwd_a0,
        "b": mesh.b.node.plane.forwarded - fwd_b0,
        "b_expected": b_calls,
    }
    return times, forwarded


def check_forwarding(
    forwarded: dict[str, int], placed: dict[str, bool], placed_after: dict[str, bool]
) -> None:
    """Raise unless B forwarded every call it got, A none, and the model
    stayed where it was."""
    b_calls = forwarded["b_expected"]
    if forwarded["b"] != b_calls or forwarded["a"] != 0:
        raise RuntimeError(
            f"B forwarded {forwarded['b']} of {b_calls} calls, A forwarded {forwarded['a']} "
            "(expected all and none)"
        )
    if placed_after != placed:
        raise RuntimeError(f"the model moved while measuring: {placed} -> {placed_after}")


def added_us(us: dict[str, dict[str, float]], hi: str, lo: str) -> dict[str, float]:
    """Path ``hi``'s µs minus path ``lo``'s, at each percentile (and mean)."""
    return {k: round(us[hi][k] - us[lo][k], 1) for k in us[lo]}


def measure(args: argparse.Namespace, work: pathlib.Path) -> dict[str, Any]:
    sample = samples.train_iris_logistic(work / "store" / "iris-logistic")
    call = latency.Call(sample)
    mesh = TwoNodes(work)
    t0 = time.perf_counter_ns()
    mesh.start()
    startup_ns = time.perf_counter_ns() - t0
    started = process_trees(mesh.pids())
    name = "fwd-iris"
    try:
        with (
            mesh_client.MeshClient(mesh.a.endpoint) as mc,
            triton.InferenceServerClient(mesh.a.node.runtime.grpc_target) as rt,
            triton.InferenceServerClient(mesh.a.endpoint) as via_a,
            triton.InferenceServerClient(mesh.b.endpoint) as via_b,
        ):
            model_id = latency.register(mc, name, sample)
            first_call_ns, placed = load_on_a(mesh, call, via_a, name, model_id)
            times, forwarded = time_paths(mesh, call, rt, via_a, via_b, model_id, name, args)
            placed_after = holders(mesh, model_id)
    finally:
        mesh.stop()
    left = latency.alive(started)
    check_forwarding(forwarded, placed, placed_after)

    us = {p: latency.percentiles_us(times[p]) for p in PATHS}
    return {
        "benchmark": "load_tests.forwarding",
        "machine": latency.machine(),
        "model": {
            "name": "iris logistic regression",
            "type": sample.model_type,
            "model_id": model_id,
            "file_bytes": sample.model_file.stat().st_size,
            "batch": list(sample.inputs.shape),
            "dtype": "FP64",
        },
        "startup_ms": round(startup_ns / 1e6, 1),
        "first_call_ms": round(first_call_ns / 1e6, 1),
        "placement": placed,
        "requests": args.requests,
        "warmup": args.warmup,
        "block": latency.BLOCK,
        "concurrency": 1,
        "latency_us": us,
        "added_us": {
            "a_over_direct": added_us(us, "via_a", "direct"),
            "b_over_a": added_us(us, "via_b", "via_a"),
        },
        "forwarded": forwarded,
        "started_pids": sorted(p.pid for p in started),
        "leftover_processes": left,
    }


def table(r: dict[str, Any]) -> str:
    m, us, add = r["model"], r["latency_us"], r["added_us"]
    cols = list(us["direct"])
    rows = [
        f"meshserve forwarding: one hop between nodes, one run "
        f"({r['machine']['cpus']} CPUs, Python {r['machine']['python']})",
        f"model: {m['name']} ({m['type']}, {m['file_bytes']} B file), "
        f"batch {m['batch'][0]}x{m['batch'][1]} {m['dtype']}, on node A only",
        "",
        f"{'start of etcd + nodes A and B with their MLServers (parallel)':<64}"
        f"{r['startup_ms']:>8.0f} ms",
        f"{'first call through A (loads the model on A)':<64}{r['first_call_ms']:>8.0f} ms",
        "",
        f"warm ModelInfer, concurrency 1: {r['requests']} calls per path after "
        f"{r['warmup']}, blocks of {r['block']} (µs)",
        f"  {'':<32}" + "".join(f"{k:>9}" for k in cols),
    ]
    for label, values, fmt in (
        ("(1) direct: A's MLServer", us["direct"], "{:>9.0f}"),
        ("(2) via A: served by A", us["via_a"], "{:>9.0f}"),
        ("(3) via B: forwarded to A", us["via_b"], "{:>9.0f}"),
        ("added by node A: (2) - (1)", add["a_over_direct"], "{:>+9.0f}"),
        ("added by the hop: (3) - (2)", add["b_over_a"], "{:>+9.0f}"),
    ):
        rows.append(f"  {label:<32}" + "".join(fmt.format(values[k]) for k in cols))
    f = r["forwarded"]
    rows += [
        "",
        f"forwarded by B: {f['b']} (calls sent to B: {f['b_expected']}); by A: {f['a']}",
        "leftover processes: " + (", ".join(r["leftover_processes"]) or "none"),
    ]
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.forwarding",
        description="Latency of a request forwarded between two mesh nodes vs served locally.",
    )
    p.add_argument("--requests", type=int, default=1000, help="timed calls per path (1000)")
    p.add_argument("--warmup", type=int, default=100, help="untimed calls per path first (100)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    if args.requests < 1 or args.warmup < 0:
        p.error("--requests must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return latency.run(parse_args(argv), "meshserve-fwd-bench-", measure, table)


if __name__ == "__main__":
    sys.exit(main())
