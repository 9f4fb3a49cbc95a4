"""One controller acts at a time: a leadership term, from election to end.

Replicas elect a leader through etcd (:class:`mesh.node.leader.Leader` under
``<prefix>/controller-leader``), the same lease-based election the nodes use
for their janitor, rather than kopf's peering: the controller needs etcd
anyway, the lease bounds how long a dead leader blocks the others, and
peering would need its own CRD and RBAC (and pauses every operator of equal
priority instead of electing one). While a replica leads it writes status
and runs kopf (:class:`kube.kopf_operator.KopfOperator`, in a thread). A term
ends when the process stops, when leadership is lost (a leader that cannot
renew its lease steps down when the lease may have expired, before another
replica can have taken over), or when kopf fails: the process then exits
with an error, resigning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Coroutine
from typing import Any

import kubernetes

from kube import api_client, kopf_operator, predictor_status, status_writer
from kube.controller_settings import HTTP_PORT, ControllerSettings
from mesh.core import errors
from mesh.kv import placement_table

log = logging.getLogger(__name__)


async def first(*aws: Coroutine[Any, Any, Any]) -> int:
    """Await several coroutines until one finishes; cancel the others and
    return the index of the one that finished."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(i for i, t in enumerate(tasks) if t in done)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclasses.dataclass(frozen=True)
class TermParts:
    """What a term works with, built once per process and kept across terms."""

    config: ControllerSettings
    kube_config: kubernetes.client.Configuration
    mirror: placement_table.PlacementTable
    kube: api_client.KubeApi
    ready: threading.Event
    """Set while the term's kopf is up."""


def status_writer_for(parts: TermParts) -> status_writer.StatusWriter:
    cfg = parts.config
    return status_writer.StatusWriter(
        parts.kube,
        parts.mirror,
        predictor_status.endpoints(cfg.service_name, cfg.namespace, cfg.grpc_port, HTTP_PORT),
        cfg.failure_expiry_seconds,
        cfg.retry_seconds,
    )


async def serve_term(
    parts: TermParts,
    writer: status_writer.StatusWriter,
    number: int,
    stop: asyncio.Event,
    lost: asyncio.Event,
) -> None:
    """One term: status writes on this loop, kopf in a thread, until stopped,
    leadership is lost, or kopf fails (raised as :class:`mesh.core.errors.MeshError`)."""
    cfg, mirror = parts.config, parts.mirror
    loop = asyncio.get_running_loop()
    await writer.start()
    mirror.add_listener(writer.on_table_change)
    ended = asyncio.Event()
    stop_flag = threading.Event()
    parts.ready.clear()
    bridge = status_writer.StatusBridge(loop, mirror, writer)
    operator = kopf_operator.KopfOperator(
        cfg, parts.kube_config, bridge, parts.kube, stop_flag, parts.ready
    )

    def main() -> None:
        try:
            operator.main()
        finally:
            loop.call_soon_threadsafe(ended.set)

    log.info("controller %s leads (term %d)", cfg.instance_id, number)
    thread = threading.Thread(target=main, name=f"controller-term-{number}", daemon=True)
    thread.start()
    try:
        which = await first(stop.wait(), lost.wait(), ended.wait())
    finally:
        stop_flag.set()
        await asyncio.to_thread(thread.join)
        parts.ready.clear()
        mirror.remove_listener(writer.on_table_change)
        await writer.stop()
    if which == 1:
        log.warning("controller %s lost leadership; its term ended", cfg.instance_id)
    elif which == 2:
        raise errors.MeshError(f"the controller stopped on its own: {operator.error!r}")
