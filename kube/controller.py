"""``meshserve controller``: Predictors and ServingRuntimes in; registrations,
status and runtime Deployments out.

This is the Kubernetes edge of the mesh, and this module only wires it:
every decision is a pure function elsewhere (:mod:`kube.runtime_selection`:
which runtime serves a Predictor; :mod:`kube.runtime_deployment`: the
Deployment of a runtime; :mod:`kube.predictor_status`: a Predictor's status
from the placement table), and each duty around them has its own module:

- :mod:`kube.controller_settings`: what it is configured with.
- :mod:`kube.api_client`: its own API calls and credentials.
- :mod:`kube.predictor_handlers`: registering and unregistering Predictors.
- :mod:`kube.runtime_sync`: the runtime Deployments.
- :mod:`kube.status_writer`: Predictors' status, from etcd watch events.
- :mod:`kube.kopf_operator`: kopf, calling the handlers.
- :mod:`kube.leadership`: one replica acts at a time; a term's life.

:class:`Controller` connects to etcd, mirrors the placement table (every
replica does, so a standby takes over warm), campaigns for leadership and,
while leading, serves a term.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import kubernetes

from kube import api_client, leadership, status_writer
from kube.controller_settings import ControllerSettings
from mesh.kv import etcd_kv, placement_table
from mesh.node import leader

log = logging.getLogger(__name__)


class Controller:
    """``meshserve controller``: mirrors the placement table, campaigns for
    leadership in etcd and, while leading, serves a term."""

    def __init__(
        self, config: ControllerSettings, kube_config: kubernetes.client.Configuration
    ) -> None:
        self.config = config
        self.kube_config = kube_config
        self.ready = threading.Event()
        """Set while the current term's kopf is up."""
        self.terms = 0
        """How many terms this controller has led."""
        self.leading = False
        self.writer: status_writer.StatusWriter | None = None
        """The current term's status writer."""

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; raises if a term fails on its own."""
        cfg = self.config
        async with contextlib.AsyncExitStack() as stack:
            kv = await etcd_kv.EtcdKV.connect(cfg.kv.endpoints)
            stack.push_async_callback(kv.close)
            # A standby keeps its mirror warm too: it takes over with it.
            mirror = placement_table.PlacementTable(kv, cfg.kv.prefix)
            await mirror.start()
            stack.push_async_callback(mirror.stop)
            kube = api_client.KubeApi(self.kube_config, cfg.namespace)
            stack.callback(kube.close)
            parts = leadership.TermParts(cfg, self.kube_config, mirror, kube, self.ready)
            elector = leader.Leader(kv, cfg.leader_key, cfg.instance_id, cfg.kv.lease_ttl_seconds)
            lost = asyncio.Event()

            def changed(leading: bool) -> None:
                self.leading = leading
                if not leading:
                    lost.set()

            elector.add_listener(changed)
            await elector.start()
            stack.push_async_callback(elector.stop)
            log.info("controller %s campaigning on %s", cfg.instance_id, cfg.leader_key)
            try:
                while not stop.is_set():
                    if await leadership.first(elector.wait_leader(None), stop.wait()) == 1:
                        break
                    lost.clear()
                    if elector.is_leader:
                        await self._lead(parts, stop, lost)
            finally:
                self.leading = False

    async def _lead(
        self, parts: leadership.TermParts, stop: asyncio.Event, lost: asyncio.Event
    ) -> None:
        self.writer = leadership.status_writer_for(parts)
        self.terms += 1
        await leadership.serve_term(parts, self.writer, self.terms, stop, lost)
