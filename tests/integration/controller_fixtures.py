"""The controller as it runs in its pod, for the tests: on an event loop in a
thread of its own, against the stand-in API server (:mod:`tests.kube.fake_apiserver`)
and a real etcd, and helpers to read what it wrote through the official client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes

from kube import controller, serving_runtimes
from mesh.core import settings

_T = TypeVar("_T")
GROUP, VERSION = serving_runtimes.GROUP, serving_runtimes.VERSION


def controller_settings(
    namespace: str,
    etcd_endpoint: str,
    prefix: str,
    mesh_endpoint: str,
    instance_id: str = "controller-a",
) -> controller.ControllerSettings:
    """Settings of a test controller: short lease, retries and resyncs."""
    return controller.ControllerSettings(
        namespace=namespace,
        deployment=serving_runtimes.DeploymentOptions(namespace=namespace),
        mesh_endpoint=mesh_endpoint,
        kv=settings.KVSettings(endpoints=(etcd_endpoint,), prefix=prefix, lease_ttl_seconds=2),
        instance_id=instance_id,
        resync_seconds=1.0,
        retry_seconds=0.3,
        mesh_timeout_seconds=30.0,
    )


class ControllerThread:
    """A :class:`kube.controller.Controller` running in a thread."""

    def __init__(
        self, config: controller.ControllerSettings, kube_config: kubernetes.client.Configuration
    ) -> None:
        self.controller = controller.Controller(config, kube_config)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._result: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def body() -> None:
            self._stop = asyncio.Event()
            await self.controller.run(self._stop)

        try:
            self._loop.run_until_complete(body())
            self._result.set_result(None)
        except BaseException as e:
            self._result.set_exception(e)
        finally:
            self._loop.close()

    def start(self) -> ControllerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop it (resigning leadership) and re-raise what it failed with, if anything."""
        deadline = time.monotonic() + 10
        while self._stop is None and not self._result.done():
            assert time.monotonic() < deadline, "the controller never started"
            time.sleep(0.01)
        if self._stop is not None and not self._result.done():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the controller did not stop"
        self._result.result(0)

    @property
    def leading(self) -> bool:
        return self.controller.leading

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until it leads and its kopf is up."""
        wait_for(lambda: self.leading and self.controller.ready.is_set(), timeout)


def wait_for(predicate: Callable[[], _T | None], timeout: float = 30, what: str = "") -> _T:
    """Poll until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not met within {timeout} s: {what}"
        time.sleep(0.05)


class Kube:
    """Typed, dict-valued access to the custom and apps resources of one namespace."""

    def __init__(self, config: kubernetes.client.Configuration, namespace: str) -> None:
        self.namespace = namespace
        self.client = kubernetes.client.ApiClient(config)
        self.api = kubernetes.client.CustomObjectsApi(self.client)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        if plural == "clusterservingruntimes":
            out = self.api.create_cluster_custom_object(GROUP, VERSION, plural, body)
        else:
            out = self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, body
            )
        assert isinstance(out, dict)
        return out

    def get(
        self, plural: str, name: str, group: str = GROUP, version: str = VERSION
    ) -> dict[str, Any] | None:
        try:
            out = self.api.get_namespaced_custom_object(
                group, version, self.namespace, plural, name
            )
        except kubernetes.client.exceptions.NotFoundException:
            return None
        assert isinstance(out, dict)
        return out

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        out = self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, patch
        )
        assert isinstance(out, dict)
        return out

    def delete(self, plural: str, name: str, group: str = GROUP, version: str = VERSION) -> None:
        self.api.delete_namespaced_custom_object(group, version, self.namespace, plural, name)

    def names(self, plural: str) -> set[str]:
        found = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
        assert isinstance(found, dict)
        return {o["metadata"]["name"] for o in found["items"]}

    def deployment(self, name: str) -> dict[str, Any] | None:
        return self.get("deployments", name, "apps", "v1")

    def status(self, name: str) -> dict[str, Any]:
        """A Predictor's status (``{}`` if it has none or is gone)."""
        obj = self.get("predictors", name)
        status = (obj or {}).get("status") or {}
        assert isinstance(status, dict)
        return status
