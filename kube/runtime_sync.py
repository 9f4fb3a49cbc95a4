"""The runtime Deployments (and their autoscalers) kept as the runtimes and
the resources that need them ask.

Every change to a ServingRuntime or ClusterServingRuntime, to a Deployment
the controller manages, or to a Predictor or InferenceService wakes one loop
that reconciles all runtime Deployments of the namespace against
:func:`kube.runtime_deployment.desired_deployments`, with the replica counts
and HPAs :func:`kube.runtime_replicas.plan` decides (zero for a runtime idle
past its grace period; the loop wakes itself when the next grace period
ends). It creates the missing, rewrites those whose rendered hash differs
(keeping the live replica count where an HPA is in charge), and deletes
those whose runtime is gone or unusable (disabled, single-model). The
controller sends that DELETE itself, whether or not the cluster's garbage
collector would get there too through the owner reference: a disabled
runtime still exists, so only the controller can remove its Deployment. It
then looks again at the resources whose runtime support changed. Changes
that arrive while a pass runs coalesce into one more pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kubernetes

from kube import (
    api_client,
    model_resources,
    predictor,
    predictor_handlers,
    runtime_deployment,
    runtime_replicas,
)
from kube.controller_settings import ControllerSettings
from mesh.core import clock, errors

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
        self._idle: Mapping[str, int] = {}
        self._wake_at_ms: int | None = None

    def soon(self) -> None:
        """Ask for a pass (on the loop that runs :meth:`run`)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._sleep()
            self._wake.clear()
            try:
                await self.sync()
            except Exception as e:
                log.warning("keeping the runtime Deployments failed (%s); retrying", e)
                await asyncio.sleep(self.config.retry_seconds)
                self._wake.set()

    async def _sleep(self) -> None:
        """Until woken, or until the next grace period ends."""
        timeout = None
        if self._wake_at_ms is not None:
            timeout = max(0.0, (self._wake_at_ms - clock.now_ms()) / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _plan(self) -> runtime_replicas.ReplicaPlan:
        visible = self.indexes.visible()
        specs: list[predictor.PredictorSpec] = []
        for body in self.indexes.resources().values():
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                continue
            with contextlib.suppress(errors.InvalidRequest):
                specs.append(model_resources.parse(body))
        planned = runtime_replicas.plan(
            visible,
            specs,
            previous_idle=self._idle,
            now_ms=clock.now_ms(),
            policy=self.config.scale_to_zero,
            default_replicas=self.config.deployment.default_replicas,
            sizes={mid: r.size_bytes for mid, r in self.handlers.bridge.models().items()},
        )
        self._idle, self._wake_at_ms = planned.idle, planned.wake_at_ms
        return planned

    async def sync(self) -> None:
        """Make the namespace's runtime Deployments and HPAs what the runtimes
        and resources ask for, then look again at resources whose runtime
        support changed."""
        visible = self.indexes.visible()
        for rt in visible.values():
            if not rt.usable and rt.problem:
                log.warning("%s %s is not deployed: %s", rt.kind, rt.name, rt.problem)
        planned = self._plan() if self.indexes.known else None
        for problem in planned.problems if planned else ():
            log.warning("no autoscaler: %s", problem)
        counts = planned.replicas if planned else None
        desired = runtime_deployment.desired_deployments(visible, self.config.deployment, counts)
        scaled = {runtime_deployment.deployment_name(n) for n in planned.hpas} if planned else set()
        if planned is not None:
            # HPAs first: one goes before its Deployment is scaled to zero.
            await self._autoscalers(visible, planned)
        await self._deployments(desired, scaled)
        if planned is not None:
            await self.handlers.recheck(self.indexes.resources(), visible)

    async def _deployments(self, desired: Mapping[str, dict[str, Any]], scaled: set[str]) -> None:
        """Create, rewrite and delete Deployments; those in ``scaled`` keep
        their live replica count (their HPA sets it)."""
        deployments = api_client.DEPLOYMENTS
        actual = await self.kube.managed(deployments)
        for name, manifest in desired.items():
            current = actual.get(name)
            if current is None:
                try:
                    await self.kube.create(deployments, manifest)
                    log.info("created Deployment %s", name)
                except kubernetes.client.exceptions.ConflictException:
                    log.warning("a Deployment %s exists that this controller does not manage", name)
            elif not runtime_deployment.is_current(current, manifest):
                body = _keeping_live_replicas(manifest, current) if name in scaled else manifest
                await self.kube.replace(deployments, body, current)
                log.info("updated Deployment %s (%s replicas)", name, body["spec"]["replicas"])
        for name in actual.keys() - desired.keys():
            await self.kube.delete(deployments, name)
            log.info("deleted Deployment %s (its runtime is gone or unusable)", name)

    async def _autoscalers(
        self,
        visible: Mapping[str, Any],
        planned: runtime_replicas.ReplicaPlan,
    ) -> None:
        """One HPA per runtime that asks for one and is not scaled to zero."""
        hpas = api_client.HPAS
        desired = {
            runtime_deployment.deployment_name(name): runtime_replicas.hpa_manifest(
                visible[name], spec, self.config.deployment
            )
            for name, spec in planned.hpas.items()
        }
        actual = await self.kube.managed(hpas)
        for name, manifest in desired.items():
            current = actual.get(name)
            if current is None:
                await self.kube.create(hpas, manifest)
                log.info("created HorizontalPodAutoscaler %s", name)
            elif _hpa_fields(current) != _hpa_fields(manifest):
                await self.kube.replace(hpas, manifest, current)
                log.info("updated HorizontalPodAutoscaler %s", name)
        for name in actual.keys() - desired.keys():
            await self.kube.delete(hpas, name)
            log.info("deleted HorizontalPodAutoscaler %s", name)


def _hpa_fields(hpa: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields of an HPA the controller sets (the API server may add others)."""
    spec = hpa.get("spec") or {}
    return tuple(spec.get(k) for k in ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics"))


def _keeping_live_replicas(
    manifest: Mapping[str, Any], current: Mapping[str, Any]
) -> Mapping[str, Any]:
    """``manifest`` with the live Deployment's replica count, which its HPA set."""
    live = (current.get("spec") or {}).get("replicas")
    if not isinstance(live, int) or live <= 0:
        return manifest
    return {**manifest, "spec": {**manifest["spec"], "replicas": live}}
