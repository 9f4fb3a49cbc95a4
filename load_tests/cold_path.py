"""Scenario "cold": the first request for a model that is not loaded, the
mesh against the same steps done by hand.

Why it exists: with far more models registered than loaded, many requests
are cold, and a mesh only earns its place if loading on demand costs little
more than a person (or a script) fetching the model and loading it into the
runtime themselves. Issue 7's target: the mesh's cold path at most 1.1 × the
sum of the hand-made steps, measured in the same run, same machine, same
runtime, same object in the same store.

One run starts an S3 server (moto) holding the models, an etcd and one
mesh node with its own MLServer (:mod:`load_tests.cold_path_bench`).

Models: iris logistic regression (``meshserve.samples``, ~1 KB) and,
unless ``--big-mb 0``, a k-nearest-neighbours classifier (a k-d tree over
random points) whose file is about ``--big-mb`` MB, so that the pull weighs.

Each *run* is one cold start of a fresh model; the two sides alternate
(mesh first on even runs, by hand first on odd ones), ``runs`` times each
per model, after ``warmup`` untimed runs per side (the first pull imports
boto3 into the node and the first sklearn load imports scikit-learn into
MLServer; neither belongs to a steady cold path). After each run the model
is unloaded again, and the next run starts only when MLServer no longer
holds it, so every run finds the same runtime.

* **mesh**: a Predictor with a fresh name (so a fresh model id: neither
  pulled nor loaded anywhere), ``spec.storage`` naming the S3 key and the
  model's path, registered through the management API and visible to the
  node (untimed); then *one* ModelInfer by the Predictor's name, timed by
  the client from send to answer. The node resolves the name, claims the
  load in etcd, pulls the files from S3 (staging folder, size and MD5 of
  each file, rename into place), writes ``model-settings.json``, has
  MLServer load the model, records the copy as loaded in etcd, then
  forwards the request. The node's own metrics, scraped before and after
  each run (the sums of its histograms: one load at a time, so each
  difference is that run's), split the total:

  - ``pull``: ``meshserve_model_pull_milliseconds`` (the puller's whole
    pull: listing, download, checks, rename);
  - ``load``: MLServer's ``RepositoryModelLoad`` as the node's adapter timed
    it (its INFO log line ``loaded <id> (...) in <s> s``; ms resolution);
  - ``infer``: ``modelmesh_invoke_model_milliseconds`` for ModelInfer (the
    first inference, node to MLServer and back);
  - the mesh's own work, the rest of the total, itself split into
    ``claim_prepare`` (``modelmesh_loadmodel_milliseconds`` − pull − load:
    the claim in etcd and the wait for the node's mirror, waiting for a pull
    slot, the disk size walk, placement, ``model-settings.json``, the RSS
    reads around the load), ``record`` (``modelmesh_cache_miss_milliseconds``
    − ``modelmesh_loadmodel_milliseconds``: writing the loaded copy to etcd
    and waiting for the mirror), ``routing`` (``modelmesh_api_request_milliseconds``
    − cache miss − infer: resolving the name, dispatch, rewriting the
    request) and ``transport`` (client total − api request: the client's
    extra gRPC hop to the node and back).

* **by hand**: what a person with boto3 and a bare MLServer does, against
  the *same* MLServer (the node's own, at ``NodeProcess.runtime_endpoint``)
  and the *same* object in the same bucket, from this process: plain boto3
  (one client made once, as the puller keeps one per configuration):
  ``list_objects_v2`` under the model's path and a streaming
  ``get_object`` of each file straight into ``<repository>/<name>/``, with
  no staging folder and no checksum (``pull``); ``model-settings.json``
  written with the same function the mesh's adapter uses,
  ``runtime_adapters.mlserver.prepare_model_folder`` (``settings``);
  ``RepositoryModelLoad`` (``load``); the first ModelInfer (``infer``), each
  timed by the client. The *hand-made sum* is the sum of the four.

Every answer (both sides) is checked against scikit-learn's own prediction,
outside the timed window. Reported per model: p50 and p90 of every phase
and of the mesh's total and the hand-made sum, the ratio mesh total / hand
sum at p50 (the target's figure), at p90, and fastest against fastest (on a
shared machine the least disturbed by other work: a single slow S3 answer
moves a median of 5), and where the difference goes (medians of each phase,
mesh − by hand). Medians of phases do not add up to the median of a total;
each run's phases do add up to its total.

``--quick`` is 5 runs per side and model (about 15 s, a third of it
starting MLServer); the default 20 (about 30 s). ``--runs N``,
``--big-mb X`` and ``--smoke`` (iris only, 2 runs: for tests) change that.

This module times the runs; the servers are started by
:mod:`load_tests.cold_path_bench`, and the phases' names and arithmetic,
and the table, notes and plots, are :mod:`load_tests.cold_path_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import pathlib
import shutil
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import psutil
from prometheus_client import parser as prometheus_parser
from tritonclient.grpc import service_pb2, service_pb2_grpc

from kube import mesh_client
from load_tests import (
    cold_disk_reload,
    cold_path_bench,
    cold_path_report,
    latency,
    loadgen,
    local_node,
    report,
)
from meshserve import samples
from runtime_adapters import mlserver

INPUT = "predict"
TARGET = 1.1
"""The mesh's cold path at most this × the hand-made sum (p50)."""
CALL_TIMEOUT_S = 120.0
UNLOAD_TIMEOUT_S = 60.0

# Histogram sums read from the node's metrics (name, required labels).
METRICS = {
    "pull": ("meshserve_model_pull_milliseconds", {}),
    "loadmodel": ("modelmesh_loadmodel_milliseconds", {}),
    "cache_miss": ("modelmesh_cache_miss_milliseconds", {}),
    "invoke": ("modelmesh_invoke_model_milliseconds", {"method": "ModelInfer"}),
    "api": ("modelmesh_api_request_milliseconds", {"method": "ModelInfer"}),
}


@dataclasses.dataclass(frozen=True)
class Config:
    runs: int = 20
    """Timed cold starts per side and model (the sides alternate)."""
    warmup: int = 1
    """Untimed cold starts per side and model first."""
    big_mb: float = 8.0
    """Size of the second model's file (a KNN classifier), MB; 0: iris only."""


QUICK = Config(runs=5)
SMOKE = Config(runs=2, big_mb=0.0)
"""A few seconds of cold starts: for a test that the scenario still runs."""


def scrape(port: int) -> dict[str, float]:
    """The sums and counts of :data:`METRICS` from the node's ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return histogram_sums(text)


def histogram_sums(text: str) -> dict[str, float]:
    """``{key}_sum`` and ``{key}_count`` of each of :data:`METRICS` in a
    Prometheus text page, over the series with the required labels (pure)."""
    out = {f"{k}_{part}": 0.0 for k in METRICS for part in ("sum", "count")}
    wanted = {name: (key, labels) for key, (name, labels) in METRICS.items()}
    for family in prometheus_parser.text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        key, labels = wanted[family.name]
        for s in family.samples:
            part = s.name.rsplit("_", 1)[-1]
            if (
                part in ("sum", "count")
                and s.name == f"{family.name}_{part}"
                and all(s.labels.get(k) == v for k, v in labels.items())
            ):
                out[f"{key}_{part}"] += float(s.value)
    return out


def _ms(ns: int) -> float:
    return ns / 1e6


async def mesh_run(
    b: cold_path_bench.Bench,
    mc: mesh_client.MeshClient,
    name: str,
    path: str,
    sample: samples.Sample,
) -> dict[str, float]:
    """One cold start through the mesh; its phases in ms (see the module)."""
    spec = cold_path_bench.s3_predictor(name, path)
    await asyncio.to_thread(mc.apply, spec)
    await _wait_visible(b.node.endpoint, name)
    body = loadgen.infer_request(name, {INPUT: sample.inputs.astype(np.float64)}, [INPUT])
    before = await asyncio.to_thread(scrape, b.metrics_port)
    b.log.skip()
    t0 = time.perf_counter_ns()
    answer = await b.mesh.call(body, CALL_TIMEOUT_S)
    total = _ms(time.perf_counter_ns() - t0)
    after = await asyncio.to_thread(scrape, b.metrics_port)
    local_node.check_answer(answer, sample, f"mesh cold call of {name}")
    d = {k: after[k] - before[k] for k in after}
    for key in METRICS:
        if round(d[f"{key}_count"]) != 1:
            raise RuntimeError(
                f"{name}: expected one {METRICS[key][0]} observation, got {d[f'{key}_count']:g} "
                "(a retry, or another load at the same time?)"
            )
    load = b.log.repository_load_ms(spec.model_id)
    phases = cold_path_report.mesh_phases(
        total,
        d["pull_sum"],
        load,
        d["loadmodel_sum"],
        d["cache_miss_sum"],
        d["invoke_sum"],
        d["api_sum"],
    )
    await asyncio.to_thread(mc.delete, name)
    await _wait_unloaded(b, spec.model_id)
    return phases


async def hand_run(
    b: cold_path_bench.Bench, name: str, path: str, sample: samples.Sample
) -> dict[str, float]:
    """The same cold start done by hand against the same MLServer; ms."""
    folder = b.model_dir / name
    body = loadgen.infer_request(name, {INPUT: sample.inputs.astype(np.float64)}, [INPUT])
    t0 = time.perf_counter_ns()
    download(b.s3, path, folder)
    t1 = time.perf_counter_ns()
    mlserver.prepare_model_folder(name, sample.model_type, folder)
    t2 = time.perf_counter_ns()
    await b.repository.RepositoryModelLoad(
        service_pb2.RepositoryModelLoadRequest(model_name=name), timeout=CALL_TIMEOUT_S
    )
    t3 = time.perf_counter_ns()
    answer = await b.runtime.call(body, CALL_TIMEOUT_S)
    t4 = time.perf_counter_ns()
    local_node.check_answer(answer, sample, f"hand-made cold call of {name}")
    await b.repository.RepositoryModelUnload(
        service_pb2.RepositoryModelUnloadRequest(model_name=name), timeout=CALL_TIMEOUT_S
    )
    await asyncio.to_thread(shutil.rmtree, folder, True)
    phases = {
        "pull": _ms(t1 - t0),
        "settings": _ms(t2 - t1),
        "load": _ms(t3 - t2),
        "infer": _ms(t4 - t3),
    }
    phases = {k: round(v, 3) for k, v in phases.items()}
    phases["sum"] = round(_ms(t4 - t0), 3)
    return phases


def download(s3: Any, path: str, folder: pathlib.Path) -> int:
    """Every object under ``path/`` into ``folder`` (plain boto3: list, then
    one streaming GET each); bytes written."""
    bucket = cold_path_bench.BUCKET
    prefix = path.rstrip("/") + "/"
    written = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            dest = folder / str(item["Key"])[len(prefix) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            stream = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"]
            with open(dest, "wb") as f:
                while chunk := stream.read(1 << 20):
                    written += f.write(chunk)
            stream.close()
    if not written:
        raise RuntimeError(f"nothing under s3://{bucket}/{prefix}")
    return written


async def _wait_visible(endpoint: str, name: str, timeout_s: float = 30.0) -> None:
    """Until the node's mirror knows ``name`` (ModelReady answers, not
    NOT_FOUND): what is timed is the cold start, not the registration."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                await stub.ModelReady(service_pb2.ModelReadyRequest(name=name), timeout=5.0)
                return
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.01)


async def _wait_unloaded(b: cold_path_bench.Bench, model_id: str) -> None:
    """Until MLServer no longer holds ``model_id`` (its repository index says
    so) and the model's folder is gone."""
    deadline = time.monotonic() + UNLOAD_TIMEOUT_S
    while True:
        index = await b.repository.RepositoryIndex(
            service_pb2.RepositoryIndexRequest(), timeout=5.0
        )
        held = any(m.name == model_id and m.state != "UNAVAILABLE" for m in index.models)
        if not held and not (b.model_dir / model_id).exists():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model_id} still loaded {UNLOAD_TIMEOUT_S:.0f} s after delete")
        await asyncio.sleep(0.02)


def stats(values: Sequence[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "mean": round(float(a.mean()), 2),
        "min": round(float(a.min()), 2),
        "max": round(float(a.max()), 2),
        "all": [round(float(v), 2) for v in a],
    }


def summarise(
    cfg: Config,
    sample: samples.Sample,
    path: str,
    mesh: list[dict[str, float]],
    hand: list[dict[str, float]],
) -> dict[str, Any]:
    m = {k: stats([r[k] for r in mesh]) for k in (*cold_path_report.MESH_PHASES, "own", "total")}
    h = {k: stats([r[k] for r in hand]) for k in (*cold_path_report.HAND_PHASES, "sum")}
    ratio = {p: round(m["total"][p] / h["sum"][p], 3) for p in ("p50", "p90", "min")}
    return {
        "type": sample.model_type,
        "file_bytes": sum(f.stat().st_size for f in sample.folder.iterdir() if f.is_file()),
        "s3_path": f"s3://{cold_path_bench.BUCKET}/{path}",
        "runs": cfg.runs,
        "mesh_ms": m,
        "hand_ms": h,
        "ratio": ratio,
        "added_ms": {p: round(m["total"][p] - h["sum"][p], 2) for p in ("p50", "p90")},
        "met": ratio["p50"] <= TARGET,
    }


async def measure_model(
    cfg: Config,
    b: cold_path_bench.Bench,
    mc: mesh_client.MeshClient,
    kind: str,
    sample: samples.Sample,
) -> dict[str, Any]:
    """The warm-up, then ``runs`` cold starts of ``sample`` on each side, the
    sides taking turns to go first; the model's figures."""
    path = f"cold/{kind}"
    for i in range(cfg.warmup):
        await mesh_run(b, mc, f"cold-{kind}-warm-m{i}", path, sample)
        await hand_run(b, f"cold-{kind}-warm-h{i}", path, sample)
    mesh: list[dict[str, float]] = []
    hand: list[dict[str, float]] = []
    for i in range(cfg.runs):
        mesh_first = i % 2 == 0
        if mesh_first:
            mesh.append(await mesh_run(b, mc, f"cold-{kind}-m{i}", path, sample))
        hand.append(await hand_run(b, f"cold-{kind}-h{i}", path, sample))
        if not mesh_first:
            mesh.append(await mesh_run(b, mc, f"cold-{kind}-m{i}", path, sample))
    return summarise(cfg, sample, path, mesh, hand)


async def measure_async(cfg: Config, work: pathlib.Path) -> dict[str, Any]:
    models = {"iris": samples.train_iris_logistic(work / "samples" / "iris")}
    if cfg.big_mb > 0:
        models["knn"] = cold_path_bench.train_knn(work / "samples" / "knn", cfg.big_mb)
    started: list[psutil.Process] = []
    results: dict[str, Any] = {}
    async with cold_path_bench.running(work, models, started) as b:
        with mesh_client.MeshClient(b.node.endpoint) as mc:
            for kind, sample in models.items():
                results[kind] = await measure_model(cfg, b, mc, kind, sample)
                results[kind]["disk_reload"] = await cold_disk_reload.measure(
                    b, mc, kind, sample, cfg.runs, stats
                )
    return {
        "machine": report.machine(),
        "config": dataclasses.asdict(cfg),
        "target": TARGET,
        "models": results,
        "leftover_processes": latency.alive(started),
    }


def run(quick: bool, argv: Sequence[str] = ()) -> report.ScenarioReport:
    """The scenario; ``argv`` may hold ``--runs N``, ``--big-mb X`` (0: iris
    only) and ``--smoke`` (a few seconds, for tests)."""
    p = argparse.ArgumentParser(prog="python -m load_tests cold")
    p.add_argument("--runs", type=int, default=0)
    p.add_argument("--big-mb", type=float, default=-1.0)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(list(argv))
    cfg = SMOKE if args.smoke else QUICK if quick else Config()
    cfg = dataclasses.replace(
        cfg,
        runs=args.runs or cfg.runs,
        big_mb=cfg.big_mb if args.big_mb < 0 else args.big_mb,
    )
    if cfg.runs < 1:
        p.error("--runs must be at least 1")
    f = report.measure("cold", measure_async, cfg)
    return report.ScenarioReport(
        scenario="cold",
        title="Cold path: first request for a model not loaded",
        quick=quick,
        figures=f,
        table=cold_path_report.table(f),
        notes=cold_path_report.notes(f),
        plots=cold_path_report.plots(f),
    )
