"""The operator's ports: Prometheus metrics and the liveness/readiness probes.

``:2112/metrics`` serves :class:`mesh.node.metrics.Metrics` in Prometheus' text
format (ModelMesh's port). ``:8089/drain`` is the pod's preStop hook: the node
stops taking loads and hands its models over before Kubernetes sends SIGTERM.
``:8089/live`` says the process runs;
``:8089/ready`` says it can serve: 200 only while the runtime answers and
etcd is reachable, 503 with the reason otherwise, so Kubernetes takes a node
whose runtime died out of the Service. A port of 0 picks a free port; a
negative port turns that server off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from mesh.node import metrics

Readiness = Callable[[], Awaitable[tuple[bool, str]]]
Drain = Callable[[], Awaitable[None]]


class OpsServer:
    """Two small HTTP servers on one event loop."""

    def __init__(
        self,
        node_metrics: metrics.Metrics,
        ready: Readiness,
        host: str,
        metrics_port: int,
        probe_port: int,
        drain: Drain | None = None,
    ) -> None:
        self._metrics = node_metrics
        self._ready = ready
        self._drain = drain
        self._host = host
        self._wanted = {"metrics": metrics_port, "probes": probe_port}
        self.ports: dict[str, int] = {}
        """The ports really bound, by server name."""
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        apps = {
            "metrics": [web.get("/metrics", self._metrics_page)],
            "probes": [
                web.get("/live", self._live),
                web.get("/ready", self._ready_page),
                web.get("/drain", self._drain_page),
                web.post("/drain", self._drain_page),
            ],
        }
        for name, routes in apps.items():
            port = self._wanted[name]
            if port < 0:
                continue
            app = web.Application()
            app.add_routes(routes)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self._host, port)
            await site.start()
            self._runners.append(runner)
            server = site._server  # aiohttp exposes the bound socket only here
            sockets = getattr(server, "sockets", None) or []
            self.ports[name] = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="live\n")

    async def _drain_page(self, request: web.Request) -> web.Response:
        """The pod's preStop hook: stop taking loads and hand models over;
        answers once done, so the kubelet waits before SIGTERM."""
        if self._drain is None:
            return web.Response(text="nothing to drain\n")
        await self._drain()
        return web.Response(text="drained\n")

    async def _ready_page(self, request: web.Request) -> web.Response:
        ok, why = await self._ready()
        return web.Response(
            text=("ready\n" if ok else f"not ready: {why}\n"), status=200 if ok else 503
        )
