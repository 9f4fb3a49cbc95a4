"""A mesh node as its own process, for the scenarios that measure it from
outside (its CPU time, its memory, its latency).

Why a process and not a thread (as ``load_tests.latency`` runs it): a node
in the benchmark's own process shares the GIL with the load generator, and
its CPU time and memory cannot be told apart from the client's. Here the
node is started exactly as ``meshserve up`` starts one
(``python -m meshserve.cli node``, configured only through the environment),
and it starts its own MLServer. The MLServer's gRPC port is read from the
``settings.json`` the node wrote into its model repository, so the direct
path of a benchmark reaches the very runtime the node uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
import time

import grpc
import numpy as np
import psutil
from tritonclient.grpc import service_pb2, service_pb2_grpc

from mesh.edges import ports, processes
from meshserve import samples

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180.0


def node_env(
    etcd: str,
    prefix: str,
    port: int,
    instance_id: str,
    data_dir: pathlib.Path,
    models_root: pathlib.Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The node's environment, as ``meshserve up`` sets it, with the REST,
    metrics and probe ports off."""
    env = {k: v for k, v in os.environ.items() if k != "MESHSERVE_RUNTIME_ENDPOINT"}
    env.update(
        {
            "KV_STORE": f"etcd:{etcd}",
            "MM_KVSTORE_PREFIX": prefix,
            "MM_SVC_GRPC_PORT": str(port),
            "REST_PROXY_LISTEN_PORT": "-1",
            "MESHSERVE_METRICS_PORT": "-1",
            "MESHSERVE_PROBE_PORT": "-1",
            "MM_INSTANCE_ID": instance_id,
            "MESHSERVE_HOST": "127.0.0.1",
            "MESHSERVE_ADVERTISE_HOST": "127.0.0.1",
            "MESHSERVE_DATA_DIR": str(data_dir),
            "MESHSERVE_MODELS_ROOT": str(models_root),
            "MESHSERVE_RUNTIME": "mlserver",
            "MESHSERVE_RUNTIMES_DIR": str(REPO_ROOT / ".runtimes"),
            "MESHSERVE_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **(extra or {}),
        }
    )
    return env


class NodeProcess:
    """One ``meshserve node`` process (and the MLServer it starts)."""

    def __init__(
        self,
        work: pathlib.Path,
        etcd: str,
        prefix: str,
        instance_id: str,
        models_root: pathlib.Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = work / instance_id
        self.port = ports.free_port()
        self.process = processes.ChildProcess(
            f"mesh node {instance_id}",
            [sys.executable, "-m", "meshserve.cli", "node"],
            work / "logs" / f"{instance_id}.log",
            env=node_env(
                etcd, prefix, self.port, instance_id, self.data_dir, models_root, extra_env
            ),
        )

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        pid = self.process.pid
        if pid is None:
            raise RuntimeError("the node has not been started")
        return pid

    async def start(self) -> None:
        """Start it and wait until it answers V2 ServerReady."""
        self.process.start()
        await wait_ready(self.endpoint, self.process, READY_TIMEOUT_S)

    def stop(self) -> None:
        self.process.stop(60.0)

    @property
    def runtime_endpoint(self) -> str:
        """MLServer's gRPC endpoint, from the ``settings.json`` the node wrote."""
        settings = json.loads((self.data_dir / "models" / "settings.json").read_text())
        return f"127.0.0.1:{int(settings['grpc_port'])}"

    def runtime_process(self) -> psutil.Process:
        (mlserver,) = [
            c for c in psutil.Process(self.pid).children() if "mlserver" in " ".join(c.cmdline())
        ]
        return mlserver

    def tree(self) -> list[psutil.Process]:
        """The node and everything it started, as of now."""
        p = psutil.Process(self.pid)
        return [p, *p.children(recursive=True)]


async def wait_ready(endpoint: str, proc: processes.ChildProcess, timeout_s: float) -> None:
    """Until ``endpoint`` says V2 ServerReady, or raise with ``proc``'s log."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            if not proc.running():
                raise RuntimeError(
                    f"{proc.name} exited with {proc.returncode()}; its log ends:\n{proc.log_tail()}"
                )
            try:
                r = await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=1.0)
                if r.ready:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{proc.name} not ready in {timeout_s:.0f} s:\n{proc.log_tail()}"
                )
            await asyncio.sleep(0.1)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of the process itself, all its threads,
    not its children (kernel clock ticks: 10 ms resolution)."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def check_answer(body: bytes, sample: samples.Sample, where: str) -> None:
    """Raise unless a ModelInferResponse holds scikit-learn's own prediction."""
    resp = service_pb2.ModelInferResponse()
    resp.ParseFromString(body)
    out = resp.outputs[0]
    dtype = {"INT64": "<i8", "FP64": "<f8", "INT32": "<i4", "FP32": "<f4"}[out.datatype]
    got = np.frombuffer(resp.raw_output_contents[0], dtype=dtype).astype(np.float64)
    want = sample.expected.astype(np.float64).reshape(-1)
    if not np.allclose(got, want):
        raise RuntimeError(f"{where}: wrong answer {got}, expected {want}")
