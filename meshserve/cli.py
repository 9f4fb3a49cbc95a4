"""The ``meshserve`` command.

::

    meshserve up        a whole mesh on this machine (etcd, N node processes,
                        a runtime each), until Ctrl-C / SIGTERM
    meshserve node      one mesh node, configured from the environment
    meshserve controller  the Kubernetes controller (Predictors, ServingRuntimes),
                        configured from the environment
    meshserve demo      a local mesh serving real models, end to end
    meshserve predictor apply -f FILE | delete NAME | list | status NAME
    meshserve models    the placement table
    meshserve nodes     each node's capacity, use and load

Client commands talk to ``--endpoint`` (default ``$MESHSERVE_ENDPOINT``,
else ``localhost:8033``). Errors print one line naming the problem and exit
with status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import pathlib
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import grpc

from kube import mesh_client
from mesh.core import errors, settings
from mesh.edges import process_env
from mesh.node import logs
from meshserve import client, event_loop, local_mesh, node


def _size(text: str) -> int:
    try:
        return settings.parse_size(text, "--capacity")
    except errors.ConfigError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshserve", description="A multi-model serving mesh.")
    p.add_argument("--log-level", default=os.environ.get("MESHSERVE_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=None,
        help="log lines as text or one JSON object a line (default: $MESHSERVE_LOG_FORMAT, "
        "else text); `up` passes it to its nodes",
    )
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run a local mesh (etcd, N nodes, a runtime each) until stopped")
    _mesh_options(up)

    sub.add_parser("node", help="run one mesh node configured from the environment (MM_*)")

    ctl = sub.add_parser(
        "controller",
        help="run the Kubernetes controller (Predictors, ServingRuntimes) configured "
        "from the environment",
    )
    ctl.add_argument(
        "--namespace",
        default="",
        help="namespace to serve (default: $MESHSERVE_NAMESPACE, $POD_NAMESPACE, the pod's own)",
    )
    ctl.add_argument(
        "--kubeconfig", default="", help="kubeconfig file (default: in-cluster, else $KUBECONFIG)"
    )

    demo = sub.add_parser("demo", help="start a local mesh, serve real models, stop")
    demo.add_argument("--grpc-port", type=int, default=8033)
    demo.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(".data/demo"))

    default_endpoint = os.environ.get("MESHSERVE_ENDPOINT") or "localhost:8033"

    def client_parser(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        _client_options(c, default_endpoint)
        return c

    _predictor_parser(sub, default_endpoint)
    client_parser("models", "the placement table: model, state, node, size, last used")
    client_parser("nodes", "each node's capacity, use, model count and load")
    return p


def _predictor_parser(sub: Any, default_endpoint: str) -> None:
    """``meshserve predictor apply|delete|list|status``."""
    pred = sub.add_parser(
        "predictor", help="manage Predictors and InferenceServices (KServe ModelMesh YAML)"
    )
    psub = pred.add_subparsers(dest="action", required=True)
    for name, help in (
        ("apply", "register or update the Predictors and InferenceServices in a YAML file"),
        ("delete", "delete a Predictor and unload its model"),
        ("list", "list Predictors"),
        ("status", "show one Predictor's status"),
        ("rollout", "set the canary share of a Predictor's new model (100 promotes, 0 holds)"),
    ):
        c = psub.add_parser(name, help=help)
        _client_options(c, default_endpoint)
        if name == "apply":
            c.add_argument("-f", "--filename", required=True, type=pathlib.Path)
            c.add_argument("--load-now", action="store_true", help="load the model right away")
        elif name in ("delete", "status", "rollout"):
            c.add_argument("name")
        if name == "rollout":
            c.add_argument("--percent", type=int, required=True, help="0-100")


def _client_options(p: argparse.ArgumentParser, default_endpoint: str) -> None:
    p.add_argument("--endpoint", default=default_endpoint, help="a node's HOST:PORT")
    env = os.environ.get
    for flag, var, what in (
        ("--tls-ca", "MESHSERVE_TLS_CA", "CA certificate of a node serving TLS"),
        ("--tls-cert", "MESHSERVE_TLS_CERT", "client certificate, for mutual TLS"),
        ("--tls-key", "MESHSERVE_TLS_KEY", "client private key, for mutual TLS"),
    ):
        default = env(var)
        p.add_argument(
            flag,
            type=pathlib.Path,
            default=pathlib.Path(default) if default else None,
            help=f"{what} (default ${var})",
        )


def _mesh_options(p: argparse.ArgumentParser) -> None:
    d = local_mesh.LocalMeshOptions()
    p.add_argument(
        "--nodes",
        type=int,
        default=d.nodes,
        help="how many mesh nodes, each a process with its own runtime (default 1)",
    )
    p.add_argument(
        "--grpc-port", type=int, default=d.grpc_port, help="node i listens on this + i (8033)"
    )
    for name, default, what in (
        ("--rest-port", d.rest_port, "V2 REST"),
        ("--metrics-port", d.metrics_port, "Prometheus metrics"),
        ("--probe-port", d.probe_port, "/live and /ready"),
    ):
        p.add_argument(
            name, type=int, default=default, help=f"{what}: node i on this + i ({default}; -1: off)"
        )
    p.add_argument("--host", default=d.host, help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--runtime",
        default=d.runtime,
        help="runtime of every node (mlserver, triton), or a mixed pool: mlserver=2,triton=1",
    )
    p.add_argument(
        "--capacity",
        type=_size,
        default=d.capacity_bytes,
        help="bytes of models per node, e.g. 512Mi",
    )
    p.add_argument("--data-dir", type=pathlib.Path, default=d.data_dir)
    p.add_argument("--etcd", default="", help="use this etcd HOST:PORT instead of starting one")
    p.add_argument(
        "--models-root",
        type=pathlib.Path,
        default=d.models_root,
        help="base of relative Predictor storage paths (default: the current folder)",
    )
    p.add_argument(
        "--storage-config",
        type=pathlib.Path,
        default=d.storage_config,
        metavar="DIR",
        help="storage-config folder: one JSON file per storage key, in ModelMesh "
        "Serving's format (for Predictors with spec.storage.key)",
    )


def _options(args: argparse.Namespace) -> local_mesh.LocalMeshOptions:
    if args.etcd:
        settings.parse_endpoint(args.etcd, "--etcd")
    return local_mesh.LocalMeshOptions(
        nodes=args.nodes,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        metrics_port=args.metrics_port,
        probe_port=args.probe_port,
        host=args.host,
        runtime=args.runtime,
        capacity_bytes=args.capacity,
        data_dir=args.data_dir,
        etcd=args.etcd,
        models_root=args.models_root,
        storage_config=args.storage_config,
        log_level=args.log_level.upper(),
        runtimes_dir=process_env.runtimes_dir(os.environ),
    )


def _stop_event() -> asyncio.Event:
    """An event set by the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _start_unless_stopped(start: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``start``; if ``stop`` is set first, cancel it (a cancelled start
    stops what it had started) and return ``False``."""
    task = asyncio.ensure_future(start)
    signalled = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()  # its error, if it failed
    return True


async def _up(options: local_mesh.LocalMeshOptions) -> None:
    stop = _stop_event()
    mesh = local_mesh.LocalMesh(options)
    t0 = time.monotonic()
    if not await _start_unless_stopped(mesh.start(), stop):
        print("meshserve stopped.", flush=True)
        return
    nodes = mesh.nodes
    ports = f"{nodes[0].port}" + (f"-{nodes[-1].port}" if len(nodes) > 1 else "")
    print(
        f"meshserve is up: {len(nodes)} node{'s' if len(nodes) > 1 else ''}, gRPC on "
        f"{mesh.client_host}:{ports}, etcd at {mesh.etcd_endpoint}, runtime "
        f"{options.runtime}; data in {options.data_dir}; ready in "
        f"{time.monotonic() - t0:.1f} s. Ctrl-C stops it.",
        flush=True,
    )
    for n in nodes:
        print(
            f"  node {n.index}: {n.endpoint}  instance {n.instance_id}  pid {n.process.pid}  "
            f"log {n.log_path}",
            flush=True,
        )
    try:
        reported: set[int] = set()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for n in mesh.exited():
                if n.index not in reported:
                    reported.add(n.index)
                    print(
                        f"meshserve: {n.describe()} exited with status "
                        f"{n.process.returncode()} and is not restarted; its log "
                        f"({n.log_path}) ends:\n{n.process.log_tail()}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        print("meshserve is stopping...", flush=True)
        t0 = time.monotonic()
        await mesh.stop()
        print(f"meshserve stopped. ({time.monotonic() - t0:.1f} s)", flush=True)


async def _controller(args: argparse.Namespace) -> None:
    # kopf and the Kubernetes client take about a second to import; only this command needs them.
    from kube import api_client, controller, controller_settings  # noqa: PLC0415

    env = dict(os.environ)
    if args.namespace:
        env["MESHSERVE_NAMESPACE"] = args.namespace
    config = controller_settings.settings_from_env(env)  # a ConfigError ends here, as one line
    kube = api_client.kube_configuration(args.kubeconfig)
    await controller.Controller(config, kube).run(_stop_event())


async def _node() -> None:
    config = settings.from_env(process_env.completed(os.environ))  # a ConfigError ends here
    stop = _stop_event()
    n = node.Node(config)
    if not await _start_unless_stopped(n.start(), stop):
        return
    # What start-up built (imports, the mirror) lives as long as the node:
    # out of the collector's sight, so a full collection under load costs
    # what requests allocated, not the whole heap.
    gc.freeze()
    try:
        await stop.wait()
    finally:
        await n.stop()


def _client_command(args: argparse.Namespace) -> int:
    credentials = client.tls_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    with mesh_client.MeshClient(args.endpoint, credentials=credentials) as c:
        if args.command == "models":
            print(client.models_table(c.models()))
        elif args.command == "nodes":
            print(client.nodes_table(c.instances()))
        elif args.action == "apply":
            try:
                text = args.filename.read_text()
            except OSError as e:
                raise errors.InvalidRequest(f"cannot read {args.filename}: {e.strerror}") from None
            for spec in client.load_predictors(text):
                c.apply(spec, load_now=args.load_now)
                print(f"{spec.owner}/{spec.name} configured (model {spec.model_id})")
        elif args.action == "delete":
            if not c.delete(args.name):
                print(f"predictor/{args.name} not found", file=sys.stderr)
                return 1
            print(f"predictor/{args.name} deleted")
        elif args.action == "rollout":
            v = c.rollout(args.name, args.percent)
            print(
                f"predictor/{args.name}: {args.percent} % to {v.targetModelId}"
                + ("" if v.targetModelId != v.activeModelId else " (nothing to roll out)")
            )
        elif args.action == "list":
            print(client.vmodels_table(c.vmodels()))
        elif args.action == "status":
            v = c.vmodel_status(args.name)
            if not v.activeModelId:
                print(f"predictor/{args.name} not found", file=sys.stderr)
                return 1
            s = client.predictor_status(v)
            print(f"name:               {args.name}")
            print(f"available:          {str(s.available).lower()}")
            print(f"transitionStatus:   {s.transition_status}")
            print(f"activeModelState:   {s.active_model_state}")
            print(f"targetModelState:   {s.target_model_state}")
            print(f"activeModelId:      {s.active_model_id}")
            print(f"targetModelId:      {s.target_model_id}")
            if s.last_failure:
                print(f"lastFailureInfo:    {s.last_failure}")
    return 0


def _setup_logging(args: argparse.Namespace) -> None:
    """``node`` and ``up``: structured lines (model id on every line about a
    model; text or JSON, :mod:`mesh.node.logs`). Other commands: plain lines."""
    if args.command not in ("node", "up"):
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return
    fmt = logs.parse_format(args.log_format or os.environ.get("MESHSERVE_LOG_FORMAT"))
    if args.command == "up":
        os.environ["MESHSERVE_LOG_FORMAT"] = fmt  # the node processes inherit it
    instance = os.environ.get("MM_INSTANCE_ID", "") if args.command == "node" else ""
    logs.configure(args.log_level, fmt, instance_id=instance)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _setup_logging(args)
    except ValueError as e:  # a bad MESHSERVE_LOG_FORMAT or log level
        print(f"meshserve: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "up":
            event_loop.run(_up(_options(args)))
        elif args.command == "node":
            event_loop.run(_node())
        elif args.command == "controller":
            asyncio.run(_controller(args))
        elif args.command == "demo":
            from meshserve import demo  # noqa: PLC0415 - needs scikit-learn, a dev extra

            return demo.run(args.grpc_port, args.data_dir)
        else:
            return _client_command(args)
    except errors.MeshError as e:
        print(f"meshserve: {e.message}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"meshserve: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
