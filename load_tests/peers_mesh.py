"""The meshserve side and the floor of the scenario "peers".

Why it exists: the scenario (:mod:`load_tests.peers`) calls three systems
the same way; this module starts and counts the two that are made of
meshserve's parts.

* :class:`MeshSystem`: ``nodes`` mesh nodes as their own processes
  (:class:`load_tests.local_node.NodeProcess`, each starting its MLServer),
  on the run's etcd under a fresh key prefix, each with room for ``slots``
  models (``MESHSERVE_CAPACITY`` = ``slots`` × ``model_bytes``, every model
  counted as ``model_bytes`` through ``MESHSERVE_MIN_MODEL_SIZE``: a 2-3 MiB
  forest weighs less in memory than that floor, so each node holds exactly
  ``slots``), V2 REST on, extra copies for load and the hand-over at
  shutdown off (as in :mod:`load_tests.nodes`). The models are registered
  as Predictors; requests name the Predictor and go round-robin over the
  nodes' REST ports. Loads come from the nodes' ``modelmesh_*`` metrics.
* :class:`FloorSystem`: one node with room for every model, each loaded once
  through it; then the client calls that node's MLServer **directly** (its
  own V2 REST port, the concrete model ids): one runtime with every model
  loaded, no mesh in the path. It is the floor: no loads, no hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import psutil

from kube import mesh_client
from load_tests import cold_disk_reload, latency, local_node, nodes, nodes_cluster, peers_http
from mesh.edges import ports
from meshserve import samples


def node_env(slots: int, model_bytes: int, rest_port: int, metrics_port: int) -> dict[str, str]:
    return {
        "MESHSERVE_CAPACITY": str(slots * model_bytes),
        "MESHSERVE_MIN_MODEL_SIZE": str(model_bytes),
        "MESHSERVE_SCALE_UP_RPM": "0",
        "MESHSERVE_HANDOVER_WINDOW": "0",
        "REST_PROXY_LISTEN_PORT": str(rest_port),
        "MESHSERVE_METRICS_PORT": str(metrics_port),
    }


def register(endpoint: str, store: pathlib.Path, names: Sequence[str]) -> dict[str, str]:
    """Register every model as a Predictor; returns name → concrete model id."""
    ids = {}
    with mesh_client.MeshClient(endpoint) as mc:
        for n in names:
            sample = samples.Sample(store / n, "sklearn", np.zeros((1, 1)), np.zeros(1))
            spec = latency.predictor_spec(n, sample)
            mc.apply(spec)
            ids[n] = spec.model_id
    return ids


class MeshNodes:
    """``count`` node processes on one etcd prefix, with REST and metrics ports."""

    def __init__(
        self,
        work: pathlib.Path,
        etcd: str,
        prefix: str,
        store: pathlib.Path,
        count: int,
        slots: int,
        model_bytes: int,
    ) -> None:
        self.rest_ports = [ports.free_port() for _ in range(count)]
        self.metrics_ports = [ports.free_port() for _ in range(count)]
        self.nodes = [
            local_node.NodeProcess(
                work / prefix,
                etcd,
                prefix,
                f"{prefix}-n{j}",
                store,
                node_env(slots, model_bytes, self.rest_ports[j], self.metrics_ports[j]),
            )
            for j in range(count)
        ]

    async def start(self) -> None:
        await asyncio.gather(*(n.start() for n in self.nodes))

    async def loads(self) -> float:
        pages = await asyncio.gather(
            *(asyncio.to_thread(nodes_cluster.metrics_page, p) for p in self.metrics_ports)
        )
        return sum(nodes.read_metrics(p)["loads"] for p in pages)

    async def load_step_sums(self) -> dict[str, float]:
        """Milliseconds spent in each step of a load (claim, pull, room, load,
        record), summed over the nodes since they started."""
        pages = await asyncio.gather(
            *(asyncio.to_thread(nodes_cluster.metrics_page, p) for p in self.metrics_ports)
        )
        out: dict[str, float] = {}
        for page in pages:
            for k, v in cold_disk_reload.step_sums(page).items():
                out[k] = out.get(k, 0.0) + v
        return out

    def roles(self) -> dict[str, list[psutil.Process]]:
        """Each node and its MLServer (with whatever it started), by name."""
        out: dict[str, list[psutil.Process]] = {}
        for j, n in enumerate(self.nodes):
            if n.process.pid is None:
                continue
            with contextlib.suppress(psutil.Error, ValueError):
                out[f"node {j}"] = [psutil.Process(n.pid)]
                runtime = n.runtime_process()
                out[f"mlserver {j}"] = [runtime, *runtime.children(recursive=True)]
        return out

    def tree(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for n in self.nodes:
            if n.process.pid is not None:
                with contextlib.suppress(psutil.Error):
                    out += n.tree()
        return out

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(n.stop) for n in self.nodes))


class MeshSystem:
    """meshserve: ``count`` nodes of ``slots`` models each."""

    name = "meshserve"

    def __init__(
        self,
        work: pathlib.Path,
        etcd: str,
        etcd_pid: int,
        store: pathlib.Path,
        names: Sequence[str],
        count: int,
        slots: int,
        model_bytes: int,
    ) -> None:
        self.names = list(names)
        self.store = store
        self.etcd_pid = etcd_pid
        self.cluster = MeshNodes(work, etcd, "peers-mesh", store, count, slots, model_bytes)
        self.route = peers_http.Route(
            tuple(f"http://127.0.0.1:{p}" for p in self.cluster.rest_ports)
        )

    async def start(self) -> None:
        await self.cluster.start()
        endpoint = self.cluster.nodes[0].endpoint
        await asyncio.to_thread(register, endpoint, self.store, self.names)

    async def loads(self) -> float:
        return await self.cluster.loads()

    async def load_step_sums(self) -> dict[str, float]:
        return await self.cluster.load_step_sums()

    def processes(self) -> dict[str, list[psutil.Process]]:
        out = self.cluster.roles()
        with contextlib.suppress(psutil.Error):
            out["etcd"] = [psutil.Process(self.etcd_pid)]
        return out

    def tree(self) -> list[psutil.Process]:
        return self.cluster.tree()

    async def stop(self) -> None:
        await self.cluster.stop()


class FloorSystem:
    """One MLServer with every model loaded, called directly."""

    name = "floor"

    def __init__(
        self,
        work: pathlib.Path,
        etcd: str,
        store: pathlib.Path,
        names: Sequence[str],
        model_bytes: int,
        body: bytes,
    ) -> None:
        self.names = list(names)
        self.store = store
        self.body = body
        self.cluster = MeshNodes(
            work, etcd, "peers-floor", store, 1, len(self.names) + 1, model_bytes
        )
        self.route = peers_http.Route(("http://127.0.0.1:0",))

    async def start(self) -> None:
        """Start the node, load every model through it, then aim at its MLServer."""
        await self.cluster.start()
        node = self.cluster.nodes[0]
        ids = await asyncio.to_thread(register, node.endpoint, self.store, self.names)
        through_node = peers_http.Route((f"http://127.0.0.1:{self.cluster.rest_ports[0]}",))
        async with peers_http.session() as s:
            for n in self.names:
                await peers_http.call(s, through_node, n, self.body, 120.0)
        settings = json.loads((node.data_dir / "models" / "settings.json").read_text())
        self.route = peers_http.Route(
            (f"http://127.0.0.1:{int(settings['http_port'])}",), names=ids
        )

    async def loads(self) -> float:
        return await self.cluster.loads()

    async def load_step_sums(self) -> dict[str, float]:
        return {}  # every model is loaded before the timed part

    def processes(self) -> dict[str, list[psutil.Process]]:
        """Only the MLServer: the node is not in the path once every model is loaded."""
        return {k: v for k, v in self.cluster.roles().items() if k.startswith("mlserver")}

    def tree(self) -> list[psutil.Process]:
        return self.cluster.tree()

    async def stop(self) -> None:
        await self.cluster.stop()


def features(rows: int, count: int, seed: int) -> npt.NDArray[np.float64]:
    """An input batch of ``rows`` × ``count`` features."""
    return np.random.default_rng(seed).normal(size=(rows, count)).astype(np.float64)
