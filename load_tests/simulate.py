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

This module is the scenario's entry point (the steps in turn against one
etcd, and the report); its configuration is :mod:`load_tests.sim_config`,
one step's phases :mod:`load_tests.sim_step`, the arithmetic of the figures
:mod:`load_tests.sim_figures`; a node is :mod:`load_tests.sim_agent` on the
stand-ins of :mod:`load_tests.sim_runtime`, the outside meters are
:mod:`load_tests.sim_meters`, and the table, notes and plots are
:mod:`load_tests.sim_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import psutil

from load_tests import latency, report, sim_config, sim_meters, sim_report, sim_step
from mesh.edges import etcd_process

log = logging.getLogger(__name__)


async def measure_async(cfg: sim_config.Config, work: pathlib.Path) -> dict[str, Any]:
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
                steps.append(await sim_step.run_step(cfg, etcd, nodes, models, timer, work))
    finally:
        etcd.stop()
    return {
        "machine": report.machine(),
        "config": dataclasses.asdict(cfg),
        "node_capacity_bytes": sim_config.node_capacity(cfg),
        "steps": steps,
        "leftover_processes": latency.alive(started),
    }


def run(quick: bool, argv: Sequence[str] = ()) -> report.ScenarioReport:
    """The scenario; ``argv`` may hold ``--steps 10x1000,100x1000``,
    ``--rate R``, ``--duration S``, ``--etcd-clients K`` and ``--smoke`` (a
    few seconds, for tests)."""
    p = argparse.ArgumentParser(prog="python -m load_tests simulate")
    p.add_argument("--steps", type=sim_config.parse_steps, default=None)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--etcd-clients", type=int, default=-1)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(list(argv))
    cfg = sim_config.SMOKE if args.smoke else sim_config.QUICK if quick else sim_config.Config()
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
