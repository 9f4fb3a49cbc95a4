"""Which concrete model a request for a vmodel goes to during a canary rollout.

A vmodel in a canary rollout (:attr:`mesh.core.records.VModelRecord.canary_percent`)
sends that share of its requests to its target model, once the target is
loaded and has not failed, and the rest to the active model. The draw is per
request, or, when the client sends a routing key, a hash of the key: the same
key always lands on the same model, and raising the percent only ever moves
keys from the old model to the new one. Pure: the caller gives the draw.
"""

from __future__ import annotations

import hashlib

from mesh.core import records

KEY_BUCKETS = 10_000
"""A routing key is hashed into one of this many buckets (0.01 % steps)."""


def key_position(key: str) -> float:
    """Where a routing key falls in [0, 100): the same key, the same place."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % KEY_BUCKETS * 100 / KEY_BUCKETS


def routed_model(
    vmodel: records.VModelRecord, *, target_ready: bool, routing_key: str, draw: float
) -> str:
    """The model a request for ``vmodel`` goes to. ``target_ready``: the
    target has a loaded copy; ``draw``: a uniform number in [0, 1), used when
    there is no ``routing_key``."""
    percent = vmodel.canary_percent
    if percent is None or not vmodel.transitioning or vmodel.failed or not target_ready:
        return vmodel.active_model
    position = key_position(routing_key) if routing_key else draw * 100
    return vmodel.target_model if position < percent else vmodel.active_model


def traffic(vmodel: records.VModelRecord, *, target_ready: bool) -> dict[str, int]:
    """Each model's share of the vmodel's requests now, in percent."""
    percent = vmodel.canary_percent
    if percent is None or not vmodel.transitioning or vmodel.failed or not target_ready:
        return {vmodel.active_model: 100}
    return {vmodel.active_model: 100 - percent, vmodel.target_model: percent}
