"""Which model a V2 call names, read off its headers and bytes, and the
concrete model that name stands for.

Every model-scoped call (unary or a stream's first message) is addressed the
same way, so the reading lives in one place, apart from routing: the header
``mm-vmodel-id`` / ``mm-model-id`` (or their ``-bin`` UTF-8 forms), else
field 1 of the request bytes, gives a :class:`Requested`; :func:`resolve`
turns it into a concrete model id through the node's mirror (a vmodel, a
Predictor's name, to its active model, or during a canary rollout to the
model :func:`mesh.core.traffic_split.routed_model` draws, sticky by the
``mm-routing-key`` header when the client sends one), and :func:`resolve_current` first
lets the mirror catch up with a record registered a moment ago through
another node. The same headers carry a forwarded request to a peer
(:func:`peer_metadata`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from mesh.core import errors, records, traffic_split
from mesh.kv import placement_table, records_store
from router import wire

VMODEL_HEADER = "mm-vmodel-id"
MODEL_HEADER = "mm-model-id"
BALANCED_HEADER = "mm-balanced"
UNREACHABLE_HEADER = "mm-unreachable"
"""Instances the routing node could not reach: the peer's claim ignores their copies."""
ROUTING_KEY_HEADER = "mm-routing-key"
"""During a canary rollout, requests with the same key go to the same model."""
EXPLAIN_HEADER = "mm-explain"
"""``true``: answer with the vmodel's explainer (:mod:`router.chains`)."""
DRAWS = random.Random()
"""The per-request draws of a canary split (a test may seed its own)."""

Headers = Sequence[tuple[str, str | bytes]]

_RECORD_KINDS: dict[str, tuple[str, ...]] = {
    "vmodel": (records_store.VMODEL,),
    "model": (records_store.MODEL,),
    "any": (records_store.VMODEL, records_store.MODEL),
}
"""The records a requested kind may name, in the order they are looked up."""


@dataclasses.dataclass(frozen=True)
class Requested:
    """What a call asks for, read off its headers and bytes."""

    kind: str
    """``vmodel``, ``model`` or ``any`` (field 1: a vmodel or a concrete model)."""
    name: str
    balanced: bool = False
    """Sent by a peer: serve here, never forward."""
    unreachable: frozenset[str] = frozenset()
    routing_key: str = ""
    """``mm-routing-key``: a canary's split is sticky by it."""
    explain: bool = False
    """``mm-explain: true``: an explanation, from the vmodel's explainer."""


def _header(value: str | bytes, key: str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidRequest(f"{key} is not UTF-8") from None


def requested(request: bytes, headers: Headers) -> Requested:
    """The model a call names, and how it came."""
    found: tuple[str, str] | None = None
    balanced = False
    unreachable: frozenset[str] = frozenset()
    routing_key = ""
    explain = False
    for key, value in headers:
        k = key.lower()
        if k in (VMODEL_HEADER, VMODEL_HEADER + "-bin") and found is None:
            found = ("vmodel", _header(value, k))
        elif k in (MODEL_HEADER, MODEL_HEADER + "-bin"):
            found = ("model", _header(value, k))  # wins: peers send it with the vmodel's
        elif k == BALANCED_HEADER:
            balanced = _header(value, k) == "true"
        elif k == UNREACHABLE_HEADER:
            unreachable = frozenset(x for x in _header(value, k).split(",") if x)
        elif k == ROUTING_KEY_HEADER:
            routing_key = _header(value, k)
        elif k == EXPLAIN_HEADER:
            explain = _header(value, k) == "true"
    if found is None:
        name = wire.read_name(request)
        if not name:
            raise errors.InvalidRequest(
                "no model named: set model_name or the mm-vmodel-id / mm-model-id header"
            )
        found = ("any", name)
    return Requested(found[0], found[1], balanced, unreachable, routing_key, explain)


def resolve(
    mirror: placement_table.PlacementTable, kind: str, name: str, routing_key: str = ""
) -> str:
    """The concrete model id a requested name stands for."""
    if kind in ("vmodel", "any"):
        v = mirror.vmodel(name)
        if v is not None:
            if v.canary_percent is None:
                return v.active_model
            return traffic_split.routed_model(
                v,
                target_ready=loaded_somewhere(mirror.model(v.target_model)),
                routing_key=routing_key,
                draw=DRAWS.random(),
            )
        if kind == "vmodel":
            raise errors.UnknownModel(name)
    if mirror.model(name) is None:
        raise errors.UnknownModel(name)
    return name


def loaded_somewhere(record: records.ModelRecord | None) -> bool:
    """Whether a model has a loaded copy on some node."""
    return record is not None and any(
        c.state is records.CopyState.LOADED for c in record.copies.values()
    )


async def resolve_current(mirror: placement_table.PlacementTable, asked: Requested) -> str:
    """:func:`resolve`, after letting the mirror catch up once if it does not
    know the name: registered a moment ago through another node, it may lag
    the store by a few milliseconds."""
    try:
        return resolve(mirror, asked.kind, asked.name, asked.routing_key)
    except errors.ModelNotFound:
        await mirror.catch_up(asked.name, _RECORD_KINDS[asked.kind])
        return resolve(mirror, asked.kind, asked.name, asked.routing_key)


def peer_metadata(model_id: str, unreachable: frozenset[str]) -> list[tuple[str, str]]:
    """The headers of a request forwarded to a peer: serve it from your own
    copy of ``model_id``, and ignore copies on the ``unreachable`` nodes."""
    metadata = [(BALANCED_HEADER, "true"), (MODEL_HEADER, model_id)]
    if unreachable:
        metadata.append((UNREACHABLE_HEADER, ",".join(sorted(unreachable))))
    return metadata
