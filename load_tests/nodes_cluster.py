"""The processes of the scenario :mod:`load_tests.nodes` for one node count:
k mesh nodes sharing one etcd key prefix, the models registered on them and
checked once, and the client's view of them (one target per node).

Why it exists: the scenario measures nodes it must first start, fill and
stop without leaving a process behind, and that set-up is a job of its own,
apart from the load phases and the arithmetic on their figures
(:mod:`load_tests.nodes`).

Set-up, under a temporary folder: one real etcd
(:mod:`mesh.edges.etcd_process`, started by the scenario) for the whole run;
then for each node count k, **fresh** nodes under a **fresh** key prefix (so
no run inherits another's loaded models): k mesh nodes as separate processes
(``load_tests.local_node.NodeProcess``, each starting its own MLServer),
configured only through the environment, with a fixed capacity
(``MESHSERVE_CAPACITY`` = ``slots`` × ``model_bytes``) and every model
counted as ``model_bytes`` (``MESHSERVE_MIN_MODEL_SIZE``: the floor of the
mesh's size prediction and of its measured size, :mod:`mesh.core.sizes`; an
iris model's own footprint is far below it, so each model weighs exactly
that and one node holds exactly ``slots`` models). ``models`` copies of the
iris logistic regression sample (:mod:`meshserve.samples`), each in its own
folder, are registered as Predictors through the management API, and each
is called once (every answer checked against scikit-learn's own
prediction), request i through node i mod k.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import shutil
import urllib.request
from collections.abc import Mapping

import numpy as np
import psutil

from kube import mesh_client
from load_tests import latency, loadgen, local_node
from mesh.edges import ports
from meshserve import samples

INPUT = "predict"
MODEL_PREFIX = "zipf-"


def model_names(models: int) -> list[str]:
    return [f"{MODEL_PREFIX}{i:03d}" for i in range(models)]


def fill_store(store: pathlib.Path, sample: samples.Sample, models: int) -> None:
    """One copy of ``sample``'s folder per model, under ``store``."""
    for name in model_names(models):
        shutil.copytree(sample.folder, store / name)


def metrics_page(port: int) -> str:
    """One node's ``/metrics`` page (Prometheus text)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text: str = r.read().decode()
    return text


class Cluster:
    """k node processes sharing one etcd prefix, and the client's view of them."""

    def __init__(
        self,
        k: int,
        work: pathlib.Path,
        etcd: str,
        prefix: str,
        store: pathlib.Path,
        env: Mapping[str, str],
    ) -> None:
        self.k = k
        self.prefix = prefix
        self.store = store
        self.metrics_ports = [ports.free_port() for _ in range(k)]
        self.nodes = [
            local_node.NodeProcess(
                work / f"k{k}",
                etcd,
                prefix,
                f"nodes{k}-n{j}",
                store,
                {**env, "MESHSERVE_METRICS_PORT": str(port)},
            )
            for j, port in enumerate(self.metrics_ports)
        ]
        self.targets = [loadgen.Target(n.endpoint) for n in self.nodes]

    async def start(self) -> None:
        """Start every node at once; :meth:`stop` stops whatever started,
        even if another failed."""
        await asyncio.gather(*(n.start() for n in self.nodes))

    def tree(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for n in self.nodes:
            if n.process.pid is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    out += n.tree()
        return out

    async def metrics_pages(self) -> list[str]:
        """Every node's ``/metrics`` page, read at once."""
        return list(
            await asyncio.gather(*(asyncio.to_thread(metrics_page, p) for p in self.metrics_ports))
        )

    async def serve_models(self, models: int, sample: samples.Sample) -> list[bytes]:
        """Register the ``models`` Predictors (their folders under the store),
        call each once through node i mod k (the answer checked against
        scikit-learn's), and return the request bodies, model i's at i."""
        names = model_names(models)
        specs = [
            latency.predictor_spec(
                n, samples.Sample(self.store / n, sample.model_type, sample.inputs, sample.expected)
            )
            for n in names
        ]

        def register() -> None:
            with mesh_client.MeshClient(self.nodes[0].endpoint) as mc:
                for s in specs:
                    mc.apply(s)

        await asyncio.to_thread(register)
        x = {INPUT: sample.inputs.astype(np.float64)}
        bodies = [loadgen.infer_request(n, x, [INPUT]) for n in names]
        for i, body in enumerate(bodies):
            where = f"{names[i]} through node {i % self.k}"
            answer = await self.targets[i % self.k].call(body, 120.0)
            local_node.check_answer(answer, sample, where)
        return bodies

    async def stop(self) -> None:
        for t in self.targets:
            await t.close()
        await asyncio.gather(*(asyncio.to_thread(n.stop) for n in self.nodes))
