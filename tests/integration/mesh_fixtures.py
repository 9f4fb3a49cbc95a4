"""A real mesh node for the tests: real etcd, real MLServer, real gRPC port.

The node runs on an event loop in a thread of its own, the way it runs in its
own process in production, so tests talk to it as users do: with the
synchronous ``tritonclient.grpc`` client and the CLI's :class:`MeshClient`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from tritonclient import grpc as triton

from kube import mesh_client, predictor
from mesh.core import interfaces, settings
from mesh.edges import etcd_process
from meshserve import node, stop_steps

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
ANY_FREE_OPS_PORTS = ("--rest-port", "0", "--metrics-port", "0", "--probe-port", "0")
"""``meshserve up`` options that keep test meshes off 8008, 2112 and 8089."""
WAIT = 30.0
"""Seconds to wait for what must happen: generous, as a busy machine is
slow, not wrong."""


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds. For
    what sends no event (another process, two event loops at once): prefer
    :func:`mirror_until` where a node's mirror is what changes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not met in {timeout:.0f} s: {what or predicate}"
        time.sleep(0.05)


def mirror_until(
    node: NodeThread, predicate: Callable[[], bool], what: str, timeout: float = WAIT
) -> None:
    """Wait until ``predicate`` holds, checked on ``node``'s own loop after
    each change its mirror of the records applies (it may read that mirror)."""
    met = node.run(node.node.table.wait_until(predicate, timeout), timeout + WAIT)
    assert met, f"not met in {timeout:.0f} s: {what}"


async def kill_runtime(adapter: interfaces.RuntimeAdapter) -> None:
    """SIGKILL the runtime process an adapter started, and wait until the
    adapter sees it gone."""
    pid = adapter.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while adapter.pid is not None:  # the adapter reaps its killed child
        assert time.monotonic() < deadline, "the killed runtime was not reaped"
        await asyncio.sleep(0.01)


@dataclasses.dataclass
class UpProcess:
    """A ``meshserve up`` child process and its output."""

    process: subprocess.Popen[bytes]
    log: pathlib.Path

    def text(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM, then wait; SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_up(
    args: Sequence[str],
    log: pathlib.Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: pathlib.Path | None = None,
) -> UpProcess:
    """Run ``meshserve up ARGS`` (REST, metrics and probes on free ports) and
    return once it says it is up; fail with its output if it exits first.
    With ``cwd``, it runs there as a user runs it: the ``meshserve`` command."""
    command = (
        [str(pathlib.Path(sys.executable).parent / "meshserve")]
        if cwd
        else [
            sys.executable,
            "-m",
            "meshserve.cli",
        ]
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "up", *ANY_FREE_OPS_PORTS, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
    up = UpProcess(proc, log)
    deadline = time.monotonic() + timeout
    while "meshserve is up" not in up.text():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise AssertionError(f"meshserve up did not come up:\n{up.text()}")
        time.sleep(0.1)
    return up


_T = TypeVar("_T")
_prefixes = itertools.count(1)


class NodeThread:
    """A :class:`meshserve.node.Node` serving from a background thread."""

    def __init__(self, config: settings.Settings) -> None:
        self.config = config
        self.node = node.Node(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.node.port}"

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 120) -> _T:
        """Run ``coro`` on the node's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self.node.start())

    def stop(self) -> None:
        try:
            # A stop may take the drain's 30 s (calls in flight get until the
            # drain timeout) plus the runtime's own stop: 120 s is a hang.
            self.run(self.node.stop(), timeout=120)
            if self.node.stop_overruns:  # stopped, late: say where it waited
                overran = "; ".join(self.node.stop_overruns)
                warnings.warn(f"node stop overran: {overran}", stacklevel=1)
        except TimeoutError:
            # Say where the stop hangs: every task of the node's loop, with its stack.
            for task in asyncio.all_tasks(self.loop):
                print(f"task {task.get_name()}: {stop_steps.await_chain(task)}", file=sys.stderr)
            raise
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def client(self) -> mesh_client.MeshClient:
        return mesh_client.MeshClient(self.endpoint)


def node_settings(
    etcd_endpoint: str, data_dir: pathlib.Path, prefix: str = "", **cache: Any
) -> settings.Settings:
    """Settings of a test node: free port, its own folders, and its own etcd
    prefix unless one is given (nodes of one mesh share theirs)."""
    return settings.Settings(
        kv=settings.KVSettings(
            endpoints=(etcd_endpoint,),
            prefix=prefix or f"test{next(_prefixes)}",
            lease_ttl_seconds=3,
        ),
        service=settings.ServiceSettings(
            host="127.0.0.1", grpc_port=0, rest_port=0, metrics_port=0, probe_port=0
        ),
        cache=dataclasses.replace(settings.CacheSettings(), **cache),
        node=settings.NodeSettings(
            instance_id=f"node-{data_dir.name}", data_dir=data_dir, models_root=data_dir
        ),
        runtime=settings.RuntimeSettings(venv=REPO_ROOT / ".runtimes"),
        scaling=settings.ScalingSettings(
            check_interval_seconds=0.5, janitor_interval_seconds=0.5, dead_node_grace_seconds=1
        ),
    )


def start_cluster(
    etcd_endpoint: str, tmp: pytest.TempPathFactory, n: int, **cache: Any
) -> list[NodeThread]:
    """``n`` nodes of one mesh (one etcd prefix), started in parallel."""
    prefix = f"mesh{next(_prefixes)}"
    nodes = [
        NodeThread(node_settings(etcd_endpoint, tmp.mktemp(f"node{i}-"), prefix, **cache))
        for i in range(n)
    ]
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        started = [pool.submit(node.start) for node in nodes]
    try:
        for f in started:
            f.result()
    except BaseException:
        stop_cluster(nodes)
        raise
    return nodes


def stop_cluster(nodes: list[NodeThread]) -> None:
    """Stop nodes in parallel."""
    with concurrent.futures.ThreadPoolExecutor(max(1, len(nodes))) as pool:
        list(pool.map(NodeThread.stop, nodes))


@pytest.fixture(scope="module")
def module_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[etcd_process.EtcdServer]:
    """One real etcd shared by a test module."""
    server = etcd_process.EtcdServer(tmp_path_factory.mktemp("etcd") / "data", fast=True)
    server.start()
    try:
        yield server
    finally:
        server.discard()


@pytest.fixture(scope="module")
def mesh_node(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeThread]:
    """One node with its own MLServer, shared by a test module (tests use
    model names of their own)."""
    n = NodeThread(node_settings(module_etcd.endpoint, tmp_path_factory.mktemp("node")))
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def small_node(
    module_etcd: etcd_process.EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeThread]:
    """A node that holds two models at most: every model counts as at least
    100 MiB and the capacity is 250 MiB."""
    n = NodeThread(
        node_settings(
            module_etcd.endpoint,
            tmp_path_factory.mktemp("small"),
            capacity_bytes=250 * MiB,
            min_model_size_bytes=100 * MiB,
        )
    )
    n.start()
    try:
        yield n
    finally:
        n.stop()


def predictor_spec(
    name: str, path: pathlib.Path | str, model_type: str = "sklearn"
) -> predictor.PredictorSpec:
    """The spec of a Predictor as a user would write it."""
    return predictor.parse(
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "Predictor",
            "metadata": {"name": name},
            "spec": {"modelType": {"name": model_type}, "storage": {"path": str(path)}},
        }
    )


def infer(
    endpoint: str,
    name: str,
    x: npt.NDArray[np.float64],
    headers: dict[str, str] | None = None,
) -> npt.NDArray[Any]:
    """``predict`` for batch ``x`` through ``endpoint`` with tritonclient."""
    with triton.InferenceServerClient(endpoint) as c:
        inp = triton.InferInput("predict", list(x.shape), "FP64")
        inp.set_data_from_numpy(x.astype(np.float64))
        result = c.infer(name, [inp], headers=headers, client_timeout=60)
        out: npt.NDArray[Any] = result.as_numpy("predict")
        return out.reshape(-1)
