"""What the mesh costs a request: the mesh vs the same MLServer called directly.

Why it exists: a serving mesh sits in front of every inference call, so its
price has to be known as a number, measured on the machine at hand and as a
ratio to the runtime it fronts (absolute latencies vary a lot between
machines and runs; the ratio from one run, same process, same model, varies
much less). Tests never assert on time; this benchmark is where speed is
looked at.

One run starts a local mesh of its own: an etcd (``mesh.edges.etcd_process``) and
one mesh node (``meshserve.node.Node``) on an event loop in a thread of this
process, which starts its own MLServer. (The node runs in-process, unlike
the node processes of ``meshserve up``, so that its runtime's endpoint is at
hand for the direct side: :mod:`load_tests.in_process_mesh`.) It trains
one small scikit-learn model (logistic regression on iris, a ~1 KB file)
and measures three things, each time the same model in the same MLServer
process, once through the mesh's endpoint and once straight to MLServer's
own V2 gRPC endpoint, with the same client (``tritonclient.grpc``, one 5×4
FP64 batch, input and output ``predict``):

1. **start**: etcd started, then ``Node.start()`` until it returns, i.e. etcd,
   the node and MLServer all answer (about what ``meshserve up`` costs before
   the first request).
2. **cold path**, in ms: the first ModelInfer of a model that is not loaded.
   *mesh*: a registered Predictor called by name; the node resolves it, claims
   the load in etcd, copies the files into the runtime's repository, writes
   ``model-settings.json``, has MLServer load it, then forwards the request.
   *direct*: what a user of a bare MLServer does with the model folder already
   in place: ``RepositoryModelLoad`` and then ModelInfer. Both are repeated
   (``--cold-repeats``, alternating, a new model name each time) and the
   median is the figure. The very first sklearn load in a fresh MLServer also
   imports scikit-learn into it; that one is done before and shown on its own
   line, so it weighs on neither side.
3. **warm latency**, in µs: ``--requests`` sequential ModelInfer calls
   (concurrency 1) per side after ``--warmup`` calls, in alternating blocks so
   that drift on the machine hits both sides alike. The mesh side calls the
   Predictor's name, the direct side calls MLServer with the concrete model
   id the mesh loaded: the very same loaded model. p50, p90, p99 and mean per
   side, then the mesh's added µs and the mesh/direct ratio.

How to read it: the table is for people; the last line of the output is one
JSON object with every figure (``--json`` prints only that line), for
comparing runs. "added" is mesh minus direct at the same percentile; "ratio"
is mesh / direct. The mesh node runs in a thread of this process (as in the
integration tests), so it shares the CPU, and the GIL, with the client: on a
small machine that is part of what the mesh side pays. Record the CPU count
(printed) with any figure you quote.

Run: ``make bench`` or ``.venv/bin/python -m load_tests.latency [--requests N]``.
Everything runs under a temporary folder and is stopped at the end; the run
fails if an etcd or MLServer it started is still alive afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil
from tritonclient import grpc as triton

from kube import mesh_client, predictor
from load_tests.in_process_mesh import MeshThread
from meshserve import samples
from runtime_adapters import mlserver

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
INPUT_NAME = "predict"
OUTPUT_NAME = "predict"
BLOCK = 100
"""Calls per block in the warm phase; the two sides alternate block by block."""
CALL_TIMEOUT_S = 120.0
"""Deadline of every call (a cold call includes a model load)."""
PERCENTILES = (50, 90, 99)

Ns = npt.NDArray[np.int64]


class Call:
    """A prebuilt ModelInfer request (built once, so that both sides time the
    call, not the building of the request)."""

    def __init__(self, sample: samples.Sample) -> None:
        self.sample = sample
        x = sample.inputs.astype(np.float64)
        inp = triton.InferInput(INPUT_NAME, list(x.shape), "FP64")
        inp.set_data_from_numpy(x)
        self.inputs = [inp]
        self.outputs = [triton.InferRequestedOutput(OUTPUT_NAME)]

    def __call__(self, c: triton.InferenceServerClient, model: str) -> npt.NDArray[Any]:
        result = c.infer(model, self.inputs, outputs=self.outputs, client_timeout=CALL_TIMEOUT_S)
        out: npt.NDArray[Any] = result.as_numpy(OUTPUT_NAME)
        return out

    def check(self, got: npt.NDArray[Any], where: str) -> None:
        """Raise unless ``got`` is what scikit-learn itself predicts."""
        want = self.sample.expected.astype(np.float64)
        if not np.allclose(got.reshape(-1).astype(np.float64), want.reshape(-1)):
            raise RuntimeError(f"{where}: wrong answer {got.reshape(-1)}, expected {want}")


def _ms(ns: int) -> float:
    return ns / 1e6


def place_model_folder(sample: samples.Sample, model_dir: pathlib.Path, name: str) -> None:
    """Put the model's folder into MLServer's repository, ready to load: its
    files and the ``model-settings.json`` the mesh would write (untimed)."""
    folder = model_dir / name
    shutil.copytree(sample.folder, folder)
    mlserver.prepare_model_folder(name, sample.model_type, folder)


def cold_direct(
    rt: triton.InferenceServerClient, call: Call, model_dir: pathlib.Path, name: str
) -> int:
    """ns of RepositoryModelLoad + first ModelInfer, straight to MLServer."""
    place_model_folder(call.sample, model_dir, name)
    t0 = time.perf_counter_ns()
    rt.load_model(name, client_timeout=CALL_TIMEOUT_S)
    got = call(rt, name)
    took = time.perf_counter_ns() - t0
    call.check(got, f"direct cold call of {name}")
    return took


def predictor_spec(name: str, sample: samples.Sample) -> predictor.PredictorSpec:
    return predictor.parse(
        {
            "apiVersion": predictor.API_VERSION,
            "kind": predictor.KIND,
            "metadata": {"name": name},
            "spec": {
                "modelType": {"name": sample.model_type},
                "storage": {"path": str(sample.folder)},
            },
        }
    )


def register(mc: mesh_client.MeshClient, name: str, sample: samples.Sample) -> str:
    """Register a Predictor (not loaded); return its concrete model id."""
    spec = predictor_spec(name, sample)
    mc.apply(spec)
    return spec.model_id


def cold_mesh(mesh_c: triton.InferenceServerClient, call: Call, name: str) -> int:
    """ns of the first ModelInfer of a registered, not loaded Predictor."""
    t0 = time.perf_counter_ns()
    got = call(mesh_c, name)
    took = time.perf_counter_ns() - t0
    call.check(got, f"mesh cold call of {name}")
    return took


def warm(
    sides: dict[str, Callable[[], object]], requests: int, warmup: int, block: int = BLOCK
) -> dict[str, Ns]:
    """ns of ``requests`` sequential calls per side, after ``warmup`` calls
    per side; the sides take turns, ``block`` calls at a time."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    times = {name: np.empty(requests, dtype=np.int64) for name in sides}
    clock = time.perf_counter_ns
    for start in range(0, requests, block):
        stop = min(requests, start + block)
        for name, fn in sides.items():
            out = times[name]
            for i in range(start, stop):
                t0 = clock()
                fn()
                out[i] = clock() - t0
    return times


def percentiles_us(ns: Ns) -> dict[str, float]:
    us = ns.astype(np.float64) / 1e3
    values = np.percentile(us, PERCENTILES)
    summary = {f"p{p}": round(float(v), 1) for p, v in zip(PERCENTILES, values, strict=True)}
    summary["mean"] = round(float(us.mean()), 1)
    return summary


def spread_ms(ns: Sequence[int]) -> dict[str, Any]:
    ms = [round(_ms(t), 2) for t in ns]
    return {
        "median": round(float(np.median(ms)), 2),
        "min": min(ms),
        "max": max(ms),
        "all": ms,
    }


def alive(procs: Sequence[psutil.Process]) -> list[str]:
    """The ones of ``procs`` still running (zombies count as gone)."""
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.cmdline()[:3])}")
        except psutil.NoSuchProcess:
            pass
    return left


def machine() -> dict[str, Any]:
    """The CPU count, platform and Python of this run, for the figures."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def cold_pairs(
    mc: mesh_client.MeshClient,
    mesh_c: triton.InferenceServerClient,
    rt: triton.InferenceServerClient,
    call: Call,
    model_dir: pathlib.Path,
    repeats: int,
) -> tuple[list[int], list[int], str, str]:
    """ns of ``repeats`` cold calls per side, alternating (direct, then a
    newly registered Predictor through the mesh); with the last Predictor's
    name and model id, the model the warm phase calls."""
    direct_cold: list[int] = []
    mesh_cold: list[int] = []
    warm_name, warm_id = "", ""
    for i in range(repeats):
        direct_cold.append(cold_direct(rt, call, model_dir, f"bench-direct-{i}"))
        name = f"bench-mesh-{i}"
        model_id = register(mc, name, call.sample)
        mesh_cold.append(cold_mesh(mesh_c, call, name))
        warm_name, warm_id = name, model_id
    return direct_cold, mesh_cold, warm_name, warm_id


def time_both_sides(
    mesh: MeshThread, call: Call, args: argparse.Namespace
) -> tuple[int, list[int], list[int], dict[str, Ns]]:
    """ns of the first sklearn load, of the cold calls per side and of the
    warm calls per side, through the mesh and straight to its MLServer."""
    with (
        mesh_client.MeshClient(mesh.endpoint) as mc,
        triton.InferenceServerClient(mesh.endpoint) as mesh_c,
        triton.InferenceServerClient(mesh.runtime_endpoint) as rt,
    ):
        if not mesh_c.is_server_ready(client_timeout=10):
            raise RuntimeError("the mesh says it is not ready after start")

        # scikit-learn's import into MLServer: once, on neither side.
        first_load_ns = cold_direct(rt, call, mesh.model_dir, "bench-first")

        direct_cold, mesh_cold, warm_name, warm_id = cold_pairs(
            mc, mesh_c, rt, call, mesh.model_dir, args.cold_repeats
        )

        # Warm: the same loaded model (the mesh's copy of the last Predictor).
        call.check(call(rt, warm_id), "direct warm call")
        call.check(call(mesh_c, warm_name), "mesh warm call")
        times = warm(
            {
                "direct": lambda: call(rt, warm_id),
                "mesh": lambda: call(mesh_c, warm_name),
            },
            args.requests,
            args.warmup,
        )
    return first_load_ns, direct_cold, mesh_cold, times


def model_figures(sample: samples.Sample) -> dict[str, Any]:
    """What the benchmark's model is: its kind, file size and batch."""
    return {
        "name": "iris logistic regression",
        "type": sample.model_type,
        "file_bytes": sample.model_file.stat().st_size,
        "batch": list(sample.inputs.shape),
        "dtype": "FP64",
    }


def cold_figures(
    repeats: int, direct_cold: Sequence[int], mesh_cold: Sequence[int]
) -> dict[str, Any]:
    """The cold calls' spread per side, and what the mesh added (medians)."""
    direct_ms, mesh_ms = spread_ms(direct_cold), spread_ms(mesh_cold)
    return {
        "repeats": repeats,
        "direct_ms": direct_ms,
        "mesh_ms": mesh_ms,
        "added_ms": round(mesh_ms["median"] - direct_ms["median"], 2),
        "ratio": round(mesh_ms["median"] / direct_ms["median"], 2),
    }


def warm_figures(args: argparse.Namespace, times: dict[str, Ns]) -> dict[str, Any]:
    """The warm calls' percentiles per side, and what the mesh added."""
    direct_us, mesh_us = percentiles_us(times["direct"]), percentiles_us(times["mesh"])
    return {
        "requests": args.requests,
        "warmup": args.warmup,
        "concurrency": 1,
        "direct_us": direct_us,
        "mesh_us": mesh_us,
        "added_us": {k: round(mesh_us[k] - direct_us[k], 1) for k in direct_us},
        "ratio": {k: round(mesh_us[k] / direct_us[k], 2) for k in direct_us},
    }


def measure(args: argparse.Namespace, work: pathlib.Path) -> dict[str, Any]:
    sample = samples.train_iris_logistic(work / "store" / "iris-logistic")
    call = Call(sample)
    mesh = MeshThread(work / "data", work / "store", REPO_ROOT / ".runtimes")
    t0 = time.perf_counter_ns()
    mesh.start()
    startup_ns = time.perf_counter_ns() - t0
    children = psutil.Process().children(recursive=True)  # etcd, MLServer
    try:
        first_load_ns, direct_cold, mesh_cold, times = time_both_sides(mesh, call, args)
    finally:
        mesh.stop()
    left = alive(children)

    return {
        "benchmark": "load_tests.latency",
        "machine": machine(),
        "model": model_figures(sample),
        "startup_ms": round(_ms(startup_ns), 1),
        "first_sklearn_load_ms": round(_ms(first_load_ns), 1),
        "cold": cold_figures(args.cold_repeats, direct_cold, mesh_cold),
        "warm": warm_figures(args, times),
        "leftover_processes": left,
    }


def table(r: dict[str, Any]) -> str:
    m, cold, w = r["model"], r["cold"], r["warm"]
    d, ms = cold["direct_ms"], cold["mesh_ms"]
    rows = [
        f"meshserve latency: the mesh vs MLServer direct, one run "
        f"({r['machine']['cpus']} CPUs, Python {r['machine']['python']})",
        f"model: {m['name']} ({m['type']}, {m['file_bytes']} B file), "
        f"batch {m['batch'][0]}x{m['batch'][1]} {m['dtype']}",
        "",
        f"{'start of a local mesh (etcd + node + MLServer, to ready)':<62}"
        f"{r['startup_ms']:>9.0f} ms",
        f"{'first sklearn load in the fresh MLServer (imports sklearn)':<62}"
        f"{r['first_sklearn_load_ms']:>9.0f} ms",
        "",
        f"cold path: first ModelInfer of a model not loaded (median of {cold['repeats']}, min-max)",
        f"  {'direct: RepositoryModelLoad + ModelInfer, folder in place':<60}"
        f"{d['median']:>9.1f} ms  [{d['min']:.1f}-{d['max']:.1f}]",
        f"  {'mesh:   ModelInfer on a Predictor (copy + load + forward)':<60}"
        f"{ms['median']:>9.1f} ms  [{ms['min']:.1f}-{ms['max']:.1f}]",
        f"  {'added by the mesh':<60}{cold['added_ms']:>+9.1f} ms  (x{cold['ratio']:.2f})",
        "",
        f"warm ModelInfer, concurrency 1: {w['requests']} calls per side after {w['warmup']} (µs)",
        f"  {'':<8}" + "".join(f"{k:>10}" for k in w["direct_us"]),
    ]
    for label, key, fmt in (
        ("direct", "direct_us", "{:>10.0f}"),
        ("mesh", "mesh_us", "{:>10.0f}"),
        ("added", "added_us", "{:>+10.0f}"),
        ("ratio", "ratio", "{:>10.2f}"),
    ):
        rows.append(f"  {label:<8}" + "".join(fmt.format(v) for v in w[key].values()))
    rows += [
        "",
        "leftover processes: " + (", ".join(r["leftover_processes"]) or "none"),
    ]
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.latency",
        description="Latency of the mesh vs MLServer direct, same model, same MLServer.",
    )
    p.add_argument("--requests", type=int, default=2000, help="warm calls per side (2000)")
    p.add_argument("--warmup", type=int, default=200, help="untimed calls per side first (200)")
    p.add_argument(
        "--cold-repeats", type=int, default=5, help="cold loads per side; median reported (5)"
    )
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.cold_repeats < 1:
        p.error("--requests and --cold-repeats must be >= 1, --warmup >= 0")
    return args


def run(
    args: argparse.Namespace,
    prefix: str,
    measure_in: Callable[[argparse.Namespace, pathlib.Path], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
) -> int:
    """Measure in a temporary folder, print the table (unless ``--json``) and
    the JSON line; exit status 1 if a process the benchmark started survived."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        result = measure_in(args, pathlib.Path(tmp))
    if not args.json:
        print(render(result))
    print(json.dumps(result, ensure_ascii=False), flush=True)
    if result["leftover_processes"]:
        print("processes the benchmark started are still running", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv), "meshserve-bench-", measure, table)


if __name__ == "__main__":
    sys.exit(main())
