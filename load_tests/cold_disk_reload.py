"""The ``cold`` scenario's disk-reload step: a model evicted from memory but
kept on the node's disk, loaded again, against MLServer loading the same
folder directly.

Why it exists: issue 16's disk tier promises that a model evicted from
memory reloads at about the runtime's own load time (p50 ≤ 100 ms and
≤ 1.1 × a direct ``RepositoryModelLoad``). The node of the scenario has room
for one model in memory (:data:`NODE_ENV`), so two registered models A and
B evict each other: after one untimed request each, every request for the
other model is a disk reload (its files restored from the tier, the model
loaded, the first one evicted to the tier). Each is timed by the client and
split with the node's ``meshserve_load_step_milliseconds`` (claim in etcd,
restore from disk, room: evicting the other model, runtime load, record);
the node's ``meshserve_disk_cache_hits_total`` must grow by one and its
pull count not at all, or the run fails.

Next to each reload, the same model file in a folder of MLServer's
repository is loaded directly (``RepositoryModelLoad``, then one ModelInfer,
then unloaded), against the same MLServer.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request
from typing import Any

import numpy as np
from prometheus_client import parser as prometheus_parser
from tritonclient.grpc import service_pb2

from kube import mesh_client
from load_tests import cold_path_bench, cold_path_report, loadgen, local_node
from meshserve import samples
from runtime_adapters import mlserver

INPUT = "predict"
CALL_TIMEOUT_S = 120.0
STEPS = cold_path_report.DISK_STEPS


def scrape(port: int) -> dict[str, float]:
    """Sums of the load steps, disk-cache hits and pulls from ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return step_sums(text)


def step_sums(text: str) -> dict[str, float]:
    """``{step: ms summed}``, ``hits`` and ``pulls`` of a metrics page (pure)."""
    out = {s: 0.0 for s in STEPS} | {"hits": 0.0, "pulls": 0.0}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "meshserve_load_step_milliseconds_sum":
                out[s.labels["step"]] = out.get(s.labels["step"], 0.0) + float(s.value)
            elif s.name == "meshserve_disk_cache_hits_total":
                out["hits"] += float(s.value)
            elif s.name == "meshserve_model_pull_milliseconds_count":
                out["pulls"] += float(s.value)
    return out


async def _mesh_reload(
    b: cold_path_bench.Bench, name: str, sample: samples.Sample
) -> dict[str, float]:
    body = loadgen.infer_request(name, {INPUT: sample.inputs.astype(np.float64)}, [INPUT])
    before = await asyncio.to_thread(scrape, b.metrics_port)
    t0 = time.perf_counter_ns()
    answer = await b.mesh.call(body, CALL_TIMEOUT_S)
    total = (time.perf_counter_ns() - t0) / 1e6
    after = await asyncio.to_thread(scrape, b.metrics_port)
    local_node.check_answer(answer, sample, f"disk reload of {name}")
    d = {k: after[k] - before[k] for k in after}
    if round(d["hits"]) != 1 or round(d["pulls"]) != 0:
        raise RuntimeError(f"{name}: not a disk reload ({d['hits']:g} hits, {d['pulls']:g} pulls)")
    steps = {s: round(d[s], 3) for s in STEPS}
    steps["rest"] = round(total - sum(steps.values()), 3)
    steps["total"] = round(total, 3)
    steps["reload"] = round(total - steps["room"], 3)
    return steps


async def _direct_load(
    b: cold_path_bench.Bench, name: str, sample: samples.Sample
) -> dict[str, float]:
    body = loadgen.infer_request(name, {INPUT: sample.inputs.astype(np.float64)}, [INPUT])
    t0 = time.perf_counter_ns()
    await b.repository.RepositoryModelLoad(
        service_pb2.RepositoryModelLoadRequest(model_name=name), timeout=CALL_TIMEOUT_S
    )
    t1 = time.perf_counter_ns()
    answer = await b.runtime.call(body, CALL_TIMEOUT_S)
    t2 = time.perf_counter_ns()
    local_node.check_answer(answer, sample, f"direct load of {name}")
    await b.repository.RepositoryModelUnload(
        service_pb2.RepositoryModelUnloadRequest(model_name=name), timeout=CALL_TIMEOUT_S
    )
    return {"load": round((t1 - t0) / 1e6, 3), "load_infer": round((t2 - t0) / 1e6, 3)}


async def measure(
    b: cold_path_bench.Bench,
    mc: mesh_client.MeshClient,
    kind: str,
    sample: samples.Sample,
    runs: int,
    stats: Any,
) -> dict[str, Any]:
    """``runs`` disk reloads of ``sample`` and as many direct loads, taking turns."""
    names = [f"disk-{kind}-a", f"disk-{kind}-b"]
    for n in names:
        await asyncio.to_thread(mc.apply, cold_path_bench.s3_predictor(n, f"cold/{kind}"))
    for n in names:  # the first pulls; the second evicts the first to disk
        body = loadgen.infer_request(n, {INPUT: sample.inputs.astype(np.float64)}, [INPUT])
        await b.mesh.call(body, CALL_TIMEOUT_S)
    direct_name = f"disk-{kind}-direct"
    folder = b.model_dir / direct_name
    await asyncio.to_thread(shutil.copytree, sample.folder, folder)
    await asyncio.to_thread(mlserver.prepare_model_folder, direct_name, sample.model_type, folder)
    await _direct_load(b, direct_name, sample)  # untimed, as the mesh's first two
    mesh: list[dict[str, float]] = []
    direct: list[dict[str, float]] = []
    for i in range(runs):
        mesh.append(await _mesh_reload(b, names[i % 2], sample))
        direct.append(await _direct_load(b, direct_name, sample))
    for n in names:
        await asyncio.to_thread(mc.delete, n)
    await asyncio.to_thread(shutil.rmtree, folder, True)
    m = {k: stats([r[k] for r in mesh]) for k in (*STEPS, "rest", "reload", "total")}
    d = {k: stats([r[k] for r in direct]) for k in ("load", "load_infer")}
    ratio = round(m["reload"]["p50"] / d["load_infer"]["p50"], 3)
    return {
        "runs": runs,
        "mesh_ms": m,
        "direct_ms": d,
        "ratio_reload_vs_direct_load_infer": ratio,
        "ratio_total_vs_direct_load_infer": round(m["total"]["p50"] / d["load_infer"]["p50"], 3),
        "ratio_load_step_vs_direct_load": round(m["load"]["p50"] / d["load"]["p50"], 3),
        "met": m["reload"]["p50"] <= cold_path_report.DISK_TARGET_MS
        and ratio <= cold_path_report.DISK_TARGET_RATIO,
    }
