"""The runtime Deployments kept as the ServingRuntimes ask for them.

Every change to a ServingRuntime or ClusterServingRuntime (or to a Deployment
the controller manages) wakes one loop that reconciles all runtime
Deployments of the namespace against
:func:`kube.runtime_deployment.desired_deployments`: it creates the missing,
rewrites those whose rendered hash differs, and deletes those whose runtime
is gone or unusable (disabled, single-model). The controller sends that
DELETE itself, whether or not the cluster's garbage collector would get
there too through the owner reference: a disabled runtime still exists, so
only the controller can remove its Deployment. It then looks again at the
Predictors whose runtime support changed. Changes that arrive while a pass
runs coalesce into one more pass.
"""

from __future__ import annotations

import asyncio
import logging

import kubernetes

from kube import api_client, predictor_handlers, runtime_deployment
from kube.controller_settings import ControllerSettings

log = logging.getLogger(__name__)


class RuntimeSync:
    """One loop, woken by :meth:`soon`, that keeps the runtime Deployments."""

    def __init__(
        self,
        config: ControllerSettings,
        kube: api_client.KubeApi,
        indexes: predictor_handlers.KopfIndexes,
        handlers: predictor_handlers.PredictorHandlers,
    ) -> None:
        self.config = config
        self.kube = kube
        self.indexes = indexes
        self.handlers = handlers
        self._wake = asyncio.Event()

    def soon(self) -> None:
        """Ask for a pass (on the loop that runs :meth:`run`)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception as e:
                log.warning("keeping the runtime Deployments failed (%s); retrying", e)
                await asyncio.sleep(self.config.retry_seconds)
                self._wake.set()

    async def sync(self) -> None:
        """Make the namespace's runtime Deployments what the runtimes ask for,
        then look again at Predictors and InferenceServices whose runtime
        support changed."""
        visible = self.indexes.visible()
        for rt in visible.values():
            if not rt.usable and rt.problem:
                log.warning("%s %s is not deployed: %s", rt.kind, rt.name, rt.problem)
        desired = runtime_deployment.desired_deployments(visible, self.config.deployment)
        actual = await self.kube.managed_deployments()
        for name, manifest in desired.items():
            current = actual.get(name)
            if current is None:
                try:
                    await self.kube.create_deployment(manifest)
                    log.info("created Deployment %s", name)
                except kubernetes.client.exceptions.ConflictException:
                    log.warning("a Deployment %s exists that this controller does not manage", name)
            elif not runtime_deployment.is_current(current, manifest):
                await self.kube.replace_deployment(manifest, current)
                log.info("updated Deployment %s", name)
        for name in actual.keys() - desired.keys():
            await self.kube.delete_deployment(name)
            log.info("deleted Deployment %s (its runtime is gone or unusable)", name)
        if self.indexes.known:
            await self.handlers.recheck(self.indexes.resources(), visible)
