"""Hand-over on drain: a node leaving the mesh has its busy models loaded elsewhere.

When a node drains (SIGTERM, ``/drain``), requests for the models only it
holds would otherwise meet a cold load on whichever node placement picks
next. So before it stops, the draining node asks another node to load each
model it used within the hand-over window (most recent first) whose only
ready copy is here, while the drain timeout lasts. The choice of that node is
placement's (:func:`mesh.core.placement.choose_node`, never this node); the
asking goes through what the caller passes in (a
:class:`mesh.core.interfaces.PeerLoader`: gRPC peers in a real node).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from mesh.core import clock, errors, interfaces, placement, records, settings
from mesh.kv import placement_table

log = logging.getLogger(__name__)


def successor(
    model_id: str,
    model: records.ModelRecord,
    instances: Mapping[str, records.InstanceRecord],
    self_id: str,
    min_model_size_bytes: int,
    now_ms: int,
) -> str | None:
    """The node to hand ``model_id`` over to, or ``None``: another live node
    that is not draining holds a ready copy already, or none can take it."""
    others = [
        i
        for i in placement.live_copies(model, instances, records.CopyState.LOADED)
        if i != self_id and not instances[i].shutting_down
    ]
    if others:
        return None
    target = placement.choose_node(
        instances,
        max(model.size_bytes, min_model_size_bytes),
        model_id=model_id,
        labels=placement.required_labels(model.model_type, model.runtime),
        avoid={self_id},
        now_ms=now_ms,
    )
    if target is None:
        log.info("no node can take over model %s", model_id)
    return target


async def hand_over(
    config: settings.Settings,
    recently_used: list[str],
    mirror: placement_table.PlacementTable,
    peer_loader: interfaces.PeerLoader,
) -> int:
    """Have another node load each of ``recently_used`` (most recent first)
    whose only ready copy is on this node, until the drain timeout; the
    number of models handed over."""
    self_id = config.node.instance_id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.scaling.drain_timeout_seconds
    moved = 0
    for model_id in recently_used:
        remaining = deadline - loop.time()
        rec = mirror.model(model_id)
        if remaining <= 0 or rec is None:
            break
        instances = mirror.instances()
        target = successor(
            model_id, rec, instances, self_id, config.cache.min_model_size_bytes, clock.now_ms()
        )
        if target is None:
            continue
        try:
            await peer_loader.ensure_local(
                instances[target].endpoint, model_id, extra_copy=True, timeout=remaining
            )
            moved += 1
        except errors.MeshError as e:
            log.warning("handing %s over to %s failed: %s", model_id, target, e.message)
    return moved
