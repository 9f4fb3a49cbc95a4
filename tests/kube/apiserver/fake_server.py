"""The stand-in API server as a test starts it: listening, with helpers to look inside.

The server runs on its own event loop in a thread, like a real one in its
own process: :meth:`FakeApiServer.start` returns once it listens on a free
127.0.0.1 port, and a test reaches its store only through :meth:`call`,
which runs on that loop, never by touching it from the test's thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from tests.kube.apiserver import object_writes
from tests.kube.apiserver.api_status import Obj
from tests.kube.apiserver.http_routes import Request, Routes
from tests.kube.apiserver.object_store import ObjectStore

_T = TypeVar("_T")


class FakeApiServer:
    """The stand-in API server. ``crds``: CustomResourceDefinition manifests
    created at start-up; ``namespaces``: namespaces that exist from the start;
    ``history``: how many changes are kept for resuming watches (older
    versions get 410 Gone); ``token``: a bearer token every request must
    carry (``None``: no authentication)."""

    def __init__(
        self,
        crds: Iterable[Mapping[str, Any]] = (),
        namespaces: Iterable[str] = ("default",),
        *,
        history: int = 10_000,
        bookmark_interval: float = 5.0,
        token: str | None = None,
    ) -> None:
        self._initial_crds = [copy.deepcopy(dict(c)) for c in crds]
        self._initial_namespaces = list(namespaces)
        self._store = ObjectStore(history)
        self._routes = Routes(self._store, lambda: self.port, token, bookmark_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def token(self) -> str | None:
        return self._routes.token

    @property
    def requests(self) -> collections.Counter[Request]:
        """What each client asked for, in RBAC's terms, for tests that check
        which permissions a client needs (read it through :meth:`call`)."""
        return self._routes.requests

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen on a free 127.0.0.1 port, serving from a thread of its own."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as e:
                started.set_exception(e)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-apiserver", daemon=True)
        self._thread.start()
        started.result(30)

    def stop(self) -> None:
        """Close every watch and stop listening."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None

    async def _start(self) -> None:
        store = self._store
        namespaces = store.resource_type("", "v1", "namespaces")
        for ns in self._initial_namespaces:
            manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            object_writes.create(store, namespaces, "", manifest)
        crds = store.resource_type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for crd in self._initial_crds:
            object_writes.create(store, crds, "", crd)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._routes.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        for w in self._store.watchers:
            w.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test helpers (any thread) ------------------------------------------------

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server's loop (where the store lives) and return its result."""
        assert self._loop is not None
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as e:
                done.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return done.result(30)

    def get(self, group: str, plural: str, name: str, namespace: str = "") -> Obj | None:
        """A copy of a stored object, or ``None``."""
        return self.call(
            lambda: copy.deepcopy(
                self._store.objects.get((group, plural), {}).get((namespace, name))
            )
        )

    def objects(self, group: str, plural: str, namespace: str = "") -> list[Obj]:
        """Copies of the stored objects of one resource (one namespace, if given)."""

        def pick() -> list[Obj]:
            items = self._store.objects.get((group, plural), {})
            return [
                copy.deepcopy(o)
                for (ns, _), o in sorted(items.items())
                if ns == namespace or not namespace
            ]

        return self.call(pick)

    def changes(self, group: str, plural: str, since: int = 0) -> list[tuple[str, Obj]]:
        """The retained changes of one resource after version ``since``, as
        a watch from it would replay them (type and object), oldest first."""

        def pick() -> list[tuple[str, Obj]]:
            return [
                (c.type, copy.deepcopy(c.new))
                for c in self._store.history
                if c.key == (group, plural) and c.rv > since
            ]

        return self.call(pick)

    @property
    def resource_version(self) -> int:
        return self.call(lambda: self._store.rv)

    def compact(self) -> int:
        """Forget the whole change history, as etcd's compaction does: a watch
        from any version before now gets 410 Gone. Returns the current version."""
        return self.call(self._store.compact)

    def kubeconfig(self, namespace: str = "default") -> Obj:
        """A kubeconfig document for this server."""
        user: Obj = {"token": self.token} if self.token else {}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
