"""How a vmodel's record changes: the transition rule of ``setVModel``.

A vmodel is a stable name (a Predictor's) for a concrete model. Pointing it
at a new target keeps the active model serving until the target is loaded,
unless the caller forces the move, the active model is not loaded anywhere,
or the target is the active model already. A canary percent holds the move:
the loaded target takes that share of requests (:mod:`mesh.core.traffic_split`)
until the percent is removed or set to 100 (the alias moves: promoted); 0
keeps every request on the active model with the target still loaded
(blue-green). Pointing the vmodel back at its active model rolls back.
A request may also set the vmodel's chain (its transformer and explainer
models): that takes effect at once, whatever the transition.

These are pure functions from the record as read (or ``None``) and the
request to the next record; the node's management (:mod:`mesh.node.management`)
applies them with a compare-and-set and loads the target in between.
"""

from __future__ import annotations

import dataclasses

from mesh.core import errors, records


@dataclasses.dataclass(frozen=True)
class VModelRequest:
    """A ``setVModel`` call, as far as the record's next state depends on it."""

    vmodel_id: str
    target_model_id: str
    owner: str = ""
    """Who asks; a vmodel owned by someone else is refused."""
    update_only: bool = False
    """Refuse to create the vmodel (it must exist)."""
    force: bool = False
    """Move the alias at once, without waiting for the target to load."""
    expected_target_model_id: str = ""
    """Refuse unless the current target is this one (empty: any)."""
    canary_percent: int | None = None
    """Hold the move and split requests (0-100); ``None`` or 100: no hold."""
    chain: Chain | None = None
    """The vmodel's transformer and explainer from now on; ``None``: leave them."""


@dataclasses.dataclass(frozen=True)
class Chain:
    """The models a vmodel runs around and beside its predictor (concrete
    model ids; empty: none)."""

    transformer: str = ""
    explainer: str = ""


def check_owner(vmodel_id: str, current: records.VModelRecord | None, owner: str) -> None:
    """Raise :class:`mesh.core.errors.AlreadyExists` when ``owner`` is given and
    the vmodel is owned by someone else."""
    if current is not None and owner and current.owner and current.owner != owner:
        raise errors.AlreadyExists(
            f"vmodel {vmodel_id!r} is owned by {current.owner!r}, not {owner!r}"
        )


def requested(
    current: records.VModelRecord | None, request: VModelRequest, *, active_loaded: bool
) -> records.VModelRecord:
    """The vmodel's record after ``request``, given the record now (``None``:
    no such vmodel) and whether its active model is loaded. Raises
    :class:`mesh.core.errors.Conflict` (not the expected target),
    :class:`mesh.core.errors.ModelNotFound` (``update_only`` of no vmodel) or
    :class:`mesh.core.errors.AlreadyExists` (owned by someone else)."""
    moved = _moved(current, request, active_loaded=active_loaded)
    chain = request.chain
    if chain is None or (moved.transformer, moved.explainer) == (
        chain.transformer,
        chain.explainer,
    ):
        return moved
    return dataclasses.replace(moved, transformer=chain.transformer, explainer=chain.explainer)


def _moved(
    current: records.VModelRecord | None, request: VModelRequest, *, active_loaded: bool
) -> records.VModelRecord:
    """:func:`requested`, but for the chain."""
    target, expected = request.target_model_id, request.expected_target_model_id
    if expected and (
        (current is None and expected != target)
        or (current is not None and current.target_model != expected)
    ):
        raise errors.Conflict(
            f"vmodel {request.vmodel_id!r}: target is "
            f"{current.target_model if current else 'unset'!r}, "
            f"not the expected {expected!r}"
        )
    if current is None:
        if request.update_only:
            raise errors.ModelNotFound(request.vmodel_id, "vmodel")
        return records.VModelRecord(target, target, owner=request.owner)
    check_owner(request.vmodel_id, current, request.owner)
    canary = canary_of(request.canary_percent)
    if current.target_model == target and not current.failed:
        held = canary if current.transitioning else None
        if current.canary_percent == held:
            return current
        return dataclasses.replace(current, canary_percent=held)  # None: promoted
    switch = request.force or not active_loaded or current.active_model == target
    return dataclasses.replace(
        current,
        target_model=target,
        active_model=target if switch else current.active_model,
        failed=False,
        canary_percent=None if switch else canary,
    )


def canary_of(percent: int | None) -> int | None:
    """The hold a requested canary percent means: ``None`` for none or 100
    (nothing to hold); raises :class:`mesh.core.errors.InvalidRequest` out of 0-100."""
    if percent is None or percent == 100:
        return None
    if not 0 <= percent <= 100:
        raise errors.InvalidRequest(f"canary percent {percent} is not between 0 and 100")
    return percent


def completed(
    current: records.VModelRecord | None, target_model_id: str, *, target_failed: bool
) -> records.VModelRecord | None:
    """The vmodel's record once the load of ``target_model_id`` ended: the
    alias moved to it, or the transition marked failed. A vmodel deleted or
    pointed elsewhere meanwhile is left as it is."""
    if current is None or current.target_model != target_model_id:
        return current
    if target_failed:
        return dataclasses.replace(current, failed=True)
    if current.canary_percent is not None:
        return current  # loaded: the split holds until promoted
    return dataclasses.replace(current, active_model=target_model_id, failed=False)


def models_of(vmodel: records.VModelRecord | None) -> set[str]:
    """The concrete models a vmodel refers to (active and target, and its
    transformer and explainer when it has them)."""
    if vmodel is None:
        return set()
    chain = {m for m in (vmodel.transformer, vmodel.explainer) if m}
    return {vmodel.active_model, vmodel.target_model} | chain
